"""Corpora of many files (files, folders, globs joined by the separator) and prepared corpora (`chargen prepare`).

Every run here is tiny and fp32 with a fixed seed, so two runs that read the same text train the same weights
to the bit: a corpus read another way (a folder, a glob, a memory-mapped prepared folder) must give exactly
what the one file gives.
"""
import functools
import hashlib
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import chargen
from chargen import ChargenError, prepared
from chargen.config import CorpusOptions
from chargen.info import summary
from chargen.sources import find_files

from .test_cli import run

# small enough that a run is a fraction of a second; a fixed seed and fp32 make two runs on one text equal
OPTIONS = dict(layers=1, hidden=16, embedding_dim=8, batch_size=2, seq_len=8, precision="fp32", lr=1e-2, dropout=0.0, seed=7, quiet=True)
STEPS = dict(max_steps=4, eval_every=2)
CLI_OPTIONS = ["--layers", "1", "--hidden", "16", "--embedding-dim", "8", "--batch-size", "2", "--seq-len", "8", "--precision", "fp32",
               "--lr", "0.01", "--dropout", "0", "--seed", "7", "--max-steps", "4", "--eval-every", "2", "--quiet"]

# three documents, one with characters of two and three UTF-8 bytes; in the folder they are a.txt, b/c.txt, d.txt
DOCUMENTS = [
    "the quick brown fox jumps over the lazy dog.\n" * 5 + "the end",
    "pack my box with five dozen liquor jugs — the café is closed!\n" * 5,
    "how vexingly quick daft zebras jump; the dog sleeps.\n" * 5,
]
PART_NAMES = ["a.txt", "b/c.txt", "d.txt"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_parts(folder, separator="\n"):
    """The documents as a folder of files (made out of order, with hidden files that must be left out), and as one file
    holding exactly their texts joined by the separator."""
    for name, text in reversed(list(zip(PART_NAMES, DOCUMENTS))):
        (folder / "parts" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "parts" / name).write_text(text, encoding="utf-8")
    (folder / "parts" / ".notes.txt").write_text("#### hidden ####\n" * 10)
    (folder / "parts" / ".git").mkdir()
    (folder / "parts" / ".git" / "HEAD").write_text("ref: refs/heads/main\n" * 10)
    (folder / "whole.txt").write_text(separator.join(DOCUMENTS), encoding="utf-8")
    return folder / "parts", folder / "whole.txt"


def config(folder):
    return json.loads((folder / "config.json").read_text())


def weights(folder):
    return (folder / "model.safetensors").read_bytes()


def same_run(a, b):
    """Two checkpoints trained the same: the same vocabulary, split and weights, to the bit."""
    ca, cb = config(a), config(b)
    assert ca["vocabulary"] == cb["vocabulary"]
    if (a / "tokenizer.json").exists() or (b / "tokenizer.json").exists():
        assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    for key in ("characters", "train_characters", "val_characters", "train_tokens", "val_tokens"):
        assert ca["corpus"][key] == cb["corpus"][key], key
    assert weights(a) == weights(b)


def error_line(result, code):
    """The run was refused in one line: the exit code, one `Error:` line, no traceback; that line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # click's exit, not an exception escaping
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    if code == 1:  # the whole message is that line, after any warnings
        assert result.stdout == ""
        assert [line for line in result.stderr.splitlines() if not line.startswith("chargen: warning: ")] == errors
    return errors[0]


def corpus_paths(folder):
    return [f["path"] for f in config(folder)["corpus"]["files"]]


# 1. Many files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["char", "word"])
@pytest.mark.parametrize("separator", [None, "\n\n", "<doc>"])
def test_a_folder_of_parts_trains_as_the_file_they_make(tmp_path, tokenizer, separator):
    parts, whole = write_parts(tmp_path, "\n" if separator is None else separator)
    corpus = dict(tokenizer=tokenizer, min_frequency=1) if tokenizer == "word" else {}
    chargen.train(whole, tmp_path / "file", **corpus, **OPTIONS, **STEPS)
    given = [] if separator is None else ["--separator", separator.replace("\n", "\\n")]  # as a shell passes '\n\n'
    words = ["--tokenizer", "word", "--min-frequency", "1"] if tokenizer == "word" else []
    result = run("train", parts, "--out", tmp_path / "folder", *given, *words, *CLI_OPTIONS)
    assert result.exit_code == 0, result.output
    same_run(tmp_path / "file", tmp_path / "folder")
    recorded = config(tmp_path / "folder")["corpus"]
    assert recorded["separator"] == ("\n" if separator is None else separator)
    joined = whole.read_text(encoding="utf-8")
    assert (recorded["characters"], recorded["val_characters"]) == (len(joined), round(len(joined) * 0.05))  # the joined text's tail
    assert corpus_paths(tmp_path / "folder") == [str((parts / name).resolve()) for name in PART_NAMES]  # sorted, no hidden file


def test_a_folder_is_read_in_the_order_of_its_paths_without_hidden_files(tmp_path):
    for name in ["z.txt", "b/y.txt", "a.txt", "b/.cache/x.txt", ".hidden.txt", "b/.DS_Store", "c/d/e.txt", "B.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("some text\n")
    found = find_files([tmp_path])
    assert found == [tmp_path / "B.txt", tmp_path / "a.txt", tmp_path / "b" / "y.txt", tmp_path / "c" / "d" / "e.txt", tmp_path / "z.txt"]
    assert find_files([tmp_path / "z.txt", tmp_path, str(tmp_path / "*.txt")]) == [found[-1], *found[:-1]]  # each file once, first place kept


def test_two_files_as_arguments_and_as_a_glob_are_one_corpus(tmp_path):
    texts = {"a.txt": DOCUMENTS[0], "b.txt": DOCUMENTS[1]}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    chargen.train([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "args", **OPTIONS, **STEPS)
    result = run("train", str(tmp_path / "*.txt"), "--out", tmp_path / "glob", *CLI_OPTIONS)  # quoted: chargen expands it
    assert result.exit_code == 0, result.output
    same_run(tmp_path / "args", tmp_path / "glob")
    assert corpus_paths(tmp_path / "glob") == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    chargen.train([tmp_path / "b.txt", tmp_path / "a.txt"], tmp_path / "reversed", **OPTIONS, **STEPS)
    assert weights(tmp_path / "reversed") != weights(tmp_path / "args")  # the order named is the order joined


# 2. Prepared corpora -----------------------------------------------------------------------------------------


def small_blocks(monkeypatch):
    """Files read 7 bytes at a time, and word pieces of about 16 characters: the streaming of a large corpus, in miniature."""
    monkeypatch.setattr("chargen.corpus.BLOCK", 7)
    monkeypatch.setattr(prepared, "word_boundaries", functools.partial(prepared.word_boundaries, size=16))


@pytest.mark.parametrize("blocks", ["whole", "small"])
@pytest.mark.parametrize("tokenizer", ["char", "word"])
def test_a_prepared_folder_trains_as_its_files(tmp_path, monkeypatch, tokenizer, blocks):
    parts, _ = write_parts(tmp_path)
    if blocks == "small":
        small_blocks(monkeypatch)
    corpus = dict(tokenizer=tokenizer, min_frequency=1) if tokenizer == "word" else {}
    manifest = prepared.prepare([parts], tmp_path / "prepared", CorpusOptions(**corpus))
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == sorted(
        ["manifest.json", "train.bin", "val.bin"] + (["tokenizer.json"] if tokenizer == "word" else [])
    )
    chargen.train(parts, tmp_path / "plain", **corpus, cache=False, **OPTIONS, **STEPS)
    chargen.train(tmp_path / "prepared", tmp_path / "mapped", **OPTIONS, **STEPS)
    same_run(tmp_path / "plain", tmp_path / "mapped")
    recorded = config(tmp_path / "mapped")["corpus"]
    assert recorded["prepared"] == str((tmp_path / "prepared").resolve())
    assert recorded["files"] == config(tmp_path / "plain")["corpus"]["files"] == [f.to_json() for f in manifest.files]
    assert recorded["tokenizer"] == tokenizer
    assert summary(tmp_path / "mapped")["corpus"] == str((tmp_path / "prepared").resolve())


# a constant rate: a decaying schedule follows the limits, and the first half of a split run has other limits
RESUMED = {**OPTIONS, "layers": 2, "dropout": 0.2, "schedule": "constant", "eval_every": 3}


def test_resume_from_a_prepared_folder_is_exact(tmp_path):
    parts, _ = write_parts(tmp_path)
    prepared.prepare([parts], tmp_path / "prepared", CorpusOptions())
    chargen.train(tmp_path / "prepared", tmp_path / "whole", max_steps=10, **RESUMED)
    chargen.train(tmp_path / "prepared", tmp_path / "split", max_steps=6, **RESUMED)  # stops mid-epoch, lanes saved
    shutil.move(tmp_path / "prepared", tmp_path / "moved")
    line = error_line(run("train", "--resume", tmp_path / "split", "--max-steps", 10, "--quiet"), 1)
    assert f"the run's prepared corpus {tmp_path / 'prepared'} is not here" in line
    assert chargen.resume(tmp_path / "split", tmp_path / "moved", max_steps=10, quiet=True).steps == 10
    whole, split = [[json.loads(line) for line in (tmp_path / f / "metrics.jsonl").read_text().splitlines()] for f in ("whole", "split")]
    assert [(r["step"], r["chars"], r["val_bpc"]) for r in whole] == [(r["step"], r["chars"], r["val_bpc"]) for r in split]
    for name in ("model.safetensors", "resume.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert config(tmp_path / "split")["corpus"]["prepared"] == str((tmp_path / "moved").resolve())  # where it is now


def flip_a_byte(name, at=3):
    def damage(folder):
        data = bytearray((folder / name).read_bytes())
        data[at] ^= 0x01
        (folder / name).write_bytes(bytes(data))
        return name

    return damage


def truncate(folder):
    data = (folder / "train.bin").read_bytes()
    (folder / "train.bin").write_bytes(data[:-1])
    return "train.bin"


def remove(folder):
    (folder / "val.bin").unlink()
    return "val.bin"


def cut_manifest(folder):
    data = (folder / "manifest.json").read_bytes()
    (folder / "manifest.json").write_bytes(data[: len(data) // 2])
    return "manifest.json"


def edit_manifest(change):
    def damage(folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return "manifest.json"

    return damage


DAMAGE = {
    "truncated": truncate,
    "byte flipped in train.bin": flip_a_byte("train.bin"),
    "byte flipped in val.bin": flip_a_byte("val.bin", at=0),
    "val.bin removed": remove,
    "manifest cut": cut_manifest,
    "manifest lacks ids": edit_manifest(lambda m: m.pop("ids")),
    "manifest of another format": edit_manifest(lambda m: m.update(format=99)),
    "manifest files not a list": edit_manifest(lambda m: m.update(files="all of them")),
}


@pytest.fixture
def prepared_run(tmp_path):
    """A prepared corpus, and a run of two steps saved on it."""
    parts, _ = write_parts(tmp_path)
    prepared.prepare([parts], tmp_path / "prepared", CorpusOptions())
    chargen.train(tmp_path / "prepared", tmp_path / "run", max_steps=2, eval_every=2, **OPTIONS)
    return tmp_path / "prepared", tmp_path / "run"


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_prepared_folder_is_refused_naming_the_file(tmp_path, prepared_run, damage):
    folder, saved = prepared_run
    name = damage(folder)
    before = (saved / "model.safetensors").read_bytes()
    line = error_line(run("train", folder, "--out", tmp_path / "new", *CLI_OPTIONS), 1)
    assert str(folder / name) in line
    assert not (tmp_path / "new").exists()
    line = error_line(run("train", "--resume", saved, "--max-steps", 4, "--quiet"), 1)
    assert str(folder / name) in line
    assert (saved / "model.safetensors").read_bytes() == before and config(saved)["progress"]["step"] == 2
    with pytest.raises(ChargenError, match=name):
        chargen.resume(saved, max_steps=4, quiet=True)


def test_a_changed_token_count_names_the_ids_file(tmp_path, prepared_run):
    folder, _ = prepared_run
    edit_manifest(lambda m: m["ids"]["train"].update(tokens=m["ids"]["train"]["tokens"] + 1))(folder)
    line = error_line(run("train", folder, "--out", tmp_path / "new", *CLI_OPTIONS), 1)
    assert str(folder / "train.bin") in line and "truncated or changed" in line


def test_resume_on_a_corpus_prepared_again_from_other_text_is_refused(tmp_path, prepared_run):
    folder, saved = prepared_run
    (tmp_path / "other.txt").write_text(DOCUMENTS[2] * 2)
    assert run("prepare", tmp_path / "other.txt", "--out", folder, "--overwrite").exit_code == 0
    line = error_line(run("train", "--resume", saved, "--max-steps", 4, "--quiet"), 1)
    assert f"{folder} is not the prepared corpus this run trained on" in line


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_prepare_writes_only_a_new_or_empty_folder_or_a_prepared_one_with_overwrite(tmp_path):
    parts, whole = write_parts(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes\n")
    line = error_line(run("prepare", parts, "--out", tmp_path / "mine"), 1)
    assert "holds other files" in line and str(tmp_path / "mine") in line
    assert snapshot(tmp_path / "mine") == {"notes.txt": b"my notes\n"}

    (tmp_path / "empty").mkdir()
    assert run("prepare", parts, "--out", tmp_path / "empty").exit_code == 0
    before = snapshot(tmp_path / "empty")
    line = error_line(run("prepare", whole, "--out", tmp_path / "empty", "--tokenizer", "word"), 1)
    assert "already holds a prepared corpus" in line and "--overwrite" in line
    assert snapshot(tmp_path / "empty") == before
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    line = error_line(run("prepare", tmp_path / "image.png", "--out", tmp_path / "empty", "--overwrite"), 1)  # refused before anything is replaced
    assert "image.png" in line
    assert snapshot(tmp_path / "empty") == before

    result = run("prepare", whole, "--out", tmp_path / "empty", "--tokenizer", "word", "--overwrite", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == 1
    after = snapshot(tmp_path / "empty")
    assert "tokenizer.json" in after and after["manifest.json"] != before["manifest.json"]
    assert not [name for name in after if name.endswith(".tmp")]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--val-fraction", "0.1"], "was prepared with val-fraction 0.05, not 0.1"),
        (["--tokenizer", "word"], "was prepared with tokenizer 'char', not 'word'"),
        (["--separator", "\\n\\n"], "was prepared with separator '\\n', not '\\n\\n'"),
        (["--encoding", "latin-1"], "was prepared with encoding 'utf-8', not 'latin-1'"),
    ],
)
def test_a_corpus_option_other_than_the_prepared_ones_is_refused(tmp_path, option, message):
    parts, _ = write_parts(tmp_path)
    prepared.prepare([parts], tmp_path / "prepared", CorpusOptions())
    line = error_line(run("train", tmp_path / "prepared", "--out", tmp_path / "run", *option, *CLI_OPTIONS), 2)
    assert message in line and str(tmp_path / "prepared") in line
    assert not (tmp_path / "run").exists()


def test_a_corpus_option_equal_to_the_prepared_one_is_taken(tmp_path):
    parts, _ = write_parts(tmp_path)
    prepared.prepare([parts], tmp_path / "prepared", CorpusOptions(val_fraction=0.1))
    result = run("train", tmp_path / "prepared", "--out", tmp_path / "run", "--val-fraction", "0.1", *CLI_OPTIONS)
    assert result.exit_code == 0, result.output
    assert config(tmp_path / "run")["corpus"]["val_fraction"] == 0.1


# Bad input ---------------------------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
PAST_HEAD = 70_000  # beyond the 64 KB the first check reads


def empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return [tmp_path / "empty"], "holds no files to train on", "empty"


def binaries(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.png").write_bytes(PNG)
    (tmp_path / "bin" / "b.so").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(64))
    return [tmp_path / "bin"], "a.png is not valid utf-8 text: byte 0x89 at offset 0", "a.png"


def no_match(tmp_path):
    return [str(tmp_path / "*.md")], "no file matches", "*.md"


def mixed_encodings(tmp_path):
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text("un café crème, s'il vous plaît\n" * 10, encoding="utf-8")
    (tmp_path / "mixed" / "b.txt").write_bytes("un café crème, s'il vous plaît\n".encode("latin-1") * 10)
    return [tmp_path / "mixed"], "b.txt is not valid utf-8 text: byte 0xe9 at offset 6", "b.txt"


def latin1_past_the_head(tmp_path):
    (tmp_path / "a.txt").write_text("plain text\n" * 10)
    (tmp_path / "b.txt").write_bytes(b"x" * PAST_HEAD + "café".encode("latin-1") + b"\n")
    return [tmp_path / "a.txt", tmp_path / "b.txt"], f"b.txt is not valid utf-8 text: byte 0xe9 at offset {PAST_HEAD + 3}", "b.txt"


def nul_past_the_head(tmp_path):
    (tmp_path / "a.txt").write_text("plain text\n" * 10)
    (tmp_path / "b.txt").write_bytes(b"y" * PAST_HEAD + b"\x00more\n")
    return [tmp_path / "a.txt", tmp_path / "b.txt"], f"b.txt looks binary, not text: NUL character at position {PAST_HEAD}", "b.txt"


BAD = [empty_folder, binaries, no_match, mixed_encodings, latin1_past_the_head, nul_past_the_head]


@pytest.mark.parametrize("command", ["train", "prepare"])
@pytest.mark.parametrize("case", BAD, ids=[case.__name__ for case in BAD])
def test_bad_input_is_one_line(tmp_path, command, case):
    names, message, named = case(tmp_path)
    options = CLI_OPTIONS if command == "train" else []
    line = error_line(run(command, *names, "--out", tmp_path / "out", *options), 1)
    assert message in line and named in line
    if case not in (empty_folder, no_match):  # a file that is not text: the line says how to leave such files out
        assert line.endswith("(--skip-non-text leaves such files out)")
    assert not (tmp_path / "out").exists()


def test_a_folder_of_binaries_skipped_leaves_nothing(tmp_path):
    names, _, _ = binaries(tmp_path)
    for command, options in (("train", CLI_OPTIONS), ("prepare", [])):
        result = run(command, *names, "--out", tmp_path / "out", "--skip-non-text", *options)
        line = error_line(result, 1)
        assert "none of the 2 files named is text in utf-8" in line
        assert result.stderr.count("skipped") == 2 and "a.png" in result.stderr and "b.so" in result.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("via", ["files", "prepared"])
def test_skip_non_text_trains_on_the_rest(tmp_path, via):
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text(DOCUMENTS[0])
    (tmp_path / "corpus" / "b.png").write_bytes(PNG)
    (tmp_path / "corpus" / "sub" / "c.txt").write_bytes(b"z" * PAST_HEAD + b"\x00")  # found binary only past its first block
    (tmp_path / "corpus" / "d.txt").write_text(DOCUMENTS[1])
    if via == "prepared":
        result = run("prepare", tmp_path / "corpus", "--out", tmp_path / "prepared", "--skip-non-text")
        assert result.exit_code == 0, result.output
        corpus = tmp_path / "prepared"
        result = run("train", corpus, "--out", tmp_path / "run", *CLI_OPTIONS)
    else:
        result = run("train", tmp_path / "corpus", "--out", tmp_path / "run", "--skip-non-text", *CLI_OPTIONS)
    assert result.exit_code == 0, result.output
    if via == "files":
        assert "warning" in result.stderr
    kept = [tmp_path / "corpus" / "a.txt", tmp_path / "corpus" / "d.txt"]
    assert corpus_paths(tmp_path / "run") == [str(p) for p in kept]
    chargen.train(kept, tmp_path / "kept", **OPTIONS, **STEPS)
    same_run(tmp_path / "kept", tmp_path / "run")


def test_skip_non_text_warns_naming_each_file_skipped(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(DOCUMENTS[0])
    (tmp_path / "corpus" / "b.png").write_bytes(PNG)
    (tmp_path / "corpus" / "c.txt").write_bytes(b"z" * PAST_HEAD + b"\x00")
    for command, options in (("train", CLI_OPTIONS), ("prepare", [])):
        result = run(command, tmp_path / "corpus", "--out", tmp_path / command, "--skip-non-text", *options)
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("chargen: warning:")]
        assert len(warnings) == 2, result.stderr
        assert "b.png is not valid utf-8 text" in warnings[0] and warnings[0].endswith("skipped")
        assert "c.txt looks binary" in warnings[1] and warnings[1].endswith("skipped")


# The command line end to end -----------------------------------------------------------------------------------


def test_prepare_train_info_eval_from_the_command_line(tmp_path):
    parts, _ = write_parts(tmp_path)
    result = run("prepare", parts, "--out", tmp_path / "prepared")
    assert result.exit_code == 0, result.output
    assert f"Next: chargen train {tmp_path / 'prepared'}" in result.stderr and "from 3 files" in result.stderr
    result = run("train", tmp_path / "prepared", "--out", tmp_path / "run", *CLI_OPTIONS)
    assert result.exit_code == 0, result.output
    assert "reached --max-steps 4" in result.stderr

    result = run("info", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["corpus"] == str((tmp_path / "prepared").resolve()) and info["steps"] == 4
    assert [f["path"] for f in info["corpus_files"]] == [str((parts / name).resolve()) for name in PART_NAMES]
    assert [f["sha256"] for f in info["corpus_files"]] == [hashlib.sha256((parts / n).read_bytes()).hexdigest() for n in PART_NAMES]

    result = run("eval", "-c", tmp_path / "run", "--json", "--words", 20)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    corpus = config(tmp_path / "run")["corpus"]
    assert report["file"] == f"{corpus['prepared']} (validation part)"
    assert report["characters"] == corpus["val_characters"]
    assert report["tokens"] == corpus["val_tokens"] and 0 < report["bits_per_char"] < 10

    shutil.move(parts, tmp_path / "moved")  # the validation text is read from the source files, checked by their sha256
    line = error_line(run("eval", "-c", tmp_path / "run"), 1)
    assert "name a FILE to evaluate on" in line and "a.txt" in line


@pytest.mark.slow
def test_two_processes_train_from_a_prepared_folder_as_one_does(tmp_path, tiny_file):
    """Under torchrun every rank maps the same ids and reads its own lanes: the run is the one-process run."""
    from tests.test_resume import metrics, torchrun

    prepared = tmp_path / "prepared"
    assert run("prepare", tiny_file, "--out", prepared, "--val-fraction", "0.1").exit_code == 0
    options = ["--layers", "1", "--hidden", "16", "--embedding-dim", "8", "--batch-size", "4", "--seq-len", "8", "--precision", "fp32",
               "--max-steps", "10", "--eval-every", "5", "--threads", "1", "--lr", "0.01"]
    result = torchrun("train", prepared, "--out", tmp_path / "ddp", *options)
    assert result.returncode == 0, result.stderr
    assert "2 processes: each trains 2 of the 4 lanes" in result.stderr
    single = subprocess.run([sys.executable, "-m", "chargen", "train", prepared, "--out", tmp_path / "one", *map(str, options)], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    ddp, one = metrics(tmp_path / "ddp"), metrics(tmp_path / "one")
    assert [r["step"] for r in ddp] == [r["step"] for r in one] == [5, 10]
    for a, b in zip(ddp, one):
        assert a["val_bpc"] == pytest.approx(b["val_bpc"], abs=1e-4)
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["corpus"]["prepared"] == str(prepared.resolve())


def test_a_corpus_prepared_into_a_folder_of_its_own_leaves_that_folder_out(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(DOCUMENTS[0], encoding="utf-8")
    first = chargen.prepare(corpus, corpus / "prepared", CorpusOptions(val_fraction=0.1))
    again = chargen.prepare(corpus, corpus / "prepared", CorpusOptions(val_fraction=0.1), overwrite=True)
    assert [f.path for f in again.files] == [f.path for f in first.files] == [str((corpus / "a.txt").resolve())]
    with pytest.raises(ChargenError, match="no files outside"):
        chargen.prepare(corpus / "prepared", corpus / "prepared", CorpusOptions(val_fraction=0.1), overwrite=True)
