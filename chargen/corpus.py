"""Reading a text, encoding its characters, and cutting it into lanes for truncated BPTT."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ChargenError, OptionError
from .tokenizer import DEFAULT_VOCAB_SIZE, TokenVocabulary, check_vocab_options, compact_dtype

BOM = "\ufeff"


def read_text(path: str | Path, encoding: str = "utf-8", keep_newlines: bool = False) -> str:
    """Read a whole text file; decoding and line-ending problems become one-line ChargenErrors."""
    path = Path(path)
    if not path.exists():
        raise ChargenError(f"{path}: no such file")
    if path.is_dir():
        raise ChargenError(f"{path} is a directory, not a text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ChargenError(f"{path}: cannot read it ({e.strerror})") from None
    if not raw:
        raise ChargenError(f"{path} is empty")
    ascii_newlines = _ascii_compatible(encoding)
    if not keep_newlines and ascii_newlines:  # on the bytes: one copy of a large text fewer than on the str
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    body = memoryview(raw)
    if _is_utf8(encoding) and raw.startswith(BOM.encode()):
        body = body[len(BOM.encode()) :]  # dropped before decoding: slicing a large str would copy it
    try:
        text = str(body, encoding)
    except LookupError:
        raise ChargenError(f"unknown text encoding {encoding!r}") from None
    except UnicodeDecodeError as e:
        hint = "; if it is text, name its encoding with --encoding" if _is_utf8(encoding) else ""
        raise ChargenError(f"{path} is not valid {encoding} text: {_bad_byte(path, encoding)}{hint}") from None
    if text.startswith(BOM):
        text = text[1:]
    nul = text.find("\x00")
    if nul >= 0:
        raise ChargenError(f"{path} looks binary, not text: NUL character at position {nul}")
    if not keep_newlines and not ascii_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise ChargenError(f"{path} holds no text")
    return text


def _bad_byte(path: Path, encoding: str) -> str:
    """Where the file itself stops decoding (the text read may have had its line endings changed)."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as e:
        return f"byte 0x{raw[e.start]:02x} at offset {e.start}"
    return "undecodable bytes"


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8")


def _ascii_compatible(encoding: str) -> bool:
    """Whether bytes 0x0a and 0x0d always mean \\n and \\r in this encoding (UTF-8, Latin-1, ..., not UTF-16)."""
    try:
        return "\r\n".encode(encoding) == b"\r\n" and not encoding.lower().replace("_", "-").startswith(("utf-16", "utf-32"))
    except LookupError:
        return False


