"""Any input at all: the loader either gives the text back exactly or raises chargen's own error."""
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chargen
from chargen import ChargenError
from chargen.corpus import Corpus, Vocabulary, read_text

from .conftest import TINY_OPTIONS

# letters, combining marks, emoji, controls (NUL and \r among them) and lone surrogates
CHARACTERS = st.characters(codec=None, categories=["L", "M", "N", "P", "S", "Z", "Cc", "Cs", "So"])


def read_bytes_as_corpus(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.txt"
        path.write_bytes(data)
        return read_text(path)


def expected_text(text: str) -> str:
    text = text[1:] if text.startswith("\ufeff") else text
    return text.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_exactly_or_fail_cleanly(data):
    try:
        text = read_bytes_as_corpus(data)
    except ChargenError as e:
        assert "\n" not in str(e)
        return
    assert text == expected_text(data.decode("utf-8"))
    vocab = Vocabulary.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=CHARACTERS, max_size=200))
def test_random_unicode_round_trips_or_fails_cleanly(text):
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate is written as bytes no decoder accepts
    try:
        read = read_bytes_as_corpus(data)
    except ChargenError as e:
        assert "\n" not in str(e)
        assert not data or "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text) or not expected_text(text)
        return
    assert read == expected_text(text)
    try:
        corpus = Corpus.from_text(read, 0.5)
    except ChargenError:
        assert len(read) < 6  # too short to split
        return
    assert corpus.vocab.decode(corpus.train) + corpus.vocab.decode(corpus.val) == read


def test_unwritable_out_is_reported_before_training(tmp_path, tiny_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ChargenError, match="cannot write to"):
        chargen.train(tiny_file, blocker / "sub", quiet=True, max_steps=2, **TINY_OPTIONS)
    with pytest.raises(ChargenError, match="is a file, not a folder"):
        chargen.train(tiny_file, blocker, quiet=True, max_steps=2, **TINY_OPTIONS)


def test_full_disk_before_training(tmp_path, tiny_file, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(ChargenError, match="1,000 bytes|0.0 MB free"):
        chargen.train(tiny_file, tmp_path / "full", quiet=True, max_steps=2, **TINY_OPTIONS)
