"""Word and subword vocabularies, next-word prediction, pre-trained embeddings and evaluation."""
import json
import math

import numpy as np
import pytest
import torch

import chargen
from chargen import ChargenError
from chargen.corpus import Corpus, build_vocabulary
from chargen.embeddings import load_vectors
from chargen.evaluation import evaluate_text, word_positions
from chargen.ngram import WordTrigram
from chargen.predict import TokenClasses, is_word_char, split_context

from .conftest import TINY_OPTIONS, shared_corpus

STORY = (
    "The cat sat on the mat. The dog sat on the log.\n"
    "A cat and a dog met on the road, and the cat ran.\n"
    "Prince Andrew said: \"Well, the war is coming.\"\n"
) * 30
WORD_OPTIONS = {**TINY_OPTIONS, "seq_len": 8, "schedule": "constant", "warmup": 0}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """One tiny trained model per tokenizer."""
    root = tmp_path_factory.mktemp("words")
    corpus = root / "story.txt"
    corpus.write_text(STORY, encoding="utf-8")
    found = {}
    for kind, extra in [("char", {}), ("word", {"tie_weights": True}), ("bpe", {"vocab_size": 300})]:
        chargen.train(corpus, root / kind, tokenizer=kind, max_steps=80, eval_every=40, quiet=True, **WORD_OPTIONS, **extra)
        found[kind] = chargen.load(root / kind)
    return found


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_round_trip(kind):
    vocab = build_vocabulary(STORY, kind, 300 if kind == "bpe" else None, 1)
    text = "The cat said: \"Well, the war is coming.\"\nA dog ran."
    assert vocab.decode(vocab.encode(text)) == text  # every character and word of it is known


def test_word_vocabulary_maps_unknown_words_to_unk():
    vocab = build_vocabulary(STORY, "word", None, 2)
    ids = vocab.encode("The zebra sat")
    assert vocab.decode(ids) == "The [UNK] sat"
    bpe = build_vocabulary(STORY, "bpe", 300, 2)
    assert bpe.decode(bpe.encode("The zebra sat")) == "The zebra sat"  # bytes always spell it


def test_char_vocabulary_rejects_unknown_characters():
    with pytest.raises(ChargenError, match="never saw: 'z'"):
        build_vocabulary("abc", "char").encode("abz")


def test_split_is_by_characters_for_every_tokenizer():
    for kind in ("char", "word", "bpe"):
        corpus = Corpus.from_text(STORY, 0.1, kind, 300 if kind == "bpe" else None)
        assert corpus.val_chars == round(len(STORY) * 0.1)
        assert corpus.vocab.decode(corpus.val) == STORY[-corpus.val_chars :]


