"""chargen export --format web in a real browser: the folder served by `python -m http.server` on a loopback port, the
system's headless Chromium driven by Playwright, onnxruntime-web's files from CHARGEN_ORT_WEB (its npm dist folder).
The page's greedy text must be Python's, for the same prompt."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from .conftest import TINY_OPTIONS, TINY_TEXT
from .test_playground import CHROMIUM, CHROMIUM_ARGS, free_port, sync_api

pytestmark = pytest.mark.slow

pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'chargen[export]')")
RUNTIME = os.environ.get("CHARGEN_ORT_WEB")
if not RUNTIME or not (Path(RUNTIME) / "ort.wasm.min.js").is_file():
    pytest.skip("no onnxruntime-web files: set CHARGEN_ORT_WEB to node_modules/onnxruntime-web/dist (npm install onnxruntime-web)", allow_module_level=True)

import chargen  # noqa: E402
from chargen import export as exports  # noqa: E402

WAIT_MS = 60_000
PROMPT = "the quick brown "


@contextlib.contextmanager
def static_site(folder: Path, log_path: Path) -> Iterator[str]:
    """The folder served as the docs say, by Python's own static server on a free loopback port: its URL."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(folder), str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"http.server did not answer:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small character LSTM trained on one thread, enough to write words."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chargen.train(folder / "tiny.txt", folder / "model", max_steps=60, eval_every=60, quiet=True, **TINY_OPTIONS)
    finally:
        torch.set_num_threads(threads)
    return folder / "model"


@pytest.fixture(scope="module")
def site(trained, tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("web")
    exports.export(trained, folder / "site", format="web", runtime=RUNTIME)
    with static_site(folder / "site", folder / "http.log") as url:
        yield url


@pytest.fixture
def page(site):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            page.goto(site, wait_until="load")
            page.wait_for_function("!document.getElementById('write').disabled || document.getElementById('error').textContent", timeout=WAIT_MS)
            assert page.text_content("#error") == ""
            yield page
            assert errors == [], f"the page reported: {errors}"
        finally:
            browser.close()


def write(page, prompt: str, length: int, temperature: float) -> str:
    """What the page shows after Write: the prompt and the text it wrote."""
    page.fill("#prompt", prompt)
    page.fill("#length", str(length))
    page.eval_on_selector("#temperature", "(e, t) => { e.value = t; e.dispatchEvent(new Event('input')); }", str(temperature))
    page.click("#write")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Done') || document.getElementById('error').textContent", timeout=WAIT_MS)
    assert page.text_content("#error") == ""
    return page.text_content("#output")


def test_the_pages_greedy_text_is_pythons(page, trained):
    assert CHROMIUM is not None
    sampler = chargen.load(trained, precision="fp32")
    assert page.title() == "chargen in the browser"
    assert "LSTM" in page.text_content("#about")
    for name in ("prompt", "temperature", "length"):
        assert page.locator(f"label[for='{name}']").count() == 1
    assert write(page, PROMPT, 300, 0) == sampler.generate(PROMPT, length=300, temperature=0)
    assert write(page, "", 50, 0) == sampler.generate("", length=50, temperature=0)  # no prompt: the start ids alone


def test_temperature_draws_other_texts_of_the_models_characters(page, trained):
    vocab = chargen.load(trained, precision="fp32").vocab
    texts = {write(page, PROMPT, 200, 1.5) for _ in range(2)}
    assert len(texts) == 2  # drawn, not greedy: two draws of 200 characters differ
    for text in texts:
        assert text.startswith(PROMPT) and len(text) == len(PROMPT) + 200
        assert set(text) <= set(vocab.token_texts)
    page.fill("#prompt", "Ω")
    page.click("#write")
    page.wait_for_function("document.getElementById('error').textContent !== ''", timeout=WAIT_MS)
    assert "never saw" in page.text_content("#error")
