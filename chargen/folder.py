"""A checkpoint folder on disk: held by one run at a time, and its files replaced together or not at all.

A save writes every new file under a temporary name first, then a small journal naming them, then
renames them into place and removes the journal:

    write .model.safetensors.x1.tmp, .config.json.x2.tmp, ...   (a kill here: the old set, whole)
    write .commit.json  {"model.safetensors": ".model.safetensors.x1.tmp", ...}
    rename each into place                                      (a kill here: the journal finishes it)
    remove .commit.json

So a kill at any instant leaves the old checkpoint or the new one. Readers look through a journal
left by a killed save (`current`); the next run to hold the folder finishes it (`recover`).
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ChargenError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None

LOCK = ".lock"
JOURNAL = ".commit.json"
UMASK = os.umask(0)
os.umask(UMASK)


def write_temporary(folder: Path, name: str, data: bytes) -> Path:
    """data in a new hidden file of folder, flushed to the disk; the caller renames or removes it."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # not on Windows before Python 3.13
            os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes files private; checkpoints follow the user's umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a kill leaves the old file whole."""
    tmp = write_temporary(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sync(folder: Path) -> None:
    """Make the folder's renames durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit(folder: Path, files: dict[str, bytes], remove: tuple[str, ...] = ()) -> None:
    """Replace the named files of folder (and remove others) as one change; an error leaves the folder as it was."""
    written: dict[str, str] = {}
    try:
        for name, data in files.items():
            written[name] = write_temporary(folder, name, data).name
        write_atomically(folder / JOURNAL, json.dumps({"write": written, "remove": list(remove)}).encode())
    except BaseException:
        for tmp in written.values():
            (folder / tmp).unlink(missing_ok=True)
        raise
    _sync(folder)
    _finish(folder, written, remove)


def _finish(folder: Path, written: dict[str, str], remove: list[str] | tuple[str, ...]) -> None:
    for name, tmp in written.items():
        if (folder / tmp).exists():
            os.replace(folder / tmp, folder / name)
    for name in remove:
        (folder / name).unlink(missing_ok=True)
    _sync(folder)
    (folder / JOURNAL).unlink(missing_ok=True)


JOURNAL_LIMIT = 1 << 16  # a journal names a few files: anything larger, or not a regular file, is not one


def _journal(folder: Path) -> dict | None:
    path = folder / JOURNAL
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_size > JOURNAL_LIMIT:
            return None
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("write"), dict) or not isinstance(entry.get("remove"), list):
        return None
    names = [*entry["write"], *entry["write"].values(), *entry["remove"]]
    if not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        return None
    return entry


def current(folder: Path, name: str) -> Path:
    """Where a reader finds the newest whole version of folder/name, a save cut short by a kill included."""
    entry = _journal(folder)
    if entry is not None:
        tmp = entry["write"].get(name)
        if tmp is not None and (folder / tmp).is_file():
            return folder / tmp
        if name in entry["remove"]:
            return folder / f".{name}.removed"  # absent, as the finished save leaves it
    return folder / name


def recover(folder: Path) -> None:
    """Finish a save a kill cut short and remove the temporary files of unfinished ones (the folder must be held)."""
    entry = _journal(folder)
    if entry is not None:
        _finish(folder, entry["write"], entry["remove"])
    (folder / JOURNAL).unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(folder: Path) -> Iterator[None]:
    """Keep other chargen runs out of folder while this one writes it; a run already there is a ChargenError."""
    path = folder / LOCK
    try:
        lock = open(path, "a+", encoding="utf-8")
    except OSError as e:
        raise ChargenError(f"cannot write to {folder} ({e.strerror})") from None
    with lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.seek(0)
                holder = lock.read().strip() or "unknown"
                raise ChargenError(
                    f"{folder} is in use by another chargen run (process {holder}): wait for it to end, or choose another --out"
                ) from None
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            write_temporary(folder, "write-test", b"").unlink()
        except OSError as e:
            raise ChargenError(f"cannot write to {folder} ({e.strerror})") from None
        recover(folder)
        yield
