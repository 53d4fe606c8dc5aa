"""The files a corpus is made of: the files, folders and globs a user names, found in a fixed order, and their
texts joined into one, with the separator between documents.

A folder stands for every file under it, in the order of their paths, leaving out hidden files and folders
(names that start with a dot: .git, .DS_Store). Files that are not text stop the run, naming the file,
unless they are to be skipped: then each is named in a warning, and the corpus is the rest.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from .config import CorpusOptions
from .corpus import NotText, check_start, file_sha256, text_blocks
from .errors import ChargenError, check_types, warn

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class Source:
    """One text file of a corpus, as a run records it: where it is, and what it held."""

    path: str  # absolute
    sha256: str
    bytes: int | None = None  # None in records from before many files

    def __post_init__(self) -> None:
        check_types(self)

    @classmethod
    def of(cls, path: Path) -> Source:
        return cls(str(path.resolve()), file_sha256(path), path.stat().st_size)

    def to_json(self) -> dict:
        return asdict(self)


def names_of(corpus: str | Path | Sequence[str | Path]) -> list:
    """The Python API takes one name or several, as the command line does (each is checked to be a path by the caller)."""
    return list(corpus) if isinstance(corpus, (list, tuple)) else [corpus]


def find_files(names: Sequence[str | Path]) -> list[Path]:
    """The files named, the files under each folder named, and those each glob matches, in the order named, each once."""
    if not names:
        raise ChargenError("name a text file, a folder of them, or a glob to train on")
    found: dict[Path, None] = {}  # an ordered set: a file named twice (a.txt and *.txt) is read once
    for name in names:
        for path in _expand(str(name)):
            found.setdefault(path, None)
    return list(found)


def _expand(name: str) -> list[Path]:
    path = Path(name)
    if any(c in name for c in GLOB_CHARACTERS) and not path.exists():
        matches = sorted(glob.glob(name, recursive=True))
        if not matches:
            raise ChargenError(f"no file matches {name}")
        return [file for match in matches for file in (_walk(Path(match)) if Path(match).is_dir() else [Path(match)])]
    if path.is_dir():
        files = _walk(path)
        if not files:
            raise ChargenError(f"{path} holds no files to train on (hidden ones are left out)")
        return files
    return [path]


def _walk(folder: Path) -> list[Path]:
    """The regular files under folder, hidden ones left out, sorted by their paths."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(root, n) for n in names if not n.startswith(".") and os.path.isfile(os.path.join(root, n))]
    return sorted(files)


def check_texts(paths: Sequence[Path], options: CorpusOptions, skip_non_text: bool) -> list[Path]:
    """The paths whose first block is text; a file that is not stops the corpus, or is named in a warning and left out."""
    kept = []
    for path in paths:
        try:
            check_start(path, options.encoding, options.keep_newlines)
        except NotText as e:
            skip_or_stop(e, skip_non_text)
            continue
        except ChargenError as e:
            if "is empty" not in str(e) or len(paths) == 1:
                raise
            warn(f"{e}: left out")
            continue
        kept.append(path)
    if not kept:
        raise ChargenError(f"none of the {len(paths):,} files named is text in {options.encoding}")
    return kept


def read_joined(paths: Sequence[Path], options: CorpusOptions, skip_non_text: bool = False) -> tuple[str, list[Path]]:
    """The texts of the files joined by the separator, and the files they came from (those skipped left out)."""
    found = read_each(check_texts(paths, options, skip_non_text), options, skip_non_text, "".join)
    return options.separator.join(text for _, text, _ in found), [path for path, _, _ in found]


T = TypeVar("T")


def read_each(paths: Sequence[Path], options: CorpusOptions, skip_non_text: bool, read: Callable[[Iterable[str]], T]) -> list[tuple[Path, T, int]]:
    """read(blocks) of each file that holds text, with its path and its characters: a file found not to be text stops
    here or (skipping) is left out, and one that holds no text is left out, named in a warning."""
    found = []
    for path in paths:
        sizes: list[int] = []

        def counted(blocks: Iterable[str]) -> Iterator[str]:
            for block in blocks:
                sizes.append(len(block))
                yield block

        try:
            value = read(counted(text_blocks(path, options.encoding, options.keep_newlines)))
        except NotText as e:  # a NUL or a bad byte past the first block
            skip_or_stop(e, skip_non_text)
            continue
        if sizes:
            found.append((path, value, sum(sizes)))
        elif len(paths) == 1:
            raise ChargenError(f"{path} holds no text")
        else:
            warn(f"{path} holds no text: left out")
    if not found:
        raise ChargenError(f"none of the {len(paths):,} files named holds text")
    return found


def joined_blocks(paths: Sequence[Path], options: CorpusOptions) -> Iterator[str]:
    """The joined text of files already found to be text, block by block, as read_joined would make it whole."""
    for i, path in enumerate(paths):
        if i:
            yield options.separator
        yield from text_blocks(path, options.encoding, options.keep_newlines)


def skip_or_stop(error: NotText, skip: bool) -> None:
    """A file that is not text stops the corpus, or (skipping) is named in a warning."""
    if not skip:
        raise ChargenError(f"{error} (--skip-non-text leaves such files out)")
    warn(f"{error}: skipped")
