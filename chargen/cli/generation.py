"""`chargen sample`, `predict` and `eval`: what a trained model writes, guesses and scores."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..corpus import read_prompt
from ..sample import Likeliest, SamplingOptions, check_text
from .common import cli, load_sampler, newest, step_precision_option, unescape, writing_stdout


@cli.command()
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), help="Checkpoint folder  [default: newest under ./checkpoints/]")
@click.option("--prompt", "-p", default="", help="Text that starts the sample and warms up the model.")
@click.option("--prompt-file", type=click.Path(path_type=Path, allow_dash=True), help="Read the prompt from FILE (- for standard input) instead.")
@click.option("--length", "-n", type=int, default=500, show_default=True, help="Characters to generate after the prompt.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="0 is greedy; lower is safer, higher wilder.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Draw only from the K likeliest characters; 0 is off.")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Draw only from the smallest set holding this probability.")
@click.option("--seed", type=int, help="The same seed gives the same text.")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Independent samples, generated as one batch (at most 1,024).")
@click.option("--stop", multiple=True, callback=lambda ctx, param, values: tuple(unescape(ctx, param, v) for v in values),
              help="End the text just before this text (\\n is a newline); may be given several times.")
@click.option("--logprobs", type=int, default=0, help="Print each token as a JSON line with its log probability and those of the K likeliest.")
@step_precision_option
def sample(checkpoint: Path | None, prompt: str, prompt_file: Path | None, precision: str, **options) -> None:
    """Generate text from a trained model; text goes to stdout, messages to stderr.

    \b
      chargen sample --prompt "Napoleon was" --length 300 --temperature 0.8
      chargen sample -c checkpoints/tinyshakespeare --num-samples 4 --seed 1
      chargen sample --prompt-file opening.txt --length 1000 --stop "\\n\\n"
    """
    if prompt_file is not None:
        if prompt:
            raise click.UsageError("give --prompt or --prompt-file, not both")
        prompt = read_prompt(prompt_file)
    check_text(prompt)  # the options first: a checkpoint can take seconds to read
    sampling = SamplingOptions(**options)
    if sampling.logprobs and sampling.num_samples > 1:
        raise click.UsageError("--logprobs prints one sample's tokens: give it without --num-samples")
    sampler = load_sampler(checkpoint, precision)
    with writing_stdout():
        if sampling.logprobs:
            for (piece,) in sampler.pieces(prompt, sampling):
                line = {"text": piece.text, "token": piece.token, "logprob": piece.logprob, "top": dict(piece.top)}
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        elif sampling.num_samples == 1:
            sys.stdout.write(prompt)
            for (piece,) in sampler.pieces(prompt, sampling):
                sys.stdout.write(piece.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            s = sampling
            texts = sampler.generate(prompt, s.length, s.temperature, s.top_k, s.top_p, s.seed, s.num_samples, s.stop)
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

    from ..info import to_json

    check_text(text, "text")
    Likeliest(k)
    predictions = load_sampler(checkpoint).predict_next_word(text, k)
    with writing_stdout():
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
@click.option("--dynamic", is_flag=True, help="Also score it by dynamic evaluation: the model learns from each part of the text once it has scored it.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate(file: Path | None, checkpoint: Path | None, words: int, baseline: bool, dynamic: bool, as_json: bool) -> None:
    """Bits per character, perplexity and next-word accuracy on FILE  [default: the checkpoint's validation text].

    \b
      chargen eval -c checkpoints/war_and_peace --baseline
      chargen eval other_book.txt --words 5000
      chargen eval --dynamic
    """
    from rich.console import Console
    from rich.table import Table

    from ..evaluation import Scoring
    from ..evaluation import evaluate as run_evaluation

    Scoring(words, baseline)
    if checkpoint is None:
        checkpoint = newest()
    from ..info import to_json

    from ..dynamic import DynamicOptions

    r = run_evaluation(checkpoint, file, words, baseline, DynamicOptions() if dynamic else None)
    if as_json:
        click.echo(to_json({"checkpoint": str(checkpoint), **r.to_dict()}))
        return
    click.echo(f"{checkpoint} on {r.file}:")
    table = Table("measure", "model", *(["word trigram"] if baseline else []))
    table.add_row("bits per character", f"{r.bits_per_char:.4f}", *(["-"] if baseline else []))
    table.add_row(f"perplexity per token ({r.tokens:,} tokens)", f"{r.perplexity:.2f}", *(["-"] if baseline else []))
    table.add_row(f"next word top-1 ({r.words_scored:,} words)", f"{r.top1:.1%}", *([f"{r.baseline_top1:.1%}"] if baseline else []))
    table.add_row("next word top-5", f"{r.top5:.1%}", *([f"{r.baseline_top5:.1%}"] if baseline else []))
    if dynamic:
        table.add_row(f"bits per character, dynamic evaluation ({r.dynamic_seconds:,.0f} s; static with the word search {r.seconds:,.0f} s)", f"{r.dynamic_bits_per_char:.4f}", *(["-"] if baseline else []))
    Console().print(table)


