"""Reading a text file, encoding it with a vocabulary of characters, words or subwords, and cutting it into lanes for truncated BPTT."""
from __future__ import annotations

import codecs
import hashlib
import os
import stat
import sys

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .config import CorpusOptions
from .errors import ChargenError
from .vocabulary import Vocab, Vocabulary, build_vocabulary  # noqa: F401 (Vocabulary: chargen.corpus.Vocabulary stays)

BOM = "\ufeff"
HEAD = 1 << 16  # bytes read first: binary content shows there, before a large file (or /dev/zero) is read whole


BLOCK = 1 << 20  # bytes decoded at a time: no text is ever held whole to be read


class NotText(ChargenError):
    """A file that is not text in the encoding given: binary (a NUL), or bytes that do not decode."""


def read_text(path: str | Path, encoding: str = "utf-8", keep_newlines: bool = False) -> str:
    """Read a whole text file; decoding and line-ending problems become one-line ChargenErrors."""
    text = "".join(text_blocks(path, encoding, keep_newlines))
    if not text:
        raise ChargenError(f"{path} holds no text")
    return text


def text_blocks(path: str | Path, encoding: str = "utf-8", keep_newlines: bool = False) -> Iterator[str]:
    """A text file as it is read, block by block: decoded, its BOM dropped and (unless kept) its line endings made \\n.

    A bad byte or a NUL is refused when its block is reached, naming the file's own byte offset or the
    text's character position, so a large binary file is refused without being read whole.
    """
    path = Path(path)
    with _open_text(path, encoding, keep_newlines) as f:
        decoder = codecs.getincrementaldecoder(encoding)()
        fed = chars = 0  # bytes given to the decoder, characters yielded
        held = ""  # a last \r waits for the next block: it may be half of a \r\n
        while True:
            raw = f.read(BLOCK)
            pending = decoder.getstate()[0]  # bytes of a character the last block cut, decoded with this one
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise _not_text(path, encoding, pending + raw, e.start, fed - len(pending)) from None
            fed += len(raw)
            if chars == 0 and not held and text.startswith(BOM):
                text = text[1:]
            if not keep_newlines:
                text = held + text
                held = "\r" if raw and text.endswith("\r") else ""
                text = (text[:-1] if held else text).replace("\r\n", "\n").replace("\r", "\n")
            _refuse_nul(path, text, chars)
            chars += len(text)
            if text:
                yield text
            if not raw:
                return


FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular(path: Path, mode: int) -> None:
    """Only a regular file is read: opening a FIFO blocks until a writer comes, and a device may never end."""
    if stat.S_ISDIR(mode):
        raise ChargenError(f"{path} is a directory, not a text file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in FILE_KINDS if test(mode)), "not a file")
        raise ChargenError(f"{path} is not a regular file ({kind}): chargen reads text files")


def open_regular(path: Path) -> BinaryIO:
    """The file opened for reading, once os.stat (following links) says it is a regular file; checked again once open."""
    with _explained(path):
        mode = os.stat(path).st_mode
    _check_regular(path, mode)
    with _explained(path):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))  # never blocks
    f = os.fdopen(fd, "rb")
    try:
        _check_regular(path, os.fstat(fd).st_mode)  # the path may have been replaced between the stat and the open
    except ChargenError:
        f.close()
        raise
    return f


@contextmanager
def _explained(path: Path) -> Iterator[None]:
    """What the system says about a path, as one line."""
    try:
        yield
    except FileNotFoundError:
        raise ChargenError(f"{path}: no such file") from None
    except OSError as e:
        raise ChargenError(f"{path}: cannot read it ({e.strerror})") from None
    except ValueError:  # a NUL in the name
        raise ChargenError(f"{str(path)!r} is not a possible file name") from None


def check_start(path: str | Path, encoding: str = "utf-8", keep_newlines: bool = False) -> None:
    """Refuse what read_text refuses at once (not a regular file, a first block that is not text) without reading the rest."""
    _open_text(Path(path), encoding, keep_newlines).close()


def _open_text(path: Path, encoding: str, keep_newlines: bool) -> BinaryIO:
    """The file opened at its start, once its first block is found to be text."""
    _check_encoding(encoding)
    f = open_regular(path)
    try:
        head = f.read(HEAD)
        if not head:
            raise ChargenError(f"{path} is empty")
        _check_head(path, head, encoding, keep_newlines)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


def _check_encoding(encoding: str) -> None:
    """An unknown encoding is named before any file is opened."""
    try:
        "".encode(encoding)  # also refuses codecs that are not text encodings (base64, rot13)
    except LookupError:
        raise ChargenError(f"unknown text encoding {encoding!r}") from None


def _check_head(path: Path, head: bytes, encoding: str, keep_newlines: bool) -> None:
    """Refuse a file whose first block is not text (a NUL, an undecodable byte) before the rest of it is read."""
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(head)  # not final: a character cut at the block's end waits
    except UnicodeDecodeError as e:
        raise _not_text(path, encoding, head, e.start) from None
    _refuse_nul(path, _tidy(text, newlines=not keep_newlines))


