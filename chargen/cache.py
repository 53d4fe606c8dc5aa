"""The encoded-text cache: a corpus encoded once is kept between runs, checked whenever it is read, and bounded.

An entry is one .npz in $XDG_CACHE_HOME/chargen (else ~/.cache/chargen), named by the sha256 sums of the
text files and the options that shape their encoding. Its mtime is its last use: the least recently used entries
go first when the cache holds more than MAX_ENTRIES entries or MAX_BYTES bytes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import CorpusOptions
from .corpus import Corpus, file_sha256
from .sources import read_joined
from .errors import ChargenError, first_line, warn
from .finetune import extend_vocabulary
from .vocabulary import Vocab, build_vocabulary, from_record

CACHE_FORMAT = 4  # part of every key: entries of another layout are never read (and age out)
MAX_BYTES = 2 << 30
MAX_ENTRIES = 32
STALE_S = 3600  # a temporary file older than this was left by a run that was killed while saving
ENTRY, TEMPORARY = ".npz", ".npz.tmp"
FIELDS = {"format", "source", "vocab", "vocab_files", "chars", "train", "val", "checksum"}
UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)  # what numpy and zipfile raise on a damaged .npz


class DamagedEntry(ChargenError):
    """A cache entry that does not hold what it says: it is rebuilt, never used."""


@dataclass(frozen=True)
class Entry:
    """One entry as `chargen cache list` shows it."""

    path: Path
    size: int  # bytes on disk
    used: float  # last use, in seconds since the epoch (the file's mtime)
    source: str | None  # the text files it encodes, as they were named when the entry was made; None if unreadable


def folder() -> Path:
    """$XDG_CACHE_HOME/chargen if that is an absolute path (the XDG rule), else ~/.cache/chargen."""
    home = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(home) if os.path.isabs(home) else Path.home() / ".cache") / "chargen"


def entry_path(sources: Sequence[Path], options: dict) -> Path:
    """The entry of the files' contents (their sha256 sums, in order) encoded with these options."""
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, [file_sha256(s) for s in sources], options], sort_keys=True).encode()).hexdigest()[:32]
    return folder() / f"{key}{ENTRY}"


def read_corpus(
    paths: Sequence[Path], options: CorpusOptions, use_cache: bool = True, skip_non_text: bool = False, base: Vocab | None = None
) -> tuple[Corpus, list[Path]]:
    """The corpus of text files joined (sources.read_joined), and the files it holds: encoded from the cache when it
    holds a sound entry for their contents and the options (and the base vocabulary, fine-tuning), else encoded and kept."""
    text, kept = read_joined(paths, options, skip_non_text)

    def build() -> Corpus:
        vocab = None if base is None else extend_vocabulary(base, build_vocabulary(text, options.tokenizer, options.vocab_size, options.min_frequency))
        return Corpus.from_text(text, options.val_fraction, options.tokenizer, options.vocab_size, options.min_frequency, vocab)

    key = options.to_dict() if base is None else {**options.to_dict(), "base": base.to_record()[0], "base_files": _digests(base)}
    return (cached(kept, key, build) if use_cache else build()), kept


def _digests(vocab: Vocab) -> dict[str, str]:
    """The sha256 of each file of a vocabulary's record: a word base vocabulary's tokenizer.json is part of the key."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in vocab.to_record()[1].items()}


def cached(sources: Sequence[Path], options: dict, build: Callable[[], Corpus]) -> Corpus:
    """The corpus from its entry when that is sound, else built and kept; a cache that cannot be used is skipped with a warning."""
    path = entry_path(sources, options)
    corpus = _lookup(path)
    if corpus is None:
        corpus = build()
        _keep(corpus, path, sources)
    return corpus


def _lookup(path: Path) -> Corpus | None:
    """The entry's corpus, its use recorded; None when there is none, or it is damaged or unreadable (said on stderr)."""
    try:
        corpus = load(path)
    except (FileNotFoundError, NotADirectoryError):  # no entry, or no cache folder yet (saving says why if it cannot be made)
        return None
    except DamagedEntry as e:
        warn(f"{e}; it is rebuilt")
        return None
    except OSError as e:
        warn(f"cannot read the cache entry {path} ({e.strerror or e}): the text is encoded again")
        return None
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache is still used, only not reordered
    return corpus


def _keep(corpus: Corpus, path: Path, sources: Sequence[Path]) -> None:
    """Save the entry and bound the cache; a cache that cannot be written is skipped with a warning, and the run goes on."""
    if corpus.train.nbytes + corpus.val.nbytes > MAX_BYTES:
        return  # it would be removed again at once
    try:
        save(corpus, path, sources)
    except OSError as e:
        warn(f"cannot write the cache in {path.parent} ({e.strerror or e}): going on without it")
        return
    bound()


