"""What a checkpoint is, at a glance: the figures `chargen info` and `chargen list` show."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from . import checkpoint
from .errors import ChargenError


def summary(folder: str | Path) -> dict:
    """Architecture, vocabulary, corpus, progress and versions of one checkpoint, read from config.json."""
    folder = Path(folder)
    config = checkpoint.read_config(folder)
    try:
        model, corpus, progress, training = config["model"], config["corpus"], config["progress"], config["training"]
        vocabulary = config["vocabulary"]
    except KeyError as e:
        raise ChargenError(f"{folder / checkpoint.CONFIG} lacks its {e.args[0]!r} entry") from None
    ckpt = checkpoint.load(folder)
    tokens = ckpt.vocab.token_texts
    return {
        "folder": str(folder),
        "written": datetime.fromtimestamp((folder / checkpoint.CONFIG).stat().st_mtime).isoformat(timespec="seconds"),
        "architecture": f"{model['layers']}×{model['hidden']} {model['cell']}"
        + (f", embedding {model['embedding_dim']}" if model["input"] == "embedding" else ", one-hot")
        + (", tied" if model.get("tie_weights") else "")
        + (", skip connections" if ckpt.model.skip else "")
        + (f", dropout {model['dropout']:g}" if model.get("dropout") else ""),
        "chosen_by": f"the default recipe: {config['recipe']['why']}" if "recipe" in config else "the options given",
        "parameters": ckpt.model.num_parameters(),
        "tokenizer": vocabulary["type"],
        "vocabulary_size": len(tokens),
        "vocabulary_preview": repr("".join(tokens[:60])) if vocabulary["type"] == "char" else " ".join(map(repr, tokens[:12])),
        "corpus": corpus["path"],
        "corpus_sha256": corpus["sha256"],
        "steps": progress["step"],
        "characters_seen": progress["chars"],
        "best_val_bpc": progress["best_val_bpc"],
        "last_val_bpc": progress["last_val_bpc"],
        "training_time_s": progress["elapsed_s"],
        "precision": training.get("precision_used", training.get("precision")),
        "chargen_version": config.get("chargen_version"),
    }


def list_checkpoints(root: str | Path = checkpoint.DEFAULT_ROOT) -> list[dict]:
    """Summaries of the checkpoints under root, newest first; unreadable ones say why instead."""
    root = Path(root)
    folders = [p.parent for p in root.glob(f"*/{checkpoint.CONFIG}")] if root.is_dir() else []
    folders.sort(key=lambda p: (p / checkpoint.CONFIG).stat().st_mtime, reverse=True)
    found = []
    for folder in folders:
        try:
            found.append(summary(folder))
        except ChargenError as e:
            found.append({"folder": str(folder), "error": str(e)})
    return found


def to_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
