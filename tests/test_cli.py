import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from chargen.cli import cli

TINY = ["--layers", "1", "--hidden", "32", "--embedding-dim", "8", "--batch-size", "4", "--seq-len", "16", "--precision", "fp32"]


def run(*args, cwd=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_train_then_sample_end_to_end(tmp_path, tiny_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("train", tiny_file, *TINY, "--max-steps", 30, "--eval-every", 10, "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "checkpoints" / "tiny" / "model.safetensors").is_file()
    result = run("sample", "--prompt", "the ", "--length", 40, "--seed", 5)
    assert result.exit_code == 0, result.output
    assert "using checkpoints/tiny" in result.stderr
    assert result.stdout.startswith("the ") and len(result.stdout) == 4 + 40 + 1
    again = run("sample", "-c", "checkpoints/tiny", "--prompt", "the ", "--length", 40, "--seed", 5)
    assert again.stdout == result.stdout
    three = run("sample", "-c", "checkpoints/tiny", "--prompt", "the ", "-n", 10, "--num-samples", 3)
    assert three.stdout.count("the ") >= 3


@pytest.mark.slow
def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "chargen", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "sample" in out.stdout


def bad(result, code, message):
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_train_bad_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "short.txt").write_text("hello\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    bad(run("train", tmp_path / "missing.txt"), 1, "no such file")
    bad(run("train", tmp_path), 1, "image.png is not valid utf-8 text")  # a folder of them: the file that is not text stops it
    (tmp_path / "nothing").mkdir()
    bad(run("train", tmp_path / "nothing"), 1, "holds no files")
    bad(run("train", str(tmp_path / "*.md")), 1, "no file matches")
    bad(run("train", tmp_path / "empty.txt"), 1, "is empty")
    bad(run("train", tmp_path / "short.txt"), 1, "too short")
    bad(run("train", tmp_path / "image.png"), 1, "not valid utf-8 text: byte 0x89 at offset 0")
    import gzip

    (tmp_path / "archive.gz").write_bytes(gzip.compress(b"some text " * 100))
    bad(run("train", tmp_path / "archive.gz"), 1, "not valid utf-8 text: byte 0x8b at offset 1")


def test_train_keeps_an_existing_checkpoint(trained):
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    corpus = trained.parent / "tiny.txt"
    bad(run("train", corpus, "--out", trained, *TINY, "--max-steps", 2), 1, "already holds a checkpoint")
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before


def test_sample_bad_checkpoints(tmp_path, trained, monkeypatch):
    bad(run("sample", "-c", tmp_path / "nowhere"), 1, "no such checkpoint folder")
    bad(run("sample", "-c", tmp_path), 1, "holds no checkpoint")
    bad(run("sample", "-c", trained, "--prompt", "Zebra"), 1, "never saw: 'Z'")
    monkeypatch.chdir(tmp_path)
    bad(run("sample"), 1, "no checkpoint under checkpoints/")


def test_word_model_train_predict_eval(tmp_path, tiny_file):
    out = tmp_path / "words"
    result = run("train", tiny_file, "--tokenizer", "word", "--tie-weights", "--out", out, *TINY, "--seq-len", 4, "--max-steps", 20, "--quiet")
    assert result.exit_code == 0, result.output
    result = run("predict", "the quick brown fox jumps over the", "-k", 3, "-c", out)
    assert result.exit_code == 0, result.output
    assert "next word" in result.stdout and "probability" in result.stdout
    assert result.stdout.count("0.") >= 3  # three probabilities
    result = run("eval", "-c", out, "--words", 10, "--baseline")
    assert result.exit_code == 0, result.output
    for measure in ("bits per character", "perplexity per token", "next word top-1", "next word top-5", "word trigram"):
        assert measure in result.stdout


@pytest.mark.slow
def test_bench_reports_every_measure():
    result = run("bench", "--steps", 1, "--length", 8, "--streams", 2)
    assert result.exit_code == 0, result.output
    for measure in ("training (2 × 512 lstm", "sampling, one stream, ", "sampling, one stream, int8", "sampling, 2 streams", "first character", "processor: "):
        assert measure in result.stdout
    assert len(re.findall(r"\d\.\d\d×", result.stdout)) == 4  # a ratio for each measure with a reference


@pytest.mark.slow
def test_bench_trains_the_reference_lstm_on_the_recipe_protocol(tiny_file):
    result = run("bench", "--corpus", tiny_file, "--reference", 1)
    assert result.exit_code == 0, result.output
    bpc = float(re.search(r"validation (\d+\.\d+) bpc", result.stdout).group(1))
    assert 0 < bpc < 8 and "reference LSTM" in result.stdout
