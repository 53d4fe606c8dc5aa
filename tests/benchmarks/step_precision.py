"""Benchmark: how fast one stream writes, and what it costs in bits per character, for each way a step can compute.

    python -m tests.benchmarks.step_precision --checkpoint checkpoints/war_and_peace
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m tests.benchmarks.step_precision --checkpoint ...

For each precision a step may take here (fp32 always, bf16 where the processor has it natively, int8), side by
side in one run: one stream's characters per second as `chargen sample` draws them, and the bits per character of
the checkpoint's validation text read one step at a time with those steps, next to the static float32 figure of
the fused layers. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import chargen
from chargen import checkpoint
from chargen.inputs import validation_split
from chargen.model import cpu_has_native_bf16
from chargen.step import Stepper


def one_stream_rate(sampler: chargen.Sampler, length: int) -> float:
    """The median characters per second of three samples after a warm-up."""
    sampler.generate("The ", length=100, seed=0)
    rates = []
    for seed in (1, 2, 3):
        began = time.perf_counter()
        sampler.generate("The ", length=length, seed=seed)
        rates.append(length / (time.perf_counter() - began))
    return statistics.median(rates)


def stepped_bits(stepper: Stepper, ids: torch.Tensor) -> float:
    """Bits per token of ids[1:], each predicted by one step from the state after the tokens before it."""
    state, bits = None, 0.0
    for now, after in zip(ids[:-1], ids[1:]):
        logits, state = stepper.step(now[None], state)
        bits += F.cross_entropy(logits, after[None]).item()
    return bits / math.log(2) / (len(ids) - 1)


@torch.inference_mode()
def fused_bits(model: chargen.LanguageModel, ids: torch.Tensor) -> float:
    logits, _ = model(ids[None, :-1])
    return F.cross_entropy(logits[0], ids[1:]).item() / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--chars", type=int, default=50_000, help="validation characters read one step at a time")
    parser.add_argument("--length", type=int, default=2000, help="characters per timed sample")
    args = parser.parse_args()
    sampler = chargen.load(args.checkpoint, "fp32")
    text, _ = validation_split(checkpoint.read_record(args.checkpoint).corpus)
    ids = torch.from_numpy(sampler.vocab.encode(text[: args.chars])).long()
    print(f"processor: {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}, {torch.get_num_threads()} threads")
    print(f"fused float32 layers: {fused_bits(sampler.model, ids):.4f} bpc over {len(ids):,} validation characters")
    print("| precision | one stream, chars/s | bpc, one step at a time |")
    print("| --- | --- | --- |")
    for precision in ("fp32", *(["bf16"] if cpu_has_native_bf16() else []), "int8"):
        stepping = chargen.Sampler(sampler.model, sampler.vocab, precision=precision)
        rate = one_stream_rate(stepping, args.length)
        print(f"| {precision} | {rate:,.0f} | {stepped_bits(stepping.stepper, ids):.4f} |", flush=True)


if __name__ == "__main__":
    main()
