"""`chargen bench`, `info`, `list`, `plot`, `corpus` and `cache`: measuring, inspecting and housekeeping."""
from __future__ import annotations

from pathlib import Path

import click

from ..config import CorpusOptions, TrainConfig
from ..corpora import KNOWN as KNOWN_CORPORA
from ..model import CELLS
from .common import cli, newest, shown, stderr


@cli.command()
@click.option("--corpus", type=click.Path(path_type=Path), help="A text to train and encode  [default: synthetic text; no encoding figure]")
@click.option("--steps", type=int, default=10, show_default=True, help="Training steps per timing (each is timed 3 times after a warm-up).")
@click.option("--length", type=int, default=2000, show_default=True, help="Characters sampled per timing.")
@click.option("--streams", type=int, default=32, show_default=True, help="Streams in the batched sampling timing.")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True, help="Lanes of the training timing.")
@click.option("--seq-len", type=int, default=TrainConfig.seq_len, show_default=True, help="Window of the training timing.")
@click.option("--cell", type=click.Choice(CELLS), default="lstm", show_default=True, help="The cell of the 2 × 512 model timed.")
@click.option("--reference", "reference_seconds", type=float,
              help="Instead of speeds: train the plain reference LSTM (bf16 where the processor has it) on --corpus for this many seconds "
                   "(last 10 % as validation) and print its validation bpc, to set beside `chargen train --max-time`.")
def bench(corpus: Path | None, steps: int, length: int, streams: int, batch_size: int, seq_len: int, cell: str, reference_seconds: float | None) -> None:
    """Measure training, sampling and encoding speed next to plain PyTorch, in one run on this machine.

    \b
      chargen bench --corpus ../shared/corpora/war_and_peace.txt
      chargen bench --corpus ../shared/corpora/tinyshakespeare.txt --reference 600
    """
    from rich.console import Console
    from rich.table import Table

    from ..bench import processor, reference_run, run

    if reference_seconds is not None:
        r = reference_run(corpus, reference_seconds)
        click.echo(f"reference LSTM ({r.precision}) on {corpus}: {r.steps:,} steps, {r.chars:,} characters in {r.seconds:.0f} s "
                   f"({r.chars / r.seconds:,.0f} chars/s); validation {r.val_bpc:.4f} bpc")
        return

    table = Table("measure", "chargen", "plain PyTorch", "ratio", title=f"processor: {processor()}")
    for row in run(corpus, steps, length, streams, batch_size, seq_len, cell):
        reference = "" if row.reference is None else f"{row.reference:,.0f} {row.unit}"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}×"
        table.add_row(row.measure, f"{row.chargen:,.2f} {row.unit}" if row.unit in ("s", "MB/s") else f"{row.chargen:,.0f} {row.unit}", reference, ratio)
    Console().print(table)


@cli.command()
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def info(folder: Path | None, as_json: bool) -> None:
    """Architecture, vocabulary, corpus and progress of a checkpoint  [default: the newest].

    \b
      chargen info checkpoints/war_and_peace
      chargen info --json | jq .best_val_bpc
    """
    from rich.console import Console
    from rich.table import Table

    from ..info import summary, to_json

    figures = summary(folder if folder is not None else newest())
    if as_json:
        click.echo(to_json(figures))
        return
    table = Table("", "", show_header=False)
    for name, value in figures.items():
        table.add_row(name.removesuffix("_s").replace("_", " ") + (" (s)" if name.endswith("_s") else ""), shown(value))
    Console().print(table)


@cli.command(name="list")
@click.option("--root", type=click.Path(path_type=Path), default=Path("checkpoints"), show_default=True, help="Folder of checkpoints.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def list_command(root: Path, as_json: bool) -> None:
    """The checkpoints under ./checkpoints/, newest first.

    \b
      chargen list
      chargen list --json
    """
    from rich.console import Console
    from rich.table import Table

    from ..info import list_checkpoints, to_json

    found = list_checkpoints(root)
    if as_json:
        click.echo(to_json(found))
        return
    if not found:
        click.echo(f"no checkpoints under {root}/", err=True)
        return
    table = Table("checkpoint", "model", "vocabulary", "steps", "chars seen", "best bpc", "time")
    table.columns[0].no_wrap = True
    for c in found:
        if "error" in c:
            table.add_row(Path(c["folder"]).name, "unreadable (below)", *[""] * 5)
            continue
        table.add_row(
            Path(c["folder"]).name, c["architecture"].split(",")[0], f"{c['vocabulary_size']:,} {c['tokenizer']}", f"{c['steps']:,}",
            f"{c['characters_seen'] / 1e6:.1f} M", shown(c["best_val_bpc"]), f"{c['training_time_s']:.0f} s",
        )
    Console().print(table)
    for c in found:
        if "error" in c:
            click.echo(f"{c['folder']}: {c['error']}", err=True)


@cli.command()
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("training.png"), show_default=True, help="The PNG to write.")
def plot(folders: tuple[Path, ...], out: Path) -> None:
    """Train and validation bpc against characters seen, for one or more runs  [default: the newest].

    Needs matplotlib: pip install 'chargen[plot]'.

    \b
      chargen plot checkpoints/war_and_peace checkpoints/war_and_peace_words -o compare.png
    """
    from ..plot import plot_runs

    written = plot_runs(list(folders) or [newest()], out)
    click.echo(f"wrote {written}", err=True)


