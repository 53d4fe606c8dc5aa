"""Pre-trained word vectors (GloVe or word2vec text format) as the starting embedding matrix."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import ChargenError


def _is_word2vec_header(fields: list[str]) -> bool:
    return len(fields) == 2 and all(f.isdigit() for f in fields)


def load_vectors(path: str | Path, token_texts: list[str], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the file for the vocabulary's words and a mask of the rows found.

    A token is looked up by its text without the space before it, then in lower case (GloVe's
    vectors are lower case). Only lines of wanted words are converted to numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise ChargenError(f"{path}: no such embeddings file")
    wanted: dict[str, list[int]] = {}
    for i, text in enumerate(token_texts):
        word = text.strip()
        if word:
            wanted.setdefault(word, []).append(i)
    lowered: dict[str, list[int]] = {}
    for word, ids in wanted.items():
        lowered.setdefault(word.lower(), []).extend(ids)
    vectors = torch.zeros(len(token_texts), dim)
    exact = torch.zeros(len(token_texts), dtype=torch.bool)  # found under its own spelling
    found = torch.zeros(len(token_texts), dtype=torch.bool)
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                fields = line.rstrip("\n").rstrip(" ").split(" ")
                if number == 1 and _is_word2vec_header(fields):
                    if int(fields[1]) != dim:
                        raise ChargenError(f"{path} holds {fields[1]}-dimensional vectors but --embedding-dim is {dim}")
                    continue
                if len(fields) < 2:
                    continue
                if len(fields) - 1 != dim:
                    raise ChargenError(f"{path} line {number}: {len(fields) - 1}-dimensional vector but --embedding-dim is {dim}")
                word = fields[0]
                ids = [i for i in wanted.get(word, []) if not exact[i]]
                ids += [i for i in lowered.get(word, []) if not found[i]] if word == word.lower() else []
                if not ids:
                    continue
                try:
                    row = torch.tensor([float(v) for v in fields[1:]])
                except ValueError:
                    raise ChargenError(f"{path} line {number}: the vector of {word!r} is not all numbers") from None
                for i in ids:
                    vectors[i] = row
                    found[i] = True
                    exact[i] |= token_texts[i].strip() == word
    except UnicodeDecodeError as e:
        raise ChargenError(f"{path} is not UTF-8 text (byte offset {e.start} of a line)") from None
    return vectors, found


def initialise_embedding(embedding: torch.nn.Embedding, path: str | Path, token_texts: list[str], freeze: bool) -> int:
    """Copy the file's vectors into the rows they cover; returns how many tokens were covered."""
    vectors, found = load_vectors(path, token_texts, embedding.embedding_dim)
    with torch.no_grad():
        embedding.weight[found] = vectors[found]
    embedding.weight.requires_grad_(not freeze)
    return int(found.sum())
