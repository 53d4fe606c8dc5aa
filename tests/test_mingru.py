"""The minGRU cell: its whole-window form (training) and its one-step form (generation) are one function."""
import pytest
import torch

from chargen.mingru import CHUNK, FLOOR, MinGRU, MinGRUBlock, kept, linear_recurrence
from chargen.model import LanguageModel, ModelConfig


def recurrence_by_steps(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    outputs = []
    for t in range(b.size(1)):
        h = a[:, t] * h + b[:, t]
        outputs.append(h)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("length", [1, CHUNK - 1, CHUNK, 3 * CHUNK + 5])
def test_linear_recurrence_solves_the_loop(length):
    generator = torch.Generator().manual_seed(length)
    gates = torch.randn(2, length, 7, generator=generator) * 6  # from a ~ 1 (remember) to a ~ 0 (forget)
    gates[..., 0], gates[..., 1] = 20.0, -20.0  # a unit that forgets all it may, and one that keeps all
    b = torch.randn(2, length, 7, generator=generator) * 3
    h0 = torch.randn(2, 7, generator=generator) * 3
    assert kept(gates).min() == FLOOR  # some units forget as fast as a unit may
    solved = linear_recurrence(kept(gates), b, h0)
    torch.testing.assert_close(solved, recurrence_by_steps(kept(gates).exp(), b, h0), rtol=1e-5, atol=1e-5)


def test_linear_recurrence_keeps_a_state_through_a_long_window_of_remembering():
    """a = 1 everywhere: h0 plus the running sum, with no overflow however long the window."""
    b = torch.ones(1, 1000, 3)
    solved = linear_recurrence(torch.zeros(1, 1000, 3), b, torch.full((1, 3), 5.0))
    torch.testing.assert_close(solved[0, :, 0], 5 + torch.arange(1, 1001, dtype=torch.float32))


@pytest.mark.parametrize("input_size, normalise", [(12, False), (24, True)])
def test_whole_window_equals_one_step_at_a_time_on_random_inputs_and_states(input_size, normalise):
    torch.manual_seed(0)
    block = MinGRUBlock(input_size, 24, above_first=normalise)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)  # not the gentle initial weights: gates that forget and gates that remember
        x, h0 = torch.randn(3, 50, input_size) * 2, torch.randn(3, 24) * 2
        window, last = block(x, h0)
        h, steps = h0, []
        for t in range(50):
            y, h = block.step(x[:, t], h, lambda layer, v: layer(v))
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), window, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, last, rtol=1e-5, atol=1e-5)


def test_a_stack_reads_its_state_as_a_gru_does():
    torch.manual_seed(0)
    layers = MinGRU(8, 16, num_layers=3)
    x = torch.randn(2, 30, 8)
    whole, state = layers(x)
    first, middle = layers(x[:, :11])
    second, last = layers(x[:, 11:], middle)
    assert state.shape == middle.shape == (3, 2, 16)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [dict(layers=1), dict(layers=3), dict(layers=2, input="onehot"), dict(layers=3, skip_connections=False), dict(layers=2, tie_weights=True, embedding_dim=16)])
def test_the_config_counts_a_mingru_models_parameters(options):
    config = ModelConfig(vocab_size=13, cell="mingru", hidden=16, **options)
    assert LanguageModel(config).num_parameters() == config.num_parameters()


def test_gradients_reach_every_weight_and_the_first_state():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=9, cell="mingru", layers=2, hidden=8, embedding_dim=4))
    h0 = torch.randn(2, 3, 8, requires_grad=True)
    logits, _ = model(torch.randint(0, 9, (3, 20)), (h0,))
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert h0.grad.abs().sum() > 0
