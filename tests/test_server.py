"""The HTTP API (chargen/server.py): starlette's TestClient against make_app for every answer and refusal, the
batch rows a client leaves behind when it goes away, and, in the slow tests, `chargen serve` in a process of its
own, spoken to by the unmodified official openai client."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install 'chargen[serve]')")

import anyio  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import chargen  # noqa: E402
from chargen.cli import cli  # noqa: E402
from chargen.cli import serving  # noqa: E402
from chargen.sample import SamplingOptions  # noqa: E402
from chargen.server import ServerSettings, make_app  # noqa: E402

PROMPT = "the quick"


@pytest.fixture(scope="module")
def sampler(trained):
    return chargen.load(trained)


def serving_app(sampler, **settings) -> TestClient:
    return TestClient(make_app({"tiny": sampler}, ServerSettings(**settings)))


@pytest.fixture(scope="module")
def client(sampler):
    with serving_app(sampler) as c:
        yield c


def complete(client: TestClient, **fields) -> dict:
    response = client.post("/v1/completions", json={"model": "tiny", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def greedy(sampler, prompt: str, length: int, stop: tuple[str, ...] = ()) -> str:
    """What the library writes after prompt at temperature 0."""
    return sampler.generate(prompt, length=length, temperature=0, stop=stop)[len(prompt):]


def refusal(response, status: int, param: str | None = None) -> str:
    """The error's message, once its status and OpenAI's shape are checked."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    return error["message"]


def streamed(response) -> tuple[list[dict], bool]:
    """The JSON chunks of a server-sent event stream, and whether it ended with [DONE]."""
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    done = data[-1] == "[DONE]"
    return [json.loads(d) for d in data if d != "[DONE]"], done


# --- answers -------------------------------------------------------------------------------------------------------


