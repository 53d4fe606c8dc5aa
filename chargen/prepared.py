"""`chargen prepare`: a corpus of any size encoded once into a folder that training maps into memory.

    DIR/manifest.json     the source files (path, bytes, sha256), how they were read, the vocabulary's
                          entry, the split, and each ids file's token count and sha256
    DIR/train.bin         token ids of the training part, raw, in the smallest type the vocabulary fits
    DIR/val.bin           those of the validation part: the corpus's last val-fraction of characters
    DIR/tokenizer.json    for word and BPE vocabularies

Preparing streams: one pass over the files finds the vocabulary (and counts the characters, for the
split), a second encodes; neither holds more than a few blocks of text. Opening checks every ids file
against the manifest (its size, its sha256 and its largest id) in one streamed read, then maps it, so a
run reads only the lanes it trains on and a file changed or truncated since is named before any step.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .config import CorpusOptions
from .corpus import BLOCK, Corpus, check_tokens, validation_size
from .errors import ChargenError, check_types, first_line
from .folder import write_atomically
from .sources import Source, check_texts, find_files, joined_blocks, names_of, read_each
from .tokenizer import word_boundaries
from .vocabulary import Vocab, Vocabulary, characters_of, from_record, vocabulary_of

MANIFEST = "manifest.json"
FORMAT = 1
PARTS = ("train", "val")
Report = Callable[[str], None]


@dataclass
class Manifest:
    """What a prepared folder holds, written last: a folder without one was never finished."""

    files: list[Source]
    options: CorpusOptions
    vocabulary: dict  # the vocabulary's entry (vocabulary.from_record), its files beside the manifest
    vocabulary_files: dict  # each of those files' name -> sha256
    characters: int
    train_characters: int
    val_characters: int
    ids: dict  # part ("train", "val") -> {"file", "tokens", "sha256"}

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "files": [f.to_json() for f in self.files],
            "options": self.options.to_dict(),
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("files", "options")},
        }

    @classmethod
    def from_json(cls, data: object, path: Path) -> Manifest:
        """The manifest of a manifest.json's contents; anything missing or out of place is one line naming path."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ChargenError(f"{path} is not a manifest this chargen reads (format {FORMAT})")
        try:
            manifest = cls(
                files=[Source(**f) for f in data["files"]],
                options=CorpusOptions(**data["options"]),
                **{f.name: data[f.name] for f in fields(cls) if f.name not in ("files", "options")},
            )
            check_types(manifest)
            for part in PARTS:
                entry = manifest.ids[part]
                if entry.get("file") != f"{part}.bin" or not isinstance(entry.get("tokens"), int) or not isinstance(entry.get("sha256"), str):
                    raise ChargenError(f"its {part} ids entry must name {part}.bin, its tokens and its sha256")
        except ChargenError as e:
            raise ChargenError(f"{path}: {e}") from None
        except (KeyError, TypeError, AttributeError) as e:
            raise ChargenError(f"{path} lacks a valid entry ({first_line(e)})") from None
        return manifest


