"""Export a checkpoint for other runtimes: two ONNX graphs with the recurrent state as explicit inputs and outputs,
the vocabulary and a config.json that names them; `web` adds one page that writes text in the browser.

    prefill.onnx   tokens (batch, time) int64, state (optional)  ->  logits (batch, vocab) of the last position, state
    step.onnx      ids (batch,) int64, state                      ->  logits (batch, vocab), state

The step graph is LanguageModel.forward on one position, traced by torch.onnx.export, so every cell chargen
trains goes the same way; the prefill graph is an ONNX Loop whose body is the step graph, so it takes prompts of
any length whatever Python loops a cell's forward runs (minGRU's chunks would fix a traced forward to the traced
length). The state's parts are those forward returns (h and c for an LSTM, h alone otherwise), each
(layers, batch, hidden) float32. docs/export.md gives config.json's schema and the figures measured.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn

from . import checkpoint
from .errors import ChargenError, OptionError, first_line
from .model import LanguageModel
from .sample import Sampler
from .version import __version__

FORMATS = ("onnx", "web")
PREFILL, STEP, CONFIG, VOCABULARY, PAGE = "prefill.onnx", "step.onnx", "config.json", "vocabulary.json", "index.html"
RUNTIME_FOLDER = "ort"  # where a web export keeps onnxruntime-web's files
# What the page loads from onnxruntime-web's dist folder: the WebAssembly-only bundle and the module and binary it fetches.
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
OPSET = 18
NEEDS_EXTRA = "chargen export needs the export extra: pip install 'chargen[export]'"
NEEDS_RUNTIME = "--int8 quantises with onnxruntime: pip install onnxruntime"
STATE_NAMES = ("h", "c")


class Step(nn.Module):
    """The model on one token per stream: what generation calls once per new token."""

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, state = self.model(ids[:, None], state)
        return (logits[:, 0], *state)


def state_names(model: LanguageModel) -> list[str]:
    """One name per part of the state forward returns: h (and c for an LSTM)."""
    with torch.no_grad():
        _, state = model(torch.zeros(1, 1, dtype=torch.long))
    return [STATE_NAMES[i] if i < len(STATE_NAMES) else f"state{i}" for i in range(len(state))]


def tensor_spec(name: str, dtype: str, shape: list) -> dict:
    return {"name": name, "dtype": dtype, "shape": shape}


def graph_specs(model: LanguageModel, names: list[str]) -> dict:
    """config.json's description of both graphs: each input and output with its dtype and shape (a string is a free axis)."""
    config = model.config
    state = [tensor_spec(n, "float32", [config.layers, "batch", config.hidden]) for n in names]
    state_out = [tensor_spec(f"{n}_out", "float32", [config.layers, "batch", config.hidden]) for n in names]
    logits = tensor_spec("logits", "float32", ["batch", config.vocab_size])
    return {
        "prefill": {
            "file": PREFILL,
            "inputs": [tensor_spec("tokens", "int64", ["batch", "time"]), *[dict(s, optional=True) for s in state]],
            "outputs": [logits, *state_out],
        },
        "step": {"file": STEP, "inputs": [tensor_spec("ids", "int64", ["batch"]), *state], "outputs": [logits, *state_out]},
    }


def graph_bytes(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str], axes: dict) -> bytes:
    """One graph, traced by PyTorch's exporter at opset OPSET, as the bytes of an ONNX file."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's notes on tracing speak to PyTorch's developers, not chargen's users
        torch.onnx.export(
            module, example, buffer, input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False
        )
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(graph, full_check=True)
    return graph.SerializeToString()


def step_graph(model: LanguageModel, names: list[str]) -> bytes:
    """The step graph: forward on one position per stream, traced by PyTorch's exporter with a free batch axis."""
    state = tuple(torch.zeros(model.config.layers, 2, model.config.hidden) for _ in names)
    free = {n: {1: "batch"} for n in names} | {f"{n}_out": {1: "batch"} for n in names} | {"logits": {0: "batch"}, "ids": {0: "batch"}}
    return graph_bytes(Step(model).eval(), (torch.zeros(2, dtype=torch.long), *state), ["ids", *names], ["logits", *[f"{n}_out" for n in names]], free)


