"""`chargen export`: a checkpoint as ONNX graphs, or as a static site that writes in the browser (chargen/export.py)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import cli, newest


@cli.command("export")
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), help="Checkpoint folder  [default: newest under ./checkpoints/]")
@click.option("--format", "format_", type=click.Choice(("onnx", "web")), default="onnx", show_default=True,
              help="onnx: the graphs, vocabulary and config.json; web: those and a page that writes with them in the browser.")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="Folder to write into: new or empty (or see --overwrite).")
@click.option("--int8", is_flag=True, help="Weights of the matrix products in int8 (onnxruntime's dynamic quantisation; needs onnxruntime).")
@click.option("--runtime", type=click.Path(path_type=Path),
              help="With --format web: onnxruntime-web's dist folder, whose files the page loads (npm install onnxruntime-web).")
@click.option("--overwrite", is_flag=True, help="Write into a folder that holds files: those the export writes are replaced, others left.")
def export(checkpoint: Path | None, format_: str, out: Path, int8: bool, runtime: Path | None, overwrite: bool) -> None:
    """Export a model for ONNX runtimes, or as a page that writes text in the browser with no server.

    \b
      chargen export -c checkpoints/war_and_peace --out wp-onnx
      chargen export -c checkpoints/war_and_peace --format web --out wp-web \\
          --runtime node_modules/onnxruntime-web/dist
      python -m http.server -d wp-web 8000     # then open http://127.0.0.1:8000/
    """
    from ..export import export as export_model

    config = export_model(checkpoint if checkpoint is not None else newest(), out, format_, int8, runtime, overwrite)
    graphs = ", ".join(spec["file"] for spec in config["graphs"].values())
    click.echo(f"chargen: wrote {graphs}{' (int8)' if int8 else ''} and the vocabulary to {out}", err=True)
