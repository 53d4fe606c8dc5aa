"""Runs that survive: exact resume, Ctrl-C and SIGTERM, SIGKILL at any moment, hostile checkpoint files."""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import chargen
from chargen import ChargenError
from chargen.settings import from_checkpoint_config

from .conftest import TINY_OPTIONS

# a constant rate: a decaying schedule follows the limits, and the first half of a split run has other limits
OPTIONS = {**TINY_OPTIONS, "layers": 2, "dropout": 0.2, "eval_every": 10, "quiet": True, "schedule": "constant"}
CLI_TINY = ["--layers", "1", "--hidden", "16", "--embedding-dim", "8", "--batch-size", "2", "--seq-len", "8", "--precision", "fp32", "--quiet"]


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny_file):
    chargen.train(tiny_file, tmp_path / "whole", max_steps=40, **OPTIONS)
    chargen.train(tiny_file, tmp_path / "split", max_steps=20, **OPTIONS)  # stops mid-epoch, lanes' state saved
    result = chargen.resume(tmp_path / "split", max_steps=40, quiet=True)
    assert result.steps == 40
    whole, split = metrics(tmp_path / "whole"), metrics(tmp_path / "split")
    assert [r["step"] for r in split] == [r["step"] for r in whole] == [10, 20, 30, 40]
    for a, b in zip(whole, split):
        assert a["chars"] == b["chars"]
        assert a["train_bpc"] == pytest.approx(b["train_bpc"], abs=1e-5)
        assert a["val_bpc"] == pytest.approx(b["val_bpc"], abs=1e-5)
    for name in ("model.safetensors", "resume.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys()
        for key in a:
            if key != "rng":
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_resume_changes_only_limits(tmp_path, tiny_file):
    chargen.train(tiny_file, tmp_path / "run", max_steps=10, **OPTIONS)
    with pytest.raises(ChargenError, match="already holds a checkpoint: continue it with --resume"):
        chargen.train(tiny_file, tmp_path / "run", max_steps=10, **OPTIONS)
    tiny_file.write_text("another text entirely\n" * 100)
    with pytest.raises(ChargenError, match="not the text this run trained on"):
        chargen.resume(tmp_path / "run", max_steps=20)


def train_command(corpus, out, *extra):
    return [sys.executable, "-m", "chargen", "train", str(corpus), "--out", str(out), *CLI_TINY, *extra]


@pytest.fixture
def long_file(tmp_path):
    path = tmp_path / "long.txt"
    words = "the quick brown fox jumps over the lazy dog and runs far away".split()
    rng = random.Random(0)
    path.write_text(" ".join(rng.choice(words) for _ in range(20_000)), encoding="utf-8")
    return path


def wait_for(path, process, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_says_how_to_resume(tmp_path, long_file, signum):
    out = tmp_path / "run"
    process = subprocess.Popen(train_command(long_file, out, "--eval-every", "20"), stderr=subprocess.PIPE, text=True)
    wait_for(out / "config.json", process)
    time.sleep(0.3)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr  # saved, and a script can tell the run did not finish
    assert f"stopped by {signum.name}" in stderr and f"continue with: chargen train --resume {out}" in stderr
    assert "Traceback" not in stderr
    step = json.loads((out / "config.json").read_text())["progress"]["step"]
    assert step > 20  # saved where it stopped, not at the last evaluation
    again = subprocess.run(
        [sys.executable, "-m", "chargen", "train", "--resume", str(out), "--max-steps", str(step + 5), "--quiet"], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "config.json").read_text())["progress"]["step"] == step + 5


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_resumable_checkpoint(tmp_path, long_file):
    rng = random.Random(1)
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        process = subprocess.Popen(train_command(long_file, out, "--eval-every", "1"), stderr=subprocess.DEVNULL)
        wait_for(out / "config.json", process)
        time.sleep(rng.uniform(0.0, 1.0))  # saves happen every step: a kill often lands inside one
        process.kill()
        process.wait()
        lm = chargen.load(out)
        assert lm.generate("the ", length=5, seed=0).startswith("the ")
        step = json.loads((out / "config.json").read_text())["progress"]["step"]
        chargen.resume(out, max_steps=step + 2, quiet=True)
        assert json.loads((out / "config.json").read_text())["progress"]["step"] == step + 2


class Exploit:
    """Unpickling this runs a command: what a hostile 'checkpoint' would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


@pytest.mark.parametrize("name", ["model.safetensors", "resume.safetensors"])
def test_a_pickled_payload_is_refused_not_run(tmp_path, trained, name):
    import shutil

    folder = tmp_path / "hostile"
    shutil.copytree(trained, folder)
    marker = tmp_path / "pwned"
    (folder / name).write_bytes(pickle.dumps(Exploit(marker)))
    torch.save({"x": Exploit(marker)}, folder / "optimizer.pt")  # a file chargen never reads
    with pytest.raises(ChargenError, match="corrupt"):
        if name == "model.safetensors":
            chargen.load(folder)
        else:
            chargen.resume(folder, max_steps=100)
    assert not marker.exists()


def test_truncated_resume_file_is_a_clear_error(tmp_path, trained):
    import shutil

    folder = tmp_path / "cut"
    shutil.copytree(trained, folder)
    data = (folder / "resume.safetensors").read_bytes()
    (folder / "resume.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChargenError, match="resume.safetensors is corrupt"):
        chargen.resume(folder, max_steps=100)
    (folder / "resume.safetensors").unlink()
    with pytest.raises(ChargenError, match="resume.safetensors is missing"):
        chargen.resume(folder, max_steps=100)


def test_a_checkpoint_from_before_skip_connections_loads_and_resumes(tmp_path, tiny_file):
    """config.json written before skip connections existed has no such key: its model had none."""
    chargen.train(tiny_file, tmp_path / "old", max_steps=10, skip_connections=False, **OPTIONS)
    path = tmp_path / "old" / "config.json"
    config = json.loads(path.read_text())
    del config["model"]["skip_connections"]
    path.write_text(json.dumps(config))
    assert not chargen.load(tmp_path / "old").model.skip
    assert chargen.resume(tmp_path / "old", max_steps=20, quiet=True).steps == 20
    assert from_checkpoint_config(config)["skip_connections"] is False  # `train --config` on it retrains the same model


def torchrun(*args, processes=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "chargen", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(tmp_path, tiny_file):
    options = ["--layers", "1", "--hidden", "16", "--embedding-dim", "8", "--batch-size", "4", "--seq-len", "8", "--precision", "fp32",
               "--max-steps", "20", "--eval-every", "10", "--threads", "1", "--lr", "0.01"]
    result = torchrun("train", tiny_file, "--out", tmp_path / "ddp", *options)
    assert result.returncode == 0, result.stderr
    assert "2 processes: each trains 2 of the 4 lanes" in result.stderr
    assert result.stderr.count("reached --max-steps 20") == 1  # rank 0 speaks for the run
    single = subprocess.run([sys.executable, "-m", "chargen", "train", tiny_file, "--out", tmp_path / "one", *options], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    ddp, one = metrics(tmp_path / "ddp"), metrics(tmp_path / "one")
    assert len(ddp) == 2  # one writer: no evaluation recorded twice
    for a, b in zip(ddp, one):
        assert (a["step"], a["chars"]) == (b["step"], b["chars"])
        assert a["train_bpc"] == pytest.approx(b["train_bpc"], abs=1e-4)
        assert a["val_bpc"] == pytest.approx(b["val_bpc"], abs=1e-4)
    a, b = load_file(tmp_path / "ddp" / "resume.safetensors"), load_file(tmp_path / "one" / "resume.safetensors")
    for key in a:
        if key != "rng":
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)
    # the distributed checkpoint loads in one process, and resumes on a different number of processes
    assert chargen.load(tmp_path / "ddp").generate("the ", length=10, seed=0) == chargen.load(tmp_path / "one").generate("the ", length=10, seed=0)
    again = subprocess.run([sys.executable, "-m", "chargen", "train", "--resume", tmp_path / "ddp", "--max-steps", "25", "--quiet"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert metrics(tmp_path / "ddp")[-1]["step"] == 25
