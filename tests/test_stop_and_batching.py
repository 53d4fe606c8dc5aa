"""Stop sequences and per-token log probabilities in the library and on the command line, and the Batcher that writes
many requests in one batched step per token."""
import json
import math

import pytest
from click.testing import CliRunner

import chargen
from chargen.batching import Batcher, Request
from chargen.cli import cli
from chargen.sample import SamplingOptions, StopText


@pytest.mark.parametrize(
    "pieces, stops, expected",
    [
        (["Hello\n", "world E", "N", "d more E", "ND tail"], ("\n\n", "END"), "Hello\nworld ENd more "),
        (["ab", "c"], ("bc",), "a"),
        (["a\n", "\n", "b"], ("\n\n",), "a"),
        (["abc"], ("x",), "abc"),
    ],
)
def test_stop_text_cuts_before_the_first_stop_and_holds_back_what_may_start_one(pieces, stops, expected):
    cut = StopText(stops)
    written = "".join(cut.feed(p) for p in pieces)
    assert written + ("" if cut.stopped else cut.flush()) == expected


def test_generate_ends_just_before_a_stop_sequence(trained):
    lm = chargen.load(trained, precision="fp32")
    whole = lm.generate("the ", length=300, temperature=0)
    stop = whole[10:12]  # a piece of text it writes anyway
    cut = lm.generate("the ", length=300, temperature=0, stop=(stop,))
    assert cut == whole[: whole.index(stop, len("the "))] and stop not in cut[len("the "):]
    assert "".join(lm.stream("the ", length=300, temperature=0, stop=(stop,))) == cut
    samples = lm.generate("the ", length=300, temperature=1.0, seed=3, num_samples=3, stop=("e",))
    assert all("e" not in s[len("the "):] for s in samples)


def test_pieces_carry_log_probabilities_of_the_token_and_the_likeliest(trained):
    lm = chargen.load(trained, precision="fp32")
    steps = list(lm.pieces("the ", SamplingOptions(length=20, temperature=0, logprobs=3)))
    assert len(steps) == 20
    for (piece,) in steps:
        assert len(piece.top) == 3 and piece.top[0][1] >= piece.top[1][1] >= piece.top[2][1]
        assert piece.token == piece.text and piece.logprob == pytest.approx(piece.top[0][1])  # greedy: the likeliest
        assert sum(math.exp(lp) for _, lp in piece.top) <= 1 + 1e-6
    first = steps[0][0]
    probs = dict(lm.next_token_probs("the "))
    assert math.exp(first.logprob) == pytest.approx(probs[first.token], rel=1e-4)


def test_stop_and_logprobs_are_checked_like_other_options():
    for bad, message in [(dict(stop=("",)), "stop must be"), (dict(stop=tuple("abcdefghijklmnopq")), "at most 16"), (dict(logprobs=21), "logprobs")]:
        with pytest.raises(chargen.OptionError, match=message):
            SamplingOptions(**bad)


def test_the_command_line_takes_stop_with_escapes_and_prints_logprobs_as_json_lines(trained):
    run = CliRunner().invoke
    drawn = ["sample", "-c", str(trained), "-p", "the ", "-n", "300", "-t", "1", "--seed", "1", "--precision", "fp32"]
    whole = run(cli, drawn).output
    assert "\n" in whole[4:-1]  # it writes a newline somewhere
    cut = run(cli, [*drawn, "--stop", "\\n"])
    assert cut.exit_code == 0 and cut.output == whole[: whole.index("\n", 4)] + "\n"
    lines = run(cli, ["sample", "-c", str(trained), "-p", "the ", "-n", "5", "-t", "0", "--logprobs", "2"]).output.splitlines()
    assert len(lines) == 5 and all(len(json.loads(line)["top"]) == 2 for line in lines)
    bad = run(cli, ["sample", "-c", str(trained), "--logprobs", "2", "--num-samples", "2"])
    assert bad.exit_code == 2 and "--logprobs" in bad.output


def drain(batcher: Batcher) -> None:
    while batcher.busy:
        batcher.step()


def test_a_batch_writes_what_the_sampler_writes_for_each_seeded_request(trained):
    lm = chargen.load(trained, precision="fp32")
    batcher, written = Batcher(lm), {}

    def sink_of(name):
        def sink(choice, piece):
            if piece is not None:
                written.setdefault((name, choice), []).append(piece.text)
        return sink

    options = [SamplingOptions(length=60, temperature=0.9, seed=s, num_samples=2) for s in (1, 2)]
    batcher.submit(Request("the ", options[0], sink_of("a")))
    batcher.step()
    batcher.step()  # the second request joins a batch already under way
    batcher.submit(Request("a quick ", options[1], sink_of("b")))
    drain(batcher)
    for name, prompt, o in (("a", "the ", options[0]), ("b", "a quick ", options[1])):
        expected = lm.generate(prompt, length=60, temperature=0.9, seed=o.seed, num_samples=2)
        assert [prompt + "".join(written[(name, i)]) for i in range(2)] == expected
    assert batcher.rows == 0


def test_a_cancelled_request_leaves_the_batch_and_the_rest_go_on(trained):
    batcher, done = Batcher(chargen.load(trained)), []
    keep = batcher.submit(Request("the ", SamplingOptions(length=50), lambda c, p: p is None and done.append("keep")))
    gone = batcher.submit(Request("the ", SamplingOptions(length=10**6, num_samples=3), lambda c, p: None))
    batcher.step()
    assert batcher.rows == 1  # one request joins a step: a long prompt's reading holds up the rest the less
    batcher.step()
    assert batcher.rows == 4
    gone.cancel()
    batcher.step()
    assert batcher.rows == 1
    drain(batcher)
    assert done == ["keep"] and keep.cancelled.is_set() is False


def test_at_most_max_streams_rows_the_rest_wait(trained):
    batcher = Batcher(chargen.load(trained), max_streams=2)
    for _ in range(3):
        batcher.submit(Request("the ", SamplingOptions(length=5), lambda c, p: None))
    batcher.step()
    batcher.step()
    batcher.step()
    assert batcher.rows == 2 and len(batcher.waiting) == 1
    drain(batcher)
    assert batcher.rows == 0


def test_finish_tells_every_choice_it_is_done_waiting_or_writing(trained):
    batcher, ended = Batcher(chargen.load(trained)), []
    batcher.submit(Request("the ", SamplingOptions(length=10**6, num_samples=2), lambda c, p: p is None and ended.append(("a", c))))
    batcher.submit(Request("the ", SamplingOptions(length=10**6, num_samples=3), lambda c, p: p is None and ended.append(("b", c))))
    batcher.step()
    batcher.finish()
    assert sorted(ended) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)] and not batcher.busy


def test_a_long_stop_costs_little_on_every_token():
    stop = "e" * 99 + "X"
    cut = StopText((stop,) * 16)
    for _ in range(2000):  # a text that keeps matching the stop's beginning: each token tests one beginning per stop
        assert cut.feed("e") in ("", "e")
    assert len(cut.held) == 99 and not cut.stopped
