"""What every command shares: library errors as one-line errors, the group, the newest checkpoint, safe output."""
from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from ..version import __version__
from ..errors import ChargenError, OptionError
from ..sample import Sampler, load
from ..step import STEP_PRECISIONS


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
            silence_stdout()
            ctx.exit(1)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextlib.contextmanager
def writing_stdout() -> Iterator[None]:
    """A standard output that cannot be written (a full disk, /dev/full) is a one-line error, not a traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        silence_stdout()
        raise click.ClickException(f"cannot write to standard output ({e.strerror or e})") from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chargen")
def cli() -> None:
    """Character-level text generation with recurrent networks.

    \b
      chargen train war_and_peace.txt --max-time 600
      chargen sample --prompt "Napoleon was"
    """


def newest() -> Path:
    """The newest checkpoint under ./checkpoints/, named on stderr so the user knows which it was."""
    from ..checkpoint import latest

    folder = latest()
    click.echo(f"using {folder}", err=True)
    return folder


def load_sampler(checkpoint: Path | None, precision: str = "auto") -> Sampler:
    return load(checkpoint if checkpoint is not None else newest(), precision)


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A text option as typed in a shell: \\n, \\t, \\r and \\\\ stand for a newline, a tab, a carriage return and a backslash."""
    if value is None:
        return None
    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(0)), value)


def separator_option(function):
    """--separator, as train and prepare take it."""
    return click.option(
        "--separator",
        callback=unescape,
        help="Text put between the files of a corpus; \\n is a newline  [default: \\n, so a text ending in a newline is followed by a blank line]",
    )(function)


def step_precision_option(function):
    """--precision, as the commands that write text take it."""
    return click.option(
        "--precision",
        type=click.Choice(STEP_PRECISIONS),
        default="auto",
        show_default=True,
        help="How each step computes. auto: bf16 where the CPU has it natively, else fp32; fp32: exactly the float32 model's figures; "
             "int8: int8 weights, the fastest (a batch's rows share the inputs' scale).",
    )(function)


def stderr():
    from rich.console import Console

    return Console(stderr=True)


def shown(value) -> str:
    if isinstance(value, list):  # one line each: the files of a corpus
        return "\n".join(shown(item) for item in value)
    if isinstance(value, dict) and {"path", "sha256"} <= value.keys():
        return f"{value['path']}  (sha256 {value['sha256'][:12]}…)"
    if isinstance(value, float) and value > 100:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


