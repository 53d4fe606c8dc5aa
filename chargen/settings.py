"""Training options from a file: a TOML file of `chargen train` options, or a checkpoint's config.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .record import RunRecord
from .errors import ChargenError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def from_checkpoint_config(config: dict, path: Path = Path("config.json")) -> dict:
    """The options a run was started with, from its config.json: rerunning them retrains the same model."""
    return RunRecord.from_json(config, path).train_options()


def read_options(path: str | Path, known: set[str]) -> dict:
    """Option names (dashes or underscores) to values; names `chargen train` does not have are an error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ChargenError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        loaded = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ChargenError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None
    options = from_checkpoint_config(loaded, path) if path.suffix == ".json" and isinstance(loaded, dict) and "format_version" in loaded else loaded
    if not isinstance(options, dict):
        raise ChargenError(f"{path} must hold a table of options")
    options = {str(k).replace("-", "_"): v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ChargenError(f"{path}: unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}")
    return options
