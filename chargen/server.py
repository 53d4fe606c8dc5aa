"""`chargen serve`: an OpenAI-compatible HTTP API over the library, a thin layer on Sampler and Batcher.

    GET  /v1/models         the checkpoints served, each a model named by its folder
    POST /v1/completions    OpenAI's (legacy) completions; streamed as server-sent events with "stream": true
    POST /v1/next-word      the k most probable next words, as `chargen predict` gives them
    GET  /health            how many rows each model's batch is writing
    GET  /                  the playground page

A request is checked whole before anything is drawn, with the library's own checks (SamplingOptions, check_text,
the vocabulary's encode), so its ranges are the command line's; a refusal is OpenAI's error shape. Every
completion of a model is written by that model's one Batcher: each choice is a row of one batched step per token;
the batch, run in turns by a task of the event loop (Driven), hands its pieces to each job's mailbox. A client that goes away cancels its rows;
a server that stops ends the completions under way with an error (Api.interrupt) rather than cut them off.

max_tokens counts characters for every tokenizer, as --length does; usage counts tokens as the model's vocabulary
encodes the texts. logprobs 0, like null, asks for none; echo with logprobs is refused (only generated tokens have
log probabilities here).

Fields the library cannot honour (frequency_penalty, presence_penalty, logit_bias, suffix, best_of) are refused
unless they ask for the default, so that no client silently gets other text than it asked for; fields chargen
does not know at all (user, stream_options other than include_usage, ...) are ignored.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import importlib.resources
import json
import math
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .batching import Batcher
from .batching import Request as BatchRequest
from .errors import ChargenError, OptionError, check_types, first_line
from .sample import Likeliest, Piece, Sampler, SamplingOptions, check_text

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for a completion
MAX_WORDS = 100  # next words one request may ask for
LOWEST_LOGPROB = -1e30  # stands for a log probability of -inf, which JSON cannot hold
STOPPING = "the server is stopping: this completion was cut short"


@dataclass
class ServerSettings:
    """What one request may ask of the server, and the key it must bring: checked when made, like SamplingOptions."""

    api_key: str | None = None  # None: no authentication
    max_tokens: int = 4096  # characters one choice may ask for
    max_prompt_chars: int = 100_000
    max_n: int = 16  # choices per prompt
    max_prompts: int = 16
    max_body_bytes: int = 1 << 20
    max_streams: int = 256  # rows each model's batch writes at once; more wait their turn

    def __post_init__(self) -> None:
        check_types(self)
        if self.api_key is not None and not self.api_key:
            raise OptionError("api-key must not be empty: leave it out to serve without authentication")
        for name in ("max_tokens", "max_prompt_chars", "max_n", "max_prompts", "max_body_bytes", "max_streams"):
            if getattr(self, name) < 1:
                raise OptionError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")


# --- refusals ------------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A request the server refuses, as OpenAI words it: the status says whose fault it is, param which field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self, headers: dict[str, str] | None = None) -> Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return json_response(body, self.status, headers)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Compact JSON in UTF-8; allow_nan=False, since NaN and Infinity are not JSON any client can read."""
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(text.encode("utf-8"), status, headers, media_type="application/json")


def shown(value: object) -> str:
    """A value as the client sent it, cut short: what a refusal quotes (a lone surrogate, which no UTF-8 holds, escaped)."""
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 80 else text[:77] + "..."


async def refused(request: Request, error: ApiError) -> Response:
    """A refusal in OpenAI's shape; a 401 also says which scheme the key goes with."""
    return error.response({"WWW-Authenticate": "Bearer"} if error.status == 401 else None)


async def http_error(request: Request, error: HTTPException) -> Response:
    """Starlette's own 404 and 405 in the same JSON shape as every other refusal."""
    where = f"{request.method} {request.url.path[:200]}"
    if error.status_code == 404:
        message = f"no such route: {where} (the API is under /v1: /v1/models, /v1/completions, /v1/next-word)"
    elif error.status_code == 405:
        allowed = {name.lower(): value for name, value in (error.headers or {}).items()}.get("allow", "other methods")
        message = f"{where} is not allowed: this route takes {allowed}"
    else:
        message = str(error.detail)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
    return ApiError(error.status_code, message, code=code).response(error.headers)


async def server_failed(request: Request, error: Exception) -> Response:
    """A bug, not the client's fault: said in the same shape, the traceback left to the server's log."""
    return ApiError(500, "the server failed on this request; its log says why", kind="server_error").response()


