"""Dynamic evaluation: scored before it learns, so it never predicts a token with weights that have seen it."""
import pytest
import torch

from chargen import LanguageModel, ModelConfig, evaluate
from chargen.dynamic import DynamicOptions, dynamic_bits
from chargen.errors import OptionError

from .test_cli import run


def small_model(cell: str = "lstm") -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=12, cell=cell, layers=2, hidden=32, embedding_dim=8))


def static_bits(model: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits, _ = model.eval()(ids[None, :-1])
    return torch.nn.functional.cross_entropy(logits[0], ids[1:], reduction="none") / torch.log(torch.tensor(2.0))


def test_without_learning_it_is_the_static_figure():
    model, ids = small_model(), torch.randint(0, 12, (450,), generator=torch.Generator().manual_seed(1))
    bits = dynamic_bits(model, ids, DynamicOptions(segment=64, lr=0.0, decay=0.0))
    assert bits.shape == (449,)
    torch.testing.assert_close(bits, static_bits(model, ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
def test_no_token_is_scored_by_weights_that_have_seen_it(cell):
    """Changing the token at p changes no bits before p: neither the state nor the weights had read it."""
    model = small_model(cell)
    ids = torch.randint(0, 12, (400,), generator=torch.Generator().manual_seed(2))
    options = DynamicOptions(segment=50, lr=1e-2, decay=1e-3)
    before = dynamic_bits(model, ids, options)
    for p in (120, 149, 150, 151):  # in a segment, at its end and at the start of the next
        changed = ids.clone()
        changed[p] = (ids[p] + 1) % 12
        after = dynamic_bits(model, changed, options)
        assert torch.equal(after[: p - 1], before[: p - 1])  # bits[i] scores ids[i + 1]
        assert after[p - 1] != before[p - 1]


def test_it_learns_from_a_text_that_repeats_and_leaves_the_model_as_it_was():
    model = small_model()
    weights = {name: p.clone() for name, p in model.state_dict().items()}
    phrase = torch.randint(0, 12, (150,), generator=torch.Generator().manual_seed(3))
    ids = phrase.repeat(8)
    bits = dynamic_bits(model, ids, DynamicOptions(segment=25, lr=2e-2, decay=1e-3))
    static = static_bits(model, ids)
    assert bits[-150:].mean() < 0.8 * static[-150:].mean()  # the last repeat is far better predicted
    torch.testing.assert_close(bits[:24], static[:24], rtol=1e-4, atol=1e-4)  # the first segment: nothing learnt yet
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())


def test_a_text_of_one_token_has_nothing_to_score():
    assert dynamic_bits(small_model(), torch.tensor([3])).shape == (0,)


@pytest.mark.parametrize("field, value", [("segment", 0), ("lr", -1e-3), ("decay", 1.0), ("smoothing", float("nan"))])
def test_bad_options_are_refused(field, value):
    with pytest.raises(OptionError, match=field):
        DynamicOptions(**{field: value})


def test_eval_reports_dynamic_beside_static(trained):
    report = evaluate(trained, max_words=5, dynamic=DynamicOptions())
    assert report.dynamic_bits_per_char is not None and report.bits_per_char > 0
    assert report.dynamic_bits_per_char != report.bits_per_char and report.dynamic_seconds > 0
    assert evaluate(trained, max_words=5).dynamic_bits_per_char is None
    result = run("eval", "-c", trained, "--words", 5, "--dynamic")
    assert result.exit_code == 0, result.output
    assert "bits per character, dynamic evaluation" in result.stdout and "bits per character" in result.stdout


def test_weights_with_larger_gradients_are_pulled_back_harder():
    """Krause et al.'s global prior: the decay toward the trained weights scales with each weight's gradient RMS, at most all the way."""
    from chargen.dynamic import Adaptation

    params = [torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)]  # trained at zero
    adaptation = Adaptation(params, DynamicOptions(lr=0.0, decay=0.3, smoothing=0.5))
    with torch.no_grad():
        for p in params:
            p.fill_(1.0)  # moved away from the trained value
    params[0].grad, params[1].grad = torch.full((4,), 0.1), torch.full((4,), 10.0)
    adaptation.learn()
    quiet, pushed = params[0].detach(), params[1].detach()
    assert torch.all(pushed < quiet) and torch.all(pushed >= 0)  # nearer the trained value, never past it
    torch.testing.assert_close(1 - quiet, torch.full((4,), 0.3 * 0.1 / 5.05), rtol=1e-4, atol=1e-6)  # decay × RMS / mean RMS
