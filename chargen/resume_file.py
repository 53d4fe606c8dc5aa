"""resume.safetensors: all that a run needs to continue exactly (weights, AdamW's state, the hidden state of every
lane, the random generator, the position in the data), written as one file and read back checked against the
checkpoint's model, so a damaged file is one clear line and never a run that trains on with nan."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from . import state as states
from . import checkpoint
from .checkpoint import RESUME, Checkpoint, weight_spec
from .errors import ChargenError, OptionError, check_types, first_line
from .safe_files import Spec, read_tensors
from .state import State

ADAMW_FLAGS = {  # what chargen's AdamW may have saved for each flag (loop.make_optimizer sets none but fused)
    "amsgrad": (False,),
    "maximize": (False,),
    "capturable": (False,),
    "differentiable": (False,),
    "foreach": (None, False, True),
    "fused": (None, False, True),
    "decoupled_weight_decay": (False, True),
}



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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    """The shapes of the parameters AdamW updates, in its order (loop.make_optimizer): all but a frozen embedding
    and, in a fine-tune, the layers it keeps fixed (finetune.freeze_lower_layers, on a copy of the model)."""
    from .finetune import freeze_lower_layers

    frozen = ckpt.record.frozen_embeddings
    started = ckpt.record.init_from or {}
    layers = started.get("frozen_layers")
    model = ckpt.model
    if layers:
        model = copy.deepcopy(model)
        freeze_lower_layers(model, layers, started.get("frozen_embedding", True))
    parameters = model.named_parameters()
    return [tuple(p.shape) for name, p in parameters if p.requires_grad and not (frozen and name == "embedding.weight")]


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

    ckpt is checkpoint.read(folder), read again when not given.
    """
    folder = Path(folder)
    ckpt = ckpt if ckpt is not None else checkpoint.read(folder)
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
    lanes = [tensors[f"lanes.{i}"] for i in range(states.parts(ckpt.model.config.cell)) if f"lanes.{i}" in tensors]
    lane_state = tuple(lanes) if lanes else None
    return ResumeState(model, {"state": state, "param_groups": groups}, lane_state, tensors["rng"], progress)
