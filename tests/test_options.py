"""Every option out of range or of the wrong type, refused: one table for the library, one for the command line.

The library raises OptionError, one line saying which option and why, before it loads, reads or creates anything
(ChargenError, not OptionError, for a text that is not valid text); the command line turns an OptionError into a
usage error (exit 2) and any other ChargenError into exit 1, with the same message and no traceback. Each case is
written here once (issue 20, item 8); a value that is accepted at the edge of its range is tested beside the code
that uses it.
"""
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import chargen
from chargen import ChargenError, Corpus, CorpusOptions, LanguageModel, ModelConfig, OptionError, Sampler, TrainConfig
from chargen import folder as store
from chargen.cli import cli
from chargen.evaluation import evaluate_text
from chargen.sample import MAX_HELD, SamplingOptions, check_options
from chargen.vocabulary import build_vocabulary

from .conftest import TINY_OPTIONS, TINY_TEXT

NAN = float("nan")
SEED_MESSAGE = "seed must be a whole number from 0 to 18446744073709551615, not "
SAMPLING_DEFAULTS = {"length": 10, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_samples": 1, "seed": None}


@pytest.fixture(scope="module")
def samplers(trained) -> dict[str, Sampler]:
    """The session's character model, and an untrained word model: options are checked before either computes anything."""
    vocab = build_vocabulary(TINY_TEXT, "word")
    torch.manual_seed(0)
    word = Sampler(LanguageModel(ModelConfig(vocab_size=len(vocab), hidden=8, layers=1, embedding_dim=8)), vocab, precision="fp32")
    return {"char": chargen.load(trained), "word": word}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a checkpoint folder but its lock (each run that holds the folder writes its process id there)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != store.LOCK}


def sampling(samplers, **bad):
    """Every entry that takes the sampling options: the command line's check, and generate and stream on each tokenizer."""
    given = {**SAMPLING_DEFAULTS, **bad}
    yield lambda: check_options(**given)
    yield lambda: SamplingOptions(**given)
    for lm in samplers.values():
        yield lambda lm=lm: lm.generate("the", **bad)
        if bad.get("num_samples", 1) == 1:  # stream draws one sample
            yield lambda lm=lm: lm.stream("the", **bad)


def on_each_sampler(method):
    """A Sampler method (or evaluate_text), called on the character and on the word model."""

    def calls(samplers, *args, **kwargs):
        for lm in samplers.values():
            if method == "evaluate_text":
                yield lambda lm=lm: evaluate_text(lm, *args, **kwargs)
            else:
                yield lambda lm=lm: getattr(lm, method)(*args, **kwargs)

    return calls


def once(call):
    def calls(context, *args, **kwargs):
        yield lambda: call(context, *args, **kwargs)

    return calls


# Each call gets the test's context: the samplers, the session's checkpoint, a corpus and an --out that must stay absent.
CALLS = {
    "ModelConfig": once(lambda c, **bad: ModelConfig(**{"vocab_size": 5, **bad})),
    "TrainConfig": once(lambda c, **bad: TrainConfig(**bad)),
    "CorpusOptions": once(lambda c, **bad: CorpusOptions(**bad)),
    "Corpus.from_text": once(lambda c, **bad: Corpus.from_text("abcdefghij" * 10, **bad)),
    "build_vocabulary": once(lambda c, **bad: build_vocabulary(TINY_TEXT, **bad)),
    "sampling": lambda c, **bad: sampling(c["samplers"], **bad),
    "generate": lambda c, *a, **k: on_each_sampler("generate")(c["samplers"], *a, **k),
    "stream": lambda c, *a, **k: on_each_sampler("stream")(c["samplers"], *a, **k),
    "predict_next_word": lambda c, *a, **k: on_each_sampler("predict_next_word")(c["samplers"], *a, **k),
    "next_token_probs": lambda c, *a, **k: on_each_sampler("next_token_probs")(c["samplers"], *a, **k),
    "evaluate_text": lambda c, *a, **k: on_each_sampler("evaluate_text")(c["samplers"], *a, **k),
    "load": once(lambda c, **bad: chargen.load(c["trained"], **bad)),
    "evaluate": once(lambda c, **bad: chargen.evaluate(c["trained"], **bad)),
    "train": once(lambda c, **bad: chargen.train(**{"corpus": c["corpus"], "out": c["out"], "max_steps": 2, "quiet": True, **TINY_OPTIONS, **bad})),
    "resume": once(lambda c, **bad: chargen.resume(c["trained"], **{"quiet": True, **bad})),
}


