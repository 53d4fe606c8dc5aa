"""Corpora that are not text files, and an encoded-text cache that is damaged, unwritable or full.

Each bad corpus is one ChargenError line naming the file, found before the file is opened (a FIFO) or
after its first block (4 GB of NULs); each bad cache entry is rebuilt, and an unusable cache skipped.
"""
import errno
import json
import os
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from chargen import ChargenError, Corpus, cache, read_text
from chargen.cache import read_corpus
from chargen.config import CorpusOptions
from chargen.corpus import HEAD, file_sha256

from .conftest import TINY_TEXT


def fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo.txt")
    return tmp_path / "fifo.txt"


def link_to_fifo(tmp_path: Path) -> Path:
    (tmp_path / "link.txt").symlink_to(fifo(tmp_path))
    return tmp_path / "link.txt"


def unix_socket(tmp_path: Path) -> Path:
    here = os.getcwd()
    os.chdir(tmp_path)  # bound by a short relative name: a socket's path is limited to about 100 bytes
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind("socket.txt")
    finally:
        os.chdir(here)
    return tmp_path / "socket.txt"


def device(name: str):
    def make(tmp_path: Path) -> Path:
        if not Path(name).exists():
            pytest.skip(f"{name} is not here")
        return Path(name)

    return make


def sparse(head: bytes, size: int = 4 << 30):
    """A file of size bytes (4 GB by default) that takes no disk: head, then a hole read as NULs."""

    def make(tmp_path: Path) -> Path:
        path = tmp_path / "sparse.txt"
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(size)
        return path

    return make


def written(data: bytes):
    def make(tmp_path: Path) -> Path:
        (tmp_path / "c.txt").write_bytes(data)
        return tmp_path / "c.txt"

    return make


def dangling_link(tmp_path: Path) -> Path:
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nothing.txt")
    return tmp_path / "dangling.txt"


READERS = {
    "read_text": read_text,
    "file_sha256": file_sha256,
    "Corpus.from_file": lambda path: Corpus.from_file(path, 0.1),
    "Corpus.from_file cached": lambda path: read_corpus([path], CorpusOptions(0.1))[0],
}
TEXT_READERS = {name: read for name, read in READERS.items() if name != "file_sha256"}  # a sha256 takes any regular file

NOT_FILES = {  # every reader refuses these before opening them
    "a FIFO": (fifo, r"is not a regular file \(a FIFO\): chargen reads text files"),
    "a link to a FIFO": (link_to_fifo, r"is not a regular file \(a FIFO\)"),
    "a socket": (unix_socket, r"is not a regular file \(a socket\)"),
    "/dev/zero": (device("/dev/zero"), r"is not a regular file \(a character device\)"),
    "/dev/null": (device("/dev/null"), r"is not a regular file \(a character device\)"),
    "a directory": (lambda tmp_path: tmp_path, "is a directory, not a text file"),
    "a missing file": (lambda tmp_path: tmp_path / "missing.txt", "no such file"),
    "a dangling link": (dangling_link, "no such file"),
}

NOT_TEXT = {  # the text readers refuse these from their first block, or (a NUL further on) from the whole text
    "4 GB of NULs": (sparse(b""), "looks binary, not text: NUL character at position 0"),
    "text, then 4 GB of NULs": (sparse(b"abc\r\n"), "NUL character at position 4"),
    "an undecodable byte, then 4 GB of NULs": (sparse(b"ab\xff"), r"not valid utf-8 text: byte 0xff at offset 2"),
    "a NUL after the first block": (written(b"a\r\n" * HEAD + b"\x00"), f"NUL character at position {2 * HEAD}"),
    "an undecodable byte after the first block": (written(b"a\r\n" * HEAD + b"\xff"), f"byte 0xff at offset {3 * HEAD}"),
}


def outcome(reader, path: Path) -> BaseException | None:
    """What reader(path) raised, within ten seconds: a reader blocked on a FIFO is let go and the test fails."""
    raised = []

    def run() -> None:
        try:
            reader(path)
        except BaseException as e:  # handed to the test thread
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # a writer comes and goes: the blocked open returns
        pytest.fail(f"reading {path} hung")
    return raised[0] if raised else None


