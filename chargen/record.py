"""config.json: the one typed, versioned record of a run, written by to_json and read back by from_json.

Nothing else reads or writes the raw JSON. Reading migrates what older checkpoints of the same format lack
(a model from before skip connections had none), and checks every entry by the type it has here, so a
damaged or hostile config.json is one clear line, never a KeyError deep in a command.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .version import __version__
from .config import CorpusOptions, TrainConfig
from .errors import ChargenError, check_types
from .model import ModelConfig
from .sources import Source

FORMAT_VERSION = 1


@dataclass
class CorpusRecord:
    """The texts a run trained on: the files in the order joined, how they were read, and the sizes of the split."""

    files: list[Source]
    characters: int
    train_characters: int
    val_characters: int
    train_tokens: int
    val_tokens: int
    options: CorpusOptions
    prepared: str | None = None  # the `chargen prepare` folder the run read them from, encoded

    @property
    def name(self) -> str:
        """The corpus as a line names it."""
        if self.prepared is not None:
            return self.prepared
        more = len(self.files) - 1
        return self.files[0].path + (f" and {more:,} more file{'s' * (more > 1)}" if more else "")

    def to_json(self) -> dict:
        entry = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("options", "files", "prepared")}
        if self.prepared is not None:
            entry["prepared"] = self.prepared
        return {"files": [source.to_json() for source in self.files], **entry, **self.options.to_dict()}

    @classmethod
    def from_json(cls, entry: dict) -> CorpusRecord:
        options = CorpusOptions(**{f.name: entry[f.name] for f in fields(CorpusOptions) if f.name in entry})
        if "files" not in entry and "path" in entry:  # one text file, as runs recorded it before many
            entry = {**entry, "files": [{"path": entry["path"], "sha256": entry["sha256"]}]}
        files = entry["files"]
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) for f in files):
            raise ChargenError("the corpus entry's files must be a list of the files' paths and sha256 sums")
        sources = [Source(**f) for f in files]
        scalars = {f.name: entry[f.name] for f in fields(cls) if f.name not in ("options", "files", "prepared")}
        record = cls(files=sources, **scalars, options=options, prepared=entry.get("prepared"))
        check_types(record)
        return record


@dataclass
class RunRecord:
    model: ModelConfig
    vocabulary: object  # the vocabulary's entry: vocabulary.py reads and checks it, with the files beside config.json
    training: TrainConfig
    precision_used: str  # what "auto" became on the machine that trained
    corpus: CorpusRecord
    progress: dict  # step, chars, elapsed_s, best_val_bpc, last_val_bpc: what `chargen info` shows
    recipe: dict | None = None  # what the recipe chose and why, when it chose
    embeddings: dict | None = None  # path, covered, frozen: pre-trained vectors the run started from
    init_from: dict | None = None  # path, sha256 (of its weights), frozen_layers, frozen_embedding: the checkpoint a fine-tune started from
    chargen_version: str = __version__

    def to_json(self) -> dict:
        record = {
            "format_version": FORMAT_VERSION,
            "chargen_version": self.chargen_version,
            "model": self.model.to_dict(),
            "vocabulary": self.vocabulary,
            "training": {**asdict(self.training), "precision_used": self.precision_used},
            "corpus": self.corpus.to_json(),
        }
        record.update({name: getattr(self, name) for name in ("recipe", "embeddings", "init_from") if getattr(self, name) is not None})
        return {**record, "progress": self.progress}

    @classmethod
    def from_json(cls, data: object, path: Path) -> RunRecord:
        """The record of a config.json's contents; anything missing, misplaced or out of range names path."""
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise ChargenError(f"{path}: unknown checkpoint format version {version!r} (this chargen reads {FORMAT_VERSION})")
        try:
            model = data.get("model", {})
            if not isinstance(model, dict):
                raise ChargenError(f"the model entry of {path.name} must be a table of its sizes, not {type(model).__name__}")
            training = dict(data["training"])
            record = cls(
                model=ModelConfig(**{"skip_connections": False, **model}),  # models from before skip connections had none
                vocabulary=data["vocabulary"],
                precision_used=training.pop("precision_used", training.get("precision")),
                training=TrainConfig(**training),
                corpus=CorpusRecord.from_json(data["corpus"]),
                progress=data["progress"],
                recipe=data.get("recipe"),
                embeddings=data.get("embeddings"),
                init_from=data.get("init_from"),
                chargen_version=data.get("chargen_version", "?"),
            )
            check_types(record)
            for name, keys in ENTRY_KEYS.items():
                _check_entry(name, getattr(record, name), keys)
        except ChargenError as e:
            raise ChargenError(f"{path}: {e}") from None
        except KeyError as e:
            raise ChargenError(f"{path} lacks its {e.args[0]!r} entry") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ChargenError(f"{path} lacks a valid {_entry_of(e)} entry ({e})") from None
        return record

    def train_options(self) -> dict:
        """The options of `chargen train` the run was started with: rerunning them retrains the same model."""
        options = {k: v for k, v in self.model.to_dict().items() if k != "vocab_size"}
        options.update(asdict(self.training))
        corpus = [self.corpus.prepared] if self.corpus.prepared is not None else [f.path for f in self.corpus.files]
        options.update(self.corpus.options.to_dict(), corpus=corpus)
        if self.embeddings:
            options["embeddings"], options["freeze_embeddings"] = self.embeddings["path"], self.embeddings["frozen"]
        if self.init_from:
            options["init_from"], options["freeze"] = self.init_from["path"], self.init_from["frozen_layers"] or None
        return options

    @property
    def frozen_embeddings(self) -> bool:
        return bool(self.embeddings and self.embeddings.get("frozen"))


NUMBER, OPTIONAL_NUMBER = (int, float), (int, float, type(None))
ENTRY_KEYS = {  # what the readers of the small entries take from them
    "progress": {"step": (int,), "chars": (int,), "elapsed_s": NUMBER, "best_val_bpc": OPTIONAL_NUMBER, "last_val_bpc": OPTIONAL_NUMBER},
    "recipe": {"hidden": (int,), "dropout": NUMBER, "lr": NUMBER, "why": (str,)},
    "embeddings": {"path": (str,), "frozen": (bool,)},
    "init_from": {"path": (str,), "sha256": (str,), "frozen_layers": (int,)},
}


def _check_entry(name: str, entry: dict | None, keys: dict[str, tuple[type, ...]]) -> None:
    """An entry (absent where it may be) holds each key its readers take, of its kind."""
    if entry is None:
        return
    for key, kinds in keys.items():
        value = entry.get(key)
        if key not in entry or isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise ChargenError(f"the {name} entry's {key} must be {' or '.join(k.__name__ for k in kinds)}, not {value!r}")


def _entry_of(error: Exception) -> str:
    """Which entry a TypeError from a dataclass's constructor speaks of: its message names the class."""
    text = str(error)
    return "model" if "ModelConfig" in text else "training" if "TrainConfig" in text else "corpus" if "Corpus" in text else "config"
