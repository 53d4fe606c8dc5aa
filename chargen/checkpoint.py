"""Checkpoints: a folder with the weights (safetensors), the config (JSON) and the metrics (JSON lines).

Nothing in a checkpoint is unpickled: tensors are safetensors, everything else is JSON. All that
resuming needs (weights, optimizer, the hidden state of each lane, the random number generator and
the position in the data) is one file, written atomically, so it is never half old and half new.
"""
from __future__ import annotations

import json
import math
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from . import state as states
from .errors import ChargenError, OptionError, check_types, first_line
from .folder import current
from .model import LanguageModel, ModelConfig, available_memory, check_fits_in_memory
from .record import RunRecord
from .state import State
from .tokenizer import TOKENIZER_FILE
from .vocabulary import Vocab, from_record

CONFIG = "config.json"
WEIGHTS = "model.safetensors"  # the best weights by validation: what sampling uses
RESUME = "resume.safetensors"  # the run as it stood at the last save: what resuming uses
TOKENIZER = TOKENIZER_FILE  # word and BPE vocabularies; a character vocabulary lives in config.json
METRICS = "metrics.jsonl"
DEFAULT_ROOT = Path("checkpoints")


def weights_bytes(model: torch.nn.Module) -> bytes:
    """The model's parameters as safetensors, in float32; tied weights are stored once per name."""
    tensors = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    return save_safetensors(tensors)


@dataclass
class Progress:
    """Where a run stands, besides its tensors: saved with them, so a resumed run continues exactly."""

    step: int = 0
    tokens: int = 0
    epoch: int = 0
    window: int = 0  # the next window of the epoch to train on
    elapsed_s: float = 0.0  # wall-clock time of the run so far, earlier sessions included
    best_val: float | None = None
    last_val: float | None = None
    evals_since_best: int = 0
    validation_s: float = 0.0  # of elapsed_s, the time spent on validation passes
    last_validation_s: float = 0.0
    bits_since_eval: float = 0.0  # for the training bpc reported at the next evaluation
    chars_since_eval: float = 0.0