def assert_one_line_naming(error: BaseException | None, path: Path, message: str) -> None:
    assert isinstance(error, ChargenError), f"{error!r} is not a ChargenError"
    assert "\n" not in str(error)
    assert str(path) in str(error)
    assert re.search(message, str(error)), str(error)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", NOT_FILES)
def test_what_is_not_a_regular_file_is_refused_before_it_is_opened(tmp_path, case, reader):
    make, message = NOT_FILES[case]
    path = make(tmp_path)
    assert_one_line_naming(outcome(READERS[reader], path), path, message)


@pytest.mark.parametrize("reader", TEXT_READERS)
@pytest.mark.parametrize("case", NOT_TEXT)
def test_binary_content_is_refused_from_the_first_block(tmp_path, case, reader):
    make, message = NOT_TEXT[case]
    path = make(tmp_path)
    assert_one_line_naming(outcome(TEXT_READERS[reader], path), path, message)


@pytest.mark.parametrize("reader", READERS)
def test_a_link_to_a_regular_file_is_read(tmp_path, reader):
    (tmp_path / "text.txt").write_text(TINY_TEXT, encoding="utf-8")
    (tmp_path / "link.txt").symlink_to(tmp_path / "text.txt")
    assert outcome(READERS[reader], tmp_path / "link.txt") is None


# The cache


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own, and a text to cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "text.txt").write_text(TINY_TEXT, encoding="utf-8")
    return tmp_path / "cache" / "chargen"


def read(tmp_path: Path, val_fraction: float = 0.1, tokenizer: str = "char") -> Corpus:
    return read_corpus([tmp_path / "text.txt"], CorpusOptions(val_fraction, tokenizer=tokenizer))[0]


def same(a: Corpus, b: Corpus) -> bool:
    arrays = all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in ((a.train, b.train), (a.val, b.val)))
    return arrays and a.vocab == b.vocab and (a.train_chars, a.val_chars) == (b.train_chars, b.val_chars)


def only_entry(home: Path) -> Path:
    [entry] = home.glob("*.npz")
    return entry


def rewritten(change, reseal: bool = True):
    """Damage made by rewriting an entry's arrays: with its checksum made again to match, or the old one kept."""

    def damage(path: Path) -> None:
        with np.load(path) as npz:
            arrays = change({name: npz[name] for name in npz.files})
        if reseal:
            arrays = cache.sealed({name: a for name, a in arrays.items() if name != "checksum"})
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    return damage


def with_field(name: str, value):
    return lambda arrays: {**arrays, name: value(arrays[name]) if callable(value) else value}


def flipped(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {  # what is done to the entry, and what the warning says of it
    "cut in half": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "BadZipFile"),
    "emptied": (lambda p: p.write_bytes(b""), "damaged"),
    "overwritten": (lambda p: p.write_bytes(b"damaged"), "damaged"),
    "a byte flipped": (flipped, "damaged"),
    "an id altered": (rewritten(with_field("train", lambda ids: ids ^ 1), reseal=False), "its checksum differs"),
    "the checksum altered": (rewritten(with_field("checksum", np.array("0" * 64)), reseal=False), "its checksum differs"),
    "the checksum gone": (rewritten(lambda arrays: {k: a for k, a in arrays.items() if k != "checksum"}, reseal=False), "holds"),
    "ids outside the vocabulary": (rewritten(with_field("train", lambda ids: np.full_like(ids, 255))), "outside a vocabulary"),
    "ids of a wider type": (rewritten(with_field("train", lambda ids: ids.astype(np.int64))), "are int64"),
    "ids in two rows": (rewritten(with_field("val", lambda ids: np.stack([ids, ids]))), r"not a row of uint8"),
    "more ids than its characters allow": (rewritten(with_field("val", lambda ids: np.tile(ids, 30))), "for .* characters"),
    "character counts of another shape": (rewritten(with_field("chars", np.array([1, 2, 3]))), "character counts"),
    "an unreadable vocabulary": (rewritten(with_field("vocab", np.array("{"))), "no vocabulary"),
    "a vocabulary of repeated characters": (rewritten(with_field("vocab", np.array('{"type": "char", "chars": ["a", "a"]}'))), "no vocabulary"),
}