# --- reading a request ---------------------------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object; one larger than limit is refused before it is read whole."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, f"Content-Length is not a number: {shown(length)}") from None
        if declared > limit:
            raise too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:  # a body sent in chunks, or longer than it said
                raise too_large(limit)
    except ClientDisconnect:
        raise ApiError(400, "the client went away before its request was read") from None
    if not body.strip():
        raise ApiError(400, "the body is empty: send a JSON object")
    try:
        value = json.loads(bytes(body))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(value).__name__}")
    return value


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the body is larger than the server's limit of {limit:,} bytes", code="request_too_large")


def field_of(body: dict, name: str, kind: type | tuple[type, ...], what: str, default: object = None) -> object:
    """body[name], or default when it is missing or null; a value of another type is refused, naming the field."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ApiError(400, f"{name} must be {what}, not {shown(value)}", name)
    return value


API_NAMES = {"length": "max_tokens", "num-samples": "n", "top-k": "top_k", "top-p": "top_p"}  # the library's names -> the API's
SAMPLING_FIELDS = {"max_tokens", "temperature", "top_k", "top_p", "n", "seed", "stop", "logprobs"}


def sampling_options(**values: object) -> SamplingOptions:
    """SamplingOptions, whose checks are the command line's, with its refusals in the API's field names."""
    try:
        return SamplingOptions(**values)
    except OptionError as e:
        message = re.sub(r"\b(length|num-samples|top-k|top-p)\b", lambda m: API_NAMES[m.group(1)], str(e))
        param = message.split(" ", 1)[0]
        raise ApiError(400, message, param if param in SAMPLING_FIELDS else None) from None


def refuse_unsupported(body: dict, n: int) -> None:
    """Fields the library cannot honour are refused unless they ask for the default: no client silently gets other text."""
    defaults = {"frequency_penalty": (0,), "presence_penalty": (0,), "logit_bias": ({},), "suffix": ("",), "best_of": (1, n)}
    for name, plain in defaults.items():
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or value not in plain):
            raise ApiError(400, f"{name} is not supported by chargen: leave it out, or send {shown(plain[0])}", name, "unsupported_parameter")


def checked_prompt(text: object, limit: int, sampler: Sampler, what: str = "prompt") -> int:
    """A prompt the model can read, as Batcher.submit requires: its length in tokens (the newline read first not counted)."""
    if not isinstance(text, str):
        raise ApiError(400, f"{what} must be a string, not {shown(text)}", "prompt")
    if len(text) > limit:
        raise ApiError(400, f"{what} is {len(text):,} characters, more than the server's limit of {limit:,}", "prompt")
    try:
        ids = sampler.prompt_ids(check_text(text, what))
    except ChargenError as e:  # the vocabulary names the characters the model never saw
        raise ApiError(400, str(e) if what == "prompt" else f"{what}: {e}", "prompt") from None
    return len(ids) - len(sampler.start_ids) if text else 0


@dataclass
class Completion:
    """A completion request, checked whole: nothing is drawn for a request that fails any check."""

    model: str
    prompts: list[str]
    prompt_tokens: int
    options: SamplingOptions  # length is max_tokens; num_samples is n
    echo: bool
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage


# --- writing a completion ------------------------------------------------------------------------------------------


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else LOWEST_LOGPROB


@dataclass
class Choice:
    """One choice as it is written: what is not yet sent (its text and the log probabilities of its tokens),
    all it has written, and whether it is done."""

    index: int
    max_chars: int
    with_logprobs: bool
    offset: int = 0  # characters of the choice's text so far, an echoed prompt included
    written: list[str] = field(default_factory=list)  # the new text, for the usage
    chars: int = 0  # characters of the new text
    unsent: list[str] = field(default_factory=list)
    tokens: list[tuple[str, float, dict[str, float], int]] = field(default_factory=list)  # unsent: token, logprob, top, offset
    done: bool = False

    def echo(self, prompt: str) -> None:
        self.unsent.append(prompt)
        self.offset += len(prompt)

    def take(self, piece: Piece | None) -> None:
        """What the batch sent: a drawn token's piece, or None when the choice is done."""
        if piece is None:
            self.done = True
            return
        if self.with_logprobs and piece.token is not None:
            self.tokens.append((piece.token, finite(piece.logprob), {t: finite(v) for t, v in piece.top or []}, self.offset))
        self.unsent.append(piece.text)
        self.written.append(piece.text)
        self.chars += len(piece.text)
        self.offset += len(piece.text)

    @property
    def unsent_anything(self) -> bool:
        return any(self.unsent) or bool(self.tokens)

    @property
    def finish_reason(self) -> str | None:
        """A choice ends short of max_tokens characters only when a stop sequence ended it."""
        if not self.done:
            return None
        return "stop" if self.chars < self.max_chars else "length"

    def send(self) -> dict:
        """The choice as OpenAI shapes it, with what was not yet sent, which counts as sent from now on."""
        logprobs = None
        if self.with_logprobs:
            tokens, logps, tops, offsets = (list(column) for column in zip(*self.tokens)) if self.tokens else ([], [], [], [])
            logprobs = {"tokens": tokens, "token_logprobs": logps, "top_logprobs": tops, "text_offset": offsets}
        text = "".join(self.unsent)
        self.unsent, self.tokens = [], []
        return {"text": text, "index": self.index, "logprobs": logprobs, "finish_reason": self.finish_reason}