def _tidy(text: str, newlines: bool) -> str:
    """The text without its byte order mark and, if asked, with \\r\\n and \\r made \\n."""
    if text.startswith(BOM):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n") if newlines else text


def read_prompt(path: str | Path) -> str:
    """A prompt too long for a command line: a text file read as corpora are (UTF-8, its BOM dropped, line endings
    made \\n), or standard input for "-"."""
    if str(path) != "-":
        return read_text(path)
    try:
        return _tidy(sys.stdin.buffer.read().decode("utf-8"), True)
    except UnicodeDecodeError as e:
        raise ChargenError(f"standard input is not valid UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start}") from None


def _refuse_nul(path: Path, text: str, before: int = 0) -> None:
    """A NUL is no character of a text: the file is binary (position counts from the text's start, before characters in)."""
    nul = text.find("\x00")
    if nul >= 0:
        raise NotText(f"{path} looks binary, not text: NUL character at position {before + nul}")


def _not_text(path: Path, encoding: str, raw: bytes, at: int, offset: int = 0) -> NotText:
    """The error naming raw[at], the byte that does not decode; raw starts at the file's byte offset."""
    hint = "; if it is text, name its encoding with --encoding" if _is_utf8(encoding) else ""
    return NotText(f"{path} is not valid {encoding} text: byte 0x{raw[at]:02x} at offset {offset + at}{hint}")


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8")


DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime in ns) -> sha256, for this process


def file_sha256(path: str | Path) -> str:
    """The sha256 of a regular file's bytes (anything else is refused, as read_text refuses it).

    Hashed once per version of the file (its size and modification time) in a process: a run needs the
    digest for its cache entry and for its record, and a large text takes seconds to hash.
    """
    with open_regular(Path(path)) as f:
        info = os.fstat(f.fileno())
        key = (str(Path(path).resolve()), info.st_size, info.st_mtime_ns)
        if key not in DIGESTS:
            digest = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            DIGESTS[key] = digest.hexdigest()
    return DIGESTS[key]


@dataclass
class Corpus:
    """An encoded text with its vocabulary, split into a training head and a validation tail.

    The split is made on characters, so models of every tokenizer hold out the same text, and the
    character counts turn bits per token into bits per character.
    """

    vocab: Vocab
    train: np.ndarray
    val: np.ndarray
    train_chars: int
    val_chars: int

    @classmethod
    def from_text(
        cls,
        text: str,
        val_fraction: float = 0.05,
        tokenizer: str = "char",
        vocab_size: int | None = None,
        min_frequency: int = 2,
        vocab: Vocab | None = None,
    ) -> Corpus:
        """The vocabulary comes from the whole text, so characters seen only in validation are known, unless one is given
        (a fine-tuned model's, finetune.extend_vocabulary)."""
        CorpusOptions(val_fraction, tokenizer=tokenizer, vocab_size=vocab_size, min_frequency=min_frequency)  # checked as for a run
        n_val = validation_size(len(text), val_fraction)
        if vocab is None:
            vocab = build_vocabulary(text, tokenizer, vocab_size, min_frequency)
        if vocab.kind == "char":  # one encoding, split as views
            data = vocab.encode(text)
            train, val = data[:-n_val], data[-n_val:]
        else:
            train, val = vocab.encode(text[:-n_val]), vocab.encode(text[-n_val:])
        check_tokens(len(train), len(val))
        return cls(vocab, train, val, len(text) - n_val, n_val)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        val_fraction: float = 0.05,
        encoding: str = "utf-8",
        keep_newlines: bool = False,
        tokenizer: str = "char",
        vocab_size: int | None = None,
        min_frequency: int = 2,
    ) -> Corpus:
        """The corpus of a text file, read and encoded (cache.read_corpus keeps it for the next run)."""
        return cls.from_text(read_text(path, encoding, keep_newlines), val_fraction, tokenizer, vocab_size, min_frequency)


def validation_size(characters: int, val_fraction: float) -> int:
    """The characters held out at the end of a text for validation; a text too short to split is refused."""
    n_val = int(round(characters * val_fraction))
    if characters < 4:
        raise ChargenError(f"the text has {characters} characters: too short to split into training and validation")
    if n_val < 2 or characters - n_val < 2:
        raise ChargenError(
            f"the text has {characters:,} characters, too short to split by val-fraction {val_fraction:g} ({n_val:,} for validation, "
            f"{characters - n_val:,} for training; each needs at least 2): choose a val-fraction from {2 / characters:.2g} to {1 - 2 / characters:.4g}"
        )
    return n_val


def check_tokens(train: int, val: int) -> None:
    if train < 2 or val < 2:
        raise ChargenError(f"the text has {train + val} tokens: too short to split into training and validation")


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
