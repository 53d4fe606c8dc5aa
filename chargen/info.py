"""What a checkpoint is, at a glance: the figures `chargen info` and `chargen list` show."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from . import checkpoint
from .errors import ChargenError


def summary(folder: str | Path) -> dict:
    """Architecture, vocabulary, corpus, progress and versions of one checkpoint, read from config.json once it loads."""
    folder = Path(folder)
    ckpt = checkpoint.read(folder)
    try:
        return figures(ckpt)
    except KeyError as e:
        raise ChargenError(f"{folder / checkpoint.CONFIG} lacks its {e.args[0]!r} entry") from None
    except (TypeError, AttributeError, ValueError) as e:  # an entry of the wrong kind: a list where a table goes
        raise ChargenError(f"{folder / checkpoint.CONFIG} has an entry chargen cannot read ({e})") from None


def figures(ckpt: checkpoint.Checkpoint) -> dict:
    record, folder, model = ckpt.record, ckpt.folder, ckpt.record.model
    progress, kind, tokens = record.progress, record.vocabulary["type"], ckpt.vocab.token_texts
    return {
        "folder": str(folder),
        "written": datetime.fromtimestamp(checkpoint.written(folder)).isoformat(timespec="seconds"),
        "architecture": f"{model.layers}×{model.hidden} {model.cell}"
        + (f", embedding {model.embedding_dim}" if model.input == "embedding" else ", one-hot")
        + (", tied" if model.tie_weights else "")
        + (", skip connections" if ckpt.model.skip else "")
        + (f", dropout {model.dropout:g}" if model.dropout else ""),
        "chosen_by": f"the default recipe: {record.recipe['why']}" if record.recipe else "the options given",
        "parameters": ckpt.model.num_parameters(),
        "tokenizer": kind,
        "vocabulary_size": len(tokens),
        "vocabulary_preview": repr("".join(tokens[:60])) if kind == "char" else " ".join(map(repr, tokens[:12])),
        "corpus": record.corpus.name,
        "corpus_files": [{"path": f.path, "sha256": f.sha256} for f in record.corpus.files],
        **({"started_from": record.init_from["path"]} if record.init_from else {}),
        "steps": progress["step"],
        "characters_seen": progress["chars"],
        "best_val_bpc": progress["best_val_bpc"],
        "last_val_bpc": progress["last_val_bpc"],
        "training_time_s": progress["elapsed_s"],
        "precision": record.precision_used,
        "chargen_version": record.chargen_version,
    }


def list_checkpoints(root: str | Path = checkpoint.DEFAULT_ROOT) -> list[dict]:
    """Summaries of the checkpoints under root, newest first; a damaged one says why in its row, and the rest are listed."""
    found = []
    for folder in checkpoint.folders(root):
        try:
            found.append(summary(folder))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # a damaged folder can raise anything, a panic of tokenizers' Rust code included
            found.append({"folder": str(folder), "error": reason(e)})
    return found


def reason(error: BaseException) -> str:
    """One line on why a folder could not be read."""
    if isinstance(error, ChargenError):
        return str(error)
    text = str(error).strip()
    return f"unreadable ({type(error).__name__}{': ' + text.splitlines()[0] if text else ''})"


def to_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
