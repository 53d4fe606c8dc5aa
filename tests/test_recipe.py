import json
import time

import pytest

import chargen
from chargen import planning, recipe
from chargen.corpus import Corpus
from chargen.loop import TrainConfig
from chargen.model import ModelConfig
from chargen.recipe import MAX_DROPOUT, TOKENS_PER_WEIGHT, WIDTHS, choose
from chargen.runtime import Runtime

from .conftest import TINY_OPTIONS


def weights(width: int) -> int:
    """A two-layer LSTM's recurrent weights over 128-wide inputs."""
    return 4 * width * (128 + width + 2) + 4 * width * (2 * width + 2)


def test_widest_model_the_budget_can_train():
    chosen = []
    for width in WIDTHS[1:-1]:
        budget = weights(width) * TOKENS_PER_WEIGHT * 1.01
        chosen.append(choose(10**9, 128, weights, lambda speed, lanes: budget, None).hidden)
    assert chosen == list(WIDTHS[1:-1])


def test_measures_no_wider_than_the_first_width_that_does_not_fit():
    measured = []

    def speed_at(width: int) -> float:
        measured.append(width)
        return 2e9 / width**2

    r = choose(10**9, 128, weights, lambda speed, lanes: 600 * speed, speed_at)
    assert measured == list(WIDTHS[: WIDTHS.index(r.hidden) + 2])  # narrow to wide, one past the chosen


def test_a_longer_time_limit_gives_a_wider_model_measured_at_its_own_width():
    measured = []

    def speed_at(width: int) -> float:
        measured.append(width)
        return 4e9 / width**2  # narrower models run faster

    short = choose(10**9, 128, weights, lambda speed, lanes: 60 * speed, speed_at)
    long = choose(10**9, 128, weights, lambda speed, lanes: 3600 * speed, speed_at)
    assert long.hidden > short.hidden
    assert short.speed == pytest.approx(4e9 / short.hidden**2) and short.budget == pytest.approx(60 * short.speed, rel=1e-6)
    assert short.hidden in measured and long.hidden in measured


def test_dropout_grows_with_passes_over_the_text():
    dropouts = [choose(1_000_000, 128, weights, lambda speed, lanes, p=passes: p * 1_000_000, None).dropout for passes in (1, 2, 3, 5, 50)]
    assert dropouts[0] == dropouts[1] == 0.0
    assert 0 < dropouts[2] < dropouts[3] < dropouts[4] == MAX_DROPOUT


def test_given_options_are_kept():
    r = choose(1_000_000, 128, weights, lambda speed, lanes: 5e7, None, hidden=100, dropout=0.0, lanes=8)
    assert (r.hidden, r.dropout, r.lanes) == (100, 0.0, 8)


def test_more_lanes_only_when_the_text_repeats():
    passes = (1, recipe.REPEAT_PASSES, recipe.REPEAT_PASSES + 0.5, 50)
    lanes = [choose(1_000_000, 128, weights, lambda speed, lanes, p=p: p * 1_000_000, None).lanes for p in passes]
    assert lanes == [recipe.LANES, recipe.LANES, recipe.REPEAT_LANES, recipe.REPEAT_LANES]
    short_text = 128 * recipe.REPEAT_LANES  # one window short of room for every lane
    assert choose(short_text, 128, weights, lambda speed, lanes: 50 * short_text, None).lanes == recipe.LANES


def test_skip_connections_only_while_the_text_is_new():
    passes = (1, recipe.REPEAT_PASSES, recipe.REPEAT_PASSES + 0.5, 50)
    skips = [choose(1_000_000, 128, weights, lambda speed, lanes, p=p: p * 1_000_000, None).skip_connections for p in passes]
    assert skips == [True, True, False, False]
    assert choose(1_000_000, 128, weights, lambda speed, lanes: 50e6, None, skip_connections=True).skip_connections
    assert not choose(1_000_000, 128, weights, lambda speed, lanes: 1e6, None, skip_connections=False).skip_connections


def test_a_step_bound_budget_counts_the_lanes_it_chose():
    r = choose(1_000_000, 128, weights, lambda speed, lanes: 2000 * lanes * 128, None)  # --max-steps 2000
    assert r.lanes == recipe.REPEAT_LANES and r.budget == 2000 * recipe.REPEAT_LANES * 128


def test_no_limit_means_the_widest_and_no_dropout():
    r = choose(1_000_000, 128, weights, lambda speed, lanes: None, None)
    assert r.budget is None and r.dropout == 0.0 and r.hidden == WIDTHS[-1]


def test_training_records_the_recipe_it_used(tmp_path, tiny_file):
    options = {k: v for k, v in TINY_OPTIONS.items() if k not in ("hidden", "dropout", "lr")}
    result = chargen.train(tiny_file, tmp_path / "run", max_time=2, quiet=True, **options)
    config = json.loads((result.folder / "config.json").read_text())
    chosen = config["recipe"]
    assert config["model"]["hidden"] == chosen["hidden"] in recipe.WIDTHS
    assert config["model"]["dropout"] == chosen["dropout"] and config["training"]["lr"] == chosen["lr"]
    assert config["training"]["batch_size"] == chosen["lanes"] == TINY_OPTIONS["batch_size"]
    assert config["model"]["skip_connections"] == chosen["skip_connections"]
    assert chosen["tokens_per_s"] > 0
    assert chosen["budget_tokens"] == pytest.approx(2 * recipe.SPEED_KEPT * chosen["tokens_per_s"], abs=1)
    assert config["model"]["hidden"] == chargen.load(result.folder).model.config.hidden


def test_wider_models_learn_at_a_lower_rate():
    assert choose(10**9, 128, weights, lambda speed, lanes: None, None, hidden=recipe.BASE_WIDTH).lr == recipe.BASE_LR
    assert choose(10**9, 128, weights, lambda speed, lanes: None, None, hidden=2 * recipe.BASE_WIDTH).lr == recipe.BASE_LR / 2
    assert choose(10**9, 128, weights, lambda speed, lanes: None, None, hidden=64, lr=3e-4).lr == 3e-4


def test_a_stalled_step_does_not_slow_the_measured_speed(monkeypatch, tiny_file):
    """A shared machine pausing for one step must not make the recipe choose a narrower model (on a clock of the test's
    own: each step takes 10 ms, the first two timed ones 300 ms)."""
    corpus = Corpus.from_file(tiny_file)
    config = TrainConfig(batch_size=4, seq_len=16, precision="fp32")
    model = ModelConfig(len(corpus.vocab), layers=1, hidden=32, embedding_dim=16)
    real_step, calls, now = planning.optimizer_step, [], [0.0]

    def stalls_twice(*args, **kwargs):
        calls.append(1)
        now[0] += 0.3 if len(calls) in (3, 4) else 0.01  # the first two timed steps, after two to warm up
        return real_step(*args, **kwargs)

    monkeypatch.setattr(planning, "optimizer_step", stalls_twice)
    monkeypatch.setattr(planning.time, "perf_counter", lambda: now[0])
    speed = planning.measure_speed(model, corpus, config, Runtime.resolve(precision="fp32"))
    assert len(calls) == 2 + 30  # two to warm up, then the most it times: a second of 10 ms steps is more
    assert speed == pytest.approx(64 / 0.01)  # 64 tokens a step: the median of the steps, the stalls not counted
