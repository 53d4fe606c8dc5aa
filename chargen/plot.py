"""Training curves: train and validation bpc against characters seen, several runs on one figure."""
from __future__ import annotations

from pathlib import Path

from . import checkpoint
from .errors import ChargenError


def metrics_of(folder: Path) -> list[dict]:
    records = checkpoint.read_metrics(folder)
    if not records:
        raise ChargenError(f"{folder} has no evaluations in {checkpoint.METRICS}: is it a checkpoint folder?")
    return records


def plot_runs(folders: list[Path], out: Path) -> Path:
    """Write a PNG of every run's curves; matplotlib is an optional extra, chargen[plot]."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no screen is needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChargenError("chargen plot needs matplotlib: pip install 'chargen[plot]'") from None
    runs = [(folder, metrics_of(folder)) for folder in folders]
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
