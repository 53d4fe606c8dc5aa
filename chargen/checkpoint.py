"""Checkpoints: a folder with the weights (safetensors), the config (JSON) and the metrics (JSON lines).

Nothing in a checkpoint is unpickled: tensors are safetensors, everything else is JSON. All that
resuming needs (weights, optimizer, the hidden state of each lane, the random number generator and
the position in the data) is one file, written atomically, so it is never half old and half new.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .corpus import Vocabulary
from .tokenizer import TokenVocabulary
from .errors import ChargenError, OptionError
from .model import LanguageModel, ModelConfig, State

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"  # the best weights by validation: what sampling uses
RESUME = "resume.safetensors"  # the run as it stood at the last save: what resuming uses
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


def resume_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lanes: State | None, progress: dict) -> bytes:
    """Everything a run needs to continue exactly, as one safetensors file with JSON metadata."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, entries in optimizer_state["state"].items():
        for name, value in entries.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    if lanes is not None:
        for i, part in enumerate(lanes if isinstance(lanes, tuple) else (lanes,)):
            tensors[f"lanes.{i}"] = part
    tensors["rng"] = torch.get_rng_state()
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    metadata = {"progress": json.dumps(progress), "param_groups": json.dumps(optimizer_state["param_groups"])}
    return save_safetensors(tensors, metadata=metadata)


@dataclass
class ResumeState:
    model: dict[str, torch.Tensor]
    optimizer: dict
    lanes: State | None
    rng: torch.Tensor
    progress: dict


def read_resume(folder: Path) -> ResumeState:
    path = folder / RESUME
    if not path.is_file():
        raise ChargenError(f"{path} is missing: the run cannot be resumed")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        progress, groups = json.loads(metadata["progress"]), json.loads(metadata["param_groups"])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise ChargenError(f"{path} is corrupt: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    lanes = [tensors[f"lanes.{i}"] for i in range(2) if f"lanes.{i}" in tensors]
    lane_state = None if not lanes else tuple(lanes) if len(lanes) == 2 else lanes[0]
    return ResumeState(model, {"state": state, "param_groups": groups}, lane_state, tensors["rng"], progress)


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


def trim_metrics(folder: Path, step: int) -> None:
    """Forget evaluations after step: a run resumed from step will make them again."""
    path = folder / METRICS
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            write_atomically(path, "".join(kept).encode())


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


def model_options(config: dict) -> dict:
    """The ModelConfig fields of a config.json; configs written before skip connections lack the key, and their models had none."""
    return {"skip_connections": False, **config.get("model", {})}


def load(folder: str | Path, weights: str = WEIGHTS) -> Checkpoint:
    """Read a checkpoint folder; any missing, corrupt or mismatched file is a one-line ChargenError."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        vocab = read_vocabulary(folder, config["vocabulary"])
        model = LanguageModel(ModelConfig(**model_options(config)))
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
