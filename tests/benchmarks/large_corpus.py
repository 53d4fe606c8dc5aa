"""Benchmark: memory and speed of `chargen prepare` and of training from a prepared folder, on a corpus of about
1 GB (and 100 MB) made of the shared corpora repeated. The corpus is written to a scratch folder, never kept.

    python -m tests.benchmarks.large_corpus --gigabytes 1 --scratch /tmp/chargen-large

Each command runs as a child process; its peak resident memory is the kernel's count (ru_maxrss from wait4),
which includes the pages of a memory-mapped file the process touched. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "corpora"
TEXTS = ("war_and_peace.txt", "tinyshakespeare.txt", "thai_100k.txt")
FILE_BYTES = 50 << 20  # each generated file: about 50 MB, so the corpus is a folder of many files


def make_corpus(folder: Path, total_bytes: int) -> int:
    """Files of the shared corpora repeated, about total_bytes in all; the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    unit = b"".join((SHARED / name).read_bytes() for name in TEXTS)
    written, index = 0, 0
    while written < total_bytes:
        size = min(FILE_BYTES, total_bytes - written)
        with open(folder / f"part-{index:04d}.txt", "wb") as f:
            left = size
            while left > 0:
                f.write(unit[: min(left, len(unit))])
                left -= min(left, len(unit))
        written, index = written + size, index + 1
    return written


def measured(command: list[str]) -> dict:
    """Run a command; its wall time, peak resident memory (MB) and exit status."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.stdout.close()
    seconds = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}):\n{output}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "output": output.strip().splitlines()[-3:]}


def chargen(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "chargen", *arguments]


SMALL_MODEL = ("--hidden", "128", "--layers", "1", "--quiet", "--no-cache")


def bench(gigabytes: float, scratch: Path) -> dict:
    corpus, prepared, runs = scratch / "corpus", scratch / "prepared", scratch / "runs"
    shutil.rmtree(scratch, ignore_errors=True)
    size = make_corpus(corpus, int(gigabytes * 1e9))
    result = {"corpus_bytes": size, "files": len(list(corpus.iterdir()))}
    # the split is kept small, so a run's validations (which read the whole validation part) stay short
    prepare = measured(chargen("prepare", str(corpus), "--out", str(prepared), "--val-fraction", "0.001"))
    prepare["mb_per_s"] = round(size / 1e6 / prepare["seconds"], 1)
    result["prepare"] = prepare
    result["train_one_step"] = measured(chargen("train", str(prepared), *SMALL_MODEL, "--max-steps", "1", "--out", str(runs / "one")))
    result["train_60s"] = measured(chargen("train", str(prepared), *SMALL_MODEL, "--max-time", "60", "--out", str(runs / "minute")))
    return result


def plain_100mb(scratch: Path) -> dict:
    """Today's path on 100 MB: one text file read whole, next to the same text prepared."""
    big = scratch / "big.txt"
    unit = b"".join((SHARED / name).read_bytes() for name in TEXTS)
    big.parent.mkdir(parents=True, exist_ok=True)
    big.write_bytes(unit * 18)  # 101 MB, as docs/performance.md measured before
    out = scratch / "runs-100"
    plain = measured(chargen("train", str(big), *SMALL_MODEL, "--max-steps", "5", "--out", str(out / "plain")))
    prepare = measured(chargen("prepare", str(big), "--out", str(scratch / "prepared-100")))
    trained = measured(chargen("train", str(scratch / "prepared-100"), *SMALL_MODEL, "--max-steps", "5", "--out", str(out / "prepared")))
    return {"bytes": big.stat().st_size, "plain_train": plain, "prepare": prepare, "prepared_train": trained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/chargen-large"))
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder.")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"the shared corpora are not at {SHARED}")
    import torch

    report = {"processor": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count()}
    try:
        report["100mb"] = plain_100mb(args.scratch / "small")
        report["large"] = bench(args.gigabytes, args.scratch / "large")
    finally:
        if not args.keep:
            shutil.rmtree(args.scratch, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
