"""`chargen train`: every option of a run, parsed and handed to run.train or run.resume."""
from __future__ import annotations

from pathlib import Path

import click

from .. import recipe
from ..config import SCHEDULES, TrainConfig
from ..distributed import is_writer_process
from ..errors import ChargenError
from ..loop import EVAL_EVERY, VALIDATION_SHARE
from ..model import CELLS, DEVICES, INPUTS, NONLINEARITIES, PRECISIONS, ModelConfig
from .common import cli, separator_option


def read_config(ctx: click.Context, param: click.Parameter, path: Path | None) -> None:
    """Options from a file become the command's defaults, so anything on the command line still wins."""
    if path is None:
        return
    from ..settings import read_options

    known = {p.name for p in ctx.command.params if p.name not in ("config", "resume")}
    try:
        ctx.default_map = {**(ctx.default_map or {}), **read_options(path, known)}
    except ChargenError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


@cli.command()
@click.argument("corpus", nargs=-1, type=click.Path(path_type=Path))
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the run saved in this checkpoint folder.")
@click.option("--init-from", type=click.Path(path_type=Path), help="Fine-tune: start from this checkpoint's model, its vocabulary extended by the new text's.")
@click.option("--freeze", type=int, help="With --init-from: keep the input and this many of the lowest recurrent layers fixed.")
@click.option("--out", type=click.Path(path_type=Path), help="Checkpoint folder  [default: checkpoints/<corpus stem>]")
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of CORPUS.")
@click.option("--keep-newlines", is_flag=True, help="Keep \\r\\n and \\r line endings as they are.")
@separator_option
@click.option("--skip-non-text", is_flag=True, help="Leave out, with a warning, files that are not text (binary, undecodable); without it they stop the run.")
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
@click.option("--config", type=click.Path(path_type=Path), is_eager=True, expose_value=False, callback=read_config,
              help="Read options from a TOML file, or a checkpoint's config.json; the command line wins.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_context
def train(ctx: click.Context, corpus: tuple[Path, ...], resume: Path | None, **options) -> None:
    """Train a model on CORPUS: text files, folders of them, globs, or a folder `chargen prepare` wrote. Or continue a
    saved run with --resume, or fine-tune a trained model on a new text with --init-from.

    Many files are read in the order given (a folder's in the order of their paths, hidden ones left out) and
    joined with --separator; the validation text is the last --val-fraction of the joined text.
    Ctrl-C (or SIGTERM) stops after the current step and saves the run; --resume continues it exactly.
    The limits (--max-steps, --max-epochs, --max-time, --patience) count the whole run and may be
    raised when resuming; every other option stays as the run began.

    \b
      chargen train war_and_peace.txt --max-time 600
      chargen train poems/ --cell gru --layers 3 --hidden 256 --out checkpoints/poems-gru
      chargen train 'letters/*.txt' --tokenizer word --tie-weights --out checkpoints/letters
      chargen train tinyshakespeare.txt --init-from checkpoints/war_and_peace --max-time 120
      chargen train --resume checkpoints/war_and_peace --max-time 3600
    """
    from ..run import resume as resume_training
    from ..run import train as run_training

    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    if resume is not None:
        quiet, cache = given.pop("quiet", False), given.pop("cache", True)
        result = resume_training(resume, corpus or None, cache=cache, quiet=quiet, **given)
    elif not corpus:
        raise click.UsageError("name a CORPUS to train on (text files, folders, globs or a prepared folder), or --resume DIR to continue a run")
    else:
        result = run_training(list(corpus), **given)
    if not is_writer_process():
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


