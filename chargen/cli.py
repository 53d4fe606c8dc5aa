"""The command line: each command parses its options and calls the library function of the same name."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from . import __version__, recipe
from .corpora import KNOWN as KNOWN_CORPORA
from .errors import ChargenError, OptionError
from .model import CELLS, DEVICES, INPUTS, NONLINEARITIES, PRECISIONS, ModelConfig
from .sample import Likeliest, Sampler, check_options, check_text, load
from .config import SCHEDULES, TrainConfig
from .loop import EVAL_EVERY, VALIDATION_SHARE


class Group(click.Group):
    """Library errors become click's one-line errors: bad option values exit 2, anything else 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OptionError as e:
            raise click.UsageError(str(e)) from None
        except ChargenError as e:
            raise click.ClickException(str(e)) from None
        except BrokenPipeError:  # the reader went away (chargen sample | head): nothing more to say
            _silence_stdout()
            ctx.exit(1)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextlib.contextmanager
def _writing_stdout() -> Iterator[None]:
    """A standard output that cannot be written (a full disk, /dev/full) is a one-line error, not a traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        _silence_stdout()
        raise click.ClickException(f"cannot write to standard output ({e.strerror or e})") from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chargen")
def cli() -> None:
    """Character-level text generation with recurrent networks.

    \b
      chargen train war_and_peace.txt --max-time 600
      chargen sample --prompt "Napoleon was"
    """


def _newest() -> Path:
    """The newest checkpoint under ./checkpoints/, named on stderr so the user knows which it was."""
    from .checkpoint import latest

    folder = latest()
    click.echo(f"using {folder}", err=True)
    return folder


def _load(checkpoint: Path | None, precision: str = "auto") -> Sampler:
    return load(checkpoint if checkpoint is not None else _newest(), precision)


def _read_config(ctx: click.Context, param: click.Parameter, path: Path | None) -> None:
    """Options from a file become the command's defaults, so anything on the command line still wins."""
    if path is None:
        return
    from .settings import read_options

    known = {p.name for p in ctx.command.params if p.name not in ("config", "resume")}
    try:
        ctx.default_map = {**(ctx.default_map or {}), **read_options(path, known)}
    except ChargenError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


@cli.command()
@click.argument("corpus", type=click.Path(path_type=Path), required=False)
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the run saved in this checkpoint folder.")
@click.option("--out", type=click.Path(path_type=Path), help="Checkpoint folder  [default: checkpoints/<corpus stem>]")
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of CORPUS.")
@click.option("--keep-newlines", is_flag=True, help="Keep \\r\\n and \\r line endings as they are.")
@click.option("--val-fraction", type=float, default=0.05, show_default=True, help="Last part of the text held out for validation.")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Keep the encoded text in ~/.cache/chargen so the next run starts at once.")
@click.option("--tokenizer", type=click.Choice(["char", "word", "bpe"]), default="char", show_default=True, help="Model characters, words or BPE subwords.")
@click.option("--vocab-size", type=int, help="Largest word or BPE vocabulary  [default: 10000 words, 4000 bpe]")
@click.option("--min-frequency", type=int, default=2, show_default=True, help="Fewest occurrences for a word or merge to enter the vocabulary.")
@click.option("--cell", type=click.Choice(list(CELLS)), default=ModelConfig.cell, show_default=True)
@click.option("--nonlinearity", type=click.Choice(NONLINEARITIES), default=ModelConfig.nonlinearity, show_default=True, help="For --cell rnn.")
@click.option("--layers", type=int, default=ModelConfig.layers, show_default=True)
@click.option("--hidden", type=int, help="Units per recurrent layer  [default: fitted to the text, the limits and this machine's speed]")
@click.option("--input", type=click.Choice(INPUTS), default=ModelConfig.input, show_default=True, help="Learned embeddings or one-hot vectors.")
@click.option("--embedding-dim", type=int, default=ModelConfig.embedding_dim, show_default=True)
@click.option("--dropout", type=float, help="Between layers and before the output layer  [default: from the passes over the text the run will make]")
@click.option("--tie-weights", is_flag=True, help="Share the input embedding matrix with the output layer.")
@click.option(
    "--skip-connections/--no-skip-connections",
    default=None,
    help=f"The output layer reads every recurrent layer, not only the last  [default: on while the run passes over the text at most {recipe.REPEAT_PASSES:g} times]",
)
@click.option("--embeddings", type=click.Path(path_type=Path), help="Start the embeddings from GloVe or word2vec text vectors.")
@click.option("--freeze-embeddings", is_flag=True, help="Keep the --embeddings vectors fixed.")
@click.option("--lr", type=float, help=f"AdamW learning rate  [default: {recipe.BASE_LR:g}, scaled down for layers wider than {recipe.BASE_WIDTH}]")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=TrainConfig.schedule, show_default=True,
              help="After the warm-up, linear: down to 0 at the nearest of --max-time, --max-steps, --max-epochs; cosine: down to lr/20 there.")
