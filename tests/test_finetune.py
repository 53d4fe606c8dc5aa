from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from chargen import ChargenError, LanguageModel, ModelConfig, OptionError
from chargen.finetune import extend_model, extend_vocabulary, freeze_lower_layers
from chargen.tokenizer import UNK
from chargen.vocabulary import Vocabulary, build_vocabulary, from_record

OLD_WORDS = "the cat sat on the mat, the cat ran to the mat.\n" * 3
NEW_WORDS = "the dog sat on the log; a dog ran to the cat.\n" * 3


def test_char_extension_keeps_old_ids_and_appends_new_ones_sorted():
    old = Vocabulary(["t", "a", " ", "c"])  # not sorted: the old order must stay as it is
    extended = extend_vocabulary(old, Vocabulary.from_text("zebra cat!"))
    assert extended.chars == ["t", "a", " ", "c", "!", "b", "e", "r", "z"]
    assert extended.encode("cat a").tolist() == old.encode("cat a").tolist()


def test_char_extension_by_nothing_new_is_the_old_vocabulary():
    old = Vocabulary.from_text("abc")
    assert extend_vocabulary(old, Vocabulary.from_text("cab")) == old


def test_word_extension_keeps_old_ids_and_appends_new_words_in_their_order():
    old = build_vocabulary(OLD_WORDS, "word", min_frequency=1)
    new = build_vocabulary(NEW_WORDS, "word", min_frequency=1)
    extended = extend_vocabulary(old, new)
    old_ids, ids = old.tokenizer.get_vocab(), extended.tokenizer.get_vocab()
    assert all(ids[word] == i for word, i in old_ids.items())
    added = sorted((w for w in ids if w not in old_ids), key=ids.get)
    assert added == sorted((w for w in new.tokenizer.get_vocab() if w not in old_ids), key=new.tokenizer.get_vocab().get)
    assert "Ġdog" in added and ids[UNK] == 0 and len(extended) == len(old) + len(added)
    assert [ids[w] for w in added] == list(range(len(old), len(extended)))
    assert extended.encode(OLD_WORDS).tolist() == old.encode(OLD_WORDS).tolist()
    assert 0 not in extended.encode(NEW_WORDS).tolist()  # no new word is [UNK] any more


def test_extended_word_vocabulary_round_trips_through_its_record():
    extended = extend_vocabulary(build_vocabulary(OLD_WORDS, "word", min_frequency=1), build_vocabulary(NEW_WORDS, "word", min_frequency=1))
    entry, files = extended.to_record()
    assert from_record(entry, lambda name: files[name].decode()) == extended


def test_bpe_vocabulary_stays_as_it_is():
    old = build_vocabulary(OLD_WORDS, "bpe", vocab_size=300, min_frequency=1)
    assert extend_vocabulary(old, build_vocabulary(NEW_WORDS, "bpe", vocab_size=300, min_frequency=1)) is old


@pytest.mark.parametrize("old_kind, new_kind", [("char", "word"), ("word", "bpe"), ("bpe", "char")])
def test_another_tokenizer_kind_is_refused(old_kind, new_kind):
    with pytest.raises(ChargenError, match="another tokenizer kind"):
        extend_vocabulary(build_vocabulary(OLD_WORDS, old_kind, min_frequency=1), build_vocabulary(NEW_WORDS, new_kind, min_frequency=1))


INPUTS = [("embedding", False, 8), ("onehot", False, 8), ("embedding", True, 8), ("embedding", True, 16)]  # input, tied, embedding_dim


def small_model(cell="lstm", input="embedding", tie=False, skip=True, embedding_dim=8, vocab_size=7, layers=2) -> LanguageModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=vocab_size, cell=cell, input=input, layers=layers, hidden=16, embedding_dim=embedding_dim, tie_weights=tie, skip_connections=skip)
    return LanguageModel(config).eval()


