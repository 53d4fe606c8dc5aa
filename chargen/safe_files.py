"""Reading files that may be damaged or hostile: only regular files inside their folder, never more bytes than a
bound, and a safetensors file's header (names, shapes, dtypes) checked before any tensor is read."""
from __future__ import annotations

import math
import stat
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ChargenError, first_line
from .folder import current
from .model import available_memory

HEADER_BYTES = 1 << 20  # a safetensors file's header and metadata, beyond the bytes of its tensors
ITEM_BYTES = {"F32": 4, "BF16": 2, "U8": 1}  # the dtypes chargen writes: float32 tensors, bf16 lane states, the generator's bytes
Spec = dict[str, tuple[tuple[int, ...], tuple[str, ...]]]  # tensor name: (shape, the safetensors dtypes it may have)

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


def check_header(shown: Path, found: Spec, expected: Spec, together: Sequence[Sequence[str]]) -> None:
    """Every tensor found is one expected, of its shape and dtype; every one expected is there, or all of its group is absent."""
    for key, (shape, dtype) in found.items():
        if key not in expected:
            raise ChargenError(f"{shown} holds a tensor {key} that this checkpoint's model has not")
        wanted_shape, wanted_dtypes = expected[key]
        if dtype not in wanted_dtypes:
            raise ChargenError(f"{shown}: tensor {key} holds {dtype} values; chargen writes {' or '.join(wanted_dtypes)} only")
        if shape != wanted_shape:
            raise ChargenError(f"{shown}: tensor {key} has shape {list(shape)}, but config.json makes it {list(wanted_shape)}")
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
