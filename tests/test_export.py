"""chargen export: ONNX graphs of every cell and tokenizer, checked by onnx.checker and run by onnxruntime against
chargen's own figures (forward and Stepper in float32), greedy text against Sampler's, and every refusal in one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import chargen
from chargen import checkpoint, model as models
from chargen.corpus import read_text
from chargen.sample import Sampler
from chargen.step import Stepper

from .conftest import TINY_OPTIONS, TINY_TEXT, shared_corpus
from .test_cli import run

onnx = pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'chargen[export]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
from chargen import export as exports  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only wait for each other
TOLERANCE = 1e-4
# Each cell as trained by default (two layers with skip connections), and the model options that change the graph.
VARIANTS = [*({"cell": cell} for cell in sorted(models.CELLS)),
            {"cell": "lstm", "layers": 1}, {"cell": "gru", "skip_connections": False},
            {"cell": "rnn", "input": "onehot", "nonlinearity": "relu"}, {"cell": "lstm", "tie_weights": True, "embedding_dim": 24}]


def train_tiny(folder: Path, corpus: Path, **options) -> Path:
    chargen.train(corpus, folder, max_steps=6, eval_every=6, quiet=True, **(TINY_OPTIONS | {"layers": 2, "hidden": 24} | options))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, corpus):
    """Per variant: the checkpoint and its ONNX export, made once for the module."""
    made = {}

    def make(name: str, **options) -> tuple[Path, Path]:
        if name not in made:
            folder = tmp_path_factory.mktemp(name)
            ckpt = train_tiny(folder / "model", corpus, **options)
            exports.export(ckpt, folder / "onnx")
            made[name] = ckpt, folder / "onnx"
        return made[name]

    return make


@pytest.fixture
def tiny(exported) -> Path:
    """A tiny LSTM checkpoint, for the refusals."""
    return exported("lstm", cell="lstm")[0]


def variant_name(options: dict) -> str:
    return "-".join(f"{k}={v}" if k != "cell" else v for k, v in options.items())


def sessions(folder: Path) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # not the warning that prefill's state inputs have defaults (zeros): that is their point
    return tuple(ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"]) for name in (exports.PREFILL, exports.STEP))


def feed(config: dict, graph: str, first: np.ndarray, state: list[np.ndarray]) -> dict:
    names = [spec["name"] for spec in config["graphs"][graph]["inputs"]]
    return dict(zip(names, [first, *state]))


def onnx_greedy(folder: Path, prompt_ids: list[int], length: int) -> list[int]:
    """Greedy ids from onnxruntime: the prompt through prefill in one call, then one step per id."""
    config = json.loads((folder / exports.CONFIG).read_text())
    prefill, step = sessions(folder)
    logits, *state = prefill.run(None, {"tokens": np.array([prompt_ids], dtype=np.int64)})
    ids = []
    for _ in range(length):
        ids.append(int(logits[0].argmax()))
        logits, *state = step.run(None, feed(config, "step", np.array(ids[-1:], dtype=np.int64), state))
    return ids


def check_parity(ckpt_folder: Path, onnx_folder: Path, ids: torch.Tensor) -> None:
    """ids (streams, time) through prefill at once and through step one at a time agree with forward and Stepper."""
    ckpt = checkpoint.read(ckpt_folder)
    config = json.loads((onnx_folder / exports.CONFIG).read_text())
    prefill, step = sessions(onnx_folder)
    with torch.no_grad():
        want, want_state = ckpt.model(ids)
    got, *got_state = prefill.run(None, {"tokens": ids.numpy()})
    np.testing.assert_allclose(got, want[:, -1].numpy(), atol=TOLERANCE, rtol=0)
    for g, w in zip(got_state, want_state, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=TOLERANCE, rtol=0)

    stepper, torch_state = Stepper(ckpt.model, "fp32"), None
    state = [np.zeros(spec["shape"][:1] + [len(ids)] + spec["shape"][2:], dtype=np.float32) for spec in config["graphs"]["step"]["inputs"][1:]]
    for t in range(ids.size(1)):
        logits, *state = step.run(None, feed(config, "step", ids[:, t].numpy(), state))
        stepped, torch_state = stepper.step(ids[:, t], torch_state)
        np.testing.assert_allclose(logits, want[:, t].numpy(), atol=TOLERANCE, rtol=0, err_msg=f"step {t} against forward")
        np.testing.assert_allclose(logits, stepped.numpy(), atol=TOLERANCE, rtol=0, err_msg=f"step {t} against Stepper")


@pytest.mark.parametrize("options", VARIANTS, ids=variant_name)
def test_each_cell_exports_two_checked_graphs_that_agree_with_chargen(exported, options):
    ckpt_folder, folder = exported(variant_name(options), **options)
    config = json.loads((folder / exports.CONFIG).read_text())
    for name in (exports.PREFILL, exports.STEP):
        onnx.checker.check_model(onnx.load(folder / name), full_check=True)
    ckpt = checkpoint.read(ckpt_folder)
    parts = chargen.state.parts(options["cell"])
    assert config["state"] == ["h", "c"][:parts]
    assert config["model"] == ckpt.model.config.to_dict()
    assert [s["name"] for s in config["graphs"]["step"]["inputs"]] == ["ids", *config["state"]]
    assert [s["name"] for s in config["graphs"]["prefill"]["outputs"]] == ["logits", *[f"{n}_out" for n in config["state"]]]
    assert [i.name for i in onnx.load(folder / exports.PREFILL).graph.input] == ["tokens", *config["state"]]  # as config.json names them
    assert json.loads((folder / exports.VOCABULARY).read_text())["tokens"] == ckpt.vocab.token_texts
    ids = torch.from_numpy(ckpt.vocab.encode(TINY_TEXT[:40]).astype(np.int64)).reshape(2, 20)  # two streams: the batch axis is free
    check_parity(ckpt_folder, folder, ids)
    check_parity(ckpt_folder, folder, ids[:1, :7])  # another batch and length through the same graphs


def test_the_prefill_state_is_optional_and_carries_on(exported):
    ckpt_folder, folder = exported("lstm", cell="lstm")
    ckpt = checkpoint.read(ckpt_folder)
    prefill, _ = sessions(folder)
    ids = torch.from_numpy(ckpt.vocab.encode(TINY_TEXT[:24]).astype(np.int64))[None].repeat(3, 1)
    whole, *_ = prefill.run(None, {"tokens": ids.numpy()})  # no state: zeros, for a batch of three
    _, h, c = prefill.run(None, {"tokens": ids[:, :10].numpy()})
    rest, *_ = prefill.run(None, {"tokens": ids[:, 10:].numpy(), "h": h, "c": c})
    np.testing.assert_allclose(rest, whole, atol=TOLERANCE, rtol=0)
    with torch.no_grad():
        np.testing.assert_allclose(whole, ckpt.model(ids)[0][:, -1].numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("cell", sorted(models.CELLS))
def test_greedy_text_from_onnxruntime_is_samplers(exported, cell):
    ckpt_folder, folder = exported(cell, cell=cell)
    sampler = chargen.load(ckpt_folder, precision="fp32")
    prompt = "the quick "
    ids = onnx_greedy(folder, sampler.prompt_ids(prompt).tolist(), 80)
    assert prompt + sampler.vocab.decode(ids) == sampler.generate(prompt, length=80, temperature=0)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_word_and_bpe_models_export_with_their_tokenizer(tmp_path, corpus, kind):
    ckpt_folder = train_tiny(tmp_path / "model", corpus, tokenizer=kind, **({"vocab_size": 300} if kind == "bpe" else {}))
    config = exports.export(ckpt_folder, tmp_path / "onnx")
    ckpt = checkpoint.read(ckpt_folder)
    assert config["vocabulary"] == {"type": kind, "file": exports.VOCABULARY, "tokenizer": "tokenizer.json"}
    assert (tmp_path / "onnx" / "tokenizer.json").read_text() == (ckpt_folder / "tokenizer.json").read_text()
    ids = torch.from_numpy(ckpt.vocab.encode(TINY_TEXT[:200]).astype(np.int64))[None, :12]
    check_parity(ckpt_folder, tmp_path / "onnx", ids)
    sampler = Sampler(ckpt.model, ckpt.vocab, precision="fp32")
    greedy = onnx_greedy(tmp_path / "onnx", sampler.prompt_ids("the ").tolist(), 10)
    assert sampler.generate("the ", length=len(ckpt.vocab.decode(greedy)), temperature=0) == "the " + ckpt.vocab.decode(greedy)


def test_int8_graphs_are_smaller_and_close(exported, tmp_path):
    ckpt_folder, folder = exported("lstm", cell="lstm")
    config = exports.export(ckpt_folder, tmp_path / "int8", int8=True)
    assert config["int8"] is True
    ops = {node.op_type for node in onnx.load(tmp_path / "int8" / exports.STEP).graph.node}
    assert ops & {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul"}, ops
    assert (tmp_path / "int8" / exports.STEP).stat().st_size < (folder / exports.STEP).stat().st_size
    ckpt = checkpoint.read(ckpt_folder)
    ids = torch.from_numpy(ckpt.vocab.encode(TINY_TEXT[:30]).astype(np.int64))[None]
    prefill, _ = sessions(tmp_path / "int8")
    with torch.no_grad():
        want = ckpt.model(ids)[0][:, -1].log_softmax(-1).numpy()
    got = torch.from_numpy(prefill.run(None, {"tokens": ids.numpy()})[0]).log_softmax(-1).numpy()
    assert np.abs(got - want).max() < 0.5  # int8 weights: close, not equal


# --- refusals: one line each, no traceback


def refused(*args) -> str:
    """The one error line of a refused export (a bad option value also shows click's usage lines above it)."""
    result = run("export", *args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    return errors[0]


def test_a_missing_checkpoint_is_one_line(tmp_path):
    assert "no such checkpoint folder" in refused("-c", tmp_path / "nothing", "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unknown_format_is_one_line(tiny, tmp_path):
    assert "'tflite' is not one of 'onnx', 'web'" in refused("-c", tiny, "--format", "tflite", "--out", tmp_path / "out")
    with pytest.raises(chargen.errors.OptionError, match="format must be one of onnx, web"):
        exports.export(tiny, tmp_path / "out", format="tflite")


def test_runtime_files_without_a_web_export_are_one_line(tiny, tmp_path):
    assert "--runtime gives onnxruntime-web's files to a web export" in refused("-c", tiny, "--runtime", tmp_path, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_folder_that_holds_files_is_refused_and_kept(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "is not empty" in refused("-c", tiny, "--out", out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    result = run("export", "-c", tiny, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine" and (out / exports.STEP).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    (tmp_path / "file").write_text("")
    assert "is a file" in refused("-c", tiny, "--out", tmp_path / "file")


def test_a_missing_extra_is_one_line(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    assert refused("-c", tiny, "--out", tmp_path / "out") == f"Error: {exports.NEEDS_EXTRA}"


def test_int8_without_onnxruntime_is_one_line(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    assert refused("-c", tiny, "--out", tmp_path / "out", "--int8") == f"Error: {exports.NEEDS_RUNTIME}"
    assert not (tmp_path / "out").exists()


def test_web_needs_the_runtime_files_and_a_character_model(tiny, tmp_path, corpus):
    assert "--runtime PATH" in refused("-c", tiny, "--format", "web", "--out", tmp_path / "out")
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "ort.wasm.min.js").write_text("")
    assert "lacks onnxruntime-web's ort-wasm-simd-threaded.mjs" in refused("-c", tiny, "--format", "web", "--out", tmp_path / "out", "--runtime", tmp_path / "dist")
    words = train_tiny(tmp_path / "words", corpus, tokenizer="word")
    for name in exports.RUNTIME_FILES:
        (tmp_path / "dist" / name).write_text("")
    assert "character models only" in refused("-c", words, "--format", "web", "--out", tmp_path / "out", "--runtime", tmp_path / "dist")
    assert not (tmp_path / "out").exists()


def test_a_model_the_exporter_cannot_trace_is_one_line(tiny, tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::scan' to ONNX opset version 18 is not supported.\nmore")

    monkeypatch.setattr(torch.onnx, "export", fails)
    message = refused("-c", tiny, "--out", tmp_path / "out")
    assert message == "Error: cannot export a lstm model to ONNX: Exporting the operator 'aten::scan' to ONNX opset version 18 is not supported."


# --- slow: War and Peace, and the command line as a user runs it


@pytest.fixture(scope="module")
def war_and_peace(tmp_path_factory) -> tuple[Path, Path, str]:
    """A small model trained briefly on War and Peace, its export, and the text as chargen reads it (BOM, lone carriage returns)."""
    corpus = shared_corpus("war_and_peace.txt")
    folder = tmp_path_factory.mktemp("wp")
    chargen.train(corpus, folder / "model", max_steps=40, eval_every=40, quiet=True, **(TINY_OPTIONS | {"layers": 2, "hidden": 64, "seq_len": 64}))
    exports.export(folder / "model", folder / "onnx")
    return folder / "model", folder / "onnx", read_text(corpus)


@pytest.mark.slow
def test_a_thousand_characters_of_war_and_peace_agree(war_and_peace):
    ckpt_folder, folder, text = war_and_peace
    ckpt = checkpoint.read(ckpt_folder)
    start = len(text) // 2
    ids = torch.from_numpy(ckpt.vocab.encode(text[start : start + 1000]).astype(np.int64))[None]
    assert ids.size(1) == 1000
    check_parity(ckpt_folder, folder, ids)


@pytest.mark.slow
def test_greedy_text_equals_chargen_sample_on_the_command_line(war_and_peace):
    ckpt_folder, folder, _ = war_and_peace
    prompt, length = "Prince Andrew", 300
    sample = subprocess.run(
        [sys.executable, "-m", "chargen", "sample", "-c", str(ckpt_folder), "--prompt", prompt, "--length", str(length), "--temperature", "0", "--precision", "fp32"],
        capture_output=True, text=True, check=True,
    ).stdout
    sampler = chargen.load(ckpt_folder, precision="fp32")
    ids = onnx_greedy(folder, sampler.prompt_ids(prompt).tolist(), length)
    assert sample == prompt + sampler.vocab.decode(ids) + "\n"