def test_models_are_listed_by_name(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [("tiny", "model", "chargen")]
    assert isinstance(body["data"][0]["created"], int)
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"
    assert "tiny" in refusal(client.get("/v1/models/other"), 404, "model")


def test_a_greedy_completion_is_the_librarys_text(client, sampler):
    body = complete(client, prompt=PROMPT, max_tokens=30, temperature=0)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "tiny"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice == {"text": greedy(sampler, PROMPT, 30), "index": 0, "logprobs": None, "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": len(PROMPT), "completion_tokens": 30, "total_tokens": len(PROMPT) + 30}


def test_max_tokens_defaults_to_sixteen_characters(client):
    (choice,) = complete(client, prompt=PROMPT, seed=1)["choices"]
    assert len(choice["text"]) == 16


def test_choices_run_over_prompts_then_samples(client, sampler):
    prompts = [PROMPT, "lazy"]
    body = complete(client, prompt=prompts, n=2, max_tokens=12, temperature=0)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == [greedy(sampler, p, 12) for p in prompts for _ in range(2)]
    assert body["usage"] == {"prompt_tokens": len(PROMPT) + 4, "completion_tokens": 48, "total_tokens": len(PROMPT) + 4 + 48}


def test_seeded_samples_repeat_and_differ_from_each_other(client):
    a = complete(client, prompt="the ", n=3, max_tokens=40, temperature=1.5, seed=5)
    b = complete(client, prompt="the ", n=3, max_tokens=40, temperature=1.5, seed=5)
    texts = [c["text"] for c in a["choices"]]
    assert texts == [c["text"] for c in b["choices"]] and len(set(texts)) > 1


def test_a_stop_sequence_ends_the_text_before_it(client, sampler):
    whole = greedy(sampler, PROMPT, 40)
    stop = whole[12:14]
    (choice,) = complete(client, prompt=PROMPT, max_tokens=40, temperature=0, stop=stop)["choices"]
    assert choice["text"] == greedy(sampler, PROMPT, 40, (stop,)) == whole[: whole.index(stop)]
    assert choice["finish_reason"] == "stop"
    (choice,) = complete(client, prompt=PROMPT, max_tokens=40, temperature=0, stop=["\x00never", "\x01"])["choices"]
    assert choice["text"] == whole and choice["finish_reason"] == "length"


def test_logprobs_are_openais_legacy_shape(client, sampler):
    (choice,) = complete(client, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)["choices"]
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(lp["tokens"]) == choice["text"] and lp["text_offset"] == list(range(6))
    assert all(len(top) == 3 for top in lp["top_logprobs"])
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert max(top, key=top.get) == token and top[token] == logprob  # greedy: the likeliest token is drawn
    pieces = [p for (p,) in sampler.pieces(PROMPT, SamplingOptions(length=6, temperature=0, logprobs=3))]
    assert lp["tokens"] == [p.token for p in pieces]
    assert lp["token_logprobs"] == pytest.approx([p.logprob for p in pieces], abs=1e-5)


def test_echo_puts_the_prompt_before_the_text(client, sampler):
    (choice,) = complete(client, prompt=PROMPT, max_tokens=10, temperature=0, echo=True)["choices"]
    assert choice["text"] == sampler.generate(PROMPT, length=10, temperature=0)
    body = complete(client, prompt=PROMPT, max_tokens=0, echo=True)
    assert body["choices"][0]["text"] == PROMPT and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 0


def test_a_streamed_completion_joins_to_the_plain_one(client, sampler):
    fields = {"model": "tiny", "prompt": [PROMPT, "lazy"], "n": 2, "max_tokens": 25, "temperature": 0, "echo": True}
    plain = complete(client, **{k: v for k, v in fields.items() if k != "model"})
    with client.stream("POST", "/v1/completions", json=fields | {"stream": True, "stream_options": {"include_usage": True}}) as response:
        chunks, done = streamed(response)
    assert done
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    texts, reasons = {}, {}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        assert choice["index"] not in reasons  # nothing follows a choice's last chunk
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        if choice["finish_reason"] is not None:
            reasons[choice["index"]] = choice["finish_reason"]
    assert texts == {c["index"]: c["text"] for c in plain["choices"]}
    assert reasons == {c["index"]: "length" for c in plain["choices"]}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_a_stream_of_nothing_still_finishes_every_choice(client):
    with client.stream("POST", "/v1/completions", json={"prompt": "the", "n": 2, "max_tokens": 0, "stream": True}) as response:
        chunks, done = streamed(response)
    assert done and [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks] == [(0, "length"), (1, "length")]


def test_next_word_is_the_librarys(client, sampler):
    body = client.post("/v1/next-word", json={"model": "tiny", "prompt": "the quick brown", "k": 3}).json()
    expected = [{"word": p.word, "probability": p.probability} for p in sampler.predict_next_word("the quick brown", 3)]
    assert body == {"object": "next_word", "model": "tiny", "words": expected}
    assert "k must be at least 1" in refusal(client.post("/v1/next-word", json={"prompt": "the", "k": 0}), 400, "k")
    assert "limit" in refusal(client.post("/v1/next-word", json={"prompt": "the", "k": 10_000}), 400, "k")
    assert "never saw" in refusal(client.post("/v1/next-word", json={"prompt": "QQ"}), 400, "prompt")


def test_the_playground_page_is_html(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    shipped = Path(chargen.__file__).parent / "playground.html"
    if shipped.exists():
        assert response.text == shipped.read_text(encoding="utf-8")
    else:
        assert "<html" in response.text


def test_the_model_may_be_left_out_when_only_one_is_served(client):
    response = client.post("/v1/completions", json={"prompt": "the", "max_tokens": 3})
    assert response.status_code == 200 and response.json()["model"] == "tiny"


# --- refusals ------------------------------------------------------------------------------------------------------


BAD_FIELDS = [
    ({"max_tokens": "10"}, "max_tokens", "max_tokens must be a whole number"),
    ({"max_tokens": -1}, "max_tokens", "max_tokens must be zero or positive"),
    ({"max_tokens": 4097}, "max_tokens", "server's limit of 4,096"),
    ({"temperature": -1}, "temperature", "temperature must be zero (greedy) or positive"),
    ({"temperature": "hot"}, "temperature", "temperature must be a number"),
    ({"top_p": 0}, "top_p", "top_p must be in (0, 1]"),
    ({"top_k": -2}, "top_k", "top_k must be zero (off) or positive"),
    ({"n": 0}, "n", "n must be between 1 and"),
    ({"n": 17}, "n", "server's limit of 16"),
    ({"seed": -1}, "seed", "seed must be a whole number from 0"),
    ({"stop": 5}, "stop", "stop must be a string or a list of strings"),
    ({"stop": [""]}, "stop", "stop must be at most 16 texts"),
    ({"logprobs": 21}, "logprobs", "logprobs must be between 0 and 20"),
    ({"logprobs": True}, "logprobs", "logprobs must be a whole number"),
    ({"prompt": 5}, "prompt", "prompt must be a string or a non-empty list"),
    ({"prompt": []}, "prompt", "prompt must be a string or a non-empty list"),
    ({"prompt": [1, 2]}, "prompt", "token ids are not taken"),
    ({"prompt": ["the"] * 17}, "prompt", "server's limit of 16"),
    ({"prompt": "QZ"}, "prompt", "the prompt has characters the model never saw: 'Q', 'Z'"),
    ({"prompt": ["the", "Q"]}, "prompt", "prompt 1: the prompt has characters the model never saw: 'Q'"),
    ({"echo": "yes"}, "echo", "echo must be true or false"),
    ({"echo": True, "logprobs": 2}, "echo", "echo with logprobs is not supported"),
    ({"stream": 1}, "stream", "stream must be true or false"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "frequency_penalty is not supported"),
    ({"logit_bias": {"5": 1}}, "logit_bias", "logit_bias is not supported"),
    ({"best_of": 3}, "best_of", "best_of is not supported"),
    ({"suffix": "end"}, "suffix", "suffix is not supported"),
    ({"model": 7}, "model", "model must be a string"),
]


@pytest.mark.parametrize(("fields", "param", "message"), BAD_FIELDS, ids=[next(iter(f)) + "-" + str(i) for i, (f, _, _) in enumerate(BAD_FIELDS)])
def test_a_bad_field_is_refused_by_name(client, fields, param, message):
    body = {"model": "tiny", "prompt": "the", **fields}
    assert message in refusal(client.post("/v1/completions", json=body), 400, param)


def test_fields_at_their_defaults_and_unknown_fields_are_taken(client):
    body = {"prompt": "the", "max_tokens": 3, "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {}, "best_of": 1,
            "user": "someone", "top_k": 5, "temperature": None, "whatever": [1, 2]}
    assert len(complete(client, **body)["choices"][0]["text"]) == 3


def test_an_unknown_model_is_404_naming_those_there_are(client):
    message = refusal(client.post("/v1/completions", json={"model": "gpt-4", "prompt": "x"}), 404, "model")
    assert "gpt-4" in message and "tiny" in message


@pytest.mark.parametrize(("content", "message"), [(b"{", "not valid JSON"), (b"[1]", "must be a JSON object"), (b"", "the body is empty"),
                                                 (b"\xff\xfe\x00", "not valid JSON"), (b"[" * 100_000 + b"]" * 100_000, "not valid JSON")])
def test_a_body_that_is_no_json_object_is_refused(client, content, message):
    assert message in refusal(client.post("/v1/completions", content=content), 400)


def test_a_prompt_of_no_valid_text_is_refused(client):
    body = b'{"prompt": "the \\ud800"}'  # JSON may spell a lone surrogate, which no UTF-8 text holds
    assert "the prompt is not valid text" in refusal(client.post("/v1/completions", content=body), 400, "prompt")
    assert "does not exist" in refusal(client.post("/v1/completions", content=b'{"model": "\\udc80"}'), 404, "model")  # quoted, not a 500


def test_unknown_routes_and_methods_answer_in_the_same_shape(client):
    assert "no such route" in refusal(client.get("/v2/engines"), 404)
    assert "not allowed" in refusal(client.get("/v1/completions"), 405)
    assert "not allowed" in refusal(client.post("/v1/models"), 405)


def test_the_server_stays_up_after_bad_requests(client, sampler):
    for content in (b"{", b'{"prompt": 5}', b'{"max_tokens": 1e400}', b'{"temperature": NaN}'):
        assert client.post("/v1/completions", content=content).status_code == 400
    assert complete(client, prompt=PROMPT, max_tokens=5, temperature=0)["choices"][0]["text"] == greedy(sampler, PROMPT, 5)


def test_a_prompt_over_the_servers_limit_is_refused(sampler):
    with serving_app(sampler, max_prompt_chars=10) as client:
        assert "more than the server's limit of 10" in refusal(client.post("/v1/completions", json={"prompt": "the " * 3}), 400, "prompt")


def test_an_api_key_is_asked_of_every_v1_request(sampler):
    with serving_app(sampler, api_key="sekret") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic sekret"}, {"Authorization": "Bearer sekret-and-more"}):
            response = client.get("/v1/models", headers=headers)
            assert "API key" in refusal(response, 401) and response.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/completions", json={"prompt": "the"}).status_code == 401
        assert client.post("/v1/next-word", json={"prompt": "the"}).status_code == 401
        assert client.get("/health").status_code == 401
        good = {"Authorization": "Bearer sekret"}
        assert client.get("/v1/models", headers=good).status_code == 200
        assert client.post("/v1/completions", json={"prompt": "the", "max_tokens": 2}, headers=good).status_code == 200
        assert client.get("/").status_code == 200  # the page itself asks for the key


def test_a_body_over_the_limit_is_refused_before_it_is_read(sampler):
    with serving_app(sampler, max_body_bytes=1000) as client:
        big = json.dumps({"prompt": "the " * 500}).encode()
        assert "1,000 bytes" in refusal(client.post("/v1/completions", content=big), 413)

        def chunks():  # no Content-Length: the body is counted as it comes
            for _ in range(20):
                yield b" " * 100

        assert "1,000 bytes" in refusal(client.post("/v1/completions", content=chunks()), 413)
        assert client.post("/v1/completions", json={"prompt": "the", "max_tokens": 2}).status_code == 200


def test_settings_are_checked_when_made():
    with pytest.raises(chargen.OptionError, match="max-tokens must be at least 1"):
        ServerSettings(max_tokens=0)
    with pytest.raises(chargen.OptionError, match="api-key must not be empty"):
        ServerSettings(api_key="")


# --- a client that goes away ---------------------------------------------------------------------------------------


def call(app, body: dict, leave_when) -> tuple[list[dict], int]:
    """The app as uvicorn calls it, its lifespan's batches open, from a client that goes away once leave_when(messages
    sent, the model's batch) is true: the messages sent, and the rows left in the batch a moment after."""
    payload = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}
    sent: list[dict] = []
    api = app.state.api

    async def main() -> int:
        body_read = False
        api.open()  # the lifespan's part
        batcher = api.batchers["tiny"]

        async def receive() -> dict:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": payload, "more_body": False}
            while not leave_when(sent, batcher):
                await anyio.sleep(0.01)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        try:
            with anyio.fail_after(30):
                await app(scope, receive, send)
            deadline = time.monotonic() + 5
            while batcher.rows and time.monotonic() < deadline:
                await anyio.sleep(0.01)
            return batcher.rows
        finally:
            await api.close()

    rows = anyio.run(main)
    return sent, rows


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_takes_its_rows_out_of_the_batch(sampler, stream):
    app = make_app({"tiny": sampler}, ServerSettings(max_tokens=10**6))
    body = {"prompt": "the", "max_tokens": 10**6, "n": 2, "stream": stream}
    if stream:  # away once some text has come
        sent, rows = call(app, body, lambda sent, batcher: any(m.get("body") for m in sent))
    else:  # away once its rows are in the batch
        sent, rows = call(app, body, lambda sent, batcher: batcher.rows == 2)
    assert not any(m["type"] == "http.response.body" and m.get("more_body") is False and m.get("body", b"").endswith(b"[DONE]\n\n") for m in sent)
    assert rows == 0


# --- the command line ----------------------------------------------------------------------------------------------


def test_two_checkpoints_of_one_name_are_a_one_line_error(trained):
    result = CliRunner().invoke(cli, ["serve", "-c", str(trained), "-c", str(trained)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "folder name 'model'" in result.output


def test_without_the_serve_extra_serve_says_how_to_install_it(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    result = CliRunner().invoke(cli, ["serve", "-c", str(trained)])
    assert result.exit_code == 1 and result.output == "Error: chargen serve needs the serve extra: pip install 'chargen[serve]'\n"


class Listener:
    def __init__(self, host: str):
        self.host = host

    def getsockname(self):
        return (self.host, 8000)


def test_serve_says_who_can_reach_it(capsys):
    serving.tell_where(Listener("127.0.0.1"), {"tiny": None}, has_key=False)
    assert "reachable only from this machine" in capsys.readouterr().err
    serving.tell_where(Listener("0.0.0.0"), {"tiny": None}, has_key=False)
    err = capsys.readouterr().err
    assert "warning: the API has no authentication" in err and "http://0.0.0.0:8000/v1" in err
    serving.tell_where(Listener("0.0.0.0"), {"tiny": None}, has_key=True)
    assert "warning" not in capsys.readouterr().err


# --- slow: `chargen serve` and the official openai client ---------------------------------------------------------


def start_server(trained: Path, log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`chargen serve` on a free loopback port (--port 0): the process and its base URL, once it answers."""
    command = [sys.executable, "-m", "chargen", "serve", "-c", str(trained), "--host", "127.0.0.1", "--port", "0", *options]
    with open(log, "w") as err:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", log.read_text())
            url = found and found.group(1)
            assert process.poll() is None, f"chargen serve exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"chargen serve did not say where it listens: {log.read_text()}"
            time.sleep(0.1)
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as response:
                    if response.status == 200:
                        return process, url
            except OSError:
                assert time.monotonic() < deadline, f"chargen serve does not answer: {log.read_text()}"
                time.sleep(0.1)
    except BaseException:
        stop(process)
        raise


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    process, url = start_server(trained, log, "--max-tokens", "10000000")
    try:
        yield url
    finally:
        stop(process)


def rows(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return sum(m["rows"] for m in json.loads(response.read())["models"].values())


@pytest.mark.slow
def test_the_openai_client_completes_plain_and_streamed(served, trained, sampler):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="anything", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [trained.name]
    plain = client.completions.create(model=trained.name, prompt=PROMPT, max_tokens=40, temperature=0)
    assert plain.choices[0].text == greedy(sampler, PROMPT, 40) and plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 40
    chunks = list(client.completions.create(model=trained.name, prompt=PROMPT, max_tokens=40, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)
    with pytest.raises(openai.BadRequestError, match="never saw"):
        client.completions.create(model=trained.name, prompt="QQQ")


@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_frees_its_rows(served, trained):
    import http.client

    port = int(served.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"model": trained.name, "prompt": "the", "max_tokens": 10_000_000, "stream": True})
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and response.readline().startswith(b"data: ")
        assert rows(served) == 1  # ten million characters to go
        response.close()
    finally:
        connection.close()
    deadline = time.monotonic() + 10
    while rows(served) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows(served) == 0
    with urllib.request.urlopen(urllib.request.Request(f"{served}/v1/completions", json.dumps({"prompt": "the", "max_tokens": 5}).encode(),
                                                       {"Content-Type": "application/json"}), timeout=30) as after:
        assert len(json.loads(after.read())["choices"][0]["text"]) == 5


@pytest.mark.slow
def test_a_reader_that_stops_reading_slows_nobody(served, trained):
    """One client asks for a long stream and reads none of it, so its socket fills and the server's sends to it wait;
    another's completion goes on and ends meanwhile, and the first still gets all of its text when it reads at last."""
    import socket

    port = int(served.rsplit(":", 1)[1])
    body = json.dumps({"model": trained.name, "prompt": "the", "max_tokens": 100_000, "stream": True}).encode()
    stalled = socket.create_connection(("127.0.0.1", port), timeout=60)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        stalled.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        b"Connection: close\r\n\r\n%s" % (len(body), body))
        time.sleep(1)  # its stream is under way, unread
        began = time.monotonic()
        with urllib.request.urlopen(urllib.request.Request(f"{served}/v1/completions", json.dumps({"prompt": "the", "max_tokens": 2000}).encode(),
                                                           {"Content-Type": "application/json"}), timeout=60) as other:
            assert len(json.loads(other.read())["choices"][0]["text"]) == 2000
        assert time.monotonic() - began < 30
        received = bytearray()
        while chunk := stalled.recv(1 << 16):
            received += chunk
        assert b"data: [DONE]" in received[-64:]
        texts = re.findall(rb'"text":"((?:[^"\\]|\\.)*)"', bytes(received))
        assert sum(len(json.loads(b"\"" + t + b"\"")) for t in texts) == 100_000
    finally:
        stalled.close()


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(trained, tmp_path):
    log = tmp_path / "stderr.txt"
    import http.client

    process, url = start_server(trained, log, "--max-tokens", "10000000")
    connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
    try:
        assert "reachable only from this machine" in log.read_text()
        body = json.dumps({"prompt": "the", "max_tokens": 10_000_000, "stream": True})
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.readline().startswith(b"data: ")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        rest = response.read()  # the stream under way is ended, and says why
        assert b'"code":"server_stopping"' in rest and not rest.endswith(b"[DONE]\n\n")
        assert process.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - started < serving.GRACE_SECONDS  # not cut off once the grace period is over
        assert "Traceback" not in log.read_text()
    finally:
        connection.close()
        stop(process)
