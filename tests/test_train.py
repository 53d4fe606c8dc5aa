import copy
import json
import math

import pytest
import torch

import chargen
from chargen import ChargenError, Corpus, LanguageModel, ModelConfig, TrainConfig
from chargen.checkpoint import read as read_checkpoint
from chargen import loop
from chargen.loop import Trainer, bits_per_token
from chargen.progress import TrainingDisplay
from chargen.run import RunFolder
from chargen.runtime import Runtime

from .conftest import TINY_OPTIONS, TINY_TEXT



def test_tiny_model_overfits_short_text(tmp_path):
    text = "abcdefghijklmnopqrstuvwxyz" * 40
    path = tmp_path / "alphabet.txt"
    path.write_text(text)
    # no weight decay: it holds back the last confident logits that learning by heart needs
    result = chargen.train(path, tmp_path / "out", max_steps=250, max_epochs=None, eval_every=50, warmup=10, weight_decay=0.0, quiet=True, **TINY_OPTIONS)
    assert result.steps == 250
    assert result.best_val_bpc < 0.05  # the alphabet is fully predictable once learned


def make_trainer(tmp_path, **options) -> Trainer:
    corpus = Corpus.from_text(TINY_TEXT)
    config = TrainConfig(**{"batch_size": 4, "seq_len": 16, "precision": "fp32", **options})
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=len(corpus.vocab), hidden=32, layers=1))
    return Trainer(model, corpus, config, Runtime.resolve(precision="fp32"), TrainingDisplay(quiet=True))


def test_gradient_clipping_bounds_the_norm(tmp_path):
    norms = []
    for clip in (0.0, 0.01):
        trainer = make_trainer(tmp_path, clip=clip, lr=1e-3)
        step = trainer.optimizer.step

        def record_then_step(*args, **kwargs):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
            return step(*args, **kwargs)

        trainer.optimizer.step = record_then_step
        x, y = next(iter(trainer.batches()))[2:]
        trainer.train_step(x, y, None)
    unclipped, clipped = norms
    assert unclipped > 0.05  # a fresh model's gradient is far above the clip
    assert clipped == pytest.approx(0.01, rel=1e-3)


def test_state_is_reset_at_each_pass(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=3, eval_every=10**6)
    real_step, seen = trainer.train_step, []

    def step(x, y, state):
        seen.append((trainer.progress.window, state is None))
        return real_step(x, y, state)

    trainer.train_step = step
    trainer.run()
    assert len(seen) == 3 * trainer.steps_per_epoch
    assert [window for window, fresh in seen if fresh] == [0, 0, 0]  # a zero state at the start of each pass, and only there


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, tiny_file):
    """The weights a run saves are the model it trained, to the bit: compared with the model before it was written."""
    kept = {}
    real_commit = RunFolder.commit

    def commit(self, trainer, lanes, weights):
        if weights:
            kept["model"] = copy.deepcopy(trainer.model).eval()
        real_commit(self, trainer, lanes, weights)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunFolder, "commit", commit)
        chargen.train(tiny_file, tmp_path / "run", max_steps=20, eval_every=10, quiet=True, **{**TINY_OPTIONS, "dropout": 0.1})
    ckpt = read_checkpoint(tmp_path / "run")
    tokens = torch.from_numpy(ckpt.vocab.encode("the lazy dog")).long()[None]
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(tokens)[0], kept["model"](tokens)[0], rtol=0, atol=0)
    assert ckpt.vocab.chars == sorted(set(TINY_TEXT))