@click.option("--warmup", type=int, default=TrainConfig.warmup, show_default=True, help="Steps of linear learning-rate warm-up.")
@click.option("--weight-decay", type=float, default=TrainConfig.weight_decay, show_default=True, help="AdamW weight decay.")
@click.option("--clip", type=float, default=TrainConfig.clip, show_default=True, help="Global gradient-norm clip; 0 turns it off.")
@click.option("--seq-len", type=int, default=TrainConfig.seq_len, show_default=True, help="Characters per BPTT window.")
@click.option("--batch-size", type=int, help=f"Number of contiguous lanes  [default: {recipe.LANES}, or {recipe.REPEAT_LANES} when the run will pass over the text more than {recipe.REPEAT_PASSES:g} times]")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option("--max-steps", type=int, help="Stop after this many steps.")
@click.option("--max-epochs", type=int, help="Stop after this many passes  [default: 10 when no other limit is given]")
@click.option("--max-time", type=float, help="Stop after this many seconds.")
@click.option("--eval-every", type=int, help=f"Steps between validations  [default: {EVAL_EVERY:,}, skipping those that would take a --max-time run's validations past {VALIDATION_SHARE:.0%} of its time]")
@click.option("--patience", type=int, default=TrainConfig.patience, show_default=True, help="Stop when validation has not improved for this many evaluations; 0 never stops.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=TrainConfig.precision, show_default=True, help="auto: bf16 where the device has it natively.")
@click.option("--device", type=click.Choice(DEVICES), default=TrainConfig.device, show_default=True, help="auto: a CUDA GPU, else MPS, else the CPU.")
@click.option("--threads", type=int, help="CPU threads  [default: PyTorch's choice]")
@click.option("--sample-every", type=int, help="Show a short sample every N steps.")
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard event files to DIR/tensorboard (pip install 'chargen[tensorboard]').")
@click.option("--config", type=click.Path(path_type=Path), is_eager=True, expose_value=False, callback=_read_config,
              help="Read options from a TOML file, or a checkpoint's config.json; the command line wins.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_context
def train(ctx: click.Context, corpus: Path | None, resume: Path | None, **options) -> None:
    """Train a model on the text file CORPUS, or continue a saved run with --resume.

    Ctrl-C (or SIGTERM) stops after the current step and saves the run; --resume continues it exactly.
    The limits (--max-steps, --max-epochs, --max-time, --patience) count the whole run and may be
    raised when resuming; every other option stays as the run began.

    \b
      chargen train war_and_peace.txt --max-time 600
      chargen train poems.txt --cell gru --layers 3 --hidden 256 --out checkpoints/poems-gru
      chargen train war_and_peace.txt --tokenizer word --tie-weights --out checkpoints/wp-words
      chargen train --resume checkpoints/war_and_peace --max-time 3600
    """
    from .run import resume as resume_training
    from .run import train as run_training

    if resume is not None:
        given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
        quiet, cache = given.pop("quiet", False), given.pop("cache", True)
        result = resume_training(resume, corpus, cache=cache, quiet=quiet, **given)
    elif corpus is None:
        raise click.UsageError("name a CORPUS text file to train on, or --resume DIR to continue a run")
    else:
        result = run_training(corpus, **options)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 speaks for the run
    validated = f"validation {result.last_val_bpc:.4f} bpc (best {result.best_val_bpc:.4f})" if result.best_val_bpc < float("inf") else "not validated yet"
    click.echo(
        f"{result.stopped_because}: {result.steps:,} steps, {result.chars:,} characters in {result.elapsed_s:.0f} s; "
        f"{validated}.\nCheckpoint: {result.folder}",
        err=True,
    )
    if result.interrupted:
        click.echo(f"Saved at step {result.steps:,}; continue with: chargen train --resume {result.folder}", err=True)
    click.echo(f"Next: chargen sample --checkpoint {result.folder} --prompt \"...\"", err=True)
    if result.interrupted:
        ctx.exit(128 + result.stop_signal)  # the shell's convention for a process a signal stopped: 130 for Ctrl-C


@cli.command()
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), help="Checkpoint folder  [default: newest under ./checkpoints/]")
@click.option("--prompt", "-p", default="", help="Text that starts the sample and warms up the model.")
@click.option("--length", "-n", type=int, default=500, show_default=True, help="Characters to generate after the prompt.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="0 is greedy; lower is safer, higher wilder.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Draw only from the K likeliest characters; 0 is off.")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Draw only from the smallest set holding this probability.")
@click.option("--seed", type=int, help="The same seed gives the same text.")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Independent samples, generated as one batch (at most 1,024).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True, help="auto: bf16 steps where the CPU has it natively.")
def sample(
    checkpoint: Path | None, prompt: str, length: int, temperature: float, top_k: int, top_p: float, seed: int | None, num_samples: int, precision: str
) -> None:
    """Generate text from a trained model; text goes to stdout, messages to stderr.

    \b
      chargen sample --prompt "Napoleon was" --length 300 --temperature 0.8
      chargen sample -c checkpoints/tinyshakespeare --num-samples 4 --seed 1
    """
    check_text(prompt)  # the options first: a checkpoint can take seconds to read
    check_options(length, temperature, top_k, top_p, num_samples, seed)
    sampler = _load(checkpoint, precision)
    with _writing_stdout():
        if num_samples == 1:
            for piece in sampler.stream(prompt, length, temperature, top_k, top_p, seed):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            texts = sampler.generate(prompt, length, temperature, top_k, top_p, seed, num_samples)
            sys.stdout.write("\n\n".join(texts) + "\n")


