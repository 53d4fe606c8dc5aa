"""Hostile or damaged checkpoints (issue 19, items 15 to 20 and 1): each is one ChargenError line naming the file, never a traceback.

Every case copies a tiny trained checkpoint, damages one file, and loads (or resumes, or lists) the copy.
"""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import chargen
from chargen import checkpoint, resume_file, safe_files
from chargen.errors import ChargenError

from .conftest import TINY_OPTIONS
from .test_cli import run


@pytest.fixture(scope="module")
def token_models(tmp_path_factory, trained) -> dict[str, Path]:
    """A tiny word checkpoint and a tiny BPE one, trained once for this file."""
    folder = tmp_path_factory.mktemp("tokens")
    corpus = trained.parent / "tiny.txt"
    found = {}
    for kind, extra in (("word", {}), ("bpe", {"vocab_size": 300})):
        chargen.train(corpus, folder / kind, max_steps=10, eval_every=10, quiet=True, tokenizer=kind, **extra, **TINY_OPTIONS)
        found[kind] = folder / kind
    return found


def damaged_copy(source: Path, tmp_path: Path, damage) -> Path:
    folder = tmp_path / "damaged"
    shutil.copytree(source, folder)
    damage(folder)
    return folder


def refused(call, folder: Path, name: str, message: str) -> str:
    """call(folder) is one ChargenError line naming folder/name and matching message."""
    with pytest.raises(ChargenError, match=message) as caught:
        call(folder)
    text = str(caught.value)
    assert "\n" not in text
    assert str(folder / name) in text, text
    return text


# the ways of damaging one file


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def edit_tensors(path: Path, change) -> None:
    with safe_open(str(path), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    change(tensors, metadata)
    path.unlink()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata)


def in_config(change):
    return lambda folder: edit_json(folder / "config.json", change)


def in_model(change):
    return lambda folder: edit_json(folder / "config.json", lambda c: c["model"].update(change))


def in_weights(change):
    return lambda folder: edit_tensors(folder / "model.safetensors", change)


def in_resume(change):
    return lambda folder: edit_tensors(folder / "resume.safetensors", change)


def in_tokenizer(change):
    return lambda folder: edit_json(folder / "tokenizer.json", change)


def replaced(name: str, make):
    """folder/name replaced by what make(path, folder) puts there: a link, a FIFO, a folder, a sparse file."""

    def damage(folder: Path) -> None:
        path = folder / name
        path.unlink()
        make(path, folder)

    return damage


def link_to(target):
    return lambda path, folder: path.symlink_to(target)


def moved_outside(folder: Path) -> None:
    """model.safetensors moved out of the folder, a link to it left in its place."""
    outside = folder.parent / "elsewhere.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)


