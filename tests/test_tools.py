"""info, list, plot, TensorBoard, samples while training, corpus stats and download, devices, config files, --json."""
import functools
import hashlib
import http.server
import json
import threading

import pytest
import torch

import chargen
from chargen import corpora

from .conftest import TINY_OPTIONS, TINY_TEXT, shared_corpus
from .test_cli import TINY, bad, run


def test_info_and_list(tmp_path, trained, monkeypatch):
    result = run("info", trained, "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["steps"] == 60 and figures["tokenizer"] == "char" and figures["vocabulary_size"] == len(set(TINY_TEXT))
    assert figures["best_val_bpc"] <= figures["last_val_bpc"] + 1e-9 and figures["parameters"] > 0
    table = run("info", trained)
    assert "best val bpc" in table.stdout and "architecture" in table.stdout
    monkeypatch.chdir(tmp_path)
    run("train", trained.parent / "tiny.txt", *TINY, "--max-steps", 2, "--out", "checkpoints/older", "--quiet")
    run("train", trained.parent / "tiny.txt", *TINY, "--max-steps", 3, "--out", "checkpoints/newer", "--quiet")
    listed = json.loads(run("list", "--json").stdout)
    assert [c["folder"] for c in listed] == ["checkpoints/newer", "checkpoints/older"]
    assert [c["steps"] for c in listed] == [3, 2]
    assert "newer" in run("list").stdout
    assert run("info").stderr.startswith("using checkpoints/newer")
    bad(run("info", tmp_path / "nothing"), 1, "no such checkpoint folder")


def test_plot_writes_a_png(tmp_path, trained):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    result = run("plot", trained, trained, "-o", out)
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    bad(run("plot", tmp_path, "-o", out), 1, "has no evaluations in metrics.jsonl")


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, trained, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    bad(run("plot", trained, "-o", tmp_path / "x.png"), 1, "pip install 'chargen[plot]'")


def test_tensorboard_and_samples_while_training(tmp_path, tiny_file):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    result = run("train", tiny_file, *TINY, "--max-steps", 20, "--eval-every", 10, "--sample-every", 10, "--tensorboard", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("sample at step") == 2
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found[event_file.parent.name] = [s.value for s in accumulator.Scalars(tag)]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert found["bits per character_validation"] == pytest.approx([r["val_bpc"] for r in records])


def test_samples_while_training_off_the_cpu_come_from_a_cpu_copy(trained):
    """A model training on a GPU is sampled from a copy on the CPU, where the sampler's steps run; it keeps training as it was."""
    from types import SimpleNamespace

    from chargen.config import TrainConfig
    from chargen.run import RunFolder

    lm = chargen.load(trained)
    model = lm.model.train()
    shown = []
    trainer = SimpleNamespace(
        config=TrainConfig(sample_every=5), progress=SimpleNamespace(step=10), device=torch.device("cuda"), model=model,
        corpus=SimpleNamespace(vocab=lm.vocab), display=SimpleNamespace(log=shown.append),
    )
    RunFolder.stepped(None, trainer)
    assert len(shown) == 1 and shown[0].startswith("sample at step 10:") and len(shown[0]) > 30
    assert model.training  # the training model was not switched to evaluation mode


def test_corpus_stats_of_war_and_peace():
    result = run("corpus", "stats", shared_corpus("war_and_peace.txt"), "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["encoding"] == "utf-8 with BOM" and figures["bytes"] == 3_196_234
    assert figures["line_endings"]["lone \\r"] > 60_000 and figures["line_endings"]["\\r\\n"] == 0
    assert figures["distinct_characters"] == 82 and figures["characters"] == 3_196_214  # as the corpora README counts, BOM dropped
    assert sum(figures["counts"].values()) == figures["characters"]
    assert figures["val_characters"] == round(figures["characters"] * 0.05)
    assert "commonest characters" in run("corpus", "stats", shared_corpus("war_and_peace.txt")).stdout


BOOK = "The Project Gutenberg eBook of A Test\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK A TEST ***\r\n\r\nCall me Ishmael. Some years ago.\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK A TEST ***\r\nLicence text.\r\n"


@pytest.fixture
def book_server(tmp_path):
    """A local web server holding one book: downloads are tested without the internet."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "book.txt").write_bytes(BOOK.encode())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/book.txt"
    server.shutdown()


@pytest.mark.slow
def test_corpus_download_from_a_local_server(tmp_path, book_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digest = hashlib.sha256(BOOK.encode()).hexdigest()
    monkeypatch.setitem(corpora.KNOWN, "war-and-peace", corpora.KnownCorpus("war-and-peace", "test", book_server, "book.txt", digest))
    result = run("corpus", "download", "war-and-peace")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "corpora" / "book.txt").read_text() == "Call me Ishmael. Some years ago.\r\n\r\n"[:-4] + "\n"
    bad(run("corpus", "download", "war-and-peace"), 1, "already exists: pass --overwrite")
    monkeypatch.setitem(corpora.KNOWN, "war-and-peace", corpora.KnownCorpus("war-and-peace", "test", book_server, "other.txt", "0" * 64))
    bad(run("corpus", "download", "war-and-peace"), 1, "did not give the recorded file")
    assert not (tmp_path / "corpora" / "other.txt").exists()
    monkeypatch.setitem(corpora.KNOWN, "war-and-peace", corpora.KnownCorpus("war-and-peace", "test", "http://127.0.0.1:9/x.txt", "x.txt", None))
    result = run("corpus", "download", "war-and-peace")
    bad(result, 1, "cannot download http://127.0.0.1:9/x.txt")
    assert result.stderr.count("Error") == 1


def test_train_accepts_a_known_corpus_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "war_and_peace.txt").write_text(TINY_TEXT)
    result = run("train", "war-and-peace", *TINY, "--max-steps", 2, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "checkpoints" / "war_and_peace" / "config.json").read_text())["corpus"]["files"][0]["path"] == str(tmp_path / "corpora" / "war_and_peace.txt")


def test_devices_and_threads(tmp_path, tiny_file):
    result = run("train", tiny_file, *TINY, "--device", "cpu", "--threads", 1, "--max-steps", 2, "--out", tmp_path / "cpu")
    assert result.exit_code == 0, result.output
    assert "on cpu" in result.stderr and torch.get_num_threads() == 1
    torch.set_num_threads(2)


def test_config_files(tmp_path, tiny_file):
    config = tmp_path / "run.toml"
    config.write_text('hidden = 24\nlayers = 1\nembedding-dim = 8\nbatch_size = 4\nseq-len = 16\nmax-steps = 30\nprecision = "fp32"\n')
    result = run("train", tiny_file, "--config", config, "--max-steps", 10, "--out", tmp_path / "a", "--quiet")
    assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "a" / "config.json").read_text())
    assert first["model"]["hidden"] == 24 and first["training"]["max_steps"] == 10  # the command line wins
    again = run("train", "--config", tmp_path / "a" / "config.json", "--out", tmp_path / "b", "--quiet")
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "b" / "config.json").read_text())
    assert second["model"] == first["model"] and second["training"] == first["training"]
    assert second["progress"]["best_val_bpc"] == first["progress"]["best_val_bpc"]  # the same run, again
    config.write_text("hiden = 24\n")
    bad(run("train", tiny_file, "--config", config), 2, "unknown option hiden")
    config.write_text("hidden = \n")
    bad(run("train", tiny_file, "--config", config), 2, "is not valid TOML")


def test_cache_list_and_clear(tmp_path, tiny_file, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    chargen.train(tiny_file, tmp_path / "run", max_steps=2, quiet=True, **TINY_OPTIONS)
    listed = json.loads(run("cache", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["source"] == str(tiny_file.resolve()) and listed[0]["bytes"] > 0
    shown = run("cache", "list")
    assert "1 entry," in shown.stderr and tiny_file.name in shown.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    cleared = run("cache", "clear")
    assert cleared.exit_code == 0 and "removed 1 files" in cleared.stderr
    assert json.loads(run("cache", "list", "--json").stdout) == []


def test_json_output_for_scripts(trained):
    predicted = json.loads(run("predict", "the quick brown", "-k", 2, "-c", trained, "--json").stdout)
    assert len(predicted) == 2 and predicted[0]["probability"] >= predicted[1]["probability"]
    report = json.loads(run("eval", "-c", trained, "--words", 5, "--json").stdout)
    assert {"bits_per_char", "perplexity", "top1", "top5", "checkpoint"} <= report.keys()


@pytest.mark.parametrize(
    "command", ["train", "sample", "predict", "eval", "info", "list", "plot", "bench", "corpus stats", "corpus download", "cache list", "cache clear"]
)
def test_every_command_has_help_with_examples(command):
    result = run(*command.split(), "--help")
    assert result.exit_code == 0 and "chargen " + command.split()[0] in result.stdout
