"""Checkpoints an earlier chargen wrote (tests/fixtures, made by make_checkpoints.py) load, sample and resume."""
import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

import chargen
from chargen.loop import ADAM_BETAS

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def saved_betas(folder: Path) -> list[float]:
    with safe_open(folder / "resume.safetensors", "pt") as f:
        return json.loads(f.metadata()["param_groups"])[0]["betas"]


@pytest.mark.parametrize("name", ["format1-char", "format1-word"])
def test_an_earlier_checkpoint_loads_samples_and_resumes(tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text(encoding="utf-8"))
    lm = chargen.load(folder, precision="fp32")
    assert lm.generate("the ", length=40, temperature=0) == expected["greedy"]
    probs = lm.next_token_probs("the quick ", k=3)
    assert [token for token, _ in probs] == [token for token, _ in expected["next_token_probs"]]
    assert [p for _, p in probs] == pytest.approx([p for _, p in expected["next_token_probs"]], abs=1e-6)
    result = chargen.resume(folder, FIXTURES / "fox.txt", max_steps=40, quiet=True)  # the text has moved since
    assert result.steps == 40
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [10, 20, 30, 40]
    assert saved_betas(folder) == [0.9, 0.999]  # a run goes on with the optimizer it started with, not today's default


def test_a_new_run_saves_the_default_betas(tmp_path):
    chargen.train(FIXTURES / "fox.txt", tmp_path / "run", max_steps=2, layers=1, hidden=16, batch_size=2, seq_len=8, quiet=True)
    assert saved_betas(tmp_path / "run") == list(ADAM_BETAS) != [0.9, 0.999]