@cli.command()
@click.argument("text")
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), help="Checkpoint folder  [default: newest under ./checkpoints/]")
@click.option("-k", type=int, default=5, show_default=True, help="How many words.")
@click.option("--json", "as_json", is_flag=True, help="Print the words and probabilities as JSON.")
def predict(text: str, checkpoint: Path | None, k: int, as_json: bool) -> None:
    """The K most probable next words after TEXT, with the model's probabilities.

    \b
      chargen predict "Napoleon was the emperor of"
      chargen predict "Well, Prince, so Genoa and" -k 10 -c checkpoints/wp-words
    """
    from rich.console import Console
    from rich.table import Table

    from .info import to_json

    check_text(text, "text")
    Likeliest(k)
    predictions = _load(checkpoint).predict_next_word(text, k)
    with _writing_stdout():
        if as_json:
            click.echo(to_json([{"word": p.word, "probability": p.probability} for p in predictions]))
            return
        table = Table("next word", "probability")
        for p in predictions:
            table.add_row(p.word, f"{p.probability:.4f}")
        Console().print(table)


@cli.command(name="eval")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), help="Checkpoint folder  [default: newest under ./checkpoints/]")
@click.option("--words", type=int, default=1000, show_default=True, help="Word positions scored for next-word accuracy, spread evenly.")
@click.option("--baseline", is_flag=True, help="Also score a word trigram counted on the model's training text.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate(file: Path | None, checkpoint: Path | None, words: int, baseline: bool, as_json: bool) -> None:
    """Bits per character, perplexity and next-word accuracy on FILE  [default: the checkpoint's validation text].

    \b
      chargen eval -c checkpoints/war_and_peace --baseline
      chargen eval other_book.txt --words 5000
    """
    from rich.console import Console
    from rich.table import Table

    from .evaluation import Scoring
    from .evaluation import evaluate as run_evaluation

    Scoring(words, baseline)
    if checkpoint is None:
        checkpoint = _newest()
    from .info import to_json

    r = run_evaluation(checkpoint, file, words, baseline)
    if as_json:
        click.echo(to_json({"checkpoint": str(checkpoint), **r.to_dict()}))
        return
    click.echo(f"{checkpoint} on {r.file}:")
    table = Table("measure", "model", *(["word trigram"] if baseline else []))
    table.add_row("bits per character", f"{r.bits_per_char:.4f}", *(["-"] if baseline else []))
    table.add_row(f"perplexity per token ({r.tokens:,} tokens)", f"{r.perplexity:.2f}", *(["-"] if baseline else []))
    table.add_row(f"next word top-1 ({r.words_scored:,} words)", f"{r.top1:.1%}", *([f"{r.baseline_top1:.1%}"] if baseline else []))
    table.add_row("next word top-5", f"{r.top5:.1%}", *([f"{r.baseline_top5:.1%}"] if baseline else []))
    Console().print(table)


@cli.command()
@click.option("--corpus", type=click.Path(path_type=Path), help="A text to train and encode  [default: synthetic text; no encoding figure]")
@click.option("--steps", type=int, default=10, show_default=True, help="Training steps per timing (each is timed 3 times after a warm-up).")
@click.option("--length", type=int, default=2000, show_default=True, help="Characters sampled per timing.")
@click.option("--streams", type=int, default=32, show_default=True, help="Streams in the batched sampling timing.")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True, help="Lanes of the training timing.")
@click.option("--seq-len", type=int, default=TrainConfig.seq_len, show_default=True, help="Window of the training timing.")
@click.option("--reference", "reference_seconds", type=float,
              help="Instead of speeds: train the plain reference LSTM (bf16 where the processor has it) on --corpus for this many seconds "
                   "(last 10 % as validation) and print its validation bpc, to set beside `chargen train --max-time`.")