def tokenizer_json(change):
    """The entry's tokenizer.json, as its JSON is changed."""

    def files(field: np.ndarray) -> np.ndarray:
        texts = json.loads(str(field))
        data = json.loads(texts["tokenizer.json"])
        change(data)
        return np.array(json.dumps({**texts, "tokenizer.json": json.dumps(data)}))

    return rewritten(with_field("vocab_files", files))


TOKENIZER_DAMAGE = {  # a word entry's record, checked as a checkpoint's is (vocabulary.from_record)
    "no tokenizer.json": (rewritten(with_field("vocab_files", np.array("{}"))), "its record lacks tokenizer.json"),
    "files that are not JSON": (rewritten(with_field("vocab_files", np.array("{"))), "its record is not JSON"),
    "a tokenizer.json of another shape": (
        tokenizer_json(lambda t: t.__setitem__("normalizer", {"type": "Lowercase"})),
        r"its tokenizer.json is not a readable tokenizer \(its normalizer is not the one chargen builds\)",
    ),
    "a file other than tokenizer.json": (
        rewritten(with_field("vocab", np.array('{"type": "word", "file": "/etc/passwd"}'))),
        "its record: a word vocabulary is the tokenizer.json beside it, not '/etc/passwd'",
    ),
    "a lone surrogate": (rewritten(with_field("vocab", np.array('{"type": "char", "chars": ["a", "\\ud800"]}'))), "not one Unicode character"),
}


@pytest.mark.parametrize("tokenizer", ["char", "word"])
@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_entry_is_rebuilt_and_replaced(tmp_path, home, capsys, case, tokenizer):
    rebuilt_and_replaced(tmp_path, home, capsys, *DAMAGE[case], tokenizer)


@pytest.mark.parametrize("case", TOKENIZER_DAMAGE)
def test_a_damaged_vocabulary_record_is_rebuilt_and_replaced(tmp_path, home, capsys, case):
    rebuilt_and_replaced(tmp_path, home, capsys, *TOKENIZER_DAMAGE[case], "word")


def rebuilt_and_replaced(tmp_path: Path, home: Path, capsys, damage, said: str, tokenizer: str) -> None:
    """After the damage, reading warns once naming the entry and what is wrong with it, and the entry made again is sound."""
    fresh = read(tmp_path, tokenizer=tokenizer)
    entry = only_entry(home)
    damage(entry)
    capsys.readouterr()
    assert same(read(tmp_path, tokenizer=tokenizer), fresh)
    [warning] = capsys.readouterr().err.splitlines()
    assert warning.startswith("chargen: warning: ") and str(entry) in warning and warning.endswith("it is rebuilt")
    assert re.search(said, warning), warning
    assert same(cache.load(entry), fresh)  # replaced by a sound entry
    assert same(read(tmp_path, tokenizer=tokenizer), fresh) and not capsys.readouterr().err


def regular_file(tmp_path: Path) -> str:
    (tmp_path / "a file").write_text("not a folder")
    return str(tmp_path / "a file")


def chargen_a_file(tmp_path: Path) -> str:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "chargen").write_text("not a folder")
    return str(tmp_path / "home")