def case(call, bad, message, error=OptionError, **param):
    """bad is the keyword arguments of the call, or (args, kwargs)."""
    args, kwargs = bad if isinstance(bad, tuple) else ((), bad)
    shown = [f"{a!r:.16}" for a in args] + [f"{k}={v!r:.24}" for k, v in kwargs.items()]
    return pytest.param(call, args, kwargs, message, error, id=f"{call}:{','.join(shown)}", **param)


LIBRARY = [
    # the model's options
    case("ModelConfig", dict(cell="transformer"), r"^cell must be one of lstm, gru, rnn, mingru, not 'transformer'$"),
    case("ModelConfig", dict(layers=0), r"^layers must be between 1 and 64, not 0$"),
    case("ModelConfig", dict(hidden=-1), r"^hidden must be between 1 and 65,536, not -1$"),
    case("ModelConfig", dict(dropout=1.0), r"^dropout must be in \[0, 1\), not 1.0$"),
    case("ModelConfig", dict(nonlinearity="relu"), r"^nonlinearity applies only to --cell rnn$"),
    case("ModelConfig", dict(input="bytes"), r"^input must be one of embedding, onehot, not 'bytes'$"),
    # the training options
    case("TrainConfig", dict(seq_len=0), r"^seq-len must be at least 1, not 0$"),
    case("TrainConfig", dict(batch_size=-1), r"^batch-size must be at least 1, not -1$"),
    case("TrainConfig", dict(lr=0), r"^lr must be a positive number, not 0$"),
    case("TrainConfig", dict(lr=NAN), r"^lr must be a positive number, not nan$"),
    case("TrainConfig", dict(clip=-1), r"^clip must be zero or positive, not -1$"),
    case("TrainConfig", dict(max_time=0), r"^max-time must be a positive number, not 0$"),
    case("TrainConfig", dict(precision="fp8"), r"^precision must be one of auto, fp32, bf16, not 'fp8'$"),
    # how the text is read and encoded
    case("CorpusOptions", dict(val_fraction=1), r"^val-fraction must be between 0 and 1 \(exclusive\), not 1$"),
    case("CorpusOptions", dict(tokenizer="bytes"), r"^tokenizer must be char, word or bpe, not 'bytes'$"),
    case("CorpusOptions", dict(tokenizer="bpe", vocab_size=256), r"^vocab-size must be at least 257 for --tokenizer bpe, not 256$"),
    case("CorpusOptions", dict(min_frequency=0), r"^min-frequency must be at least 1, not 0$"),
    case("CorpusOptions", dict(keep_newlines="no"), r"^keep-newlines must be true or false, not 'no'$"),
    *(case("Corpus.from_text", dict(val_fraction=f), "val-fraction") for f in (0, 1, -0.1, 1.5, NAN)),
    case("build_vocabulary", dict(tokenizer="char", vocab_size=100), "vocab-size applies"),
    case("build_vocabulary", dict(tokenizer="bpe", vocab_size=100), "at least 257"),
    case("build_vocabulary", dict(tokenizer="word", vocab_size=None, min_frequency=0), "min-frequency"),
    # the sampling options: the command line checks them with check_options before it loads a checkpoint
    case("sampling", dict(length=2.5), "length must be a whole number, not 2.5"),
    case("sampling", dict(length=True), "length must be a whole number, not True"),
    case("sampling", dict(length="5"), "length must be a whole number, not '5'"),
    case("sampling", dict(length=-1), "length must be zero or positive, not -1"),
    case("sampling", dict(num_samples=2.0), "num-samples must be a whole number, not 2.0"),
    case("sampling", dict(num_samples=0), "num-samples must be between 1 and 1,024, not 0"),
    case("sampling", dict(num_samples=1025), "num-samples must be between 1 and 1,024, not 1,025"),
    case("sampling", dict(top_k=2.5), "top-k must be a whole number, not 2.5"),
    case("sampling", dict(top_k=-1), r"top-k must be zero \(off\) or positive, not -1"),
    case("sampling", dict(top_p="x"), "top-p must be a number, not 'x'"),
    case("sampling", dict(top_p=0), r"top-p must be in \(0, 1\], not 0"),
    case("sampling", dict(top_p=2), r"^top-p must be in \(0, 1\], not 2$"),
    case("sampling", dict(top_p=NAN), r"top-p must be in \(0, 1\], not nan"),
    case("sampling", dict(temperature="x"), "temperature must be a number, not 'x'"),
    case("sampling", dict(temperature=True), "temperature must be a number, not True"),
    case("sampling", dict(temperature=-0.1), r"^temperature must be zero \(greedy\) or positive, not -0.1$"),
    case("sampling", dict(temperature=-0.5), r"temperature must be zero \(greedy\) or positive, not -0.5"),
    case("sampling", dict(temperature=NAN), r"^temperature must be zero \(greedy\) or positive, not nan$"),
    case("sampling", dict(temperature=float("inf")), r"temperature must be zero \(greedy\) or positive, not inf"),
    case("sampling", dict(temperature=10**400), r"temperature must be zero \(greedy\) or positive, not 1000"),
    case("sampling", dict(seed=2**70), SEED_MESSAGE + str(2**70)),
    case("sampling", dict(seed=99999999999999999999), SEED_MESSAGE + "99999999999999999999"),
    case("sampling", dict(seed=2**64), SEED_MESSAGE + str(2**64)),
    case("sampling", dict(seed=-1), SEED_MESSAGE + "-1"),
    case("sampling", dict(seed=True), "seed must be a whole number, not True"),
    case("sampling", dict(seed=1.0), "seed must be a whole number, not 1.0"),
    case("sampling", dict(length=10**12, num_samples=2), "length times num-samples is 2,000,000,000,000 characters.*one sample at a time, which streams"),
    case("sampling", dict(length=MAX_HELD // 2 + 1, num_samples=2), f"more than the {MAX_HELD:,}"),
    # prompts and counts, on a character and a word model
    case("predict_next_word", ((None,), {}), "prompt must be a string, not None"),
    case("predict_next_word", (("the",), dict(k=2.5)), "k must be a whole number, not 2.5"),
    case("predict_next_word", (("the",), dict(k=True)), "k must be a whole number, not True"),
    case("predict_next_word", (("the",), dict(k=0)), "k must be at least 1, not 0"),
    case("next_token_probs", ((None,), {}), "prompt must be a string, not None"),
    case("next_token_probs", (("the",), dict(k=-5)), "k must be at least 1, not -5"),
    case("next_token_probs", (("the",), dict(k=0)), "k must be at least 1, not 0"),
    case("next_token_probs", (("the",), dict(k="3")), "k must be a whole number, not '3'"),
    case("generate", ((None,), {}), "prompt must be a string, not None"),
    case("generate", ((b"the",), {}), "prompt must be a string, not b'the'"),
    case("stream", ((5,), {}), "prompt must be a string, not 5"),
    # a byte \xff on the command line reaches Python as the lone surrogate \udcff: bad text, not a bad option
    case("generate", (("the\udcff",), {}), r"the prompt is not valid text: it holds bytes that are not UTF-8 \(at character 3\)", ChargenError),
    case("stream", (("\udcffthe",), {}), r"it holds bytes that are not UTF-8 \(at character 0\)", ChargenError),
    case("predict_next_word", (("the \udcff",), {}), r"the prompt is not valid text: .* \(at character 4\)", ChargenError),
    case("next_token_probs", (("th\ud800e",), {}), r"the prompt is not valid text: .* \(at character 2\)", ChargenError),
    case("evaluate_text", (("The\udcff cat sat on the mat",), dict(max_words=2)), r"the text to evaluate is not valid text: .* \(at character 3\)", ChargenError),
    # loading and evaluating a checkpoint
    case("load", dict(precision="fp8"), r"^precision must be one of auto, fp32, bf16, int8, not 'fp8'$"),
    case("evaluate", dict(max_words=2.5), "words must be a whole number, not 2.5"),
    case("evaluate", dict(max_words=2, baseline="yes"), "baseline must be true or false, not 'yes'"),
    # chargen.train: every option it passes on, its own, and the memory a model needs; nothing is created
    case("train", dict(val_fraction=NAN), r"^val-fraction must be between 0 and 1 \(exclusive\), not nan$"),
    case("train", dict(val_fraction=0), r"^val-fraction must be between 0 and 1 \(exclusive\), not 0$"),
    case("train", dict(dropout=NAN), r"^dropout must be in \[0, 1\), not nan$"),
    case("train", dict(hidden=0), r"^hidden must be between 1 and 65,536, not 0$"),
    case("train", dict(clip=NAN), r"^clip must be zero or positive, not nan$"),
    case("train", dict(max_time=NAN), r"^max-time must be a positive number, not nan$"),
    case("train", dict(hidden="abc"), "hidden must be a whole number, not 'abc'"),
    case("train", dict(dropout="x"), "dropout must be a number, not 'x'"),
    case("train", dict(max_steps="5"), "max-steps must be a whole number, not '5'"),
    case("train", dict(layers=[1]), r"layers must be a whole number, not \[1\]"),
    case("train", dict(tie_weights=1), "tie-weights must be true or false, not 1"),
    case("train", dict(encoding=5), "encoding must be a string, not 5"),
    case("train", dict(corpus=None), "corpus must be a path, not None"),
    case("train", dict(colour="red"), "unknown option colour"),
    case("train", dict(patience=-1), "patience must be zero"),
    case("train", dict(hidden=20_000), "GB free"),
    case("train", dict(hidden=10**7), "hidden must be between 1 and 65,536"),
    case("train", dict(embedding_dim=10**7), "embedding-dim must be between 1 and 65,536"),
    case("train", dict(layers=10**6), "layers must be between 1 and 64"),
    case("train", dict(tokenizer="word", freeze_embeddings=True), "freeze-embeddings needs"),
    # chargen.resume: a resumed run keeps its options; the checkpoint is left as it was
    case("resume", dict(colour="red"), "only device, max_epochs"),
    case("resume", dict(lr=0.1), "only device, max_epochs, max_steps, max_time, patience, sample_every, tensorboard, threads can change"),
    case("resume", dict(max_steps="5"), "max-steps must be a whole number"),
]


@pytest.mark.parametrize("call, args, kwargs, message, error", LIBRARY)
def test_the_library_refuses(samplers, trained, tiny_file, tmp_path, call, args, kwargs, message, error):
    before = snapshot(trained)
    context = {"samplers": samplers, "trained": trained, "corpus": tiny_file, "out": tmp_path / "never"}
    for attempt in CALLS[call](context, *args, **kwargs):
        with pytest.raises(ChargenError, match=message) as caught:
            attempt()
        assert type(caught.value) is error  # an OptionError is a usage error (exit 2) on the command line; any other, exit 1
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "never").exists()
    assert snapshot(trained) == before


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def command(argv, code, message, **param):
    return pytest.param(argv, code, message, id=" ".join(argv), **param)


# {corpus} is a tiny text, {ckpt} the session's checkpoint, {out} an --out that must stay absent, {missing} a file that is not there
COMMAND_LINE = [
    command(["train", "{corpus}", "--out", "{out}", "--seq-len", "0"], 2, "seq-len must be at least 1"),
    command(["train", "{corpus}", "--out", "{out}", "--batch-size", "-3"], 2, "batch-size must be at least 1"),
    command(["train", "{corpus}", "--out", "{out}", "--lr", "nan"], 2, "lr must be a positive number"),
    command(["train", "{corpus}", "--out", "{out}", "--val-fraction", "1.5"], 2, "val-fraction"),
    command(["train", "{corpus}", "--out", "{out}", "--dropout", "1"], 2, "dropout"),
    command(["train", "{corpus}", "--out", "{out}", "--vocab-size", "100"], 2, "vocab-size applies"),
    command(["train", "{corpus}", "--out", "{out}", "--threads", "0"], 2, "threads must be at least 1"),
    command(["train", "{corpus}", "--out", "{out}", "--device", "cuda"], 2, "device cuda is not available", marks=no_cuda),
    command(["sample", "-c", "{ckpt}", "--prompt", "the", "--temperature", "-1"], 2, "temperature must be zero"),
    command(["sample", "-c", "{ckpt}", "--prompt", "the", "--top-p", "2"], 2, "top-p must be in (0, 1]"),
    command(["sample", "-c", "{ckpt}", "--prompt", "the", "--top-k", "-2"], 2, "top-k must be zero"),
    command(["sample", "-c", "{ckpt}", "--prompt", "the", "--length", "-5"], 2, "length must be zero or positive"),
    command(["predict", "the", "-k", "0", "-c", "{ckpt}"], 2, "k must be at least 1"),
    command(["predict", "Zebra", "-c", "{ckpt}"], 1, "never saw: 'Z'"),
    command(["eval", "-c", "{ckpt}", "--words", "0"], 2, "words must be at least 1"),
    command(["eval", "{missing}", "-c", "{ckpt}"], 1, "no such file"),
    command(["bench", "--steps", "0"], 2, "steps must be at least 1"),
    command(["bench", "--reference", "1"], 2, "needs --corpus"),
    command(["bench", "--corpus", "{corpus}", "--reference", "0"], 2, "positive number of seconds"),
]


@pytest.mark.parametrize("argv, code, message", COMMAND_LINE)
def test_the_command_line_refuses(trained, tiny_file, tmp_path, argv, code, message):
    places = {"corpus": tiny_file, "ckpt": trained, "out": tmp_path / "never", "missing": tmp_path / "missing.txt"}
    before = snapshot(trained)
    result = CliRunner().invoke(cli, [re.sub(r"\{(\w+)\}", lambda m: str(places[m[1]]), a) for a in argv], catch_exceptions=False)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""  # nothing is printed, or trained, before the options are checked
    assert not (tmp_path / "never").exists()
    assert snapshot(trained) == before