def token_count(sampler: Sampler, text: str) -> int:
    """The text's length in the model's tokens: its characters, for a character model."""
    try:
        return len(sampler.vocab.encode(text))
    except ChargenError:
        return len(text)


class Mailbox:
    """A job's pieces, as its model's batch hands them over (in the event loop's own thread, between steps), until
    the job's reader takes them: all that arrived, at once, so a reader that fell behind gets them as one chunk."""

    def __init__(self) -> None:
        self.arrived: collections.deque[tuple[int, Piece | None]] = collections.deque()
        self.ready = asyncio.Event()

    def put(self, item: tuple[int, Piece | None]) -> None:
        """Never blocks."""
        self.arrived.append(item)
        self.ready.set()

    async def take(self) -> list[tuple[int, Piece | None]]:
        """Everything that arrived, once something has."""
        await self.ready.wait()
        self.ready.clear()
        items = list(self.arrived)
        self.arrived.clear()
        return items


INTERRUPT = (-1, None)  # what Job.interrupt puts in a mailbox: the server is stopping


class Job:
    """One completion request in its model's batch: a batch Request per prompt, the choices they write (prompt i's
    sample j is choice i * n + j, as OpenAI numbers them), and the mailbox through which the batch hands
    their pieces to the event loop."""

    def __init__(self, completion: Completion, sampler: Sampler):
        self.completion, self.sampler = completion, sampler
        self.id, self.created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
        self.mailbox = Mailbox()
        n, options = completion.options.num_samples, completion.options
        self.choices = [Choice(i * n + j, options.length, options.logprobs > 0) for i in range(len(completion.prompts)) for j in range(n)]
        if completion.echo:
            for choice in self.choices:
                choice.echo(completion.prompts[choice.index // n])
        self.requests: list[BatchRequest] = []
        self.interrupted = False  # ended by interrupt(), not done: the server is stopping

    async def start(self, batcher: Driven) -> None:
        """Submit every prompt, each read beside the batch first; with max_tokens 0 there is nothing to draw and every
        choice is done at once."""
        if self.completion.options.length == 0:
            for choice in self.choices:
                choice.done = True
            return
        n = self.completion.options.num_samples
        requests = [BatchRequest(prompt, self.completion.options, self.sink(i * n)) for i, prompt in enumerate(self.completion.prompts)]
        self.requests += requests  # cancel() reaches them while their prompts are read
        for request in requests:
            await batcher.submit(request)

    def sink(self, first: int) -> Callable[[int, Piece | None], None]:
        """What the batch calls with a prompt's pieces, between its steps: it never blocks."""

        def put(choice: int, piece: Piece | None) -> None:
            self.mailbox.put((first + choice, piece))

        return put

    def cancel(self) -> None:
        """Take every row of this job out of the batch: harmless for rows already done."""
        for request in self.requests:
            request.cancel()

    def interrupt(self) -> None:
        """End the job now, rather than be cancelled once the grace period of a stop is over: its rows leave the
        batch, and its reader is told why."""
        self.cancel()
        self.mailbox.put(INTERRUPT)

    async def updates(self) -> AsyncIterator[list[Choice]]:
        """The choices that changed, each time pieces arrive: all the pieces already waiting are taken at once, so a
        reader that fell behind gets them as one chunk."""
        while not all(choice.done for choice in self.choices):
            await asyncio.sleep(0)  # a point where a cancel can land: a batch writing all the time keeps the mailbox's wait woken
            events = await self.mailbox.take()
            if not events:
                continue
            changed: dict[int, Choice] = {}
            for index, piece in events:
                if index < 0:
                    self.interrupted = True
                    return
                self.choices[index].take(piece)
                changed[index] = self.choices[index]
            yield [changed[i] for i in sorted(changed)]

    async def finish(self) -> None:
        async for _ in self.updates():
            pass

    def head(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.completion.model}

    def usage(self) -> dict:
        completion_tokens = sum(token_count(self.sampler, "".join(choice.written)) for choice in self.choices)
        prompt_tokens = self.completion.prompt_tokens
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}

    def answer(self) -> dict:
        """The whole completion, once every choice is done."""
        return self.head() | {"choices": [choice.send() for choice in self.choices], "usage": self.usage()}

    async def chunks(self) -> AsyncIterator[bytes]:
        """Server-sent events: a chunk per choice with its new text (its last one with its finish_reason), then [DONE]."""
        first = [choice for choice in self.choices if choice.unsent_anything or choice.done]  # echoed prompts, and max_tokens 0
        for choice in first:
            yield event(self.head() | {"choices": [choice.send()]})
        async for changed in self.updates():
            for choice in changed:
                yield event(self.head() | {"choices": [choice.send()]})
        if self.interrupted:  # an error event, which OpenAI's clients raise
            yield event({"error": {"message": STOPPING, "type": "server_error", "param": None, "code": "server_stopping"}})
            return
        if self.completion.include_usage:
            yield event(self.head() | {"choices": [], "usage": self.usage()})
        yield b"data: [DONE]\n\n"


def event(body: dict) -> bytes:
    """One server-sent event: a data line of JSON and the blank line that ends it."""
    return b"data: " + json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


class EventStream(StreamingResponse):
    """Server-sent events whose end, however it comes (all sent, the client gone, the server stopping), runs on_close."""

    def __init__(self, chunks: AsyncIterator[bytes], on_close: Callable[[], None]):
        super().__init__(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (once the body is read, the server's next message says so)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(work: Awaitable[None], receive: Receive) -> bool:
    """Runs work, cancelling it if the client goes away first: True when it went away."""
    gone = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal gone
            await disconnected(receive)
            gone = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await work
        group.cancel_scope.cancel()
    return gone


# --- the application -----------------------------------------------------------------------------------------------


PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chargen</title></head>
<body><h1>chargen</h1><p>This copy of chargen has no playground page. The API is under
<a href="/v1/models">/v1</a>: POST /v1/completions, POST /v1/next-word.</p></body></html>
"""


def playground_page() -> str:
    """The playground shipped with the package; a placeholder when this copy of the package has none."""
    try:
        return importlib.resources.files("chargen").joinpath("playground.html").read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return PLACEHOLDER


READ_BESIDE = 256  # prompts longer than this many characters are read beside the batch, not in its turn (0.1 s or more here)
TURN_S = 0.05  # steps a batch takes before the event loop does its other work: sends, new requests, disconnects


class Driven:
    """A model's Batcher run by a task of the event loop: a turn of steps, then the loop's other work, and so on
    while there is anything to write; asleep while there is not."""

    def __init__(self, batcher: Batcher):
        self.batcher, self.wake = batcher, asyncio.Event()
        self.reading = anyio.CapacityLimiter(1)  # one prompt read at a time: a long one's activations take hundreds of MB
        self.task = asyncio.get_running_loop().create_task(self.run())

    @property
    def rows(self) -> int:
        return self.batcher.rows

    async def submit(self, request: BatchRequest) -> BatchRequest:
        """A long prompt is read in a worker thread first (it takes seconds); a short one is read as it joins the batch."""
        if len(request.prompt) > READ_BESIDE:
            await anyio.to_thread.run_sync(self.batcher.read_prompt, request, limiter=self.reading)
        self.batcher.submit(request)
        self.wake.set()
        return request

    async def run(self) -> None:
        while True:
            if not self.batcher.busy:
                await self.wake.wait()
                self.wake.clear()
                continue
            try:
                self.batcher.run_for(TURN_S)
            except Exception as e:  # out of memory, or a bug: the requests under way end (their readers see it), the server stays up
                sys.stderr.write(f"chargen: the batch failed ({type(e).__name__}: {first_line(e)}); its requests were ended\n")
                self.batcher.finish()
            await asyncio.sleep(0)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.batcher.finish()


class Api:
    """The endpoints, over the models served and one Batcher for each, which start and stop with the app."""

    def __init__(self, models: dict[str, Sampler], settings: ServerSettings):
        if not models:
            raise ChargenError("the server needs at least one model")
        self.models, self.settings = models, settings
        self.batchers: dict[str, Driven] = {}
        self.jobs: set[Job] = set()  # completions under way
        self.stopping = False
        started = int(time.time())
        self.created = {name: int(s.folder.stat().st_mtime) if s.folder is not None and s.folder.exists() else started for name, s in models.items()}
        self.page = playground_page()

    def open(self) -> None:
        """Each model's batch, run by a task of the event loop."""
        self.batchers = {name: Driven(Batcher(sampler, self.settings.max_streams)) for name, sampler in self.models.items()}

    def interrupt(self) -> None:
        """The server is stopping: completions under way end now, and new ones are refused."""
        self.stopping = True
        for job in list(self.jobs):
            job.interrupt()

    async def close(self) -> None:
        """Each batch stops after its current step; its unfinished requests are told they are done."""
        batchers, self.batchers = self.batchers, {}
        for batcher in batchers.values():
            await batcher.close()

    def authorize(self, request: Request) -> None:
        """With an api key set, every /v1 request must bring it as Authorization: Bearer KEY."""
        key = self.settings.api_key
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # headers arrive as latin-1: back to their bytes, compared in constant time with the key's UTF-8
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), key.encode("utf-8")):
            raise ApiError(401, "a valid API key is needed: send the header Authorization: Bearer KEY", code="invalid_api_key")

    def model_of(self, body: dict) -> tuple[str, Sampler]:
        """The model a request names; it may leave it out when the server has only one."""
        name = field_of(body, "model", str, "a string (the name of a model: GET /v1/models lists them)")
        if name is None and len(self.models) == 1:
            name = next(iter(self.models))
        if name is None:
            raise ApiError(400, f"model is required: this server has {', '.join(self.models)}", "model")
        if name not in self.models:
            raise ApiError(404, f"the model {shown(name)} does not exist: this server has {', '.join(self.models)}", "model", "model_not_found")
        return name, self.models[name]

    def batcher(self, name: str) -> Driven:
        if self.stopping:
            raise ApiError(503, "the server is stopping", kind="server_error", code="server_stopping")
        if name not in self.batchers:
            raise ApiError(503, "the server is not running: its models' batches start with the app's lifespan", kind="server_error")
        return self.batchers[name]

    def completion(self, body: dict) -> Completion:
        """Every field of a completion request checked, in the order a client can fix them."""
        name, sampler = self.model_of(body)
        s = self.settings
        prompts = self.prompts_of(body)
        max_tokens = body.get("max_tokens")
        max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
        n = 1 if body.get("n") is None else body["n"]
        for value, limit, what in ((max_tokens, s.max_tokens, "max_tokens"), (n, s.max_n, "n")):
            if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                raise ApiError(400, f"{what} is {value:,}, more than the server's limit of {limit:,}", what)
        stop = body.get("stop")
        if not (stop is None or isinstance(stop, str) or isinstance(stop, list) and all(isinstance(t, str) for t in stop)):
            raise ApiError(400, f"stop must be a string or a list of strings, not {shown(stop)}", "stop")
        options = sampling_options(
            length=max_tokens,
            temperature=1.0 if body.get("temperature") is None else body["temperature"],
            top_k=0 if body.get("top_k") is None else body["top_k"],
            top_p=1.0 if body.get("top_p") is None else body["top_p"],
            num_samples=n,
            seed=body.get("seed"),
            stop=() if stop is None else stop,
            logprobs=0 if body.get("logprobs") is None else body["logprobs"],  # 0, like null, asks for none
        )
        refuse_unsupported(body, n)
        echo = field_of(body, "echo", bool, "true or false", False)
        if echo and options.logprobs:
            raise ApiError(400, "echo with logprobs is not supported: chargen gives log probabilities of generated tokens only", "echo", "unsupported_parameter")
        stream = field_of(body, "stream", bool, "true or false", False)
        stream_options = field_of(body, "stream_options", dict, "an object", {})
        include_usage = field_of(stream_options, "include_usage", bool, "true or false", False)
        what = (lambda i: "prompt") if len(prompts) == 1 else (lambda i: f"prompt {i}")
        prompt_tokens = sum(checked_prompt(p, s.max_prompt_chars, sampler, what(i)) for i, p in enumerate(prompts))
        return Completion(name, prompts, prompt_tokens, options, echo, stream, include_usage)

    def prompts_of(self, body: dict) -> list[str]:
        """The prompt, or the list of them, as a list: each is checked against the model once the options are."""
        prompt = "" if body.get("prompt") is None else body["prompt"]
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ApiError(400, f"prompt must be a string or a non-empty list of strings (token ids are not taken), not {shown(prompt)}", "prompt")
        if len(prompts) > self.settings.max_prompts:
            raise ApiError(400, f"prompt is a list of {len(prompts):,} prompts, more than the server's limit of {self.settings.max_prompts}", "prompt")
        return prompts

    # the endpoints

    async def list_models(self, request: Request) -> Response:
        self.authorize(request)
        return json_response({"object": "list", "data": [self.model_card(name) for name in self.models]})

    async def get_model(self, request: Request) -> Response:
        self.authorize(request)
        name = request.path_params["model"]
        if name not in self.models:
            raise ApiError(404, f"the model {shown(name)} does not exist: this server has {', '.join(self.models)}", "model", "model_not_found")
        return json_response(self.model_card(name))

    def model_card(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": self.created[name], "owned_by": "chargen"}

    async def completions(self, request: Request) -> Response:
        self.authorize(request)
        completion = self.completion(await read_json(request, self.settings.max_body_bytes))
        batcher = self.batcher(completion.model)
        job = Job(completion, self.models[completion.model])
        self.jobs.add(job)
        try:
            await job.start(batcher)
        except BaseException:
            self.done(job)
            raise
        if completion.stream:
            return EventStream(job.chunks(), lambda: self.done(job))
        try:
            if await unless_disconnected(job.finish(), request.receive):
                return Response(status_code=204)  # nobody reads it
        finally:
            self.done(job)
        if job.interrupted:
            raise ApiError(503, STOPPING, kind="server_error", code="server_stopping")
        return json_response(job.answer())

    def done(self, job: Job) -> None:
        """However a completion ended: its rows leave the batch (if still there) and it is no longer under way."""
        job.cancel()
        self.jobs.discard(job)

    async def next_word(self, request: Request) -> Response:
        self.authorize(request)
        body = await read_json(request, self.settings.max_body_bytes)
        name, sampler = self.model_of(body)
        text = "" if body.get("prompt") is None else body["prompt"]
        checked_prompt(text, self.settings.max_prompt_chars, sampler)
        k = 5 if body.get("k") is None else body["k"]
        try:
            Likeliest(k)
        except OptionError as e:
            raise ApiError(400, str(e), "k") from None
        if k > MAX_WORDS:
            raise ApiError(400, f"k is {k:,}, more than the server's limit of {MAX_WORDS}", "k")
        try:  # a search of many model steps: off the event loop
            words = await run_in_threadpool(sampler.predict_next_word, text, k)
        except ChargenError as e:
            raise ApiError(400, str(e), "prompt") from None
        return json_response({"object": "next_word", "model": name, "words": [{"word": w.word, "probability": w.probability} for w in words]})

    async def health(self, request: Request) -> Response:
        self.authorize(request)
        return json_response({"status": "ok", "models": {name: {"rows": batcher.rows} for name, batcher in self.batchers.items()}})

    async def playground(self, request: Request) -> Response:
        return HTMLResponse(self.page, headers={"X-Content-Type-Options": "nosniff"})


def make_app(models: dict[str, Sampler], settings: ServerSettings | None = None) -> Starlette:
    """The API over models (name -> Sampler); each model's Batcher runs while the app's lifespan does
    (uvicorn runs it; a starlette TestClient does inside `with`)."""
    api = Api(models, settings or ServerSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        api.open()
        try:
            yield
        finally:
            await api.close()

    routes = [
        Route("/", api.playground, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.list_models, methods=["GET"]),
        Route("/v1/models/{model}", api.get_model, methods=["GET"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/next-word", api.next_word, methods=["POST"]),
    ]
    handlers = {ApiError: refused, HTTPException: http_error, Exception: server_failed}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.api = api
    return app
