"""Sampling, prediction and evaluation given bad input, extreme options and every tokenizer."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

import chargen
from chargen.evaluation import evaluate_text, evenly, scored_positions, word_positions
from chargen.ngram import BACKOFF, WordTrigram
from chargen.predict import is_word_char, split_context
from chargen.sample import MAX_HELD, check_options, pick

from .conftest import TINY_OPTIONS, TINY_TEXT
from .test_words import STORY, word_probability


@pytest.fixture(scope="module")
def models(trained, tmp_path_factory) -> dict:
    """The session's tiny character model, and a tiny word and BPE model trained on a story."""
    root = tmp_path_factory.mktemp("sampling")
    corpus = root / "story.txt"
    corpus.write_text(STORY, encoding="utf-8")
    options = {**TINY_OPTIONS, "seq_len": 8, "schedule": "constant", "warmup": 0}
    found = {"char": chargen.load(trained)}
    for kind, extra in [("word", {}), ("bpe", {"vocab_size": 300})]:
        chargen.train(corpus, root / kind, tokenizer=kind, max_steps=60, eval_every=30, quiet=True, **options, **extra)
        found[kind] = chargen.load(root / kind)
    return found


def test_the_largest_options_pass():
    check_options(5, 1.0, 0, 1.0, 1, 2**64 - 1)
    check_options(MAX_HELD // 1024, 1, 0, 1, 1024, 0)  # whole numbers are numbers too
    check_options(10**12, 1.0, 0, 1.0)  # one sample streams: any length


@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize("options", [dict(temperature=1e-40), dict(temperature=1e-300), dict(temperature=5e-324), dict(top_p=1e-300), dict(top_p=1e-45)])
def test_tiny_temperatures_and_top_p_are_greedy(models, kind, options):
    lm = models[kind]
    assert lm.generate("the ", length=30, seed=1, **options) == lm.generate("the ", length=30, temperature=0)


def test_pick_keeps_the_argmax_of_rows_that_overflow():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0], [1e-30, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    assert pick(logits, 1e-300, 0, 1.0, g).tolist() == [1, 0, 0]
    assert pick(logits, 1.0, 0, 1e-300, g).tolist() == [1, 0, 0]
    assert pick(logits, 1e-40, 2, 0.5, g).tolist() == [1, 0, 0]


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize("length", [0, 1, 7, 50, 333])
def test_length_counts_characters_for_every_tokenizer(models, kind, length):
    lm = models[kind]
    text = lm.generate("the cat", length=length, seed=3)
    assert text.startswith("the cat") and len(text) == len("the cat") + length
    assert "".join(lm.stream("the cat", length=length, seed=3)) == text
    texts = lm.generate("the cat", length=length, seed=3, num_samples=3)
    assert [len(t) for t in texts] == [len("the cat") + length] * 3


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_a_longer_sample_continues_the_shorter_one(models, kind):
    """The last token is cut, not redrawn: the same seed gives the same text, whatever the length."""
    lm = models[kind]
    short, long = lm.generate("", length=40, seed=5), lm.generate("", length=400, seed=5)
    assert long.startswith(short) and len(short) == 40 and len(long) == 400
    assert len(lm.vocab.encode(long)) < 400  # a word model wrote fewer tokens than characters


def test_bytes_that_never_complete_a_character_still_end_the_sample(models):
    """A BPE model that writes only UTF-8 continuation bytes must not hold them back for ever."""
    vocab = models["bpe"].vocab
    model = chargen.LanguageModel(chargen.ModelConfig(vocab_size=len(vocab), hidden=8, layers=1))
    continuation = vocab.tokenizer.token_to_id("©")  # the byte-level form of byte 0xa9
    with torch.no_grad():
        model.head.bias.fill_(-100.0)
        model.head.bias[continuation] = 100.0
    lm = chargen.Sampler(model, vocab, precision="fp32")
    assert lm.generate("", length=5, temperature=0) == "\ufffd" * 5
    assert "".join(lm.stream("", length=3, temperature=0)) == "\ufffd" * 3


def test_a_character_model_draws_length_ids(models):
    lm = models["char"]
    ids = list(lm.generate_ids("the", 12, 1.0, 0, 1.0, 4, 2))
    assert len(ids) == 12 and all(i.shape == (2,) for i in ids)
    assert [lm.vocab.decode(row) for row in torch.stack(ids, 1)] == [t[3:] for t in lm.generate("the", length=12, seed=4, num_samples=2)]


# evaluation: the same figures as before, from one pass over the text


def test_scored_positions_skip_a_word_with_nothing_before_it():
    assert scored_positions(" The cat", None) == [(5, "cat")]  # "The" follows a space with no text before it
    assert scored_positions("\nThe cat", None) == [(1, "The"), (5, "cat")]


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_evaluation_scores_the_same_positions_and_bits(models, kind):
    lm = models[kind]
    text = " " + (TINY_TEXT if kind == "char" else STORY)[-700:]  # what each model was trained on
    result = evaluate_text(lm, text, max_words=9)
    # the positions as first chosen, by copying the text before every word
    old = evenly([(p, w) for p, w in word_positions(text) if split_context(text[:p])[0]], 9)
    assert scored_positions(text, 9) == old and result["words_scored"] == 9
    # the bits: one model call over the ids of the pieces between the scored words' contexts
    cuts = [0, *(len(split_context(text[:p])[0]) for p, _ in old), len(text)]
    ids = torch.cat([torch.from_numpy(lm.vocab.encode(text[a:b])).long() for a, b in zip(cuts, cuts[1:])])
    with torch.no_grad():
        logits = lm.model(ids[None])[0][0]
    assert result["tokens"] == len(ids)
    assert result["bits"] == pytest.approx(F.cross_entropy(logits[:-1], ids[1:], reduction="sum").item() / math.log(2), rel=1e-5)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_word_search_is_exact_against_brute_force(models, kind):
    """Every word of the story, scored by the chain rule, ranks as the search says."""
    lm = models[kind]
    text = "A cat and a"
    words = {w for w in STORY.replace("\n", " ").split(" ") if w and all(map(is_word_char, w))}
    candidates = {w for w in words if lm.vocab.decode(lm.vocab.encode(" " + w)) == " " + w}  # not [UNK]
    brute = sorted(((word_probability(lm, text, w), w) for w in candidates), reverse=True)[:3]
    found = lm.predict_next_word(text, k=3)
    assert [p.word for p in found] == [w for _, w in brute]
    assert [p.probability for p in found] == pytest.approx([p for p, _ in brute], rel=1e-4)


def reference_top(model: WordTrigram, context: list[str], k: int) -> list[str]:
    """Stupid backoff as defined: each level scores its k commonest words not seen after a longer context."""
    levels = ([model.trigrams.get(tuple(context[-2:]))] if len(context) >= 2 else []) + ([model.bigrams.get(context[-1])] if context else [])
    scores, higher = {}, []
    for depth, counts in enumerate([*levels, model.unigrams]):
        if not counts:
            continue
        ranked = sorted(counts.items(), key=lambda item: -item[1])  # stable: ties as first seen
        for word, count in [(w, c) for w, c in ranked if not any(w in h for h in higher)][:k]:
            scores.setdefault(word, BACKOFF**depth * count / sum(counts.values()))
        higher.append(counts)
    return sorted(scores, key=scores.get, reverse=True)[:k]


def test_word_trigram_top_matches_its_definition():
    rng = random.Random(0)
    words = [rng.choice("abcdefgh") * rng.randint(1, 2) for _ in range(3000)]
    model = WordTrigram.fit(words)
    sizes = len(model.bigrams), len(model.trigrams)
    contexts = [words[i : i + 2] for i in range(0, 2900, 7)] + [["zz", "a"], ["a", "zz"], ["zz"], [], ["b"]]
    for context in contexts:
        for k in (1, 3, 5):
            assert model.top(context, k) == reference_top(model, context, k), (context, k)
    assert (len(model.bigrams), len(model.trigrams)) == sizes  # looking a context up adds none
