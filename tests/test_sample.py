import pytest
import torch

import chargen
from chargen import ChargenError
from chargen.sample import pick


def test_seeded_sampling_is_reproducible(trained):
    lm = chargen.load(trained)
    a = lm.generate("the ", length=60, seed=7)
    b = lm.generate("the ", length=60, seed=7)
    c = lm.generate("the ", length=60, seed=8)
    assert a == b and a != c
    assert a.startswith("the ") and len(a) == 4 + 60


def test_stream_matches_generate(trained):
    lm = chargen.load(trained)
    assert "".join(lm.stream("the ", length=40, seed=3)) == lm.generate("the ", length=40, seed=3)


def test_greedy_follows_the_argmax(trained):
    lm = chargen.load(trained)
    text = lm.generate("the quick", length=20, temperature=0)
    assert text == lm.generate("the quick", length=20, temperature=0, seed=123)
    # each greedy character is the model's most probable one given everything before it, read after a newline
    ids = torch.from_numpy(lm.vocab.encode("\n" + text)).long()[None]
    with torch.no_grad():
        logits, _ = lm.model(ids)
    expected = lm.vocab.decode(logits[0, len("\nthe quick") - 1 : -1].argmax(-1))
    assert text[len("the quick"):] == expected


def test_every_prompt_is_read_after_a_newline(trained):
    lm = chargen.load(trained)
    assert lm.prompt_ids("the").tolist() == lm.vocab.encode("\nthe").tolist()
    assert lm.prompt_ids("").tolist() == lm.vocab.encode("\n").tolist()
    with torch.no_grad():
        after_newline = lm.model(torch.from_numpy(lm.vocab.encode("\nthe qu")).long()[None])[0][0, -1].softmax(-1)
        from_zero = lm.model(torch.from_numpy(lm.vocab.encode("the qu")).long()[None])[0][0, -1].softmax(-1)
    probs = dict(lm.next_token_probs("the qu"))
    assert [probs[c] for c in lm.vocab.token_texts] == pytest.approx(after_newline.tolist(), abs=1e-6)
    assert not torch.allclose(after_newline, from_zero)  # the newline makes a difference the test can see


def test_a_vocabulary_without_newlines_reads_the_prompt_alone():
    vocab = chargen.Corpus.from_text("abcab" * 20).vocab
    lm = chargen.Sampler(chargen.LanguageModel(chargen.ModelConfig(vocab_size=len(vocab), hidden=8, layers=1)), vocab)
    assert lm.prompt_ids("ab").tolist() == vocab.encode("ab").tolist()
    assert lm.prompt_ids("").tolist() == [0]
    assert len(lm.generate("", length=5, seed=0)) == 5


def test_num_samples_are_a_batch_of_independent_streams(trained):
    lm = chargen.load(trained)
    texts = lm.generate("the ", length=50, seed=1, num_samples=4, temperature=1.5)
    assert len(texts) == 4 and all(t.startswith("the ") and len(t) == 54 for t in texts)
    assert len(set(texts)) > 1


def test_empty_prompt_and_zero_length(trained):
    lm = chargen.load(trained)
    assert len(lm.generate("", length=30, seed=0)) == 30
    assert lm.generate("the", length=0) == "the"


def test_unknown_prompt_characters_are_named(trained):
    with pytest.raises(ChargenError, match="'Z'"):
        chargen.load(trained).generate("Zebra", length=5)


def test_top_k_and_top_p_filter():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = lambda **kw: {int(pick(logits.expand(400, -1), 1.0, generator=g, **kw)[i]) for i in range(400)}
    assert draws(top_k=1, top_p=1.0) == {0}
    assert draws(top_k=2, top_p=1.0) == {0, 1}
    assert draws(top_k=0, top_p=0.5) == {0}
    assert draws(top_k=0, top_p=0.7) == {0, 1}
    assert draws(top_k=0, top_p=0.9) == {0, 1, 2}
    assert draws(top_k=0, top_p=1.0) == {0, 1, 2, 3}


def test_a_prompt_from_a_file_or_standard_input_is_the_same_prompt(tmp_path, trained):
    from click.testing import CliRunner

    from chargen.cli import cli

    prompt = "the quick brown fox\njumps over"
    (tmp_path / "prime.txt").write_bytes(("\ufeff" + prompt.replace("\n", "\r\n")).encode())  # a BOM and CRLF, as a text editor may save it
    common = ["sample", "-c", str(trained), "-n", "30", "-t", "0", "--precision", "fp32"]
    runner = CliRunner()
    given = runner.invoke(cli, [*common, "--prompt", prompt])
    from_file = runner.invoke(cli, [*common, "--prompt-file", str(tmp_path / "prime.txt")])
    from_stdin = runner.invoke(cli, [*common, "--prompt-file", "-"], input=prompt.encode())
    assert given.exit_code == from_file.exit_code == from_stdin.exit_code == 0, from_file.output
    assert given.stdout.startswith(prompt) and given.stdout == from_file.stdout == from_stdin.stdout
    both = runner.invoke(cli, [*common, "--prompt", "x", "--prompt-file", str(tmp_path / "prime.txt")])
    assert both.exit_code == 2 and "give --prompt or --prompt-file, not both" in both.output
    missing = runner.invoke(cli, [*common, "--prompt-file", str(tmp_path / "nothing.txt")])
    assert missing.exit_code == 1 and "no such file" in missing.output
