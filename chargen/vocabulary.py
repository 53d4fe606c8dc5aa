"""Vocabularies: what every kind offers (`Vocab`), the character one, and the one record all are kept in.

A vocabulary's record is a JSON entry and the files it names: `{"type": "char", "chars": [...]}` with no
files, or `{"type": "word" | "bpe", "file": "tokenizer.json"}` with that file. A checkpoint keeps the entry
in config.json and the files beside it; the encoded-text cache keeps both in its .npz. Either reads it
back through `from_record`, which refuses in one line any record chargen would not write.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from .errors import ChargenError
from .tokenizer import DEFAULT_VOCAB_SIZE, KINDS, TOKENIZER_FILE, TokenVocabulary, check_vocab_options, compact_dtype

Record = tuple[dict, dict[str, bytes]]  # the JSON entry, and the files it names by name
RECORD_FILES = (TOKENIZER_FILE,)  # every file a record may name: a checkpoint removes those its new vocabulary does not


class Vocab(Protocol):
    """What a model's vocabulary offers, whatever its kind: ids for text, text for ids, and its record."""

    kind: str  # "char", "word" or "bpe"

    def __len__(self) -> int: ...

    def __eq__(self, other: object) -> bool: ...

    @property
    def dtype(self) -> np.dtype:
        """The smallest integer type that holds every id."""

    @property
    def token_texts(self) -> list[str]:
        """Each token as text, by id."""

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """The text as ids; what names the text in an error (a prompt, a file)."""

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str: ...

    def stream_decoder(self) -> Callable[[int], str]:
        """Turns ids into text one at a time, as sampling makes them."""

    def to_record(self) -> Record:
        """The entry and files from_record reads back into an equal vocabulary."""


def _codepoints(text: str) -> np.ndarray:
    """The text as an array of Unicode code points, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


CHUNK = 1 << 22  # characters converted at a time: large texts never exist as one array of code points
OUTSIDE = 255  # in the Latin-1 table, a character outside a vocabulary of at most 255 characters


def _latin1(text: str) -> list[np.ndarray] | None:
    """A text of Latin-1 characters only (most European text) as one array of its byte codes, at the cost of a copy; else None."""
    try:
        return [np.frombuffer(text.encode("latin-1"), dtype=np.uint8)]
    except UnicodeEncodeError:
        return None


def _codepoint_chunks(text: str) -> Iterator[np.ndarray]:
    for start in range(0, len(text), CHUNK):
        yield _codepoints(text[start : start + CHUNK])


def characters_of(texts: Iterable[str]) -> list[str]:
    """Every character that occurs in the texts, sorted by code point."""
    counts = np.zeros(0, dtype=np.int64)
    for text in texts:
        for codes in _latin1(text) or _codepoint_chunks(text):
            chunk = np.bincount(codes)
            if len(chunk) > len(counts):
                counts = np.pad(counts, (0, len(chunk) - len(counts)))
            counts[: len(chunk)] += chunk
    return [chr(c) for c in np.flatnonzero(counts)]


class Vocabulary:
    """The characters a model knows, in a fixed order: id i stands for chars[i]."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        if not chars or len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ChargenError("a vocabulary must be a non-empty list of distinct single characters")
        self.chars = list(chars)
        codes = _codepoints("".join(self.chars)).astype(np.int64)
        self._lookup = np.full(int(codes.max()) + 1, -1, dtype=np.int32)  # int32: a gather half as wide as int64
        self._lookup[codes] = np.arange(len(codes))
        self._chars_array = np.array(self.chars)
        latin = self._lookup[:256] if len(self.chars) <= OUTSIDE else None  # ids of the Latin-1 characters, for bytes.translate
        self._latin1_ids = None if latin is None else bytes(np.pad(np.where(latin < 0, OUTSIDE, latin), (0, 256 - len(latin)), constant_values=OUTSIDE).astype(np.uint8))

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """Every character that occurs in the text, sorted by code point."""
        return cls.from_texts([text])

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """Every character that occurs in the texts (a text read block by block), sorted by code point."""
        return cls(characters_of(texts))

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

    def to_record(self) -> Record:
        """The characters listed in the entry itself: no files."""
        return {"type": self.kind, "chars": self.chars}, {}

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of text that are not in the vocabulary, in order of appearance."""
        codes = _codepoints(text)
        outside = codes >= len(self._lookup)
        missing = outside.copy()
        missing[~outside] = self._lookup[codes[~outside]] < 0
        return list(dict.fromkeys(chr(c) for c in codes[missing]))

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """The text as a compact array of ids; unknown characters raise a ChargenError naming them."""
        if self._latin1_ids is not None:  # a text of Latin-1 characters only maps byte to id through bytes.translate, at memory speed
            try:
                translated = text.encode("latin-1").translate(self._latin1_ids)
            except UnicodeEncodeError:
                translated = None
            if translated is not None and OUTSIDE not in translated:
                return np.frombuffer(bytearray(translated), dtype=np.uint8)
        ids = np.empty(len(text), dtype=self.dtype)
        for start, codes in zip(range(0, len(text), CHUNK), _codepoint_chunks(text)):
            known = len(codes) == 0 or int(codes.max()) < len(self._lookup)
            looked = self._lookup[codes] if known else None
            if not known or int(looked.min(initial=0)) < 0:
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


def build_vocabulary(text: str, tokenizer: str = "char", vocab_size: int | None = None, min_frequency: int = 2) -> Vocab:
    """A character vocabulary, or a word or BPE vocabulary trained on the text by `tokenizers`."""
    return vocabulary_of([text], tokenizer, vocab_size, min_frequency)


def vocabulary_of(texts: Iterable[str], tokenizer: str = "char", vocab_size: int | None = None, min_frequency: int = 2) -> Vocab:
    """The vocabulary of a text given in pieces, as build_vocabulary makes it of the whole: word and BPE pieces must
    part where the text's words part (tokenizer.word_boundaries)."""
    check_vocab_options(tokenizer, vocab_size, min_frequency)
    if tokenizer == "char":
        return Vocabulary.from_texts(texts)
    return TokenVocabulary.train(tokenizer, texts, vocab_size or DEFAULT_VOCAB_SIZE[tokenizer], min_frequency)