def is_prepared(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def prepare(
    names: str | Path | Sequence[str | Path],
    out: str | Path,
    options: CorpusOptions = CorpusOptions(),
    skip_non_text: bool = False,
    overwrite: bool = False,
    report: Report | None = None,
) -> Manifest:
    """Encode the texts of names (files, folders, globs) into out; a folder holding anything else, or a prepared
    corpus unless overwrite, is refused. report, if given, is told each pass as it starts."""
    say = report or (lambda line: None)
    names, out = names_of(names), Path(out)
    _check_out(out, overwrite)
    inside = out.resolve()
    found = [path for path in find_files(names) if inside not in path.resolve().parents]  # never its own files, prepared there before
    if not found:
        raise ChargenError(f"the corpus named holds no files outside --out {out}")
    paths, characters, chars = _scan(check_texts(found, options, skip_non_text), options, skip_non_text)
    n_val = validation_size(characters, options.val_fraction)
    if options.tokenizer == "char":
        vocab: Vocab = Vocabulary(chars)
    else:
        say(f"{len(paths):,} files, {characters:,} characters: training the {options.tokenizer} vocabulary")
        vocab = vocabulary_of(word_boundaries(joined_blocks(paths, options)), options.tokenizer, options.vocab_size, options.min_frequency)
    say(f"{len(paths):,} files, {characters:,} characters, {len(vocab):,} distinct {'characters' if vocab.kind == 'char' else vocab.kind + ' tokens'}: encoding")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        written = _encode(joined_blocks(paths, options), characters - n_val, vocab, options, out)
        check_tokens(written["train"]["tokens"], written["val"]["tokens"])
    except BaseException:
        if created:
            out.rmdir()
        raise
    entry, vocab_files = vocab.to_record()
    sources = [Source.of(path) for path in paths]  # hashed after reading: a file changed meanwhile would differ from what was read
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in vocab_files.items()}
    manifest = Manifest(sources, options, entry, digests, characters, characters - n_val, n_val, written)
    (out / MANIFEST).unlink(missing_ok=True)  # an overwritten folder is no prepared corpus until its new files are all in place
    for part in PARTS:
        os.replace(out / f".{part}.bin.tmp", out / f"{part}.bin")
    for name, data in vocab_files.items():
        write_atomically(out / name, data)
    write_atomically(out / MANIFEST, (json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n").encode())
    return manifest


def _check_out(out: Path, overwrite: bool) -> None:
    """out is a new or empty folder, or a prepared corpus that may be replaced: nothing else a user has there is touched."""
    if out.exists() and not out.is_dir():
        raise ChargenError(f"--out {out} is a file, not a folder")
    if is_prepared(out):
        if not overwrite:
            raise ChargenError(f"{out} already holds a prepared corpus: choose another --out, or pass --overwrite to replace it")
        return
    if out.is_dir() and any(out.iterdir()):
        raise ChargenError(f"{out} holds other files: prepare into a new or empty folder")


def _scan(paths: list[Path], options: CorpusOptions, skip_non_text: bool) -> tuple[list[Path], int, list[str]]:
    """The first pass: the files that hold text, the characters of their joined text, and those characters' set.

    A file found not to be text past its first block stops here, or (skipping) is left out, before anything is written.
    """
    found = read_each(paths, options, skip_non_text, characters_of)
    kept, characters = [path for path, _, _ in found], sum(size for _, _, size in found)
    chars = {c for _, seen, _ in found for c in seen}
    if len(kept) > 1:
        chars.update(options.separator)
        characters += len(options.separator) * (len(kept) - 1)
    return kept, characters, sorted(chars)


def _encode(blocks: Iterable[str], train_characters: int, vocab: Vocab, options: CorpusOptions, out: Path) -> dict:
    """Write the ids of the text's first train_characters to .train.bin.tmp and of the rest to .val.bin.tmp, each hashed."""
    files = {part: open(out / f".{part}.bin.tmp", "wb") for part in PARTS}
    digests = {part: hashlib.sha256() for part in PARTS}
    tokens = dict.fromkeys(PARTS, 0)
    try:
        pieces = blocks if vocab.kind == "char" else word_boundaries(blocks)
        for part, text in _split(pieces, train_characters):
            ids = vocab.encode(text, "the corpus")
            files[part].write(memoryview(ids).cast("B"))
            digests[part].update(memoryview(ids).cast("B"))
            tokens[part] += len(ids)
    except BaseException:
        for part, f in files.items():
            f.close()
            (out / f".{part}.bin.tmp").unlink(missing_ok=True)
        raise
    for f in files.values():
        f.flush()
        os.fsync(f.fileno())
        f.close()
    return {part: {"file": f"{part}.bin", "tokens": tokens[part], "sha256": digests[part].hexdigest()} for part in PARTS}


def _split(pieces: Iterable[str], train_characters: int) -> Iterator[tuple[str, str]]:
    """Each piece with the part it belongs to; the piece that holds the split is cut there, as the whole text would be."""
    seen = 0
    for piece in pieces:
        if seen >= train_characters:
            yield "val", piece
        elif seen + len(piece) <= train_characters:
            yield "train", piece
        else:
            cut = train_characters - seen
            yield "train", piece[:cut]
            yield "val", piece[cut:]
        seen += len(piece)


def open_prepared(folder: Path) -> tuple[Corpus, Manifest]:
    """The corpus of a prepared folder, its ids mapped into memory once every file is found as the manifest says."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise ChargenError(f"{path}: cannot read it ({e.strerror})") from None
    except (ValueError, RecursionError) as e:
        raise ChargenError(f"{path} is not valid JSON ({first_line(e)}): prepare the corpus again") from None
    manifest = Manifest.from_json(data, path)

    def read_file(name: str) -> str:
        try:
            data = (folder / name).read_bytes()
        except OSError as e:
            raise ChargenError(f"{folder / name}: cannot read it ({e.strerror})") from None
        if hashlib.sha256(data).hexdigest() != manifest.vocabulary_files.get(name):
            raise ChargenError(f"{folder / name} has changed since it was prepared (its sha256 differs): prepare the corpus again")
        return data.decode("utf-8")

    vocab = from_record(manifest.vocabulary, read_file, where=str(path), shown=lambda name: str(folder / name))
    ids = {part: _mapped(folder, manifest.ids[part], vocab) for part in PARTS}
    return Corpus(vocab, ids["train"], ids["val"], manifest.train_characters, manifest.val_characters), manifest


def _mapped(folder: Path, entry: dict, vocab: Vocab) -> np.ndarray:
    """An ids file checked against its manifest entry in one streamed read (it is not mapped for it), then mapped."""
    path = folder / entry["file"]
    expected = entry["tokens"] * vocab.dtype.itemsize
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ChargenError(f"{path}: cannot read it ({e.strerror}): prepare the corpus again") from None
    if size != expected:
        raise ChargenError(f"{path} holds {size:,} bytes, not the {expected:,} its manifest says: it was truncated or changed; prepare the corpus again")
    if entry["tokens"] < 2:
        raise ChargenError(f"{path} holds {entry['tokens']} tokens: too few to train or validate on")
    digest, largest = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK * 4), b""):
            digest.update(block)
            largest = max(largest, int(np.frombuffer(block, dtype=vocab.dtype).max()))
    if digest.hexdigest() != entry["sha256"]:
        raise ChargenError(f"{path} has changed since it was prepared (its sha256 differs): prepare the corpus again")
    if largest >= len(vocab):
        raise ChargenError(f"{path} holds id {largest:,}, outside its vocabulary of {len(vocab):,}: prepare the corpus again")
    return np.memmap(path, dtype=vocab.dtype, mode="c")  # copy-on-write: torch takes it as writable, and nothing is written back


def describe(manifest: Manifest) -> dict:
    """The prepared corpus in numbers, as `chargen prepare` reports it."""
    return {
        "files": len(manifest.files),
        "bytes": sum(f.bytes or 0 for f in manifest.files),
        "characters": manifest.characters,
        **{f"{part}_tokens": manifest.ids[part]["tokens"] for part in PARTS},
        "options": asdict(manifest.options),
    }
