"""Training curves: train and validation bpc against characters seen, several runs on one figure."""
from __future__ import annotations

import json
from pathlib import Path

from . import checkpoint
from .errors import ChargenError


def read_metrics(folder: Path) -> list[dict]:
    path = folder / checkpoint.METRICS
    if not path.is_file():
        raise ChargenError(f"{folder} has no {checkpoint.METRICS}: is it a checkpoint folder?")
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ChargenError(f"{path} line {e.lineno} is not JSON") from None


def plot_runs(folders: list[Path], out: Path) -> Path:
    """Write a PNG of every run's curves; matplotlib is an optional extra, chargen[plot]."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no screen is needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChargenError("chargen plot needs matplotlib: pip install 'chargen[plot]'") from None
    runs = [(folder, read_metrics(folder)) for folder in folders]
    figure, axes = plt.subplots(figsize=(8, 5))
    for folder, records in runs:
        chars = [r["chars"] / 1e6 for r in records]
        line = axes.plot(chars, [r["val_bpc"] for r in records], marker="o", label=f"{folder.name} validation")[0]
        axes.plot(chars, [r["train_bpc"] for r in records], linestyle="--", color=line.get_color(), label=f"{folder.name} train")
    axes.set_xlabel("characters seen (millions)")
    axes.set_ylabel("bits per character")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(out, dpi=120)
    except OSError as e:
        raise ChargenError(f"cannot write {out} ({e.strerror})") from None
    finally:
        plt.close(figure)
    return out