def from_record(entry: object, read_file: Callable[[str], str], where: str = "the record", shown: Callable[[str], str] = str) -> Vocab:
    """The vocabulary a record describes, once it is found to be one chargen writes: the one check of a vocabulary read back.

    read_file(name) gives the text of a file the entry names (its own errors pass through); errors name the entry
    as where, and a file as shown(name).
    """
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in KINDS:
        raise ChargenError(f"{where} lacks a valid vocabulary entry (its type must be char, word or bpe, not {kind!r})")
    if kind == "char":
        return _characters(where, entry.get("chars"))
    if entry.get("file") != TOKENIZER_FILE:
        raise ChargenError(f"{where}: a {kind} vocabulary is the {TOKENIZER_FILE} beside it, not {entry.get('file')!r}")
    text = read_file(TOKENIZER_FILE)
    try:
        return TokenVocabulary.from_json(kind, text)  # which refuses a tokenizer.json not of the shape chargen writes
    except ChargenError as e:
        raise ChargenError(f"{shown(TOKENIZER_FILE)} is not a readable tokenizer ({e})") from None


def _characters(where: str, chars: object) -> Vocabulary:
    """A character vocabulary lists Unicode scalar values, one each: a lone surrogate could never be written out."""
    if not isinstance(chars, list):
        raise ChargenError(f"{where}: the vocabulary's chars must be a list of characters")
    for char in chars:
        if not (isinstance(char, str) and len(char) == 1 and not 0xD800 <= ord(char) <= 0xDFFF):
            raise ChargenError(f"{where}: the vocabulary holds {char!r}, which is not one Unicode character")
    try:
        return Vocabulary(chars)
    except ChargenError as e:
        raise ChargenError(f"{where}: {e}") from None