def save(corpus: Corpus, path: Path, sources: Sequence[Path] = ()) -> None:
    """The entry in one .npz with a checksum of its arrays, written to a temporary file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=TEMPORARY)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **sealed(corpus_arrays(corpus, sources)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # a full disk or a Ctrl-C leaves no partial file behind
        raise


def corpus_arrays(corpus: Corpus, sources: Sequence[Path]) -> dict[str, np.ndarray]:
    """Everything an entry holds but its checksum; the vocabulary is its record, as a checkpoint keeps it, in two JSON fields."""
    entry, files = corpus.vocab.to_record()
    return {
        "format": np.array(CACHE_FORMAT),
        "source": np.array(json.dumps([str(Path(s).absolute()) for s in sources])),
        "vocab": np.array(json.dumps(entry)),
        "vocab_files": np.array(json.dumps({name: data.decode() for name, data in files.items()})),
        "chars": np.array([corpus.train_chars, corpus.val_chars], dtype=np.int64),
        "train": corpus.train,
        "val": corpus.val,
    }


def sealed(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays with their checksum: a sha256 of every array's name, type, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return {**arrays, "checksum": np.array(digest.hexdigest())}


def load(path: Path) -> Corpus:
    """An entry's corpus, once its checksum, array types and sizes, and ids are found sound; else a DamagedEntry."""
    with open(path, "rb") as f:  # a missing or unreadable entry is an OSError, not damage
        try:
            with np.load(f, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except UNREADABLE as e:
            raise DamagedEntry(f"the cache entry {path} is damaged ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if set(arrays) != FIELDS:
        raise DamagedEntry(f"the cache entry {path} holds {', '.join(sorted(arrays)) or 'nothing'}, not {', '.join(sorted(FIELDS))}")
    without = {name: a for name, a in arrays.items() if name != "checksum"}
    if str(sealed(without)["checksum"]) != str(arrays["checksum"]):
        raise DamagedEntry(f"the cache entry {path} is damaged: its checksum differs")
    vocab = _vocabulary(path, arrays["vocab"], arrays["vocab_files"])
    chars = arrays["chars"]
    if chars.shape != (2,) or chars.dtype != np.int64:
        raise DamagedEntry(f"the cache entry {path} records its character counts as {chars.dtype}{list(chars.shape)}, not int64[2]")
    for name, count in zip(("train", "val"), chars.tolist()):
        _check_ids(path, name, arrays[name], count, vocab)
    return Corpus(vocab, arrays["train"], arrays["val"], *chars.tolist())


def _vocabulary(path: Path, entry: np.ndarray, files: np.ndarray) -> Vocab:
    """The vocabulary of the entry's record, checked by from_record as a checkpoint's is."""
    damaged = f"the cache entry {path} holds no vocabulary it can rebuild"
    try:
        record, texts = json.loads(str(entry)), json.loads(str(files))
    except (ValueError, RecursionError) as e:
        raise DamagedEntry(f"{damaged} (its record is not JSON: {first_line(e)})") from None

    def read_file(name: str) -> str:
        text = texts.get(name) if isinstance(texts, dict) else None
        if not isinstance(text, str):
            raise ChargenError(f"its record lacks {name}")
        return text

    try:
        return from_record(record, read_file, where="its record", shown=lambda name: f"its {name}")
    except ChargenError as e:
        raise DamagedEntry(f"{damaged} ({e})") from None


def _check_ids(path: Path, name: str, ids: np.ndarray, chars: int, vocab: Vocab) -> None:
    """ids are the vocabulary's type, as many as the characters they encode allow, and all in the vocabulary."""
    damaged = f"the cache entry {path} is damaged: its {name} ids"
    if ids.ndim != 1 or ids.dtype != vocab.dtype:
        raise DamagedEntry(f"{damaged} are {ids.dtype}{list(ids.shape)}, not a row of {vocab.dtype} for {len(vocab)} tokens")
    most = chars if vocab.kind == "char" else 4 * chars  # a word or BPE token is at least one UTF-8 byte; a character at most four
    if not 2 <= len(ids) <= most or (vocab.kind == "char" and len(ids) != chars):
        raise DamagedEntry(f"{damaged} are {len(ids):,} for {chars:,} characters")
    if int(ids.min()) < 0 or int(ids.max()) >= len(vocab):
        raise DamagedEntry(f"{damaged} run from {int(ids.min())} to {int(ids.max())}, outside a vocabulary of {len(vocab)}")


def entries() -> list[Entry]:
    """The cache's entries, the most recently used first."""
    found = [Entry(path, info.st_size, info.st_mtime, _source(path)) for path, info in _files(ENTRY)]
    return sorted(found, key=lambda entry: entry.used, reverse=True)


def _source(path: Path) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            sources = json.loads(str(npz["source"]))
    except (*UNREADABLE, RecursionError):
        return None
    if not isinstance(sources, list) or not sources:
        return None
    return str(sources[0]) + (f" and {len(sources) - 1:,} more" if len(sources) > 1 else "")


def clear() -> tuple[int, int]:
    """Remove every entry and leftover temporary file: how many files, and how many bytes, were freed."""
    files = freed = 0
    for path, info in _files(ENTRY) + _files(TEMPORARY):
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile by another run
        except OSError as e:
            raise ChargenError(f"cannot remove {path} ({e.strerror})") from None
        files, freed = files + 1, freed + info.st_size
    return files, freed


def bound() -> list[Entry]:
    """Remove the least recently used entries until the rest fit in MAX_BYTES and MAX_ENTRIES, and stale temporaries: the entries removed."""
    newest_first = entries()
    fitting = sum(1 for total in itertools.accumulate(entry.size for entry in newest_first) if total <= MAX_BYTES)
    removed = newest_first[min(fitting, MAX_ENTRIES) :]
    stale = [path for path, info in _files(TEMPORARY) if time.time() - info.st_mtime > STALE_S]
    for path in [entry.path for entry in removed] + stale:
        try:
            path.unlink()
        except OSError:
            pass  # removed meanwhile, or a cache we may read but not change: bounding is best effort
    return removed


def _files(suffix: str) -> list[tuple[Path, os.stat_result]]:
    """The cache's regular files (not links) whose names end in suffix, with their stat."""
    found = []
    for path in folder().glob(f"*{suffix}"):
        try:
            info = path.lstat()
        except OSError:
            continue  # removed meanwhile
        if stat.S_ISREG(info.st_mode):
            found.append((path, info))
    return found
