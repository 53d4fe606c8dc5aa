"""Fine-tuning through a run: `chargen train NEW --init-from CKPT [--freeze N]`.

finetune.py's pieces have their own tests (test_finetune.py); these train tiny models end to end: the base
checkpoint's weights carried over exactly, its vocabulary extended, what config.json records, the options
refused before anything is trained, frozen layers that stay, an exact resume, and sampling the new characters.
"""
import copy
import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

import chargen
import chargen.run
from chargen import ChargenError, checkpoint, prepared
from chargen.config import CorpusOptions
from chargen.info import summary

from .test_cli import run

BASE_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 20
NEW_TEXT = "Zebras QUICKLY vex the jumpy dog! a café, an œuvre.\n" * 12  # capitals, '!', ',', 'é', 'œ' are new
BASE_WORDS = "the cat sat on the mat, the cat ran to the mat.\n" * 12
NEW_WORDS = "the dog sat on the log; a dog ran to the cat.\n" * 12

ARCHITECTURE = dict(layers=2, hidden=16, embedding_dim=8)
# the options a fine-tune gives: the architecture is the base's; dropout, lr and lanes given, so no recipe runs
TRAINING = dict(batch_size=2, seq_len=8, precision="fp32", lr=1e-2, dropout=0.0, seed=7, quiet=True)
CLI_TRAINING = ["--batch-size", "2", "--seq-len", "8", "--precision", "fp32", "--lr", "0.01", "--dropout", "0", "--seed", "7", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    for name, text in (("base.txt", BASE_TEXT), ("new.txt", NEW_TEXT), ("base_words.txt", BASE_WORDS), ("new_words.txt", NEW_WORDS)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def base(texts):
    """A two-layer character model trained on BASE_TEXT, shared by the tests that only read it."""
    chargen.train(texts / "base.txt", texts / "base", max_steps=4, eval_every=2, **ARCHITECTURE, **TRAINING)
    return texts / "base"


@pytest.fixture
def caught(monkeypatch):
    """The model a fine-tune builds from its base (finetune.extend_model, as the run calls it), copied before any step."""
    found = []
    real = chargen.run.extend_model

    def spy(model, config):
        extended = real(model, config)
        found.append(copy.deepcopy(extended))
        return extended

    monkeypatch.setattr(chargen.run, "extend_model", spy)
    return found


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fine_tune_starts_from_the_base_weights_its_vocabulary_extended(tmp_path, texts, base, caught):
    before = snapshot(base)
    old = checkpoint.read(base)
    chargen.train(texts / "new.txt", tmp_path / "tuned", init_from=base, max_steps=3, eval_every=3, **TRAINING)
    tuned = checkpoint.read(tmp_path / "tuned")

    added = sorted(set(NEW_TEXT) - set(BASE_TEXT), key=ord)
    assert added == ["!", ",", "C", "I", "K", "L", "Q", "U", "Y", "Z", "é", "œ"]
    assert tuned.vocab.chars == old.vocab.chars + added  # every old character keeps its id; the new ones follow by code point
    assert tuned.model.config == chargen.ModelConfig(**{**old.model.config.to_dict(), "vocab_size": len(old.vocab) + len(added)})

    (start,) = caught  # the model at step 0: the base's weights, rows for the new characters appended
    n = len(old.vocab)
    base_weights = dict(old.model.named_parameters())
    for name, parameter in start.named_parameters():
        if name in ("embedding.weight", "head.weight", "head.bias"):
            assert torch.equal(parameter[:n], base_weights[name]), name
            assert parameter.shape[0] == n + len(added)
        else:
            assert torch.equal(parameter, base_weights[name]), name
    assert torch.equal(start.embedding.weight[n:], base_weights["embedding.weight"].mean(0, keepdim=True).expand(len(added), -1))
    assert not torch.equal(dict(tuned.model.named_parameters())["rnn.1.weight_hh_l0"], base_weights["rnn.1.weight_hh_l0"])  # it trained

    record = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert record["init_from"] == {"path": str(base.resolve()), "sha256": sha256(base / "model.safetensors"), "frozen_layers": 0, "frozen_embedding": False}
    assert record["corpus"]["files"][0]["path"] == str(texts / "new.txt")
    assert summary(tmp_path / "tuned")["started_from"] == str(base.resolve())
    assert snapshot(base) == before  # the base is read, never written


def test_a_fine_tune_on_a_text_with_nothing_new_keeps_the_vocabulary(tmp_path, texts, base, caught):
    (tmp_path / "same.txt").write_text("the lazy dog jumps over the quick brown fox.\n" * 20)
    chargen.train(tmp_path / "same.txt", tmp_path / "tuned", init_from=base, max_steps=2, eval_every=2, **TRAINING)
    assert checkpoint.read(tmp_path / "tuned").vocab == checkpoint.read(base).vocab
    assert all(torch.equal(a, b) for a, b in zip(caught[0].state_dict().values(), checkpoint.read(base).model.state_dict().values()))


def test_a_word_fine_tune_extends_the_word_vocabulary(tmp_path, texts, caught):
    words = dict(tokenizer="word", min_frequency=1)
    chargen.train(texts / "base_words.txt", tmp_path / "base", max_steps=2, eval_every=2, **words, **ARCHITECTURE, **{**TRAINING, "seq_len": 4})
    chargen.train(texts / "new_words.txt", tmp_path / "tuned", init_from=tmp_path / "base", max_steps=2, eval_every=2, **{**TRAINING, "seq_len": 4})
    old, tuned = checkpoint.read(tmp_path / "base"), checkpoint.read(tmp_path / "tuned")
    old_ids, ids = old.vocab.tokenizer.get_vocab(), tuned.vocab.tokenizer.get_vocab()
    assert all(ids[word] == i for word, i in old_ids.items())  # every old word keeps its id
    added = sorted(set(ids) - set(old_ids), key=ids.get)
    assert {"Ġdog", "Ġlog"} <= set(added) and [ids[w] for w in added] == list(range(len(old_ids), len(ids)))
    assert tuned.model.config.vocab_size == len(ids) == len(tuned.vocab)
    assert 0 not in tuned.vocab.encode(NEW_WORDS).tolist()  # no word of the new text is unknown
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["corpus"]["tokenizer"] == "word"
    (start,) = caught
    assert torch.equal(start.embedding.weight[: len(old_ids)], old.model.embedding.weight)


def refusals(texts, base, tmp_path):
    (tmp_path / "empty").mkdir()
    prepared.prepare([texts / "new.txt"], tmp_path / "prepared", CorpusOptions())
    new = texts / "new.txt"
    return {
        "no checkpoint there": ([new, "--init-from", tmp_path / "empty"], 1, "holds no checkpoint"),
        "no such folder": ([new, "--init-from", tmp_path / "nowhere"], 1, "no such checkpoint folder"),
        "another tokenizer": ([new, "--init-from", base, "--tokenizer", "word"], 1, "holds a char model: fine-tuning keeps its tokenizer, not --tokenizer word"),
        "another width": ([new, "--init-from", base, "--hidden", "32"], 2, "--init-from keeps the checkpoint's model: its hidden is 16, not 32"),
        "another cell": ([new, "--init-from", base, "--cell", "gru"], 2, "its cell is 'lstm', not 'gru'"),
        "more layers": ([new, "--init-from", base, "--layers", "3"], 2, "its layers is 2, not 3"),
        "freeze alone": ([new, "--freeze", "1"], 2, "it needs --init-from CHECKPOINT"),
        "freeze above the layers": ([new, "--init-from", base, "--freeze", "3"], 2, "freeze must be between 1 and 2 (the model's layers), not 3"),
        "freeze nothing": ([new, "--init-from", base, "--freeze", "0"], 2, "freeze must be between 1 and 2 (the model's layers), not 0"),
        "a prepared corpus": ([tmp_path / "prepared", "--init-from", base], 1, "is a prepared corpus"),
        "embeddings too": ([new, "--init-from", base, "--embeddings", new], 2, "--init-from starts the whole model from a checkpoint"),
    }


CASES = ["no checkpoint there", "no such folder", "another tokenizer", "another width", "another cell", "more layers", "freeze alone",
         "freeze above the layers", "freeze nothing", "a prepared corpus", "embeddings too"]


@pytest.mark.parametrize("case", CASES)
def test_a_fine_tune_that_cannot_be_is_refused_before_anything_is_trained(tmp_path, texts, base, monkeypatch, case):
    args, code, message = refusals(texts, base, tmp_path)[case]
    before = snapshot(base)
    monkeypatch.setattr(chargen.run.Trainer, "run", lambda self: pytest.fail("a refused fine-tune trained"))
    result = run("train", *args, "--out", tmp_path / "tuned", *CLI_TRAINING, "--max-steps", "2")
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "tuned").exists()
    assert snapshot(base) == before


def test_a_refusal_through_the_python_api_is_a_chargen_error(tmp_path, texts, base):
    with pytest.raises(ChargenError, match="its embedding-dim is 8, not 16"):
        chargen.train(texts / "new.txt", tmp_path / "tuned", init_from=base, embedding_dim=16, max_steps=2, **TRAINING)
    with pytest.raises(ChargenError, match="freeze must be between 1 and 2"):
        chargen.train(texts / "new.txt", tmp_path / "tuned", init_from=base, freeze=True, max_steps=2, **TRAINING)
    assert not (tmp_path / "tuned").exists()


@pytest.mark.parametrize("freeze", [1, 2])
def test_frozen_layers_keep_the_base_weights_and_the_rest_learns(tmp_path, texts, base, freeze):
    """The new text adds characters: the embedding keeps learning (its new rows would stay the mean), the layers freeze."""
    chargen.train(texts / "new.txt", tmp_path / "tuned", init_from=base, freeze=freeze, max_steps=4, eval_every=2, **TRAINING)
    old, new = load_file(base / "model.safetensors"), load_file(tmp_path / "tuned" / "model.safetensors")
    n = old["embedding.weight"].shape[0]
    for name in old:
        layer = int(name.split(".")[1]) if name.startswith("rnn.") else None
        frozen = layer is not None and layer < freeze
        kept = torch.equal(new[name][:n], old[name]) if new[name].shape != old[name].shape else torch.equal(new[name], old[name])
        assert kept == frozen, name
    assert not torch.equal(new["embedding.weight"][n:], old["embedding.weight"].mean(0, keepdim=True).expand(new["embedding.weight"].shape[0] - n, -1))
    started = json.loads((tmp_path / "tuned" / "config.json").read_text())["init_from"]
    assert started["frozen_layers"] == freeze and started["frozen_embedding"] is False


def test_a_text_that_adds_nothing_freezes_the_embedding_too(tmp_path, texts, base):
    same = tmp_path / "same.txt"
    same.write_text(BASE_TEXT[::-1], encoding="utf-8")  # the base's characters, another text
    chargen.train(same, tmp_path / "tuned", init_from=base, freeze=1, max_steps=4, eval_every=2, **TRAINING)
    old, new = load_file(base / "model.safetensors"), load_file(tmp_path / "tuned" / "model.safetensors")
    assert torch.equal(new["embedding.weight"], old["embedding.weight"])
    assert not torch.equal(new["rnn.1.weight_hh_l0"], old["rnn.1.weight_hh_l0"])
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["init_from"]["frozen_embedding"] is True


def test_freeze_with_one_hot_inputs_and_new_tokens_is_refused(tmp_path, texts):
    chargen.train(texts / "base.txt", tmp_path / "onehot", input="onehot", max_steps=2, **{**TRAINING, **ARCHITECTURE})
    with pytest.raises(chargen.OptionError, match="--input onehot"):
        chargen.train(texts / "new.txt", tmp_path / "tuned", init_from=tmp_path / "onehot", freeze=1, max_steps=2, **TRAINING)
    assert not (tmp_path / "tuned").exists()


@pytest.mark.parametrize("freeze", [None, 1])
def test_a_fine_tuned_run_resumes_exactly(tmp_path, texts, base, freeze):
    # a constant rate: a decaying schedule follows the limits, and the first half of a split run has other limits
    options = {**TRAINING, "dropout": 0.2, "schedule": "constant", "eval_every": 3, "init_from": base, "freeze": freeze}
    chargen.train(texts / "new.txt", tmp_path / "whole", max_steps=6, **options)
    chargen.train(texts / "new.txt", tmp_path / "split", max_steps=3, **options)
    assert chargen.resume(tmp_path / "split", max_steps=6, quiet=True).steps == 6
    for name in ("model.safetensors", "resume.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    record = json.loads((tmp_path / "split" / "config.json").read_text())
    assert record["init_from"]["frozen_layers"] == (freeze or 0) and record["progress"]["step"] == 6
    if freeze:  # the resumed session kept the layer frozen too
        old, new = load_file(base / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
        assert all(torch.equal(new[k], old[k]) for k in old if k.startswith("rnn.0."))


def test_fine_tune_from_the_command_line_then_sample_a_new_character(tmp_path, texts, base):
    shown = [option for option in CLI_TRAINING if option != "--quiet"]  # the run says what it fine-tunes
    result = run("train", texts / "new.txt", "--init-from", base, "--out", tmp_path / "tuned", *shown, "--max-steps", "3", "--eval-every", "3")
    assert result.exit_code == 0, result.output
    assert f"fine-tuning {base}" in result.stderr and "12 tokens the new text adds to its 29" in result.stderr
    result = run("sample", "-c", base, "--prompt", "Zebras é")
    assert result.exit_code == 1 and "never saw" in result.output  # the base knows neither 'Z' nor 'é'
    result = run("sample", "-c", tmp_path / "tuned", "--prompt", "Zebras é", "--length", 20, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Zebras é") and len(result.stdout) == len("Zebras é") + 20 + 1
    again = run("sample", "-c", tmp_path / "tuned", "--prompt", "Zebras é", "--length", 20, "--seed", 3)
    assert again.stdout == result.stdout
    assert chargen.load(tmp_path / "tuned").generate("œ", length=5, seed=0).startswith("œ")
    result = run("eval", "-c", tmp_path / "tuned", "--json", "--words", 10)  # its validation text, read from the new text file
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["file"] == f"{texts / 'new.txt'} (validation part)"