@cli.group()
def corpus() -> None:
    """Texts to train on: statistics of a file, and known public-domain books by name."""


@corpus.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--val-fraction", type=float, default=0.05, show_default=True, help="The split `chargen train` would make.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures, with every character's count, as JSON.")
def stats(file: Path, encoding: str, val_fraction: float, as_json: bool) -> None:
    """Characters, lines, line endings, vocabulary with counts, and the train/validation split of FILE.

    \b
      chargen corpus stats ../shared/corpora/war_and_peace.txt
    """
    from rich.console import Console
    from rich.table import Table

    from ..corpora import stats as file_stats
    from ..info import to_json

    CorpusOptions(val_fraction, encoding)  # checked as `chargen train` checks them
    figures = file_stats(file, encoding, val_fraction)
    if as_json:
        click.echo(to_json(figures))
        return
    counts = figures.pop("counts")
    table = Table("", "", show_header=False)
    for name, value in figures.items():
        table.add_row(name.replace("_", " "), ", ".join(f"{k}: {v:,}" for k, v in value.items()) if isinstance(value, dict) else shown(value))
    common = Table("character", "count", "share", title="commonest characters", title_justify="left")
    for char, count in list(counts.items())[:15]:
        common.add_row(repr(char), f"{count:,}", f"{count / figures['characters']:.2%}")
    Console().print(table, common)


@corpus.command(name="download")
@click.argument("name", type=click.Choice(sorted(KNOWN_CORPORA)))
@click.option("--overwrite", is_flag=True, help="Replace the file if it is already in corpora/.")
def download_command(name: str, overwrite: bool) -> None:
    """Fetch a known public-domain text from Project Gutenberg into corpora/, without its licence header and footer.

    \b
      chargen corpus download war-and-peace && chargen train war-and-peace
    """
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from ..corpora import download

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=stderr()) as bar:
        task = bar.add_task(f"{name}", total=None)
        path = download(name, overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done, total=total))
    click.echo(f"{path}: ready; train on it with  chargen train {name}", err=True)


@cli.group()
def cache() -> None:
    """The encoded texts kept so that the next run on the same text starts at once (~/.cache/chargen)."""


@cache.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def cache_list(as_json: bool) -> None:
    """The cache's entries, most recently used first, with the text each encodes.

    \b
      chargen cache list
    """
    from datetime import datetime

    from rich.console import Console
    from rich.table import Table

    from .. import cache as text_cache
    from ..info import to_json

    found = text_cache.entries()
    if as_json:
        click.echo(to_json([{"path": str(e.path), "bytes": e.size, "used": e.used, "source": e.source} for e in found]))
        return
    table = Table("entry", "size", "last used", "text")
    table.columns[3].overflow = "fold"
    for e in found:
        table.add_row(e.path.name, f"{e.size / 1e6:,.1f} MB", datetime.fromtimestamp(e.used).isoformat(sep=" ", timespec="minutes"), e.source or "?")
    Console().print(table)
    total = sum(e.size for e in found)
    click.echo(
        f"{len(found)} entr{'y' if len(found) == 1 else 'ies'}, {total / 1e6:,.1f} MB in {text_cache.folder()} "
        f"(at most {text_cache.MAX_ENTRIES} entries and {text_cache.MAX_BYTES / 1e9:,.1f} GB: the least recently used go first)",
        err=True,
    )


@cache.command(name="clear")
def cache_clear() -> None:
    """Remove every entry; the next run on each text encodes it again.

    \b
      chargen cache clear
    """
    from .. import cache as text_cache

    files, freed = text_cache.clear()
    click.echo(f"removed {files} files ({freed / 1e6:,.1f} MB) from {text_cache.folder()}", err=True)


