"""Word and subword vocabularies, built and applied by HuggingFace `tokenizers`.

Both kinds share one byte-level pre-tokenizer: words (letters and combining marks) keep the space
before them, so the text decodes back exactly and " France" after a word differs from "France"
after a newline. Word models map words outside the vocabulary to [UNK]; BPE models have none.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache, cached_property

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.decoders import DecodeStream

from .errors import ChargenError, OptionError, first_line

UNK = "Ġ[UNK]"  # byte-level for " [UNK]": most unknown words follow a space, and decoded text keeps it
WORD_PATTERN = r" ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"
DEFAULT_VOCAB_SIZE = {"word": 10_000, "bpe": 4_000}
KINDS = ("char", *DEFAULT_VOCAB_SIZE)  # every kind of vocabulary: characters, and the two a tokenizer builds
TOKENIZER_FILE = "tokenizer.json"  # the file a word or BPE vocabulary's record keeps its tokenizer in


def compact_dtype(size: int) -> np.dtype:
    """The smallest integer type that holds ids 0 .. size - 1."""
    if size <= 1 << 8:
        return np.dtype(np.uint8)
    if size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def _empty_tokenizer(kind: str) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK) if kind == "word" else models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


@cache
def _written(kind: str) -> dict:
    """The tokenizer.json chargen writes for kind, less its vocabulary and merges: what a file read back must agree with."""
    tokenizer = _empty_tokenizer(kind)
    if kind == "word":
        tokenizer.add_special_tokens([UNK])  # the word trainer's one special token, id 0
    return json.loads(tokenizer.to_str())


def check_tokenizer_json(kind: str, data: object) -> None:
    """Refuse, before tokenizers reads it, what chargen never writes: another pre-tokenizer (a regex that can run for ever),
    another model, files named instead of the vocabulary inline, ids outside the vocabulary."""
    if kind not in DEFAULT_VOCAB_SIZE:
        raise ChargenError(f"a tokenizer is word or bpe, not {kind!r}")
    written = _written(kind)
    if not isinstance(data, dict) or set(data) != set(written):
        raise ChargenError(f"its entries are not those of the {kind} tokenizer chargen writes")
    for key in written.keys() - {"model"}:
        if data[key] != written[key]:
            raise ChargenError(f"its {key} is not the one chargen builds")
    model = data["model"]
    if not isinstance(model, dict) or model.get("type") != written["model"]["type"] or "vocab" not in model:
        raise ChargenError(f"its model must be {written['model']['type']} with its vocabulary inline, as chargen writes it")
    for key, value in model.items():
        if key not in written["model"]:
            raise ChargenError(f"its model has an entry {key!r} chargen never writes")
        if key not in ("vocab", "merges") and value != written["model"][key]:
            raise ChargenError(f"its model's {key} is {value!r}, not chargen's {written['model'][key]!r}")
    _check_vocab(kind, model["vocab"])
    if kind == "bpe" and not (isinstance(model.get("merges"), list) and all(map(_is_merge, model["merges"]))):
        raise ChargenError("its merges must be listed inline, each a pair of tokens")


def _check_vocab(kind: str, vocab: object) -> None:
    """Token to id, inline, the ids 0 to n - 1 each once; a word vocabulary's [UNK] is id 0."""
    if not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values()):
        raise ChargenError("its vocabulary must map each token to a whole-number id, inline")
    outside = next((i for i in vocab.values() if not 0 <= i < len(vocab)), None)
    if outside is not None:
        raise ChargenError(f"its vocabulary has an id {outside:,} outside 0 to {len(vocab) - 1:,}")
    if len(set(vocab.values())) != len(vocab):
        raise ChargenError("its vocabulary gives two tokens the same id")
    if kind == "word" and vocab.get(UNK) != 0:
        raise ChargenError(f"its vocabulary lacks {UNK!r} as id 0")


def _is_merge(merge: object) -> bool:
    """A BPE merge as tokenizers writes it: a pair of tokens (older versions: one string, the two parted by a space)."""
    if isinstance(merge, str):
        return merge.count(" ") == 1
    return isinstance(merge, list) and len(merge) == 2 and all(isinstance(t, str) for t in merge)


