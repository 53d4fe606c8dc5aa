import pytest
import torch

from chargen import ChargenError, LanguageModel, ModelConfig
from chargen.model import detach_state


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("input", ["embedding", "onehot"])
def test_carried_state_equals_one_long_pass(cell, input):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=11, cell=cell, input=input, layers=2, hidden=16, embedding_dim=8)).eval()
    tokens = torch.randint(0, 11, (3, 20))
    whole, _ = model(tokens)
    first, state = model(tokens[:, :12])
    second, _ = model(tokens[:, 12:], detach_state(state))
    assert whole.shape == (3, 20, 11)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)


def test_detach_cuts_the_graph():
    model = LanguageModel(ModelConfig(vocab_size=5, hidden=8, layers=1))
    _, state = model(torch.zeros(1, 4, dtype=torch.long))
    assert all(s.requires_grad for s in state)
    assert not any(s.requires_grad for s in detach_state(state))


def test_relu_rnn():
    model = LanguageModel(ModelConfig(vocab_size=5, cell="rnn", nonlinearity="relu", hidden=8))
    assert model.rnn.nonlinearity == "relu"


@pytest.mark.parametrize(
    "options",
    [dict(cell="transformer"), dict(layers=0), dict(hidden=-1), dict(dropout=1.0), dict(nonlinearity="relu"), dict(input="bytes")],
)
def test_bad_config(options):
    with pytest.raises(ChargenError):
        ModelConfig(vocab_size=5, **options)