def test_checkpoint_keeps_the_tokenizer(models, tmp_path):
    lm = models["word"]
    config = json.loads((lm.folder / "config.json").read_text())
    assert config["vocabulary"] == {"type": "word", "file": "tokenizer.json"}
    assert config["model"]["tie_weights"] is True
    assert lm.model.head.weight is lm.model.embedding.weight
    assert lm.vocab.decode(lm.vocab.encode("The cat sat on the mat")) == "The cat sat on the mat"
    # the bits per character of a word model are comparable: a character count, not a token count
    records = [json.loads(line) for line in (lm.folder / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["chars"] > records[-1]["step"] * 4 * 8


def test_missing_tokenizer_is_a_clear_error(models, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(models["bpe"].folder, copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ChargenError, match="tokenizer.json is missing"):
        chargen.load(copy)
    (copy / "tokenizer.json").write_text("{not json")
    with pytest.raises(ChargenError, match="not a readable tokenizer"):
        chargen.load(copy)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_word_models_generate_text(models, kind):
    lm = models[kind]
    text = lm.generate("The cat", length=20, seed=1)
    assert text.startswith("The cat") and len(text) > len("The cat")
    assert "".join(lm.stream("The cat", length=20, seed=1)) == text


def test_split_context():
    assert split_context("emperor of") == ("emperor of", " ")
    assert split_context("emperor of ") == ("emperor of", " ")
    assert split_context("end.\n") == ("end.\n", "")
    assert split_context("") == ("", "")


def test_token_classes():
    vocab = build_vocabulary("ab c.\n", "char")
    classes = TokenClasses.of(vocab)
    by_char = dict(zip(vocab.chars, zip(classes.letters.tolist(), classes.boundary.tolist())))
    assert by_char == {"\n": (False, True), " ": (False, True), ".": (False, True), "a": (True, False), "b": (True, False), "c": (True, False)}
    assert is_word_char("ก") and is_word_char("\u0e34")  # a Thai letter and a Thai vowel mark


def word_probability(lm, text: str, word: str) -> float:
    """The product of next_token_probs along the tokenizer's spelling of the word, then a boundary."""
    context, lead = split_context(text)
    spelled = lead + word
    pieces = [lm.vocab.token_texts[i] for i in lm.vocab.encode(spelled)]
    p = 1.0
    for piece in pieces:
        probs = lm.next_token_probs(context)
        matching = [q for t, q in probs if t == piece]
        assert len(matching) == 1
        p *= matching[0]
        context += piece
    return p * sum(q for t, q in lm.next_token_probs(context) if not t or not is_word_char(t[0]))


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize("text", ["The cat sat on the", "Prince Andrew said: \"Well, the war is ", "A cat and a dog met on the road,\n"])
def test_predict_next_word_gives_the_models_probabilities(models, kind, text):
    lm = models[kind]
    predictions = lm.predict_next_word(text, k=4)
    assert len(predictions) == 4
    words = [p.word for p in predictions]
    assert len(set(words)) == 4 and all(w and all(map(is_word_char, w)) for w in words)
    probs = [p.probability for p in predictions]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    for p in predictions:
        assert p.probability == pytest.approx(word_probability(lm, text, p.word), rel=1e-4)


def test_predict_learns_the_text(models):
    # the story always continues "sat on the" with "mat" or "log"
    for kind, lm in models.items():
        best = [p.word for p in lm.predict_next_word("The dog sat on the", k=2)]
        assert set(best) & {"mat", "log"}, (kind, best)


def test_char_search_is_exact_against_brute_force(models):
    """Every word of the story, scored by the chain rule, ranks as the search says."""
    lm = models["char"]
    text = "A cat and a"
    candidates = set(w for w in STORY.replace("\n", " ").split(" ") if w.isalpha())
    brute = sorted(((word_probability(lm, text, w), w) for w in candidates), reverse=True)[:3]
    found = lm.predict_next_word(text, k=3)
    assert [p.word for p in found] == [w for _, w in brute]


def test_next_token_probs_is_a_distribution(models):
    for lm in models.values():
        probs = lm.next_token_probs("The cat")
        assert len(probs) == len(lm.vocab)
        assert sum(p for _, p in probs) == pytest.approx(1, abs=1e-4)
        assert [p for _, p in probs] == sorted((p for _, p in probs), reverse=True)
        assert len(lm.next_token_probs("The cat", k=3)) == 3


def test_predict_rejects_bad_input(models):
    with pytest.raises(ChargenError, match="never saw: 'Z'"):
        models["char"].predict_next_word("Zebra")
    assert models["word"].predict_next_word("Zebras and the", k=1)  # an unknown word is [UNK], as the tokenizer defines


def write_vectors(path, lines, header=None):
    path.write_text((f"{header}\n" if header else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_embeddings_file_parsing(tmp_path):
    tokens = [" The", "cat", " dog", "[UNK]", "."]
    glove = write_vectors(tmp_path / "glove.txt", ["the 1 2 3", "cat 4 5 6", "zebra 7 8 9"])
    vectors, found = load_vectors(glove, tokens, 3)
    assert found.tolist() == [True, True, False, False, False]
    assert vectors[0].tolist() == [1, 2, 3] and vectors[1].tolist() == [4, 5, 6]
    w2v = write_vectors(tmp_path / "w2v.txt", ["The 1 1 1", "the 2 2 2", "dog 3 3 3"], header="3 3")
    vectors, found = load_vectors(w2v, tokens, 3)
    assert vectors[0].tolist() == [1, 1, 1]  # the exact spelling wins over the lower-case one
    assert found.tolist() == [True, False, True, False, False]
    with pytest.raises(ChargenError, match="holds 3-dimensional vectors but --embedding-dim is 4"):
        load_vectors(w2v, tokens, 4)
    with pytest.raises(ChargenError, match="line 2: 2-dimensional vector but --embedding-dim is 3"):
        load_vectors(write_vectors(tmp_path / "bad.txt", ["the 1 2 3", "cat 1 2"]), tokens, 3)
    with pytest.raises(ChargenError, match="no such embeddings file"):
        load_vectors(tmp_path / "absent.txt", tokens, 3)


def test_training_with_frozen_embeddings(tmp_path):
    corpus = tmp_path / "story.txt"
    corpus.write_text(STORY, encoding="utf-8")
    vectors = write_vectors(tmp_path / "v.txt", [f"{w} " + " ".join(["0.5"] * 16) for w in ("the", "cat", "dog", "mat")])
    chargen.train(
        corpus, tmp_path / "m", tokenizer="word", embeddings=vectors, freeze_embeddings=True, max_steps=20, eval_every=10, quiet=True, **WORD_OPTIONS
    )
    lm = chargen.load(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["embeddings"]["covered"] == sum(1 for t in lm.vocab.token_texts if t.strip().lower() in {"the", "cat", "dog", "mat"})
    rows = [i for i, t in enumerate(lm.vocab.token_texts) if t.strip().lower() == "cat"]
    assert torch.all(lm.model.embedding.weight[rows] == 0.5)  # still the file's values after training
    with pytest.raises(ChargenError, match="--embedding-dim is 16"):
        bad = write_vectors(tmp_path / "bad.txt", ["the 1 2"])
        chargen.train(corpus, tmp_path / "m2", tokenizer="word", embeddings=bad, max_steps=2, quiet=True, **WORD_OPTIONS)


def test_word_trigram_baseline():
    words = "the cat sat on the mat the cat sat on the log the dog ran".split()
    model = WordTrigram.fit(words)
    assert model.top(["on", "the"], 2) == ["mat", "log"]
    assert model.top(["the", "cat"], 1) == ["sat"]
    assert model.top(["zebra", "zebra"], 1) == ["the"]  # backs off to the commonest word
    assert model.top(["zebra", "the"], 1) == ["cat"]


def test_word_positions():
    assert word_positions("The cat, the\ndog (x) and") == [(4, "cat"), (9, "the"), (13, "dog"), (21, "and")]


def test_evaluate_reports_bpc_and_accuracy(models):
    lm = models["char"]
    text = STORY[-400:]
    result = evaluate_text(lm, text, max_words=30, baseline=WordTrigram.fit(STORY.split()))
    # the bits agree with the model's own cross-entropy on the stream
    ids = torch.from_numpy(lm.vocab.encode(text)).long()
    with torch.no_grad():
        logits, _ = lm.model(ids[None])
    expected = torch.nn.functional.cross_entropy(logits[0, :-1], ids[1:], reduction="sum").item() / math.log(2)
    assert result["bits"] == pytest.approx(expected, rel=1e-4)
    assert result["words_scored"] == 30
    assert 0 <= result["top1"] <= result["top5"] <= 1 and result["top5"] > 0.3
    assert 0 <= result["baseline_top1"] <= result["baseline_top5"] <= 1


def test_evaluate_checkpoint_on_its_validation_text(models):
    for kind, lm in models.items():
        report = chargen.evaluate(lm.folder, max_words=20, baseline=True)
        assert report.words_scored == 20 and report.characters == round(len(STORY) * 0.05)
        assert 0 < report.bits_per_char < 8 and report.perplexity > 1
        assert report.baseline_top5 is not None


def test_word_vocabulary_of_war_and_peace():
    """The default 10,000 words cover all but a few per cent of the book; ids fit in uint16."""
    corpus = Corpus.from_file(shared_corpus("war_and_peace.txt"), 0.1, tokenizer="word")
    assert len(corpus.vocab) == 10_000 and corpus.train.dtype == np.uint16
    unknown = corpus.vocab.tokenizer.token_to_id("Ġ[UNK]")
    assert (corpus.val == unknown).mean() < 0.05
    assert 4 < corpus.val_chars / len(corpus.val) < 5  # characters per word token