UNWRITABLE = {  # an XDG_CACHE_HOME in which no cache can be made
    "/dev/null": lambda tmp_path: "/dev/null",
    "a regular file": regular_file,
    "chargen in it a regular file": chargen_a_file,
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_unwritable_cache_is_skipped_with_a_warning(tmp_path, monkeypatch, capsys, case):
    (tmp_path / "text.txt").write_text(TINY_TEXT, encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", UNWRITABLE[case](tmp_path))
    for _ in range(2):  # never cached, said each time
        assert same(read(tmp_path), Corpus.from_file(tmp_path / "text.txt", 0.1))
        [warning] = capsys.readouterr().err.splitlines()
        assert warning.startswith("chargen: warning: cannot write the cache in ") and warning.endswith("going on without it")
        assert str(cache.folder()) in warning


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_cache_is_skipped_with_a_warning(tmp_path, home, capsys):
    home.mkdir(parents=True)
    home.chmod(0o500)
    try:
        assert same(read(tmp_path), Corpus.from_file(tmp_path / "text.txt", 0.1))
        assert "going on without it" in capsys.readouterr().err
    finally:
        home.chmod(0o700)


def test_a_full_disk_while_saving_leaves_no_partial_entry(tmp_path, home, monkeypatch, capsys):
    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache.np, "savez", no_room)
    assert same(read(tmp_path), Corpus.from_file(tmp_path / "text.txt", 0.1))
    assert "No space left on device" in capsys.readouterr().err
    assert list(home.iterdir()) == []


def test_entries_name_their_source_size_and_last_use(tmp_path, home):
    read(tmp_path, 0.1)
    read(tmp_path, 0.2)
    listed = cache.entries()
    assert sorted(e.path for e in listed) == sorted(home.glob("*.npz"))
    assert [e.used for e in listed] == sorted((e.used for e in listed), reverse=True)  # the most recent first
    for entry in listed:
        assert entry.size == entry.path.stat().st_size and entry.used == entry.path.stat().st_mtime
        assert entry.source == str(tmp_path / "text.txt")


def test_a_use_makes_an_entry_recent(tmp_path, home):
    read(tmp_path)
    entry = only_entry(home)
    os.utime(entry, (1000, 1000))
    read(tmp_path)
    assert entry.stat().st_mtime > 1000


def test_clear_removes_entries_and_leftovers(tmp_path, home):
    assert cache.clear() == (0, 0)  # no cache folder yet
    read(tmp_path, 0.1)
    read(tmp_path, 0.2)
    (home / "tmpx.npz.tmp").write_bytes(b"left by a kill")
    (home / "notes.txt").write_text("not the cache's")
    sizes = sum(p.stat().st_size for p in home.iterdir() if p.name != "notes.txt")
    assert cache.clear() == (3, sizes)
    assert [p.name for p in home.iterdir()] == ["notes.txt"] and cache.entries() == []


BOUNDS = {  # a bound, set small, and the entries (by val fraction) that stay
    "entries": ("MAX_ENTRIES", lambda size: 2),
    "bytes": ("MAX_BYTES", lambda size: int(2.5 * size)),
}


@pytest.mark.parametrize("case", BOUNDS)
def test_the_least_recently_used_entries_go_beyond_the_bound(tmp_path, home, monkeypatch, case):
    read(tmp_path, 0.1)
    first = only_entry(home)
    read(tmp_path, 0.2)
    read(tmp_path, 0.3)
    for age, path in enumerate(sorted(home.glob("*.npz"), key=lambda p: p != first)):  # the first is the oldest
        os.utime(path, (1000 + age, 1000 + age))
    name, bound = BOUNDS[case]
    monkeypatch.setattr(cache, name, bound(first.stat().st_size))
    read(tmp_path, 0.1)  # used again: now the most recent
    read(tmp_path, 0.4)  # saved: the cache is bounded
    assert len(cache.entries()) == 2 and first.exists()
    assert same(cache.load(first), read(tmp_path, 0.1))


def test_stale_temporaries_go_when_the_cache_is_bounded(tmp_path, home):
    read(tmp_path, 0.1)
    stale, fresh = home / "tmpa.npz.tmp", home / "tmpb.npz.tmp"
    stale.write_bytes(b"left by a kill")
    fresh.write_bytes(b"being written")
    os.utime(stale, (1000, 1000))
    read(tmp_path, 0.2)
    assert not stale.exists() and fresh.exists()


def test_an_entry_larger_than_the_whole_cache_is_not_kept(tmp_path, home, monkeypatch):
    monkeypatch.setattr(cache, "MAX_BYTES", 100)
    assert same(read(tmp_path), Corpus.from_file(tmp_path / "text.txt", 0.1))
    assert cache.entries() == []