def bench(corpus: Path | None, steps: int, length: int, streams: int, batch_size: int, seq_len: int, reference_seconds: float | None) -> None:
    """Measure training, sampling and encoding speed next to plain PyTorch, in one run on this machine.

    \b
      chargen bench --corpus ../shared/corpora/war_and_peace.txt
      chargen bench --corpus ../shared/corpora/tinyshakespeare.txt --reference 600
    """
    from rich.console import Console
    from rich.table import Table

    from .bench import reference_run, run

    if reference_seconds is not None:
        r = reference_run(corpus, reference_seconds)
        click.echo(f"reference LSTM ({r.precision}) on {corpus}: {r.steps:,} steps, {r.chars:,} characters in {r.seconds:.0f} s "
                   f"({r.chars / r.seconds:,.0f} chars/s); validation {r.val_bpc:.4f} bpc")
        return

    table = Table("measure", "chargen", "plain PyTorch", "ratio")
    for row in run(corpus, steps, length, streams, batch_size, seq_len):
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

    from .info import summary, to_json

    figures = summary(folder if folder is not None else _newest())
    if as_json:
        click.echo(to_json(figures))
        return
    table = Table("", "", show_header=False)
    for name, value in figures.items():
        table.add_row(name.removesuffix("_s").replace("_", " ") + (" (s)" if name.endswith("_s") else ""), _shown(value))
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

    from .info import list_checkpoints, to_json

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
            f"{c['characters_seen'] / 1e6:.1f} M", _shown(c["best_val_bpc"]), f"{c['training_time_s']:.0f} s",
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
    from .plot import plot_runs

    written = plot_runs(list(folders) or [_newest()], out)
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

    from .corpora import stats as file_stats
    from .info import to_json

    if not 0 < val_fraction < 1:
        raise OptionError(f"val-fraction must be between 0 and 1 (exclusive), not {val_fraction}")
    figures = file_stats(file, encoding, val_fraction)
    if as_json:
        click.echo(to_json(figures))
        return
    counts = figures.pop("counts")
    table = Table("", "", show_header=False)
    for name, value in figures.items():
        shown = ", ".join(f"{k}: {v:,}" for k, v in value.items()) if isinstance(value, dict) else _shown(value)
        table.add_row(name.replace("_", " "), shown)
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

    from .corpora import download

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=_stderr()) as bar:
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

    from . import cache as text_cache
    from .info import to_json

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
    from . import cache as text_cache

    files, freed = text_cache.clear()
    click.echo(f"removed {files} files ({freed / 1e6:,.1f} MB) from {text_cache.folder()}", err=True)


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def _shown(value) -> str:
    if isinstance(value, float) and value > 100:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def main() -> None:
    cli(prog_name="chargen")