def test_saved_model_is_the_best_by_validation(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    for r in records:
        assert {"step", "chars", "elapsed_s", "train_bpc", "val_bpc"} <= r.keys()
    # An epoch is 26 full windows of 4 x 16 and a last one of 4 x 11 (427 characters per lane).
    assert [r["chars"] for r in records] == [20 * 64, 26 * 64 + 44 + 13 * 64, 2 * (26 * 64 + 44) + 6 * 64]
    config = json.loads((trained / "config.json").read_text())
    best = min(r["val_bpc"] for r in records)
    assert config["progress"]["best_val_bpc"] == best
    ckpt = read_checkpoint(trained)
    corpus = Corpus.from_text(TINY_TEXT)
    assert bits_per_token(ckpt.model, corpus.val, 4, 16) == pytest.approx(best, abs=1e-4)


def test_stops_at_max_epochs(tmp_path, tiny_file):
    result = chargen.train(tiny_file, tmp_path / "out", max_epochs=2, eval_every=1000, quiet=True, **TINY_OPTIONS)
    lane = (len(Corpus.from_text(TINY_TEXT).train) - 1) // 4
    assert result.steps == 2 * math.ceil(lane / 16)
    assert "max-epochs" in result.stopped_because


@pytest.mark.parametrize(
    "limits, share, validated",
    [
        ({"max_steps": 20}, 0.0, [5, 10, 15, 20]),  # no --max-time: every EVAL_EVERY steps
        ({"max_steps": 21}, 0.0, [5, 10, 15, 21]),  # not at 20: the last validation follows a step later
        ({"max_steps": 20, "max_time": 1e6}, 0.0, [5, 20]),  # the first fits any share; then only the last
        ({"max_steps": 20, "max_time": 1e6}, 1e6, [5, 10, 15, 20]),
        ({"max_steps": 20, "max_time": 1e6, "eval_every": 10}, 0.0, [10, 20]),  # --eval-every is kept as given
    ],
)
def test_a_time_bound_run_keeps_validation_to_its_share(tmp_path, tiny_file, monkeypatch, limits, share, validated):
    monkeypatch.setattr(loop, "EVAL_EVERY", 5)
    monkeypatch.setattr(loop, "VALIDATION_SHARE", share)
    chargen.train(tiny_file, tmp_path / "out", quiet=True, **limits, **TINY_OPTIONS)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == validated
    assert json.loads((tmp_path / "out" / "config.json").read_text())["progress"]["step"] == limits["max_steps"]


def test_early_stopping_by_patience(tmp_path, tiny_file):
    # a learning rate below float32 resolution leaves the weights, and so validation, unchanged
    result = chargen.train(tiny_file, tmp_path / "out", eval_every=1, patience=2, quiet=True, **{**TINY_OPTIONS, "lr": 1e-30})
    assert "patience" in result.stopped_because
    assert result.steps == 3


def test_refuses_to_overwrite_a_checkpoint(tmp_path, tiny_file):
    out = tmp_path / "out"
    chargen.train(tiny_file, out, max_steps=5, eval_every=5, quiet=True, **TINY_OPTIONS)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ChargenError, match="already holds a checkpoint"):
        chargen.train(tiny_file, out, max_steps=5, quiet=True, **TINY_OPTIONS)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    chargen.train(tiny_file, out, max_steps=10, eval_every=5, overwrite=True, quiet=True, **TINY_OPTIONS)
    assert json.loads((out / "config.json").read_text())["progress"]["step"] == 10


def test_corpus_shorter_than_one_window(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("just a few words here\n" * 3)
    with pytest.raises(ChargenError, match="fewer than one batch window"):
        chargen.train(path, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def rates_over(trainer: Trainer, steps: int) -> list[float]:
    rates = []
    for step in range(steps):
        trainer.progress.step = step
        rates.append(loop.learning_rate(trainer.config, trainer.progress.step, trainer.fraction_done(0.0)))
    return rates


def test_the_linear_schedule_warms_up_then_falls_to_zero_with_the_run(tmp_path):
    assert TrainConfig().schedule == "linear"
    rates = rates_over(make_trainer(tmp_path, lr=1e-2, warmup=10, max_steps=100), 100)
    assert rates[0] == pytest.approx(1e-3) and rates[9] == pytest.approx(1e-2 * 0.91)
    assert rates[50] == pytest.approx(1e-2 * 0.5) and rates[-1] == pytest.approx(1e-2 * 0.01)
    assert all(a > b for a, b in zip(rates[10:], rates[11:]))  # falls at every step after the warm-up


def test_cosine_schedule_warms_up_then_decays_with_the_run(tmp_path):
    rates = rates_over(make_trainer(tmp_path, lr=1e-2, warmup=10, schedule="cosine", max_steps=100), 100)
    assert rates[0] == pytest.approx(1e-3) and rates[9] == pytest.approx(1e-2 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.09))))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # never rises after the warm-up
    assert rates[-1] == pytest.approx(1e-2 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.99))))
    constant = make_trainer(tmp_path / "c", lr=1e-2, warmup=0, schedule="constant", max_steps=100)
    assert loop.learning_rate(constant.config, constant.progress.step, 0.9) == 1e-2
