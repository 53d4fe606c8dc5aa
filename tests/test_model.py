import pytest
import torch

from chargen import LanguageModel, ModelConfig
from chargen import state as states
from chargen.step import Stepper

from .conftest import needs_native_bf16


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
@pytest.mark.parametrize("input", ["embedding", "onehot"])
@pytest.mark.parametrize("skip", [True, False])
def test_carried_state_equals_one_long_pass(cell, input, skip):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=11, cell=cell, input=input, layers=2, hidden=16, embedding_dim=8, skip_connections=skip)).eval()
    tokens = torch.randint(0, 11, (3, 20))
    whole, final = model(tokens)
    first, state = model(tokens[:, :12])
    second, last = model(tokens[:, 12:], states.detach(state))
    assert whole.shape == (3, 20, 11)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    for carried in (state, last):
        assert_one_state_shape(carried, cell, layers=2, streams=3, hidden=16)
    assert_same_state(last, final)


def assert_one_state_shape(state, cell, layers, streams, hidden):
    """(h, c) for an LSTM, (h,) for a GRU or an RNN: a tuple whatever the cell, each part (layers, streams, hidden)."""
    assert isinstance(state, tuple) and len(state) == (2 if cell == "lstm" else 1)
    assert all(part.shape == (layers, streams, hidden) for part in state)


def assert_same_state(state, expected, tolerance=None):
    assert len(state) == len(expected)
    for part, expected_part in zip(state, expected):
        torch.testing.assert_close(part, expected_part, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("skip", [True, False])
def test_relu_rnn(skip):
    model = LanguageModel(ModelConfig(vocab_size=5, cell="rnn", nonlinearity="relu", hidden=8, skip_connections=skip))
    assert all(layer.nonlinearity == "relu" for layer in (model.rnn if skip else [model.rnn]))


@pytest.mark.parametrize("skip", [True, False])
def test_skip_connections_let_the_output_read_the_lower_layers(skip):
    """A top layer with zero weights outputs zeros: only skip connections still carry the text to the output."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=11, layers=2, hidden=8, embedding_dim=4, skip_connections=skip)).eval()
    top = model.rnn[1] if skip else model.rnn
    with torch.no_grad():
        for name, weights in top.named_parameters():
            if name.endswith("l1") or skip:
                weights.zero_()
        logits, _ = model(torch.randint(0, 11, (1, 6)))
    assert model.head.in_features == (16 if skip else 8)
    assert (logits.std(dim=1).max().item() > 1e-4) == skip


@pytest.mark.parametrize(
    "options",
    [
        dict(cell="lstm", layers=2),
        dict(cell="gru", layers=3),
        dict(cell="rnn", layers=2, nonlinearity="relu"),
        dict(cell="lstm", layers=1, input="onehot"),
        dict(cell="lstm", layers=2, tie_weights=True, embedding_dim=12),
        dict(cell="lstm", layers=2, skip_connections=False),
        dict(cell="gru", layers=2, skip_connections=False),
        dict(cell="rnn", layers=2, skip_connections=False),
        dict(cell="lstm", layers=3, tie_weights=True, embedding_dim=12, skip_connections=False),
        dict(cell="mingru", layers=3),
        dict(cell="mingru", layers=1, input="onehot"),
        dict(cell="mingru", layers=2, skip_connections=False),
        dict(cell="mingru", layers=2, tie_weights=True, embedding_dim=12),
    ],
)
def test_stepper_equals_the_fused_layer(options):
    """Steps from the fused layer's state give the fused layer's logits and states, one token at a time."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**{"vocab_size": 11, "hidden": 24, "embedding_dim": 8, **options})).eval()
    tokens = torch.randint(0, 11, (3, 9))
    with torch.no_grad():
        expected, final = model(tokens)
        _, after_first = model(tokens[:, :1])
        _, state = model(tokens[:, :4])
    stepper = Stepper(model)
    for t in range(4, 9):
        logits, state = stepper.step(tokens[:, t], state)
        torch.testing.assert_close(logits, expected[:, t], rtol=1e-5, atol=1e-5)
    assert_one_state_shape(state, model.config.cell, model.config.layers, streams=3, hidden=24)
    assert_same_state(state, final, tolerance=1e-5)
    first, state = stepper.step(tokens[:, 0], None)  # no state is the zero state
    torch.testing.assert_close(first, expected[:, 0], rtol=1e-5, atol=1e-5)
    assert_same_state(state, after_first, tolerance=1e-5)


@pytest.mark.parametrize(
    "precision, most",  # bf16: one stream reads float16 weights, a batch multiplies in bf16; int8: weights and inputs in int8
    [pytest.param("bf16", 0.02, marks=needs_native_bf16), ("int8", 0.05)],
)
@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
@pytest.mark.parametrize("streams", [1, 3])
def test_reduced_precision_stepper_stays_close_to_the_fused_layer(precision, most, cell, streams):
    """Reduced-precision products with float32 gates and state: near the float32 figures over a long run."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=11, cell=cell, hidden=64, embedding_dim=16)).eval()
    tokens = torch.randint(0, 11, (streams, 300))
    with torch.no_grad():
        expected, _ = model(tokens)
    stepper, state = Stepper(model, precision), None
    worst = 0.0
    for t in range(300):
        logits, state = stepper.step(tokens[:, t], state)
        worst = max(worst, (logits.softmax(-1) - expected[:, t].softmax(-1)).abs().max().item())
    assert state[0].dtype == torch.float32 and 0 < worst < most