def sparse(size: int):
    def make(path: Path, folder: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(size)

    return make


def fifo(path: Path, folder: Path) -> None:
    os.mkfifo(path)


def directory(path: Path, folder: Path) -> None:
    path.mkdir()


def set_item(key, index, value):
    return lambda tensors, metadata: tensors[key].view(-1).__setitem__(index, value)


def set_tensor(key, make):
    return lambda tensors, metadata: tensors.__setitem__(key, make(tensors))


def drop(key):
    return lambda tensors, metadata: tensors.pop(key)


def set_metadata(key, text):
    return lambda tensors, metadata: metadata.__setitem__(key, text)


def drop_metadata(key):
    return lambda tensors, metadata: metadata.pop(key)


def progress(**changes):
    return lambda tensors, metadata: metadata.__setitem__("progress", json.dumps({**json.loads(metadata["progress"]), **changes}))


def param_group(**changes):
    def change(tensors, metadata):
        groups = json.loads(metadata["param_groups"])
        groups[0].update(changes)
        metadata["param_groups"] = json.dumps(groups)

    return change


def chars(value):
    return in_config(lambda c: c["vocabulary"].__setitem__("chars", value(c["vocabulary"]["chars"])))


def nested(depth: int):
    return lambda folder: (folder / "config.json").write_text("[" * depth + "]" * depth)


# item 15: config.json is checked, against the weights' own header too, before any model is built

CONFIG_CASES = [
    pytest.param(in_model({"hidden": 10**9}), "hidden must be between 1 and 65,536", id="hidden-1e9"),
    pytest.param(in_model({"hidden": 20000}), "tensor .* has shape .* but config.json makes it", id="hidden-20000"),
    pytest.param(in_model({"hidden": 8000}), "tensor .* has shape .* but config.json makes it", id="hidden-8000"),
    pytest.param(in_model({"layers": 10**6}), "layers must be between 1 and 64", id="layers-1e6"),
    pytest.param(in_model({"layers": 2, "skip_connections": False}), "model.safetensors lacks tensor rnn.weight_ih_l1", id="layers-2"),
    pytest.param(in_model({"embedding_dim": 10**9}), "embedding-dim must be between", id="embedding-1e9"),
    pytest.param(in_model({"vocab_size": 10**8}), "vocab-size must be between", id="vocab-1e8"),
    pytest.param(in_model({"vocab_size": 30}), "the vocabulary has 29 tokens but the model 30", id="vocab-size-differs"),
    pytest.param(in_model({"hidden": "48"}), "hidden must be a whole number", id="hidden-string"),
    pytest.param(in_model({"hidden": 48.0}), "hidden must be a whole number", id="hidden-float"),
    pytest.param(in_model({"tie_weights": "yes"}), "tie-weights must be true or false", id="tie-weights-string"),
    pytest.param(in_model({"dropout": float("nan")}), "dropout must be in", id="dropout-nan"),
    pytest.param(in_model({"cell": "transformer"}), "cell must be one of", id="cell-unknown"),
    pytest.param(in_model({"heads": 8}), "lacks a valid model entry", id="model-unknown-key"),
    pytest.param(in_config(lambda c: c.__setitem__("model", [1, 2])), "model entry of config.json must be a table", id="model-list"),
    pytest.param(in_config(lambda c: c["model"].pop("vocab_size")), "lacks a valid model entry", id="model-no-vocab-size"),
    pytest.param(nested(200_000), "config.json is not a readable JSON config", id="nested-200000"),
    pytest.param(lambda f: (f / "config.json").write_bytes(b"\xff\xfe{}"), "config.json is not UTF-8 text", id="not-utf8"),
    pytest.param(replaced("config.json", sparse(1 << 30)), "config.json is 1,073,741,824 bytes", id="config-1GB"),
    pytest.param(replaced("config.json", fifo), "config.json is not a regular file", id="config-fifo"),
    pytest.param(replaced("config.json", link_to("/etc/passwd")), "config.json leads outside", id="config-link-outside"),
    pytest.param(in_config(lambda c: c.__setitem__("vocabulary", "chars")), "lacks a valid vocabulary entry", id="vocabulary-string"),
    pytest.param(in_config(lambda c: c["vocabulary"].__setitem__("type", "bytes")), "lacks a valid vocabulary entry", id="vocabulary-type"),
    pytest.param(
        in_config(lambda c: c.__setitem__("vocabulary", {"type": "word", "file": "/etc/passwd"})),
        "a word vocabulary is the tokenizer.json beside it, not '/etc/passwd'",
        id="vocabulary-file-outside",
    ),
    pytest.param(
        in_config(lambda c: c.__setitem__("vocabulary", {"type": "bpe", "file": "../../../etc/passwd"})),
        "tokenizer.json beside it",
        id="vocabulary-file-dotdot",
    ),
]


@pytest.mark.parametrize("damage, message", CONFIG_CASES)
def test_a_damaged_config_is_refused_before_any_model_is_built(tmp_path, trained, damage, message, monkeypatch):
    built_on = []

    class Watched(checkpoint.LanguageModel):
        def __init__(self, config):
            super().__init__(config)
            built_on.append(next(self.parameters()).device.type)

    monkeypatch.setattr(checkpoint, "LanguageModel", Watched)
    folder = damaged_copy(trained, tmp_path, damage)
    name = "model.safetensors" if "tensor" in message else "config.json"
    refused(chargen.load, folder, name, message)
    assert set(built_on) <= {"meta"}  # shapes come from a model on the meta device, which allocates nothing


# item 16: weights that are not finite float32, a character vocabulary with what is not a character
# item 17: only regular files inside the folder, of a size the model can explain

WEIGHT_CASES = [
    pytest.param(in_weights(set_item("head.bias", 0, float("nan"))), "holds NaN or infinite values in tensor head.bias", id="nan"),
    pytest.param(in_weights(set_item("rnn.weight_hh_l0", 5, float("inf"))), "NaN or infinite values in tensor rnn.weight_hh_l0", id="inf"),
    pytest.param(in_weights(set_tensor("head.bias", lambda t: t["head.bias"].half())), "tensor head.bias holds F16 values", id="float16"),
    pytest.param(in_weights(set_tensor("head.bias", lambda t: t["head.bias"].double())), "holds F64 values", id="float64"),
    pytest.param(in_weights(set_tensor("head.bias", lambda t: t["head.bias"].long())), "holds I64 values", id="int64"),
    pytest.param(in_weights(set_tensor("head.bias", lambda t: t["head.bias"] > 0)), "holds BOOL values", id="bool"),
    pytest.param(in_weights(set_tensor("head.bias", lambda t: torch.zeros(5))), r"head.bias has shape \[5\]", id="shape"),
    pytest.param(in_weights(drop("head.bias")), "lacks tensor head.bias", id="missing-tensor"),
    pytest.param(in_weights(set_tensor("extra", lambda t: torch.zeros(2))), "holds a tensor extra", id="extra-tensor"),
    pytest.param(replaced("model.safetensors", link_to("/dev/zero")), "model.safetensors is not a regular file", id="link-dev-zero"),
    pytest.param(replaced("model.safetensors", fifo), "model.safetensors is not a regular file", id="fifo"),
    pytest.param(replaced("model.safetensors", directory), "model.safetensors is not a regular file", id="directory"),
    pytest.param(moved_outside, "model.safetensors leads outside", id="link-outside"),
    pytest.param(replaced("model.safetensors", link_to("model.safetensors")), "model.safetensors cannot be read", id="link-loop"),
    pytest.param(replaced("model.safetensors", sparse(1 << 32)), "model.safetensors is 4,294,967,296 bytes", id="sparse-4GB"),
    pytest.param(replaced("model.safetensors", sparse(100)), "model.safetensors is corrupt", id="zeros"),
    pytest.param(lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing", id="missing"),
    pytest.param(chars(lambda c: c[:3] + ["\ud800"] + c[4:]), r"holds '\\ud800', which is not one Unicode character", id="lone-surrogate"),
    pytest.param(chars(lambda c: c[:3] + ["ab"] + c[4:]), "holds 'ab', which is not one Unicode character", id="two-characters"),
    pytest.param(chars(lambda c: c[:3] + [3] + c[4:]), "holds 3, which is not one Unicode character", id="number"),
    pytest.param(chars(lambda c: "".join(c)), "chars must be a list", id="chars-string"),
    pytest.param(chars(lambda c: c[:3] + [c[4]] + c[4:]), "distinct single characters", id="repeated-character"),
]


@pytest.mark.parametrize("damage, message", WEIGHT_CASES)
def test_damaged_weights_or_characters_are_refused(tmp_path, trained, damage, message):
    folder = damaged_copy(trained, tmp_path, damage)
    name = "config.json" if "character" in message or "chars" in message else "model.safetensors"
    refused(chargen.load, folder, name, message)


def test_weights_too_large_for_the_memory_left_are_refused_before_reading(tmp_path, trained, monkeypatch):
    monkeypatch.setattr(safe_files, "available_memory", lambda: 1000)
    refused(chargen.load, damaged_copy(trained, tmp_path, lambda f: None), "model.safetensors", "GB of memory to load")


# items 17 and 18: a tokenizer.json is chargen's own shape (inline vocabulary, its pre-tokenizer and decoder) before tokenizers reads it


def pre_tokenizer_regex(pattern: str):
    return in_tokenizer(lambda t: t["pre_tokenizer"]["pretokenizers"][0]["pattern"].__setitem__("Regex", pattern))


def vocab_id(value):
    return in_tokenizer(lambda t: t["model"]["vocab"].__setitem__(list(t["model"]["vocab"])[-1], value))


def model_entry(key, value):
    return in_tokenizer(lambda t: t["model"].__setitem__(key, value))


TOKENIZER_CASES = [
    pytest.param("word", pre_tokenizer_regex("(a+)+b"), "pre_tokenizer is not the one chargen builds", id="regex-word"),
    pytest.param("bpe", pre_tokenizer_regex("(a+)+b"), "pre_tokenizer is not the one chargen builds", id="regex-bpe"),
    pytest.param("word", in_tokenizer(lambda t: t.__setitem__("pre_tokenizer", None)), "pre_tokenizer is not", id="no-pre-tokenizer"),
    pytest.param("word", in_tokenizer(lambda t: t.__setitem__("normalizer", {"type": "Lowercase"})), "normalizer is not", id="normalizer"),
    pytest.param("bpe", in_tokenizer(lambda t: t["decoder"].__setitem__("type", "Metaspace")), "decoder is not", id="decoder"),
    pytest.param("word", in_tokenizer(lambda t: t.pop("post_processor")), "entries are not those", id="entry-missing"),
    pytest.param("word", in_tokenizer(lambda t: t.__setitem__("files", "/etc/passwd")), "entries are not those", id="entry-extra"),
    pytest.param("word", in_tokenizer(lambda t: t["added_tokens"][0].__setitem__("id", 5)), "added_tokens is not", id="added-token-id"),
    pytest.param("word", vocab_id(10**9), "id 1,000,000,000 outside 0 to", id="id-1e9-word"),
    pytest.param("bpe", vocab_id(10**9), "id 1,000,000,000 outside 0 to", id="id-1e9-bpe"),
    pytest.param("bpe", vocab_id(-1), "id -1 outside", id="id-negative"),
    pytest.param("bpe", vocab_id(0), "two tokens the same id", id="id-repeated"),
    pytest.param("bpe", vocab_id("7"), "whole-number id", id="id-string"),
    pytest.param("word", in_tokenizer(lambda t: t["model"]["vocab"].__setitem__("Ġ[UNKNOWN]", t["model"]["vocab"].pop("Ġ[UNK]"))), r"lacks 'Ġ\[UNK\]' as id 0", id="no-unk"),
    pytest.param("bpe", model_entry("vocab", "/etc/passwd"), "map each token to a whole-number id, inline", id="vocab-path"),
    pytest.param("bpe", model_entry("merges", "/dev/zero"), "merges must be listed inline", id="merges-path"),
    pytest.param("bpe", model_entry("merges", [["a", "b", "c"]]), "merges must be listed inline", id="merges-triple"),
    pytest.param("word", model_entry("vocab", "../../.."), "map each token to a whole-number id, inline", id="vocab-dotdot"),
    pytest.param("word", model_entry("type", "WordPiece"), "model must be WordLevel", id="wordpiece"),
    pytest.param("bpe", model_entry("files", ["/etc/passwd"]), "entry 'files' chargen never writes", id="model-files"),
    pytest.param("bpe", model_entry("dropout", 0.5), "model's dropout is 0.5", id="bpe-dropout"),
    pytest.param("word", model_entry("unk_token", "x"), "model's unk_token is 'x'", id="unk-token"),
    pytest.param("word", lambda f: (f / "tokenizer.json").write_text("[" * 200_000), "not a readable tokenizer", id="nested"),
    pytest.param("bpe", replaced("tokenizer.json", link_to("/etc/passwd")), "tokenizer.json leads outside", id="link-passwd"),
    pytest.param("bpe", replaced("tokenizer.json", link_to("/dev/zero")), "tokenizer.json is not a regular file", id="link-dev-zero"),
    pytest.param("bpe", replaced("tokenizer.json", sparse(1 << 30)), "tokenizer.json is 1,073,741,824 bytes", id="sparse-1GB"),
]


@pytest.mark.parametrize("kind, damage, message", TOKENIZER_CASES)
def test_a_tokenizer_json_not_of_chargens_shape_is_refused(tmp_path, token_models, kind, damage, message):
    folder = damaged_copy(token_models[kind], tmp_path, damage)
    refused(chargen.load, folder, "tokenizer.json", message)


def test_a_panic_in_tokenizers_is_a_clear_error(tmp_path, token_models, monkeypatch):
    class PanicException(BaseException):  # pyo3's, which derives from BaseException alone
        pass

    class Panicking:
        @staticmethod
        def from_str(text):
            raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr("chargen.tokenizer.Tokenizer", Panicking)
    folder = damaged_copy(token_models["word"], tmp_path, lambda f: None)
    refused(chargen.load, folder, "tokenizer.json", "tokenizers failed on it: called `Option::unwrap")


def test_the_tokenizers_chargen_writes_still_load(token_models):
    for kind, folder in token_models.items():
        lm = chargen.load(folder)
        assert lm.vocab.decode(lm.vocab.encode("the lazy dog")) == "the lazy dog"


# item 19: resume.safetensors, each part checked against the model and the run

RESUME_CASES = [
    pytest.param(in_resume(drop("rng")), "lacks tensor rng", id="no-rng"),
    pytest.param(in_resume(set_tensor("rng", lambda t: t["rng"][:100])), r"tensor rng has shape \[100\]", id="rng-short"),
    pytest.param(in_resume(set_tensor("rng", lambda t: t["rng"].float())), "tensor rng holds F32 values; chargen writes U8", id="rng-float"),
    pytest.param(in_resume(set_tensor("rng", lambda t: torch.full_like(t["rng"], 255))), "rng is not a state of", id="rng-invalid"),
    pytest.param(in_resume(set_tensor("lanes.0", lambda t: t["lanes.0"][:, :2])), r"tensor lanes.0 has shape \[1, 2, 48\]", id="lanes-shape"),
    pytest.param(in_resume(drop("lanes.1")), "lacks tensor lanes.1", id="lanes-half"),
    pytest.param(in_resume(set_tensor("lanes.2", lambda t: t["lanes.0"].clone())), "holds a tensor lanes.2", id="lanes-extra"),
    pytest.param(in_resume(set_item("lanes.0", 0, float("nan"))), "NaN or infinite values in tensor lanes.0", id="lanes-nan"),
    pytest.param(in_resume(set_tensor("model.head.bias", lambda t: torch.zeros(5))), r"model.head.bias has shape \[5\]", id="model-shape"),
    pytest.param(in_resume(drop("model.head.bias")), "lacks tensor model.head.bias", id="model-missing"),
    pytest.param(in_resume(set_tensor("optimizer.x.y", lambda t: torch.zeros(1))), "holds a tensor optimizer.x.y", id="optimizer-x-y"),
    pytest.param(in_resume(set_tensor("optimizer.99.step", lambda t: torch.zeros(()))), "holds a tensor optimizer.99.step", id="optimizer-99"),
    pytest.param(in_resume(set_tensor("optimizer.0.exp_avg", lambda t: torch.zeros(3, 3))), r"optimizer.0.exp_avg has shape \[3, 3\]", id="exp-avg-shape"),
    pytest.param(in_resume(set_tensor("optimizer.1.exp_avg", lambda t: t["optimizer.1.exp_avg"].T)), "optimizer.1.exp_avg has shape", id="exp-avg-transposed"),
    pytest.param(in_resume(set_item("optimizer.2.exp_avg", 3, float("nan"))), "NaN or infinite values in tensor optimizer.2.exp_avg", id="exp-avg-nan"),
    pytest.param(in_resume(set_item("optimizer.0.exp_avg_sq", 0, -1.0)), "optimizer.0.exp_avg_sq holds negative values", id="exp-avg-sq-negative"),
    pytest.param(in_resume(set_tensor("optimizer.0.step", lambda t: -t["optimizer.0.step"])), "optimizer.0.step holds negative values", id="step-negative"),
    pytest.param(in_resume(drop("optimizer.3.exp_avg_sq")), "lacks tensor optimizer.3.exp_avg_sq", id="exp-avg-sq-missing"),
    pytest.param(in_resume(set_tensor("optimizer.0.step", lambda t: torch.zeros(2))), r"optimizer.0.step has shape \[2\]", id="step-shape"),
    pytest.param(in_resume(set_metadata("param_groups", "[{")), "param_groups metadata is not JSON", id="groups-not-json"),
    pytest.param(in_resume(drop_metadata("param_groups")), "lacks its param_groups metadata", id="groups-missing"),
    pytest.param(in_resume(set_metadata("param_groups", "{}")), "param_groups must hold the one group", id="groups-object"),
    pytest.param(in_resume(set_metadata("param_groups", "[]")), "param_groups must hold the one group", id="groups-empty"),
    pytest.param(in_resume(param_group(params=[0, 1])), "param_groups must list the model's 7 parameters", id="groups-params"),
    pytest.param(in_resume(param_group(params=[0, 1, 2, 3, 4, 5, "6"])), "must list the model's 7 parameters", id="groups-params-string"),
    pytest.param(in_resume(param_group(lr="fast")), "param_groups lr must be a number", id="groups-lr"),
    pytest.param(in_resume(param_group(weight_decay=-1)), "param_groups weight_decay must be a number, zero or more", id="groups-decay"),
    pytest.param(in_resume(param_group(betas=[0.9])), "param_groups betas must be two numbers", id="groups-betas"),
    pytest.param(in_resume(param_group(amsgrad=True)), "param_groups amsgrad must be False", id="groups-amsgrad"),
    pytest.param(in_resume(param_group(fused="yes")), "param_groups fused must be None or False or True", id="groups-fused"),
    pytest.param(in_resume(set_metadata("progress", "nope")), "progress metadata is not JSON", id="progress-not-json"),
    pytest.param(in_resume(drop_metadata("progress")), "lacks its progress metadata", id="progress-missing"),
    pytest.param(in_resume(set_metadata("progress", "[1, 2]")), "progress must be a JSON object", id="progress-list"),
    pytest.param(in_resume(progress(step=-1)), "progress step must be zero or more", id="step-minus-one"),
    pytest.param(in_resume(progress(step="60")), "progress step must be a whole number", id="step-string"),
    pytest.param(in_resume(progress(step=[60])), "progress step must be a whole number", id="step-list"),
    pytest.param(in_resume(progress(step=True)), "progress step must be a whole number", id="step-bool"),
    pytest.param(in_resume(progress(tokens=10**30)), "progress tokens must be zero or more", id="tokens-huge"),
    pytest.param(in_resume(progress(elapsed_s=float("nan"))), r"progress elapsed_s must be zero or more \(and finite\)", id="elapsed-nan"),
    pytest.param(in_resume(progress(best_val="low")), "progress best-val must be a number", id="best-val-string"),
    pytest.param(in_resume(progress(zzz=1)), "unknown progress entry 'zzz'", id="progress-unknown"),
    pytest.param(replaced("resume.safetensors", link_to("/dev/zero")), "resume.safetensors is not a regular file", id="link-dev-zero"),
    pytest.param(replaced("resume.safetensors", sparse(1 << 32)), "resume.safetensors is 4,294,967,296 bytes", id="sparse-4GB"),
    pytest.param(lambda f: (f / "resume.safetensors").unlink(), "resume.safetensors is missing: the run cannot be resumed", id="missing"),
]


@pytest.mark.parametrize("damage, message", RESUME_CASES)
def test_a_damaged_resume_file_is_refused_naming_the_fault(tmp_path, trained, damage, message):
    folder = damaged_copy(trained, tmp_path, damage)
    refused(lambda f: chargen.resume(f, max_steps=70, quiet=True), folder, "resume.safetensors", message)
    assert chargen.load(folder).folder == folder  # the best weights are untouched and still load


def test_a_resume_file_rewritten_whole_still_resumes(tmp_path, trained):
    """The control for the table above: rewriting resume.safetensors with nothing changed damages nothing."""
    folder = damaged_copy(trained, tmp_path, in_resume(lambda tensors, metadata: None))
    assert chargen.resume(folder, max_steps=62, quiet=True).steps == 62


ARCHITECTURES = [
    pytest.param({"cell": "gru", "layers": 2}, id="gru-2-layers"),  # one lane state, not (h, c)
    pytest.param({"cell": "rnn", "skip_connections": False, "layers": 2}, id="rnn-stacked"),
    pytest.param({"tie_weights": True}, id="tied"),  # one parameter fewer than tensors in the state dict
    pytest.param({"input": "onehot"}, id="onehot"),
    pytest.param({"embeddings": True}, id="frozen-embeddings"),  # AdamW does not hold the embedding
]


@pytest.mark.parametrize("options", ARCHITECTURES)
def test_every_architecture_chargen_writes_resumes(tmp_path, trained, options):
    """The checks of resume.safetensors expect exactly what each kind of model saves."""
    options = dict(options)
    if options.pop("embeddings", False):
        vectors = tmp_path / "vectors.txt"
        vectors.write_text("".join(f"{w} " + " ".join(["0.5"] * 16) + "\n" for w in ("the", "fox", "dog")), encoding="utf-8")
        options |= {"tokenizer": "word", "embeddings": vectors, "freeze_embeddings": True}
    folder = tmp_path / "run"
    chargen.train(trained.parent / "tiny.txt", folder, max_steps=4, eval_every=2, quiet=True, **{**TINY_OPTIONS, **options})
    assert chargen.resume(folder, max_steps=6, quiet=True).steps == 6


def test_read_resume_checks_against_the_lanes_config_json_trains(tmp_path, trained):
    folder = damaged_copy(trained, tmp_path, in_config(lambda c: c["training"].__setitem__("batch_size", 8)))
    refused(resume_file.read_resume, folder, "resume.safetensors", r"lanes.0 has shape \[1, 4, 48\], but config.json makes it \[1, 8, 48\]")
    edit_json(folder / "config.json", lambda c: c["training"].__setitem__("batch_size", "4"))
    refused(resume_file.read_resume, folder, "config.json", "batch-size must be a whole number")


# the command line: one line, exit 1, for a few of the cases above

CLI_CASES = [
    pytest.param(["sample", "--prompt", "the ", "-n", "5", "-c"], in_weights(set_item("head.bias", 0, float("nan"))), "NaN", id="sample-nan"),
    pytest.param(["sample", "-c"], nested(200_000), "not a readable JSON config", id="sample-nested"),
    pytest.param(["predict", "the", "-c"], in_model({"hidden": 8000}), "has shape", id="predict-hidden"),
    pytest.param(["info"], replaced("model.safetensors", link_to("/dev/zero")), "not a regular file", id="info-dev-zero"),
    pytest.param(["info"], chars(lambda c: c[:3] + ["\ud800"] + c[4:]), "not one Unicode character", id="info-surrogate"),
]


@pytest.mark.parametrize("args, damage, message", CLI_CASES)
def test_the_command_line_reports_a_damaged_checkpoint_in_one_line(tmp_path, trained, args, damage, message):
    folder = damaged_copy(trained, tmp_path, damage)
    result = run(*args, folder)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_a_tokenizer_with_a_runaway_regex_is_refused_before_any_prompt(tmp_path, token_models):
    folder = damaged_copy(token_models["word"], tmp_path, pre_tokenizer_regex("(a+)+b"))
    result = run("sample", "-c", folder, "--prompt", "a" * 5000, "-n", "5")
    assert result.exit_code == 1 and "tokenizer.json is not a readable tokenizer" in result.stderr, result.output


# item 20: `chargen list` marks a damaged row and lists the rest


class PanicException(BaseException):
    """What tokenizers' Rust code raises on a panic: no Exception."""


LIST_CASES = [
    pytest.param(nested(200_000), "not a readable JSON config", id="nested"),
    pytest.param(replaced("model.safetensors", link_to("/dev/zero")), "not a regular file", id="dev-zero"),
    pytest.param(in_weights(set_item("head.bias", 0, float("nan"))), "NaN or infinite", id="nan"),
    pytest.param(in_config(lambda c: c.__setitem__("progress", [1])), "progress must be a table", id="progress-list"),
    pytest.param(in_config(lambda c: c.__setitem__("recipe", ["why"])), "recipe must be a table", id="recipe-list"),
    pytest.param(in_config(lambda c: c.pop("corpus")), "lacks its 'corpus' entry", id="no-corpus"),
    pytest.param(lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing", id="no-weights"),
]


@pytest.mark.parametrize("damage, message", LIST_CASES)
def test_list_marks_a_damaged_folder_and_lists_the_rest(tmp_path, trained, monkeypatch, damage, message):
    monkeypatch.chdir(tmp_path)
    for name in ("good", "other"):
        shutil.copytree(trained, tmp_path / "checkpoints" / name)
    shutil.copytree(trained, tmp_path / "checkpoints" / "bad")
    damage(tmp_path / "checkpoints" / "bad")
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = {Path(r["folder"]).name: r for r in json.loads(result.stdout)}
    assert rows["good"]["steps"] == rows["other"]["steps"] == 60
    assert message in rows["bad"]["error"] and "\n" not in rows["bad"]["error"]
    assert run("list").exit_code == 0


@pytest.mark.parametrize("error", [PanicException("tokenizers panicked"), MemoryError(), RecursionError("too deep"), OSError(5, "I/O error")])
def test_list_survives_whatever_a_folder_raises(tmp_path, trained, monkeypatch, error):
    monkeypatch.chdir(tmp_path)
    for name in ("good", "bad"):
        shutil.copytree(trained, tmp_path / "checkpoints" / name)
    read = checkpoint.read

    def failing(folder):
        if Path(folder).name == "bad":
            raise error
        return read(folder)

    monkeypatch.setattr(checkpoint, "read", failing)
    rows = {Path(r["folder"]).name: r for r in json.loads(run("list", "--json").stdout)}
    assert rows["good"]["steps"] == 60
    assert rows["bad"]["error"].startswith(f"unreadable ({type(error).__name__}")


# item 1, the read side: commands that pick the newest checkpoint skip incomplete folders and name them


def newest_last(*folders: Path) -> None:
    for age, folder in enumerate(reversed(folders)):
        os.utime(folder / "config.json", (1_000_000_000 - age * 1000,) * 2)


INCOMPLETE_CASES = [
    pytest.param(lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing", id="no-weights"),
    pytest.param(lambda f: (f / "config.json").write_text("{"), "not a readable JSON config", id="config-cut"),
    pytest.param(replaced("model.safetensors", fifo), "not a regular file", id="weights-fifo"),
]


@pytest.mark.parametrize("damage, message", INCOMPLETE_CASES)
def test_the_newest_complete_checkpoint_is_used_and_skipped_ones_named(tmp_path, trained, monkeypatch, damage, message):
    monkeypatch.chdir(tmp_path)
    old, new = tmp_path / "checkpoints" / "old", tmp_path / "checkpoints" / "new"
    shutil.copytree(trained, old)
    shutil.copytree(trained, new)
    damage(new)
    newest_last(old, new) if (new / "config.json").exists() else None
    result = run("sample", "--prompt", "the ", "-n", "5", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("the ")
    skipped, using = result.stderr.splitlines()[:2]
    assert skipped.startswith("chargen: warning: skipping checkpoints/new, not a complete checkpoint") and message in skipped
    assert using == "using checkpoints/old"
    assert run("info", "--json").exit_code == 0
    assert checkpoint.latest() == Path("checkpoints/old")


def test_no_complete_checkpoint_is_one_line(tmp_path, trained, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained, tmp_path / "checkpoints" / "new")
    (tmp_path / "checkpoints" / "new" / "model.safetensors").unlink()
    result = run("sample")
    assert result.exit_code == 1
    assert "skipping checkpoints/new" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: no complete checkpoint under checkpoints/: train one with `chargen train FILE`, or pass --checkpoint DIR"
    ), result.stderr


def test_an_older_incomplete_folder_is_not_named(tmp_path, trained, monkeypatch):
    """Only folders skipped in favour of an older one are worth a warning."""
    monkeypatch.chdir(tmp_path)
    old, new = tmp_path / "checkpoints" / "old", tmp_path / "checkpoints" / "new"
    shutil.copytree(trained, old)
    shutil.copytree(trained, new)
    (old / "model.safetensors").unlink()
    newest_last(old, new)
    result = run("sample", "--prompt", "the ", "-n", "5")
    assert result.exit_code == 0 and "skipping" not in result.stderr, result.output