class TokenVocabulary:
    """A word or BPE vocabulary: a `tokenizers.Tokenizer` seen through `vocabulary.Vocab`, as the character one is."""

    def __init__(self, tokenizer: Tokenizer, kind: str):
        self.tokenizer, self.kind = tokenizer, kind

    @classmethod
    def train(cls, kind: str, texts: Iterable[str], vocab_size: int, min_frequency: int) -> TokenVocabulary:
        """Trained on the texts as on one text, when they part where its words part (word_boundaries)."""
        if kind not in DEFAULT_VOCAB_SIZE:
            raise OptionError(f"tokenizer must be char, word or bpe, not {kind!r}")
        tokenizer = _empty_tokenizer(kind)
        if kind == "word":
            trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[UNK], show_progress=False)
        else:
            alphabet = pre_tokenizers.ByteLevel.alphabet()  # every byte is a token: BPE never needs [UNK]
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, initial_alphabet=alphabet, show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer, kind)

    @classmethod
    def from_json(cls, kind: str, text: str) -> TokenVocabulary:
        """A tokenizer.json chargen wrote; anything else, or anything tokenizers cannot read, is a ChargenError."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ChargenError(f"not JSON: {e}") from None
        check_tokenizer_json(kind, data)
        try:
            return cls(Tokenizer.from_str(text), kind)
        except Exception as e:  # tokenizers reports a file it cannot read as a plain Exception
            raise ChargenError(first_line(e)) from None
        except BaseException as e:  # and a panic in its Rust code as pyo3's PanicException, which is no Exception
            if type(e).__name__ != "PanicException":
                raise
            raise ChargenError(f"tokenizers failed on it: {first_line(e)}") from None

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def to_record(self) -> tuple[dict, dict[str, bytes]]:
        """The entry names the tokenizer.json that holds the vocabulary (read back by vocabulary.from_record)."""
        return {"type": self.kind, "file": TOKENIZER_FILE}, {TOKENIZER_FILE: self.to_json().encode()}

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenVocabulary) and self.to_json() == other.to_json()

    @property
    def dtype(self) -> np.dtype:
        return compact_dtype(len(self))

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """Any text encodes: words outside a word vocabulary become [UNK]."""
        return np.array(self.tokenizer.encode(text).ids, dtype=self.dtype)

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    @cached_property
    def token_texts(self) -> list[str]:
        """Each token as text (a lone byte of a longer UTF-8 character shows as U+FFFD)."""
        return [self.tokenizer.decode([i], skip_special_tokens=False) for i in range(len(self))]

    def stream_decoder(self) -> Callable[[int], str]:
        """Turns ids into text one at a time, holding back bytes of a character not yet complete."""
        stream = DecodeStream(skip_special_tokens=False)
        return lambda i: stream.step(self.tokenizer, int(i)) or ""


def check_vocab_options(kind: str, vocab_size: int | None, min_frequency: int) -> None:
    if kind not in KINDS:
        raise OptionError(f"tokenizer must be char, word or bpe, not {kind!r}")
    if kind == "char" and vocab_size is not None:
        raise OptionError("vocab-size applies to --tokenizer word or bpe; a character vocabulary holds every character of the text")
    smallest = 2 if kind == "word" else 257
    if vocab_size is not None and vocab_size < smallest:
        raise OptionError(f"vocab-size must be at least {smallest} for --tokenizer {kind}, not {vocab_size}")
    if min_frequency < 1:
        raise OptionError(f"min-frequency must be at least 1, not {min_frequency}")


WORD_END = re.compile(r"\S(?=\s)")  # a non-space before a space: no pre-token of WORD_PATTERN runs across it


def word_boundaries(blocks: Iterable[str], size: int = 1 << 20) -> Iterator[str]:
    """The text of blocks in pieces of about size characters, each ending where a word ends before a space.

    The pre-tokenizer finds the same words in the pieces as in the whole text, so training on them and
    encoding them give what the whole would: every word, space run and mark ends at such a point.
    """
    held: list[str] = []
    length = 0
    for block in blocks:
        held.append(block)
        length += len(block)
        if length < size:
            continue
        text = "".join(held)
        cut = _last_word_end(text)
        if cut is None:
            held, length = [text], len(text)
            continue
        yield text[:cut]
        held, length = [text[cut:]], len(text) - cut
    rest = "".join(held)
    if rest:
        yield rest


def _last_word_end(text: str) -> int | None:
    """Just after the last non-space that a space follows, looked for in the text's last part first."""
    for start in (max(0, len(text) - 4096), 0):
        ends = [m.end() for m in WORD_END.finditer(text, start)]
        if ends:
            return ends[-1]
    return None
