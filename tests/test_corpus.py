import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chargen import ChargenError, Corpus, Vocabulary, read_text
from chargen.cache import read_corpus
from chargen.config import CorpusOptions
from chargen.corpus import lanes, windows
from chargen.vocabulary import build_vocabulary, from_record

from .conftest import shared_corpus


def write(tmp_path, data: bytes):
    path = tmp_path / "c.txt"
    path.write_bytes(data)
    return path


def test_bom_dropped_and_line_endings_normalised(tmp_path):
    path = write(tmp_path, "\ufeffone\r\ntwo\rthree\n".encode())
    assert read_text(path) == "one\ntwo\nthree\n"
    assert read_text(path, keep_newlines=True) == "one\r\ntwo\rthree\n"


def test_other_encoding(tmp_path):
    path = write(tmp_path, "café".encode("latin-1"))
    assert read_text(path, encoding="latin-1") == "café"
    with pytest.raises(ChargenError, match=r"byte 0xe9 at offset 3"):
        read_text(path)


def test_invalid_utf8_names_offset(tmp_path):
    path = write(tmp_path, b"hello \xff world")
    with pytest.raises(ChargenError, match=r"not valid utf-8 text: byte 0xff at offset 6"):
        read_text(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.txt", "no such file"),
        (lambda p: p, "is a directory"),
        (lambda p: write(p, b""), "is empty"),
        (lambda p: write(p, b"abc\x00\x00def"), "looks binary"),
    ],
)
def test_bad_files(tmp_path, make, message):
    with pytest.raises(ChargenError, match=message):
        read_text(make(tmp_path))


def test_unknown_encoding(tmp_path):
    with pytest.raises(ChargenError, match="unknown text encoding"):
        read_text(write(tmp_path, b"abc"), encoding="no-such-codec")


def test_vocabulary_from_whole_text_and_compact_dtype():
    text = "aaaaaaaaab" * 10 + "z"  # 'z' only in the validation tail
    corpus = Corpus.from_text(text, val_fraction=0.05)
    assert "z" in corpus.vocab.chars
    assert corpus.train.dtype == np.uint8
    assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.val])) == text
    assert len(corpus.val) == round(len(text) * 0.05)


def test_large_vocabulary_uses_wider_ids():
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 2
    corpus = Corpus.from_text(text)
    assert corpus.train.dtype == np.uint16
    assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.val])) == text


def test_unknown_characters_named():
    vocab = Vocabulary(list("abc"))
    with pytest.raises(ChargenError, match=r"prompt has characters the model never saw: 'x', 'é'"):
        vocab.encode("abxcéx", what="prompt")


def test_lanes_targets_are_inputs_shifted_by_one():
    data = np.arange(103, dtype=np.uint8)
    inputs, targets = lanes(data, 4)
    assert inputs.shape == (4, 25)
    assert torch.equal(targets, inputs + 1)
    # each lane is a contiguous stretch of the stream, and the lanes follow one another
    assert torch.equal(inputs.flatten(), torch.arange(100, dtype=torch.uint8))


def test_windows_continue_each_lane():
    data = np.arange(41, dtype=np.uint8)
    inputs, targets = lanes(data, 2)  # lanes 0..19 and 20..39
    steps = list(windows(inputs, targets, 8))
    assert [x.shape[1] for x, _ in steps] == [8, 8, 4]  # the last window is narrower
    for (x0, _), (x1, _) in zip(steps, steps[1:]):
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # the next window starts where the previous ended
    assert steps[0][0].dtype == torch.long


def test_war_and_peace_quirks():
    path = shared_corpus("war_and_peace.txt")
    text = read_text(path)
    assert not text.startswith("\ufeff") and "\r" not in text
    assert text.count("\n") > 50_000
    corpus = Corpus.from_text(text, val_fraction=0.1)
    once = [c for c in corpus.vocab.chars if text.count(c) == 1]
    assert once, "War and Peace has characters that occur once"
    assert corpus.vocab.decode(corpus.val) == text[-len(corpus.val):]


def test_thai_multibyte_crlf():
    path = shared_corpus("thai_100k.txt")
    text = read_text(path)
    assert "\r" not in text
    assert read_text(path, keep_newlines=True).count("\r\n") == text.count("\n")
    corpus = Corpus.from_text(text)
    assert len(corpus.vocab) > 100
    assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.val])) == text


def test_invalid_byte_offset_is_the_files_own_after_line_endings(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"ab\r\ncd\r\n\xffe")
    with pytest.raises(ChargenError, match=r"byte 0xff at offset 8"):
        read_text(path)