def _codepoints(text: str) -> np.ndarray:
    """The text as an array of Unicode code points, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


CHUNK = 1 << 22  # characters converted at a time: large texts never exist as one array of code points


def _codepoint_chunks(text: str) -> Iterator[np.ndarray]:
    for start in range(0, len(text), CHUNK):
        yield _codepoints(text[start : start + CHUNK])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Vocabulary:
    """The characters a model knows, in a fixed order: id i stands for chars[i]."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        if not chars or len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ChargenError("a vocabulary must be a non-empty list of distinct single characters")
        self.chars = list(chars)
        codes = _codepoints("".join(self.chars)).astype(np.int64)
        self._lookup = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        self._lookup[codes] = np.arange(len(codes))
        self._chars_array = np.array(self.chars)

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """Every character that occurs in the text, sorted by code point."""
        counts = np.zeros(0, dtype=np.int64)
        for codes in _codepoint_chunks(text):
            chunk = np.bincount(codes)
            if len(chunk) > len(counts):
                counts = np.pad(counts, (0, len(chunk) - len(counts)))
            counts[: len(chunk)] += chunk
        return cls([chr(c) for c in np.flatnonzero(counts)])

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.chars == other.chars

    @property
    def dtype(self) -> np.dtype:
        return compact_dtype(len(self))

    @property
    def token_texts(self) -> list[str]:
        return self.chars

    def stream_decoder(self) -> Callable[[int], str]:
        return lambda i: self.chars[int(i)]

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of text that are not in the vocabulary, in order of appearance."""
        codes = _codepoints(text)
        outside = codes >= len(self._lookup)
        missing = outside.copy()
        missing[~outside] = self._lookup[codes[~outside]] < 0
        return list(dict.fromkeys(chr(c) for c in codes[missing]))

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """The text as a compact array of ids; unknown characters raise a ChargenError naming them."""
        ids = np.empty(len(text), dtype=self.dtype)
        for start, codes in zip(range(0, len(text), CHUNK), _codepoint_chunks(text)):
            known = codes < len(self._lookup)
            looked = self._lookup[np.where(known, codes, 0)]
            if not known.all() or (looked < 0).any():
                unknown = self.unknown(text)
                shown = ", ".join(repr(c) for c in unknown[:10])
                more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
                raise ChargenError(f"the {what} has characters the model never saw: {shown}{more}")
            ids[start : start + len(codes)] = looked
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.cpu().numpy()
        return "".join(self._chars_array[np.asarray(ids, dtype=np.int64)])


def build_vocabulary(text: str, tokenizer: str = "char", vocab_size: int | None = None, min_frequency: int = 2) -> Vocabulary | TokenVocabulary:
    """A character vocabulary, or a word or BPE vocabulary trained on the text by `tokenizers`."""
    check_vocab_options(tokenizer, vocab_size, min_frequency)
    if tokenizer == "char":
        return Vocabulary.from_text(text)
    return TokenVocabulary.train(tokenizer, text, vocab_size or DEFAULT_VOCAB_SIZE[tokenizer], min_frequency)


@dataclass
class Corpus:
    """An encoded text with its vocabulary, split into a training head and a validation tail.

    The split is made on characters, so models of every tokenizer hold out the same text, and the
    character counts turn bits per token into bits per character.
    """

    vocab: Vocabulary | TokenVocabulary
    train: np.ndarray
    val: np.ndarray
    train_chars: int
    val_chars: int

    @classmethod
    def from_text(
        cls, text: str, val_fraction: float = 0.05, tokenizer: str = "char", vocab_size: int | None = None, min_frequency: int = 2
    ) -> Corpus:
        """The vocabulary comes from the whole text, so characters seen only in validation are known."""
        if not 0 < val_fraction < 1:
            raise OptionError(f"val-fraction must be between 0 and 1 (exclusive), not {val_fraction}")
        n_val = int(round(len(text) * val_fraction))
        if n_val < 2 or len(text) - n_val < 2:
            raise ChargenError(f"the text has {len(text)} characters: too short to split into training and validation")
        vocab = build_vocabulary(text, tokenizer, vocab_size, min_frequency)
        if tokenizer == "char":  # one encoding, split as views
            data = vocab.encode(text)
            train, val = data[:-n_val], data[-n_val:]
        else:
            train, val = vocab.encode(text[:-n_val]), vocab.encode(text[-n_val:])
        if len(train) < 2 or len(val) < 2:
            raise ChargenError(f"the text has {len(train) + len(val)} tokens: too short to split into training and validation")
        return cls(vocab, train, val, len(text) - n_val, n_val)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        val_fraction: float = 0.05,
        encoding: str = "utf-8",
        keep_newlines: bool = False,
        cache: bool = False,
        tokenizer: str = "char",
        vocab_size: int | None = None,
        min_frequency: int = 2,
    ) -> Corpus:
        """The corpus of a text file; with cache, a second call with the same file and options skips encoding."""
        vocab_options = {"tokenizer": tokenizer, "vocab_size": vocab_size, "min_frequency": min_frequency}
        if not cache or not Path(path).is_file():  # read_text explains what is wrong with the path
            return cls.from_text(read_text(path, encoding, keep_newlines), val_fraction, **vocab_options)
        options = {"val_fraction": val_fraction, "encoding": encoding, "keep_newlines": keep_newlines, **vocab_options}
        key = hashlib.sha256(json.dumps([CACHE_FORMAT, file_sha256(Path(path)), options], sort_keys=True).encode()).hexdigest()[:32]
        cached = cache_folder() / f"{key}.npz"
        if cached.is_file():
            try:
                return cls.load(cached)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is rebuilt
        corpus = cls.from_file(path, val_fraction, encoding, keep_newlines, **vocab_options)
        corpus.save(cached)
        return corpus

    def save(self, path: Path) -> None:
        """Arrays and vocabulary in one .npz, written to a temporary file and renamed into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(self.vocab, Vocabulary):
            vocab = {"type": "char", "chars": self.vocab.chars}
        else:
            vocab = {"type": self.vocab.kind, "tokenizer": self.vocab.to_json()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, train=self.train, val=self.val, chars=np.array([self.train_chars, self.val_chars]), vocab=np.array(json.dumps(vocab)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Corpus:
        with np.load(path, allow_pickle=False) as f:
            vocab = json.loads(str(f["vocab"]))
            if vocab["type"] == "char":
                vocabulary = Vocabulary(vocab["chars"])
            else:
                vocabulary = TokenVocabulary.from_json(vocab["type"], vocab["tokenizer"])
            train_chars, val_chars = (int(n) for n in f["chars"])
            return cls(vocabulary, f["train"], f["val"], train_chars, val_chars)


CACHE_FORMAT = 1


def cache_folder() -> Path:
    """Where encoded corpora are kept between runs: $XDG_CACHE_HOME/chargen, else ~/.cache/chargen."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chargen"


def lanes(data: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a stream into batch_size contiguous lanes; the targets are the inputs shifted by one."""
    lane_len = (len(data) - 1) // batch_size
    if lane_len < 1:
        raise ChargenError(f"{len(data)} characters cannot fill {batch_size} lanes")
    stream = torch.from_numpy(data)
    inputs = stream[: batch_size * lane_len].view(batch_size, lane_len)
    targets = stream[1 : batch_size * lane_len + 1].view(batch_size, lane_len)
    return inputs, targets


def windows(inputs: torch.Tensor, targets: torch.Tensor, seq_len: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive seq_len-wide windows of every lane, as int64 batches; the last may be narrower."""
    for i in range(start, inputs.size(1), seq_len):
        yield inputs[:, i : i + seq_len].long(), targets[:, i : i + seq_len].long()
