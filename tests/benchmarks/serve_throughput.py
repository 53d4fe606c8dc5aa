"""Benchmark: characters per second that `chargen serve` streams to one client and to many at once, next to the
library's own stream (what `chargen sample` writes), measured side by side in one run.

    python -m tests.benchmarks.serve_throughput --checkpoint checkpoints/war_and_peace --clients 32

Every client streams one completion through the OpenAI-shaped API (server-sent events) at temperature 1; its rate
is its characters over the time from its request to its last event. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

PROMPT = "The Emperor"


def library_rate(checkpoint: Path, length: int) -> float:
    """Characters per second of Sampler.stream, as `chargen sample` draws them, after the model is loaded."""
    import chargen

    sampler = chargen.load(checkpoint)
    sampler.generate(PROMPT, length=200, seed=0)  # warm-up
    began = time.perf_counter()
    written = sum(len(piece) for piece in sampler.stream(PROMPT, length=length, seed=1)) - len(PROMPT)
    return written / (time.perf_counter() - began)


def start_server(checkpoint: Path, max_tokens: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "chargen", "serve", "-c", str(checkpoint), "--port", "0", "--max-tokens", str(max_tokens)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        found = re.search(r"at (http://\S+/v1)", line)
        if found:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep its pipe drained
            return server, found.group(1)
    raise SystemExit("the server did not start")


TEXT = re.compile(rb'"text":"((?:[^"\\]|\\.)*)"')


async def stream_one(host: str, port: int, model: str, length: int) -> tuple[int, float]:
    """One client's streamed completion (no seed, as most clients send): its characters and seconds. The client does
    as little as it can while it reads (the bytes are kept, and parsed once the stream has ended), since it shares
    the machine with the server."""
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": length, "temperature": 1.0, "stream": True}).encode()
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (host.encode(), len(body), body))
    await writer.drain()
    received = await reader.read()  # to the end: the server closes the connection after [DONE]
    seconds = time.perf_counter() - began
    writer.close()
    if b"data: [DONE]" not in received:
        raise SystemExit(f"a stream did not end with [DONE]: {received[-300:]!r}")
    characters = sum(len(json.loads(b'"' + match + b'"')) for match in TEXT.findall(received))
    return characters, seconds


def clients(url: str, model: str, count: int, length: int) -> dict:
    address = re.match(r"http://([^:/]+):(\d+)", url)
    host, port = address.group(1), int(address.group(2))

    async def all_at_once() -> list[tuple[int, float]]:
        return await asyncio.gather(*(stream_one(host, port, model, length) for _ in range(count)))

    began = time.perf_counter()
    results = asyncio.run(all_at_once())
    wall = time.perf_counter() - began
    rates = [chars / seconds for chars, seconds in results]
    return {
        "clients": count,
        "characters": sum(chars for chars, _ in results),
        "seconds": round(wall, 2),
        "total_chars_per_s": round(sum(chars for chars, _ in results) / wall),
        "per_client_chars_per_s": {"min": round(min(rates)), "median": round(statistics.median(rates)), "max": round(max(rates))},
        "each": [round(rate) for rate in rates],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--length", type=int, default=3000, help="Characters each of the many clients asks for.")
    parser.add_argument("--single-length", type=int, default=10000, help="Characters the one client (and the library) writes.")
    args = parser.parse_args()
    import torch

    report = {"processor": torch.backends.cpu.get_cpu_capability(), "checkpoint": str(args.checkpoint)}
    report["library_chars_per_s"] = round(library_rate(args.checkpoint, args.single_length))
    server, url = start_server(args.checkpoint, max(args.length, args.single_length))
    try:
        model = httpx.get(f"{url}/models").json()["data"][0]["id"]
        one = clients(url, model, 1, args.single_length)
        report["one_client"] = {k: one[k] for k in ("characters", "seconds", "total_chars_per_s")}
        report["one_client_share_of_library"] = round(one["total_chars_per_s"] / report["library_chars_per_s"], 3)
        report["many_clients"] = clients(url, model, args.clients, args.length)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report["library_chars_per_s_after"] = round(library_rate(args.checkpoint, args.single_length))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
