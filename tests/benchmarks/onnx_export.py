"""Benchmark: a checkpoint exported to ONNX in float32 and int8, measured side by side in one run: the graphs' sizes,
bits per character of the checkpoint's validation text through onnxruntime's step graph, and one stream's greedy
step rate in onnxruntime beside `chargen sample`'s.

    python -m tests.benchmarks.onnx_export --checkpoint checkpoints/war_and_peace --scratch /tmp/chargen-onnx

Needs the export extra and onnxruntime. The rates are on one thread, so that both runtimes do the same work;
run it alone on the machine.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import chargen
from chargen import checkpoint, export
from chargen.inputs import validation_split

PROMPT = "Prince Andrew"


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def state_names(folder: Path) -> list[str]:
    return json.loads((folder / export.CONFIG).read_text())["state"]


def onnx_bpc(folder: Path, ids: np.ndarray, layers: int, hidden: int, streams: int = 32) -> float:
    """The text cut into `streams` equal parts, each read from a zero state, one step-graph call per position for all."""
    step, names = session(folder / export.STEP, threads=2), state_names(folder)
    length = len(ids) // streams
    parts = ids[: length * streams].reshape(streams, length)
    state = [np.zeros((layers, streams, hidden), np.float32) for _ in names]
    nats = 0.0
    for t in range(length - 1):
        logits, *state = step.run(None, {"ids": parts[:, t], **dict(zip(names, state))})
        log_probs = torch.from_numpy(logits).log_softmax(-1)
        nats -= log_probs[torch.arange(streams), torch.from_numpy(parts[:, t + 1])].sum().item()
    return nats / (streams * (length - 1)) / math.log(2)


def onnx_rate(folder: Path, prompt_ids: np.ndarray, steps: int) -> float:
    """Greedy characters per second of one stream: prefill on the prompt, then the step graph per character."""
    prefill, step, names = session(folder / export.PREFILL, 1), session(folder / export.STEP, 1), state_names(folder)
    logits, *state = prefill.run(None, {"tokens": prompt_ids[None]})
    began = time.perf_counter()
    for _ in range(steps):
        token = np.array([logits[0].argmax()], dtype=np.int64)
        logits, *state = step.run(None, {"ids": token, **dict(zip(names, state))})
    return steps / (time.perf_counter() - began)


def chargen_rate(folder: Path, precision: str, steps: int) -> float:
    sampler = chargen.load(folder, precision=precision)
    sampler.generate(PROMPT, length=50, temperature=0)
    began = time.perf_counter()
    sampler.generate(PROMPT, length=steps, temperature=0)
    return steps / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True, help="where the two exports are written")
    parser.add_argument("--steps", type=int, default=2000, help="characters per timed stream")
    args = parser.parse_args()
    torch.set_num_threads(1)  # set first: a step right after the change runs slow
    print(f"processor: {torch.backends.cpu.get_cpu_capability()}, onnxruntime {ort.__version__}")
    for name, int8 in (("fp32", False), ("int8", True)):
        export.export(args.checkpoint, args.scratch / name, int8=int8, overwrite=True)
    ckpt = checkpoint.read(args.checkpoint)
    text, _ = validation_split(ckpt.record.corpus)
    ids = ckpt.vocab.encode(text).astype(np.int64)
    prompt_ids = ckpt.vocab.encode(PROMPT).astype(np.int64)
    print(f"validation text: {len(ids):,} characters; model.safetensors {(args.checkpoint / 'model.safetensors').stat().st_size / 1e6:.2f} MB")
    config = ckpt.model.config
    for name in ("fp32", "int8"):
        folder = args.scratch / name
        both = sum((folder / f).stat().st_size for f in (export.PREFILL, export.STEP))
        print(f"{name}: step.onnx {(folder / export.STEP).stat().st_size / 1e6:.2f} MB, both graphs {both / 1e6:.2f} MB, "
              f"validation {onnx_bpc(folder, ids, config.layers, config.hidden):.4f} bpc", flush=True)
    for name in ("fp32", "int8"):
        print(f"onnxruntime {name}, one stream, 1 thread: {onnx_rate(args.scratch / name, prompt_ids, args.steps):,.0f} chars/s", flush=True)
    for precision in ("fp32", "auto", "int8"):
        print(f"chargen sample --precision {precision}, one stream, 1 thread: {chargen_rate(args.checkpoint, precision, args.steps):,.0f} chars/s")


if __name__ == "__main__":
    main()