def resume_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lanes: State | None, progress: dict) -> bytes:
    """Everything a run needs to continue exactly, as one safetensors file with JSON metadata."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, entries in optimizer_state["state"].items():
        for name, value in entries.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    if lanes is not None:
        for i, part in enumerate(lanes):
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


# Past these sizes a file is none chargen wrote, and nothing of it is read: a character vocabulary lives in config.json.
MAX_CONFIG_BYTES = 1 << 26
MAX_TOKENIZER_BYTES = 1 << 28
HEADER_BYTES = 1 << 20  # a safetensors file's header and metadata, beyond the bytes of its tensors
ITEM_BYTES = {"F32": 4, "BF16": 2, "U8": 1}  # the dtypes chargen writes: float32 tensors, bf16 lane states, the generator's bytes
Spec = dict[str, tuple[tuple[int, ...], tuple[str, ...]]]  # tensor name: (shape, the safetensors dtypes it may have)
ADAMW_FLAGS = {  # what chargen's AdamW may have saved for each flag (train.make_optimizer sets none but fused)
    "amsgrad": (False,),
    "maximize": (False,),
    "capturable": (False,),
    "differentiable": (False,),
    "foreach": (None, False, True),
    "fused": (None, False, True),
    "decoupled_weight_decay": (False, True),
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def member(folder: Path, name: str, limit: int, missing: str | None = None) -> Path:
    """Where to read folder/name (its newest whole version, folder.current), refused unless a regular file inside folder of at most limit bytes."""
    path, shown = current(folder, name), folder / name
    try:
        info = path.stat()
        inside = path.resolve().is_relative_to(folder.resolve())
    except FileNotFoundError:
        raise ChargenError(missing or f"{shown} is missing") from None
    except (OSError, RuntimeError) as e:  # RuntimeError: a loop of links
        raise ChargenError(f"{shown} cannot be read ({getattr(e, 'strerror', None) or first_line(e)})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ChargenError(f"{shown} is not a regular file: a checkpoint reads only files it wrote")
    if not inside:
        raise ChargenError(f"{shown} leads outside {folder}: a checkpoint reads only its own files")
    if info.st_size > limit:
        raise ChargenError(f"{shown} is {info.st_size:,} bytes, more than this checkpoint can need ({limit:,})")
    return path


def read_text(folder: Path, name: str, limit: int, missing: str | None = None) -> str:
    """The text of folder/name, read only if member() lets it be and never past limit bytes."""
    path, shown = member(folder, name, limit, missing), folder / name
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ChargenError(f"{shown} cannot be read ({e.strerror or e})") from None
    if len(data) > limit:
        raise ChargenError(f"{shown} grew past {limit:,} bytes while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChargenError(f"{shown} is not UTF-8 text (byte {e.start:,})") from None


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


def check_header(shown: Path, found: Spec, expected: Spec, together: Sequence[Sequence[str]]) -> None:
    """Every tensor found is one expected, of its shape and dtype; every one expected is there, or all of its group is absent."""
    for key, (shape, dtype) in found.items():
        if key not in expected:
            raise ChargenError(f"{shown} holds a tensor {key} that this checkpoint's model has not")
        wanted_shape, wanted_dtypes = expected[key]
        if dtype not in wanted_dtypes:
            raise ChargenError(f"{shown}: tensor {key} holds {dtype} values; chargen writes {' or '.join(wanted_dtypes)} only")
        if shape != wanted_shape:
            raise ChargenError(f"{shown}: tensor {key} has shape {list(shape)}, but {CONFIG} makes it {list(wanted_shape)}")
    optional = {k for group in together for k in group}
    absent = [k for k in expected if k not in found and k not in optional]
    absent += [k for group in together if any(k in found for k in group) for k in group if k not in found]
    if absent:
        raise ChargenError(f"{shown} lacks tensor {absent[0]}")


def read_tensors(
    folder: Path, name: str, expected: Spec, together: Sequence[Sequence[str]] = (), missing: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file of folder; its size and header are checked before any tensor is read."""
    data_bytes = sum(math.prod(shape) * max(ITEM_BYTES[d] for d in dtypes) for shape, dtypes in expected.values())
    path, shown = member(folder, name, HEADER_BYTES + data_bytes, missing), folder / name
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
            check_header(shown, found, expected, together)
            needed, free = 2 * path.stat().st_size, available_memory()  # the tensors read, and the model they are copied into
            if needed > free:
                raise ChargenError(f"{shown} needs about {needed / 1e9:,.1f} GB of memory to load, and this machine has {free / 1e9:,.1f} GB free")
            tensors = {k: f.get_tensor(k) for k in found}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ChargenError(f"{shown} is corrupt: {first_line(e)}") from None
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ChargenError(f"{shown} holds NaN or infinite values in tensor {key}")
    return tensors, metadata


def resume_spec(ckpt: Checkpoint, optimized: list[tuple[int, ...]]) -> tuple[Spec, list[list[str]]]:
    """The tensors of the checkpoint's resume.safetensors (model, AdamW's state of each optimized parameter, the lanes'
    state, the random generator), and the groups of them that are there whole or not at all."""
    config, lanes = ckpt.model.config, training_lanes(ckpt)
    spec = {f"model.{k}": shape_and_dtype for k, shape_and_dtype in weight_spec(ckpt.model).items()}
    together = []
    for index, shape in enumerate(optimized):
        names = {f"optimizer.{index}.{name}": (() if name == "step" else shape, ("F32",)) for name in ("step", "exp_avg", "exp_avg_sq")}
        spec.update(names)
        together.append(list(names))
    parts = [f"lanes.{i}" for i in range(states.parts(config.cell))]
    spec.update({k: ((config.layers, lanes, config.hidden), ("F32", "BF16")) for k in parts})  # in the precision the run computes
    together.append(parts)
    spec["rng"] = (tuple(torch.get_rng_state().shape), ("U8",))
    return spec, together


def training_lanes(ckpt: Checkpoint) -> int:
    """The lanes the run trains (config.json's training batch_size): the lanes' saved state has one row each."""
    return ckpt.record.training.batch_size


def optimized_shapes(ckpt: Checkpoint) -> list[tuple[int, ...]]:
    """The shapes of the parameters AdamW updates, in its order (train.make_optimizer): all but a frozen embedding."""
    frozen = ckpt.record.frozen_embeddings
    parameters = ckpt.model.named_parameters()
    return [tuple(p.shape) for name, p in parameters if not (frozen and name == "embedding.weight")]


