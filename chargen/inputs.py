"""What a run trains on, from what it is given: text files, folders and globs (read, joined and encoded), or one
folder `chargen prepare` wrote (memory-mapped); and the same corpus found again to resume or evaluate a run."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import corpora, prepared
from .cache import read_corpus
from .config import CorpusOptions
from .corpus import Corpus
from .errors import ChargenError, OptionError
from .record import CorpusRecord
from .sources import Source, find_files, read_joined
from .vocabulary import Vocab


def open_corpus(
    names: Sequence[str | Path], options: CorpusOptions, given: set[str], use_cache: bool = True, skip_non_text: bool = False, base: Vocab | None = None
) -> tuple[Corpus, CorpusRecord]:
    """The corpus of the names and its record; given names the corpus options set by the user, which a prepared folder
    must agree with; base is the vocabulary of a model to fine-tune, which the corpus's extends."""
    if len(names) == 1 and prepared.is_prepared(Path(names[0])):
        if base is not None:
            raise ChargenError(f"{names[0]} is a prepared corpus, its ids those of its own vocabulary: fine-tune on its text files instead")
        return _open_prepared(Path(names[0]), options, given)
    paths = find_files([corpora.resolve(name) for name in names])
    data, kept = read_corpus(paths, options, use_cache, skip_non_text, base)
    return data, _record(data, [Source.of(path) for path in kept], options)


def _open_prepared(folder: Path, options: CorpusOptions, given: set[str]) -> tuple[Corpus, CorpusRecord]:
    data, manifest = prepared.open_prepared(folder)
    differs = sorted(name for name in given if getattr(options, name) != getattr(manifest.options, name))
    if differs:
        name = differs[0]
        raise OptionError(
            f"{folder} was prepared with {name.replace('_', '-')} {getattr(manifest.options, name)!r}, not {getattr(options, name)!r}: "
            "prepare it again to change how the text is read or split"
        )
    return data, replace(_record(data, manifest.files, manifest.options), prepared=str(folder.resolve()))


def _record(data: Corpus, files: list[Source], options: CorpusOptions) -> CorpusRecord:
    chars = data.train_chars + data.val_chars
    return CorpusRecord(files, chars, data.train_chars, data.val_chars, len(data.train), len(data.val), options)


def reopen(record: CorpusRecord, moved: Sequence[str | Path] | None, use_cache: bool = True, base: Vocab | None = None) -> tuple[Corpus, CorpusRecord]:
    """The corpus a saved run trained on, checked to be the same, from where its record says or where it has moved to
    (base: a fine-tuned run's vocabulary, which its text is encoded with)."""
    if record.prepared is not None:
        folder = Path(moved[0]) if moved else Path(record.prepared)
        if moved and len(moved) != 1 or not prepared.is_prepared(folder):
            raise ChargenError(f"the run's prepared corpus {folder} is not here: name its folder with chargen train --resume DIR FOLDER")
        data, manifest = prepared.open_prepared(folder)
        if [f.sha256 for f in manifest.files] != [f.sha256 for f in record.files] or manifest.options != record.options:
            raise ChargenError(f"{folder} is not the prepared corpus this run trained on (its files or options differ)")
        return data, replace(record, prepared=str(folder.resolve()))
    paths = _same_files(record, moved)
    data, _ = read_corpus(paths, record.options, use_cache, base=base)
    return data, replace(record, files=[replace(f, path=str(p.resolve())) for f, p in zip(record.files, paths)])


def _same_files(record: CorpusRecord, moved: Sequence[str | Path] | None) -> list[Path]:
    """The run's text files, where the record says or where they have moved, each found to hold what it held (its sha256)."""
    paths = find_files(moved) if moved else [Path(f.path) for f in record.files]
    if len(paths) != len(record.files):
        raise ChargenError(f"the run trained on {len(record.files):,} files, and {len(paths):,} were named")
    for path, source in zip(paths, record.files):
        if not path.is_file():
            raise ChargenError(f"the run's corpus {path} is not here: name where it is now after --resume DIR")
        if Source.of(path).sha256 != source.sha256:
            raise ChargenError(f"{path} is not the text this run trained on (its sha256 differs)")
    return paths


def validation_split(record: CorpusRecord) -> tuple[str, str]:
    """(validation, training) text of the corpus a run trained on, from its files, each checked against its sha256."""
    try:
        paths = _same_files(record, None)
    except ChargenError as e:
        raise ChargenError(f"{e}: name a FILE to evaluate on") from None
    text, _ = read_joined(paths, record.options)
    return text[-record.val_characters :], text[: -record.val_characters]
