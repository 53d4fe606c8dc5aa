"""`chargen prepare`: a corpus of any size encoded once into a folder that `chargen train` maps into memory."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..config import CorpusOptions
from .common import cli, separator_option


@cli.command()
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The folder to write (new or empty, or a prepared corpus with --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace a prepared corpus already in --out.")
@click.option("--encoding", default=CorpusOptions.encoding, show_default=True, help="Text encoding of the files.")
@click.option("--keep-newlines", is_flag=True, help="Keep \\r\\n and \\r line endings as they are.")
@separator_option
@click.option("--skip-non-text", is_flag=True, help="Leave out, with a warning, files that are not text; without it they stop.")
@click.option("--val-fraction", type=float, default=CorpusOptions.val_fraction, show_default=True, help="Last part of the joined text held out for validation.")
@click.option("--tokenizer", type=click.Choice(["char", "word", "bpe"]), default=CorpusOptions.tokenizer, show_default=True)
@click.option("--vocab-size", type=int, help="Largest word or BPE vocabulary  [default: 10000 words, 4000 bpe]")
@click.option("--min-frequency", type=int, default=CorpusOptions.min_frequency, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was prepared as JSON.")
def prepare(corpus: tuple[Path, ...], out: Path, overwrite: bool, skip_non_text: bool, as_json: bool, **options) -> None:
    """Encode CORPUS (text files, folders, globs) into --out: memory-mapped token ids, the vocabulary and a manifest.

    It streams: the text is never held in memory, so a corpus larger than memory prepares and trains.

    \b
      chargen prepare books/ --out prepared/books
      chargen train prepared/books --max-time 3600
    """
    from ..prepared import describe
    from ..prepared import prepare as prepare_corpus

    corpus_options = CorpusOptions(**{k: v for k, v in options.items() if v is not None or k != "separator"})
    began = time.perf_counter()
    say = None if as_json else (lambda line: click.echo(line, err=True))
    manifest = prepare_corpus(list(corpus), out, corpus_options, skip_non_text, overwrite, say)
    seconds = time.perf_counter() - began
    summary = {**describe(manifest), "folder": str(out), "seconds": round(seconds, 2)}
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"{out}: {summary['train_tokens']:,} training and {summary['val_tokens']:,} validation tokens from {summary['files']:,} files "
        f"({summary['bytes'] / 1e6:,.1f} MB in {seconds:.1f} s, {summary['bytes'] / 1e6 / max(seconds, 1e-9):,.0f} MB/s)\n"
        f"Next: chargen train {out}",
        err=True,
    )
