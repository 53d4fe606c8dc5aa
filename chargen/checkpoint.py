"""Checkpoints: a folder with the weights (safetensors), the config (JSON) and the metrics (JSON lines).

Nothing in a checkpoint is unpickled: weights are plain tensors, everything else is JSON, and the
optimizer state is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .corpus import Vocabulary
from .tokenizer import TokenVocabulary
from .errors import ChargenError, OptionError
from .model import LanguageModel, ModelConfig

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"  # the best weights by validation: what sampling uses
LAST_WEIGHTS = "last.safetensors"  # the weights at the last save: what resuming uses
OPTIMIZER = "optimizer.pt"
TOKENIZER = "tokenizer.json"  # word and BPE vocabularies; a character vocabulary lives in config.json
METRICS = "metrics.jsonl"
DEFAULT_ROOT = Path("checkpoints")
UMASK = os.umask(0)
os.umask(UMASK)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a kill leaves the old file whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes files private; checkpoints follow the user's umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    write_atomically(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def weights_bytes(model: torch.nn.Module) -> bytes:
    """The model's parameters as safetensors, in float32; tied weights are stored once per name."""
    tensors = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    return save_safetensors(tensors)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> bytes:
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    return buffer.getvalue()


def write_vocabulary(folder: Path, vocab: Vocabulary | TokenVocabulary) -> dict:
    """Save the vocabulary and return the entry config.json gives it."""
    if isinstance(vocab, Vocabulary):
        return {"type": "char", "chars": vocab.chars}
    write_atomically(folder / TOKENIZER, vocab.to_json().encode())
    return {"type": vocab.kind, "file": TOKENIZER}


def read_vocabulary(folder: Path, entry: dict) -> Vocabulary | TokenVocabulary:
    if entry["type"] == "char":
        return Vocabulary(entry["chars"])
    path = folder / entry["file"]
    try:
        return TokenVocabulary.from_json(entry["type"], path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChargenError(f"{path} is missing") from None
    except Exception as e:  # tokenizers reports a malformed file as a plain Exception
        raise ChargenError(f"{path} is not a readable tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def append_metrics(folder: Path, record: dict) -> None:
    with open(folder / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def is_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG).is_file()


def latest(root: str | Path = DEFAULT_ROOT) -> Path:
    """The most recently written checkpoint folder under root."""
    root = Path(root)
    found = [p.parent for p in root.glob(f"*/{CONFIG}")] if root.is_dir() else []
    if not found:
        raise ChargenError(f"no checkpoint under {root}/: train one with `chargen train FILE`, or pass --checkpoint DIR")
    return max(found, key=lambda p: (p / CONFIG).stat().st_mtime)


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, read back: enough to sample, evaluate or resume."""

    folder: Path
    config: dict
    model: LanguageModel
    vocab: Vocabulary | TokenVocabulary


def read_config(folder: Path) -> dict:
    path = folder / CONFIG
    if not folder.exists():
        raise ChargenError(f"{folder}: no such checkpoint folder")
    if not folder.is_dir():
        raise ChargenError(f"{folder} is a file; a checkpoint is a folder holding {CONFIG} and {WEIGHTS}")
    if not path.is_file():
        raise ChargenError(f"{folder} holds no checkpoint ({CONFIG} is missing)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ChargenError(f"{path} is not a readable JSON config ({e})") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise ChargenError(f"{path}: unknown checkpoint format version {version!r} (this chargen reads {FORMAT_VERSION})")
    return config


def load(folder: str | Path, weights: str = WEIGHTS) -> Checkpoint:
    """Read a checkpoint folder; any missing, corrupt or mismatched file is a one-line ChargenError."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        vocab = read_vocabulary(folder, config["vocabulary"])
        model = LanguageModel(ModelConfig(**config["model"]))
    except ChargenError as e:
        if isinstance(e, OptionError):  # a config no chargen would write
            raise ChargenError(f"{folder / CONFIG}: {e}") from None
        raise
    except (KeyError, TypeError) as e:
        raise ChargenError(f"{folder / CONFIG} lacks a valid model or vocabulary entry ({e})") from None
    if model.config.vocab_size != len(vocab):
        raise ChargenError(f"{folder / CONFIG}: the vocabulary has {len(vocab)} tokens but the model {model.config.vocab_size}")
    path = folder / weights
    try:
        state = load_safetensors(path.read_bytes())
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ChargenError(f"{path} is missing") from None
    except (SafetensorError, RuntimeError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ChargenError(f"{path} is corrupt or does not match {CONFIG}: {first_line}") from None
    model.eval()
    return Checkpoint(folder, config, model, vocab)