def read_metadata(shown: Path, metadata: dict[str, str], key: str) -> object:
    try:
        return json.loads(metadata[key])
    except KeyError:
        raise ChargenError(f"{shown} is corrupt: it lacks its {key} metadata") from None
    except (ValueError, RecursionError) as e:
        raise ChargenError(f"{shown} is corrupt: its {key} metadata is not JSON ({first_line(e)})") from None


def check_progress(shown: Path, progress: object) -> dict:
    """The run's position, each entry one of Progress, of its type, zero or more."""
    if not isinstance(progress, dict):
        raise ChargenError(f"{shown}: progress must be a JSON object, not {type(progress).__name__}")
    names = {f.name for f in fields(Progress)}
    unknown = [k for k in progress if k not in names]
    if unknown:
        raise ChargenError(f"{shown}: unknown progress entry {unknown[0]!r}")
    try:
        check_types(Progress(**progress))
    except OptionError as e:
        raise ChargenError(f"{shown}: progress {e}") from None
    for key, value in progress.items():
        if value is not None and not 0 <= value < 1 << 63:
            raise ChargenError(f"{shown}: progress {key} must be zero or more (and finite), not {value!r}")
    return progress


def check_param_groups(shown: Path, groups: object, count: int) -> list:
    """AdamW's hyperparameters: one group over the model's parameters, numbers where numbers go, only the flags chargen uses."""
    group = groups[0] if isinstance(groups, list) and len(groups) == 1 else None
    if not isinstance(group, dict):
        raise ChargenError(f"{shown}: param_groups must hold the one group of chargen's optimizer")
    params = group.get("params")
    if not isinstance(params, list) or any(type(i) is not int for i in params) or params != list(range(count)):
        raise ChargenError(f"{shown}: param_groups must list the model's {count} parameters, 0 to {count - 1}")
    for key in ("lr", "eps", "weight_decay"):
        if not (_is_number(group.get(key)) and 0 <= group[key] < math.inf):
            raise ChargenError(f"{shown}: param_groups {key} must be a number, zero or more, not {group.get(key)!r}")
    betas = group.get("betas")
    if not (isinstance(betas, list) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ChargenError(f"{shown}: param_groups betas must be two numbers in [0, 1), not {betas!r}")
    for key, allowed in ADAMW_FLAGS.items():
        if key in group and not any(group[key] is value for value in allowed):
            raise ChargenError(f"{shown}: param_groups {key} must be {' or '.join(map(repr, allowed))}, not {group[key]!r}")
    return groups


def check_values(shown: Path, tensors: dict[str, torch.Tensor]) -> None:
    """What AdamW divides by and counts with: its second moments and step counts are zero or more."""
    for key, tensor in tensors.items():
        if key.endswith((".exp_avg_sq", ".step")) and key.startswith("optimizer.") and (tensor < 0).any():
            raise ChargenError(f"{shown}: tensor {key} holds negative values")
    try:
        torch.Generator().set_state(tensors["rng"])
    except RuntimeError:
        raise ChargenError(f"{shown}: tensor rng is not a state of PyTorch's random number generator") from None


def read_resume(folder: Path, ckpt: Checkpoint | None = None) -> ResumeState:
    """Everything resume.safetensors holds, each part checked against the checkpoint's model and run before training trusts it.

    ckpt is load(folder), read again when not given.
    """
    folder = Path(folder)
    ckpt = ckpt if ckpt is not None else load(folder)
    shown = folder / RESUME
    optimized = optimized_shapes(ckpt)
    spec, together = resume_spec(ckpt, optimized)
    tensors, metadata = read_tensors(folder, RESUME, spec, together, missing=f"{shown} is missing: the run cannot be resumed")
    check_values(shown, tensors)
    progress = check_progress(shown, read_metadata(shown, metadata, "progress"))
    groups = check_param_groups(shown, read_metadata(shown, metadata, "param_groups"), len(optimized))
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    lanes = [tensors[f"lanes.{i}"] for i in range(2) if f"lanes.{i}" in tensors]
    lane_state = tuple(lanes) if lanes else None
    return ResumeState(model, {"state": state, "param_groups": groups}, lane_state, tensors["rng"], progress)


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


def load(folder: str | Path, weights: str = WEIGHTS) -> Checkpoint:
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
    from . import folder as store

    path = store.current(folder, METRICS)
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
