"""The texts users train on: known public-domain corpora by name, their download, and a file's statistics."""
from __future__ import annotations

import codecs
import hashlib
import re
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .folder import write_atomically
from .corpus import read_text
from .errors import ChargenError

FOLDER = Path("corpora")


@dataclass(frozen=True)
class KnownCorpus:
    name: str
    title: str
    url: str
    file: str  # its name under corpora/
    sha256: str | None  # of the file as downloaded; None where it has not been recorded


KNOWN = {
    c.name: c
    for c in [
        KnownCorpus(
            "war-and-peace", "Leo Tolstoy, War and Peace (Maude translation), Project Gutenberg #2600",
            "https://www.gutenberg.org/cache/epub/2600/pg2600.txt", "war_and_peace.txt", None,
        ),
        KnownCorpus(
            "shakespeare", "The Complete Works of William Shakespeare, Project Gutenberg #100",
            "https://www.gutenberg.org/cache/epub/100/pg100.txt", "shakespeare.txt", None,
        ),
    ]
}

GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.IGNORECASE | re.MULTILINE)
GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.IGNORECASE | re.MULTILINE)


def strip_gutenberg(text: str) -> str:
    """The book without Project Gutenberg's licence header and footer (the text as is when they are absent)."""
    start, end = GUTENBERG_START.search(text), GUTENBERG_END.search(text)
    body = text[start.end() if start else 0 : end.start() if end else len(text)]
    return body.strip("\r\n") + "\n"


def download(name: str, folder: Path = FOLDER, overwrite: bool = False, progress=None) -> Path:
    """Fetch a known corpus into folder, check its sha256, strip the Gutenberg header and footer.

    progress, if given, is called with (bytes so far, total bytes or None) as the download goes.
    """
    if name not in KNOWN:
        raise ChargenError(f"unknown corpus {name!r}: known ones are {', '.join(KNOWN)}")
    known = KNOWN[name]
    target = folder / known.file
    if target.exists() and not overwrite:
        raise ChargenError(f"{target} already exists: pass --overwrite to download it again")
    try:
        with urllib.request.urlopen(known.url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks, done = [], 0
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ChargenError(f"cannot download {known.url}: {reason} (is there a network connection?)") from None
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    if known.sha256 is not None and digest != known.sha256:
        raise ChargenError(f"{known.url} did not give the recorded file (sha256 {digest}, expected {known.sha256}); nothing was written")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ChargenError(f"{known.url} is not UTF-8 text (byte offset {e.start})") from None
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(target, strip_gutenberg(text).encode("utf-8"))
    return target


def resolve(corpus: str | Path) -> Path:
    """A path as given, or the file of a known corpus name (downloaded on first use)."""
    path = Path(corpus)
    if path.exists() or str(corpus) not in KNOWN:
        return path
    target = FOLDER / KNOWN[str(corpus)].file
    return target if target.exists() else download(str(corpus))


def stats(path: str | Path, encoding: str = "utf-8", val_fraction: float = 0.05) -> dict:
    """What a text holds, as chargen will read it: sizes, line endings, characters and their counts, the split."""
    path = Path(path)
    text = read_text(path, encoding, keep_newlines=True)
    raw = path.read_bytes()
    crlf = raw.count(b"\r\n")
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    counts = Counter(normalised)
    n_val = int(round(len(normalised) * val_fraction))
    return {
        "file": str(path),
        "bytes": len(raw),
        "encoding": encoding + (" with BOM" if raw.startswith(codecs.BOM_UTF8) and "8" in encoding else ""),
        "characters": len(normalised),
        "lines": normalised.count("\n") + (not normalised.endswith("\n")),
        "line_endings": {"\\r\\n": crlf, "lone \\r": raw.count(b"\r") - crlf, "\\n": raw.count(b"\n") - crlf},
        "distinct_characters": len(counts),
        "train_characters": len(normalised) - n_val,
        "val_characters": n_val,
        "counts": dict(counts.most_common()),
    }
