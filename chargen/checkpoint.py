"""Checkpoints: a folder with the weights (safetensors), the config (JSON, record.py), the resume file
(resume_file.py) and the metrics (JSON lines); written together by folder.py, read back here.

Nothing in a checkpoint is unpickled: tensors are safetensors, everything else is JSON, and every file is read
as untrusted input (safe_files.py).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from .errors import ChargenError, first_line
from .folder import current
from .model import LanguageModel, ModelConfig, check_fits_in_memory
from .record import RunRecord
from .safe_files import HEADER_BYTES, Spec, check_header, member, read_tensors, read_text
from .tokenizer import TOKENIZER_FILE
from .vocabulary import Vocab, from_record

CONFIG = "config.json"
WEIGHTS = "model.safetensors"  # the best weights by validation: what sampling uses
RESUME = "resume.safetensors"  # the run as it stood at the last save: what resuming uses
TOKENIZER = TOKENIZER_FILE  # word and BPE vocabularies; a character vocabulary lives in config.json
METRICS = "metrics.jsonl"
DEFAULT_ROOT = Path("checkpoints")
MAX_CONFIG_BYTES = 1 << 26
MAX_TOKENIZER_BYTES = 1 << 28

def weights_bytes(model: torch.nn.Module) -> bytes:
    """The model's parameters as safetensors, in float32; tied weights are stored once per name."""
    tensors = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    return save_safetensors(tensors)


def weight_spec(model: LanguageModel) -> Spec:
    """What a model's weights file holds: every tensor of its state dict, in float32."""
    return {k: (tuple(v.shape), ("F32",)) for k, v in model.state_dict().items()}


def state_size(config: ModelConfig) -> int:
    """The values in the state dict of the model a config describes: a tied matrix is written under both its names."""
    return config.num_parameters() + (config.vocab_size * config.embedding_dim if config.tie_weights else 0)


def model_for(folder: Path, name: str, config: ModelConfig) -> LanguageModel:
    """The model config.json describes, built only once the weights file's header holds as many values as it has.

    Otherwise the header is compared with a model on the meta device, which allocates nothing (but costs a second
    to set up), so the error names the first tensor that differs.
    """
    limit = HEADER_BYTES + 4 * state_size(config)
    path, shown = member(folder, name, limit), folder / name
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ChargenError(f"{shown} is corrupt: {first_line(e)}") from None
    if sum(math.prod(shape) for shape, _ in found.values()) != state_size(config):
        with torch.device("meta"):
            check_header(shown, found, weight_spec(LanguageModel(config)), ())
        raise ChargenError(f"{shown} does not hold the model {CONFIG} describes")
    check_fits_in_memory(config, 4, f"load {folder}")
    return LanguageModel(config)


def read_vocabulary(folder: Path, entry: object) -> Vocab:
    """The vocabulary config.json describes; the files it names are read beside it only as member() allows."""
    return from_record(entry, lambda name: read_text(folder, name, MAX_TOKENIZER_BYTES), where=str(folder / CONFIG), shown=lambda name: str(folder / name))


def is_checkpoint(folder: str | Path) -> bool:
    return current(Path(folder), CONFIG).is_file()


def written(folder: Path) -> float:
    """When folder's config.json was last written (0 when that cannot be told): what 'newest' goes by."""
    try:
        return current(folder, CONFIG).stat().st_mtime
    except OSError:
        return 0.0


def folders(root: str | Path = DEFAULT_ROOT) -> list[Path]:
    """The folders under root that hold a config.json, newest first."""
    root = Path(root)
    found = [p.parent for p in root.glob(f"*/{CONFIG}")] if root.is_dir() else []
    return sorted(found, key=written, reverse=True)


def incomplete(folder: Path) -> str | None:
    """Why folder is no checkpoint to sample from (an unreadable config.json, no weights), or None when it is one."""
    try:
        read_record(folder)
        member(folder, WEIGHTS, sys.maxsize)
    except ChargenError as e:
        return str(e)
    return None


def latest(root: str | Path = DEFAULT_ROOT) -> Path:
    """The newest complete checkpoint folder under root; each newer, incomplete one is skipped and named on stderr."""
    root = Path(root)
    found = folders(root)
    for folder in found:
        reason = incomplete(folder)
        if reason is None:
            return folder
        sys.stderr.write(f"chargen: warning: skipping {folder}, not a complete checkpoint: {reason}\n")
    which = "complete checkpoint" if found else "checkpoint"
    raise ChargenError(f"no {which} under {root}/: train one with `chargen train FILE`, or pass --checkpoint DIR")


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, read back: enough to sample, evaluate or resume."""

    folder: Path
    record: RunRecord
    model: LanguageModel
    vocab: Vocab


def read_record(folder: Path) -> RunRecord:
    """The folder's config.json, read with the bounds every checkpoint file has and checked entry by entry (record.py)."""
    path = folder / CONFIG
    if not folder.exists():
        raise ChargenError(f"{folder}: no such checkpoint folder")
    if not folder.is_dir():
        raise ChargenError(f"{folder} is a file; a checkpoint is a folder holding {CONFIG} and {WEIGHTS}")
    text = read_text(folder, CONFIG, MAX_CONFIG_BYTES, missing=f"{folder} holds no checkpoint ({CONFIG} is missing)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise ChargenError(f"{path} is not a readable JSON config ({first_line(e)})") from None
    return RunRecord.from_json(data, path)


def read(folder: str | Path, weights: str = WEIGHTS) -> Checkpoint:
    """Read a checkpoint folder; any missing, corrupt, mismatched or hostile file is a one-line ChargenError.

    The config's sizes are bounded and the weights' header matches them before a model is built or a tensor read.
    """
    folder = Path(folder)
    record = read_record(folder)
    model_config = record.model
    vocab = read_vocabulary(folder, record.vocabulary)
    if model_config.vocab_size != len(vocab):
        raise ChargenError(f"{folder / CONFIG}: the vocabulary has {len(vocab)} tokens but the model {model_config.vocab_size}")
    model = model_for(folder, weights, model_config)
    state, _ = read_tensors(folder, weights, weight_spec(model))
    model.load_state_dict(state)
    model.eval()
    return Checkpoint(folder, record, model, vocab)


def metrics_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def read_metrics(folder: Path) -> list[dict]:
    """The evaluations in metrics.jsonl; a last line cut short (a kill or a full disk mid-append) is dropped with a warning."""
    path = current(folder, METRICS)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("no step")
        except (ValueError, RecursionError):
            if number == len(lines):
                sys.stderr.write(f"chargen: warning: {folder / METRICS} line {number} is cut short; it is dropped\n")
                break
            raise ChargenError(f"{folder / METRICS} line {number} is not a JSON record with a step") from None
        records.append(record)
    return records


def json_bytes(record: dict) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode()
