"""What a user watches during training: a rich progress bar on stderr and a line per evaluation."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

TOTAL = 1000  # the bar tracks the fraction done of whichever stopping limit is nearest


class TrainingDisplay:
    """A progress bar (step, bpc, speed, time left) plus printed lines; silent when quiet."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.progress = Progress(
            TextColumn("step {task.fields[step]:>6}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TextColumn("train {task.fields[train_bpc]} · val {task.fields[val_bpc]} bpc · {task.fields[speed]} chars/s"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=self.console,
            disable=quiet,
        )
        self.task = self.progress.add_task("train", total=TOTAL, step=0, train_bpc="-", val_bpc="-", speed="-")

    def __enter__(self) -> TrainingDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, fraction: float, step: int, train_bpc: float | None, val_bpc: float | None, speed: float) -> None:
        self.progress.update(
            self.task,
            completed=min(fraction, 1.0) * TOTAL,
            step=step,
            train_bpc="-" if train_bpc is None else f"{train_bpc:.3f}",
            val_bpc="-" if val_bpc is None else f"{val_bpc:.3f}",
            speed=f"{speed:,.0f}",
        )

    def show_val(self, val_bpc: float) -> None:
        self.progress.update(self.task, val_bpc=f"{val_bpc:.3f}")

    def log(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(message, highlight=False, markup=False)