def token_parameters(model: LanguageModel) -> dict[str, tuple[torch.Tensor, int]]:
    """Each parameter with a slice per token, and that axis."""
    found = {"head.weight": (model.head.weight, 0), "head.bias": (model.head.bias, 0)}
    if model.embedding is not None:
        found["embedding.weight"] = (model.embedding.weight, 0)
    else:
        found["input columns"] = (model.input_weight(), 1)
    return found


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
@pytest.mark.parametrize("input, tie, embedding_dim", INPUTS)
@pytest.mark.parametrize("skip", [True, False])
def test_extended_model_keeps_old_weights_and_logits(cell, input, tie, embedding_dim, skip):
    model = small_model(cell, input, tie, skip, embedding_dim)
    extended = extend_model(model, replace(model.config, vocab_size=10))
    assert extended.config.vocab_size == 10 and not extended.training
    old, new = token_parameters(model), token_parameters(extended)
    for name, (weights, axis) in old.items():
        assert new[name][0].shape[axis] == 10
        assert torch.equal(new[name][0].narrow(axis, 0, 7), weights), name
    others = {n: p for n, p in model.named_parameters() if n not in ("head.weight", "head.bias", "embedding.weight") and p is not model.input_weight()}
    grown = dict(extended.named_parameters())
    assert others and all(torch.equal(grown[n], p) for n, p in others.items())
    assert model.layer_parameters(0)[1] is not extended.layer_parameters(0)[1]  # a copy, not the same tensors
    tokens = torch.randint(0, 7, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model(tokens)
        logits, _ = extended(tokens)
    assert logits.shape == (2, 9, 10)
    torch.testing.assert_close(logits[..., :7], expected, rtol=1e-6, atol=1e-6)  # the same weights: the same sums, up to the order a kernel adds them in


@pytest.mark.parametrize("input, tie, embedding_dim", INPUTS)
def test_new_tokens_start_from_the_mean_of_old_rows_and_the_lowest_bias(input, tie, embedding_dim):
    model = small_model(input=input, tie=tie, embedding_dim=embedding_dim)
    extended = extend_model(model, replace(model.config, vocab_size=10))
    for name, (weights, axis) in token_parameters(model).items():
        added = token_parameters(extended)[name][0].narrow(axis, 7, 3)
        start = weights.amin(dim=axis, keepdim=True) if name == "head.bias" else weights.mean(dim=axis, keepdim=True)
        assert torch.equal(added, start.expand_as(added)), name
    assert extended.head.bias[7:].max() <= model.head.bias.min()
    assert (extended.head.weight is extended.embedding.weight) == tie if input == "embedding" else True


def test_extended_model_of_the_same_size_is_an_equal_copy():
    model = small_model(input="onehot")
    copy = extend_model(model, replace(model.config, vocab_size=7))
    assert copy is not model
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in zip(copy.state_dict().values(), model.state_dict().values()))


def test_extended_model_keeps_frozen_parameters_and_the_random_numbers():
    model = small_model()
    model.embedding.weight.requires_grad_(False)
    torch.manual_seed(5)
    extended = extend_model(model, replace(model.config, vocab_size=9))
    drawn = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(3))
    assert not extended.embedding.weight.requires_grad and extended.head.weight.requires_grad


def test_extend_model_refuses_a_smaller_vocabulary_or_another_architecture():
    model = small_model()
    with pytest.raises(ChargenError, match="cannot shrink"):
        extend_model(model, replace(model.config, vocab_size=6))
    with pytest.raises(ChargenError, match="keeps its architecture"):
        extend_model(model, replace(model.config, vocab_size=9, hidden=32))


def one_step(model: LanguageModel) -> dict[str, torch.Tensor]:
    """The parameters before one AdamW step on a random batch."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(2))
    logits, _ = model(tokens[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    optimizer.step()
    return before


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("input", ["embedding", "onehot"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_frozen_layers_stay_and_the_rest_learns(cell, skip, input, layers):
    model = small_model(cell, input, skip=skip, layers=3)
    freeze_lower_layers(model, layers)
    frozen = {id(w) for i in range(layers) for w in model.layer_weights(i)}
    if model.embedding is not None:
        frozen.add(id(model.embedding.weight))
    before = one_step(model)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]) == (id(parameter) in frozen), name
    assert (model.head.weight.requires_grad, model.layer_weights(layers - 1)[0].requires_grad) == (True, False)


def test_freezing_a_tied_model_leaves_the_shared_matrix_learning():
    model = small_model(tie=True)
    freeze_lower_layers(model, 2)
    before = one_step(model)
    assert not torch.equal(model.embedding.weight, before["embedding.weight"])
    assert all(torch.equal(w, before[n]) for n, w in model.named_parameters() if n.startswith("rnn."))


@pytest.mark.parametrize("layers", [0, 3, -1, True, 1.0])
def test_freezing_outside_the_layers_is_refused(layers):
    with pytest.raises(OptionError, match=r"freeze must be between 1 and 2 \(the model's layers\)"):
        freeze_lower_layers(small_model(), layers)
