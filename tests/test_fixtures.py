"""Checkpoints an earlier chargen wrote (tests/fixtures, made by make_checkpoints.py) load, sample and resume."""
import json
import shutil
from pathlib import Path

import pytest

import chargen

FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