def test_encoded_corpus_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "text.txt"
    path.write_text("hello world, hello cache\n" * 20, encoding="utf-8")
    first = read_corpus([path], CorpusOptions(0.1))[0]
    entries = list((tmp_path / "cache" / "chargen").glob("*.npz"))
    assert len(entries) == 1
    again = read_corpus([path], CorpusOptions(0.1))[0]
    assert again.vocab == first.vocab and (again.train == first.train).all() and (again.val == first.val).all()
    assert (again.train_chars, again.val_chars) == (first.train_chars, first.val_chars)
    read_corpus([path], CorpusOptions(0.2))[0]  # other options, another entry
    words = read_corpus([path], CorpusOptions(0.1, tokenizer="word"))[0]
    assert len(list((tmp_path / "cache" / "chargen").glob("*.npz"))) == 3
    assert read_corpus([path], CorpusOptions(0.1, tokenizer="word"))[0].vocab == words.vocab
    entries[0].write_bytes(b"damaged")
    assert (read_corpus([path], CorpusOptions(0.1))[0].train == first.train).all()  # rebuilt, not an error
    assert entries[0].read_bytes() != b"damaged"
    path.write_text("a changed text, a changed text\n" * 20, encoding="utf-8")  # new contents, new key
    assert read_corpus([path], CorpusOptions(0.1))[0].vocab != first.vocab


# vocabulary records: one serialisation for checkpoints and the cache

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FOX = "the quick brown fox jumps over the lazy dog. " * 30


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_a_record_reads_back_an_equal_vocabulary(kind):
    vocab = build_vocabulary(FOX, kind, 300 if kind == "bpe" else None, 1)
    entry, files = vocab.to_record()
    again = from_record(json.loads(json.dumps(entry)), lambda name: files[name].decode())
    assert again == vocab and again.kind == kind and again.decode(again.encode("the lazy dog")) == "the lazy dog"
    assert sorted(files) == ([] if kind == "char" else ["tokenizer.json"])


@pytest.mark.parametrize("name", ["format1-char", "format1-word"])
def test_a_record_is_the_vocabulary_entry_and_files_of_a_format_1_checkpoint(name):
    folder = FIXTURES / name
    entry = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocabulary"]
    vocab = from_record(entry, lambda file: (folder / file).read_text(encoding="utf-8"))
    written, files = vocab.to_record()
    assert written == entry and all((folder / file).is_file() for file in files)


def bad_chars(chars):
    return {"type": "char", "chars": chars}


REFUSED_RECORDS = [
    pytest.param("chars", r"config.json lacks a valid vocabulary entry \(its type must be char, word or bpe, not None\)", id="not-a-table"),
    pytest.param({"type": "bytes"}, "lacks a valid vocabulary entry .* not 'bytes'", id="type"),
    pytest.param(bad_chars("abc"), "^config.json: the vocabulary's chars must be a list of characters$", id="chars-string"),
    pytest.param(bad_chars(["a", "\ud800"]), r"^config.json: the vocabulary holds '\\ud800', which is not one Unicode character$", id="surrogate"),
    pytest.param(bad_chars(["a", 3]), "holds 3, which is not one Unicode character", id="number"),
    pytest.param(bad_chars(["a", "a"]), "^config.json: a vocabulary must be a non-empty list of distinct single characters$", id="repeated"),
    pytest.param(bad_chars([]), "non-empty list", id="empty"),
    pytest.param({"type": "word", "file": "../tokenizer.json"}, "a word vocabulary is the tokenizer.json beside it, not '../tokenizer.json'", id="file"),
    pytest.param({"type": "bpe"}, "a bpe vocabulary is the tokenizer.json beside it, not None", id="no-file"),
]


@pytest.mark.parametrize("entry, message", REFUSED_RECORDS)
def test_a_record_chargen_would_not_write_is_refused_in_one_line(entry, message):
    with pytest.raises(ChargenError, match=message):
        from_record(entry, lambda name: pytest.fail(f"{name} read"), where="config.json")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 200_000, "not JSON"),
        ('{"model": {}}', "its entries are not those of the word tokenizer chargen writes"),
    ],
)
def test_a_tokenizer_file_chargen_would_not_write_is_refused_naming_it(text, message):
    entry = {"type": "word", "file": "tokenizer.json"}
    with pytest.raises(ChargenError, match=f"^run/tokenizer.json is not a readable tokenizer \\({message}"):
        from_record(entry, lambda name: text, where="run/config.json", shown=lambda name: f"run/{name}")


def test_the_readers_own_error_passes_through():
    def missing(name):
        raise ChargenError(f"run/{name} is missing")

    with pytest.raises(ChargenError, match="^run/tokenizer.json is missing$"):
        from_record({"type": "bpe", "file": "tokenizer.json"}, missing)