def prefill_of(step: bytes, names: list[str], model: LanguageModel) -> bytes:
    """The prefill graph: an ONNX Loop over the tokens' time axis whose body is the step graph, so any cell's prefill
    takes any length, whatever Python loops its forward has (a traced forward would keep the traced length's).

    Its state inputs default to zeros of one stream, spread over the batch: a caller may leave the state out.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    body = onnx.load_from_string(step)
    inner = prefixed(body.graph, "step/")
    iteration, condition = "step/iteration", "step/condition"
    inner.node.insert(0, helper.make_node("Gather", ["tokens", iteration], ["step/ids"], axis=1))  # (batch,): the tokens at this position
    inner.node.append(helper.make_node("Identity", [condition], ["step/condition_out"]))
    del inner.input[:]
    inner.input.extend([
        helper.make_tensor_value_info(iteration, TensorProto.INT64, []),
        helper.make_tensor_value_info(condition, TensorProto.BOOL, []),
        *[helper.make_tensor_value_info(f"step/{n}", TensorProto.FLOAT, None) for n in names],
        helper.make_tensor_value_info("step/previous", TensorProto.FLOAT, None),
    ])
    outputs = [f"step/{n}_out" for n in names]
    order = {o.name: o for o in inner.output}
    del inner.output[:]
    inner.output.extend([helper.make_tensor_value_info("step/condition_out", TensorProto.BOOL, []), *[order[o] for o in outputs], order["step/logits"]])

    config = model.config
    constant = lambda name, values: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(torch.tensor(values).numpy(), name))  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["tokens"], ["batch"], start=0, end=1),
        helper.make_node("Shape", ["tokens"], ["time_1d"], start=1, end=2),
        constant("axis0", [0]),
        helper.make_node("Squeeze", ["time_1d", "axis0"], ["time"]),
        constant("one", [1]),
        helper.make_node("Concat", ["one", "batch", "one"], ["spread"], axis=0),  # (1, batch, 1): a state of one stream broadcast to all
        *[helper.make_node("Expand", [n, "spread"], [f"{n}_batch"]) for n in names],
        constant("vocab", [config.vocab_size]),
        helper.make_node("Concat", ["batch", "vocab"], ["logits_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["logits_shape"], ["no_logits"], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("Constant", [], ["true"], value=helper.make_tensor("true", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["time", "true", *[f"{n}_batch" for n in names], "no_logits"], [*[f"{n}_out" for n in names], "logits"], body=inner),
    ]
    zeros = torch.zeros(config.layers, 1, config.hidden).numpy()
    state = lambda suffix: [helper.make_tensor_value_info(f"{n}{suffix}", TensorProto.FLOAT, [config.layers, "batch", config.hidden]) for n in names]  # noqa: E731
    graph = helper.make_graph(
        nodes, "prefill",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "time"]), *state("")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", config.vocab_size]), *state("_out")],
        initializer=[numpy_helper.from_array(zeros, n) for n in names],
    )
    prefill = helper.make_model(graph, opset_imports=body.opset_import, ir_version=body.ir_version, producer_name="chargen")
    onnx.checker.check_model(prefill, full_check=True)
    return prefill.SerializeToString()


def prefixed(graph, prefix: str):
    """A copy of graph with every value, initializer and node name prefixed: a Loop body may not reuse its outer graph's names."""
    graph = type(graph).FromString(graph.SerializeToString())
    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [prefix + n if n else n for n in node.input]
        node.output[:] = [prefix + n for n in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        value.name = prefix + value.name
    return graph


def quantised(graph: bytes) -> bytes:
    """The graph with the weights of its matrix products in int8 (onnxruntime's dynamic quantisation)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ChargenError(NEEDS_RUNTIME) from None
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(graph)
        logging.disable(logging.WARNING)  # its advice to pre-process first is for image models, to the root logger
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()


def vocabulary_files(ckpt: checkpoint.Checkpoint) -> tuple[dict[str, bytes], dict]:
    """The vocabulary as every runtime can read it (each token's text, by id), the tokenizer.json of a word or BPE
    vocabulary, and config.json's entry for them."""
    entry, files = ckpt.vocab.to_record()
    written = {VOCABULARY: checkpoint.json_bytes({"type": ckpt.vocab.kind, "tokens": ckpt.vocab.token_texts}), **files}
    return written, {"type": ckpt.vocab.kind, "file": VOCABULARY, **({"tokenizer": entry["file"]} if "file" in entry else {})}


def runtime_files(runtime: Path | None) -> dict[str, bytes]:
    """onnxruntime-web's files the page loads, from its dist folder (npm install onnxruntime-web)."""
    if runtime is None:
        raise OptionError("--format web needs --runtime PATH: onnxruntime-web's dist folder (npm install onnxruntime-web; see docs/export.md)")
    missing = [name for name in RUNTIME_FILES if not (runtime / name).is_file()]
    if missing:
        raise ChargenError(f"{runtime} lacks onnxruntime-web's {', '.join(missing)}: give the dist folder of the npm package onnxruntime-web")
    return {f"{RUNTIME_FOLDER}/{name}": (runtime / name).read_bytes() for name in RUNTIME_FILES}


def page_bytes() -> bytes:
    return (Path(__file__).parent / "export_page.html").read_bytes()


def check_out(out: Path, overwrite: bool) -> None:
    """An out folder that holds anything is refused unless overwrite: an export replaces only the files it writes."""
    if out.exists() and not out.is_dir():
        raise ChargenError(f"{out} is a file: give a folder to export into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ChargenError(f"{out} is not empty: give an empty or new folder, or --overwrite to replace the files an export writes there")


def write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Every file written in a temporary folder beside out, then moved in: a failure leaves out as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        if not out.exists():
            os.replace(staging, out)
            return
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def exporting(cell: str) -> Iterator[None]:
    """A model the exporter cannot trace is a one-line error naming its cell."""
    try:
        yield
    except ChargenError:
        raise
    except Exception as e:
        raise ChargenError(f"cannot export a {cell} model to ONNX: {first_line(e)}") from None


def export(checkpoint_path: str | Path, out: str | Path, format: str = "onnx", int8: bool = False, runtime: str | Path | None = None, overwrite: bool = False) -> dict:
    """Write the checkpoint's graphs, vocabulary and config.json into out (and the page and runtime for web); its config."""
    if format not in FORMATS:
        raise OptionError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    if runtime is not None and format != "web":
        raise OptionError("--runtime gives onnxruntime-web's files to a web export: add --format web, or leave it out")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ChargenError(NEEDS_EXTRA) from None
    out, runtime = Path(out), None if runtime is None else Path(runtime)
    check_out(out, overwrite)
    files = runtime_files(runtime) if format == "web" else {}
    ckpt = checkpoint.read(checkpoint_path)
    if format == "web" and ckpt.vocab.kind != "char":
        raise ChargenError(f"the web page writes with character models only, and this is a {ckpt.vocab.kind} model: export it with --format onnx")
    model = ckpt.model.float().eval()
    names = state_names(model)
    with exporting(model.config.cell):
        step = step_graph(model, names)
        if int8:
            step = quantised(step)
        graph_files = {STEP: step, PREFILL: prefill_of(step, names, model)}
    specs = graph_specs(model, names)
    vocabulary, vocabulary_entry = vocabulary_files(ckpt)
    config = {
        "format": "chargen-onnx",
        "version": 1,
        "chargen": __version__,
        "opset": OPSET,
        "int8": int8,
        "model": ckpt.model.config.to_dict(),
        "vocabulary": vocabulary_entry,
        "start_ids": Sampler(ckpt.model, ckpt.vocab, precision="fp32").start_ids.tolist(),
        "state": [spec["name"] for spec in specs["step"]["inputs"][1:]],
        "graphs": specs,
    }
    files |= graph_files | vocabulary | {CONFIG: checkpoint.json_bytes(config)}
    if format == "web":
        files[PAGE] = page_bytes()
    write_folder(out, files)
    return config
