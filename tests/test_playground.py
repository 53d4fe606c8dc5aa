"""The playground page (GET /) in a real browser: `chargen serve` on a tiny checkpoint, the system's headless
Chromium driven by Playwright. Set CHARGEN_SCREENSHOT=docs/playground.png to save a screenshot of the page."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium executable on PATH (apt-get install chromium)", allow_module_level=True)

# As root in a closed network: no sandbox, and none of the background connections Chromium would otherwise try.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = "the quick brown fox jumps over the lazy do"
WAIT_MS = 30_000
LONG = 500_000  # characters: a generation that Stop ends long before it would


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def serving(checkpoint: Path, log_path: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`chargen serve` on the checkpoint at a free loopback port, stopped on leaving: its base URL."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chargen", "serve", "-c", str(checkpoint), "--host", "127.0.0.1", "--port", str(port), *options],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=None if env is None else os.environ | env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"chargen serve exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(url, timeout=5):  # the page, which needs no key
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"chargen serve did not answer in 60 s:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(trained: Path, tmp_path_factory):
    """The base URL of `chargen serve` on the tiny checkpoint, for the module's tests; long enough texts for Stop."""
    with serving(trained, tmp_path_factory.mktemp("serve") / "serve.log", "--max-tokens", str(LONG)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 820})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server, wait_until="load")
        page.wait_for_function("document.getElementById('model').value !== ''", timeout=WAIT_MS)  # the model list arrived
        yield page
        assert errors == [], f"the page threw: {errors}"
    finally:
        context.close()


def generated(page) -> str:
    return page.eval_on_selector("#generated", "e => e.textContent")


def wait_status(page, start: str) -> None:
    page.wait_for_function(f"document.getElementById('status').textContent.startsWith({json.dumps(start)})", timeout=WAIT_MS)


def put_cursor(page, position: int) -> None:
    """The caret to this place in the prompt, as a click there would put it."""
    page.focus("#prompt")
    page.evaluate("n => { const p = document.getElementById('prompt'); p.setSelectionRange(n, n); p.dispatchEvent(new Event('click')); }", position)


def alternatives_for(page, before: str) -> list[tuple[str, float, str]]:
    """The panel's rows once they answer for this text before the cursor: (token, probability, the text shown)."""
    page.wait_for_function("b => document.getElementById('alternatives').dataset.before === b", arg=before, timeout=WAIT_MS)
    rows = page.eval_on_selector_all(
        "#alternatives li", "rows => rows.map(r => [r.dataset.token, parseFloat(r.dataset.prob), r.querySelector('.token').textContent])"
    )
    return [tuple(row) for row in rows]


def test_the_page_is_served_and_lists_the_model(page, server):
    (model,) = [m["id"] for m in get(server + "v1/models")["data"]]
    assert page.title() == "chargen playground"
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == [model]
    for name in ("prompt", "temperature", "top-p", "length", "model", "api-key"):  # every control has its label
        assert page.locator(f"label[for='{name}']").count() == 1


def test_generate_streams_text_into_the_output(page):
    # every change of #generated as it happens: streamed text arrives in several pieces, each adding to the last
    page.evaluate(
        """() => { window.lengths = [];
            new MutationObserver(() => window.lengths.push(document.getElementById('generated').textContent.length))
              .observe(document.getElementById('generated'), {childList: true, characterData: true, subtree: true}); }"""
    )
    page.fill("#prompt", PROMPT)
    page.fill("#temperature", "0.8")
    page.fill("#length", "1000")
    page.click("#generate")
    page.wait_for_function("document.getElementById('generated').textContent.length > 0", timeout=WAIT_MS)
    wait_status(page, "Done")
    text = generated(page)
    assert len(text) == 1000  # a character model writes exactly the length asked for
    assert page.eval_on_selector("#output", "e => e.textContent") == PROMPT + text
    lengths = [n for n in page.evaluate("window.lengths") if n > 0]
    assert len(set(lengths)) >= 2, f"the text did not arrive in pieces: {lengths}"
    assert lengths == sorted(lengths) and lengths[-1] == 1000
    assert page.is_enabled("#generate") and not page.is_enabled("#stop")
    assert page.text_content("#error") == ""

    shot = os.environ.get("CHARGEN_SCREENSHOT")
    if shot:  # the picture for docs/: a short sample, and the panel for the character at the cursor
        prompt = "the quick brown fox jumps over the lazy dog.\nthe quick brown fox jumps"
        page.fill("#prompt", prompt)
        page.fill("#length", "400")
        page.click("#generate")
        wait_status(page, "Done")
        put_cursor(page, prompt.rindex("j"))
        alternatives_for(page, prompt[: prompt.rindex("j")])
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot, full_page=True)


def test_the_panel_shows_the_likeliest_next_characters(page):
    page.fill("#prompt", PROMPT)  # the cursor is at the end
    page.focus("#prompt")
    rows = alternatives_for(page, PROMPT)
    assert page.text_content("#context").endswith("lazy do|")
    probabilities = [p for _, p, _ in rows]
    assert 1 <= len(rows) <= 10
    assert all(0 <= p <= 1 for p in probabilities)
    assert sum(probabilities) <= 1 + 1e-6 and max(probabilities) > 0
    assert probabilities == sorted(probabilities, reverse=True)
    widths = page.eval_on_selector_all("#alternatives .fill", "fs => fs.map(f => parseFloat(f.style.width))")
    assert widths == sorted(widths, reverse=True) and widths[0] > 0  # the bars are drawn to scale

    # the cursor moves back to just after "the": the panel follows, and whitespace among the guesses can be seen
    put_cursor(page, 3)
    rows = alternatives_for(page, "the")
    assert page.text_content("#context") == "the|␣"
    assert rows and sum(p for _, p, _ in rows) <= 1 + 1e-6
    for token, _, shown in rows:
        assert shown and not any(c.isspace() for c in shown), f"{token!r} is shown as {shown!r}, which cannot be seen"
    shown = {token: text for token, _, text in rows}
    assert shown.get(" ", "␣") == "␣" and shown.get("\n", "\\n") == "\\n"
    marked = page.eval_on_selector_all("#alternatives li.actual", "rows => rows.map(r => r.dataset.token)")
    assert marked == ([" "] if " " in shown else [])  # the character that is there is marked


def test_stop_ends_a_long_generation(page, server):
    page.fill("#prompt", PROMPT)
    page.fill("#temperature", "1")
    page.fill("#length", str(LONG))
    page.click("#generate")
    page.wait_for_function("document.getElementById('generated').textContent.length > 0", timeout=WAIT_MS)
    assert page.is_enabled("#stop") and not page.is_enabled("#generate")
    page.click("#stop")
    wait_status(page, "Stopped")
    stopped_at = len(generated(page))
    page.wait_for_timeout(700)
    assert len(generated(page)) == stopped_at < LONG
    assert page.is_enabled("#generate") and not page.is_enabled("#stop")
    assert page.text_content("#error") == ""
    assert get(server + "v1/models")["data"]  # the server goes on answering


def test_server_errors_are_shown(page):
    page.fill("#prompt", PROMPT)
    page.fill("#top-p", "5")
    page.click("#generate")
    page.wait_for_function("document.getElementById('error').textContent !== ''", timeout=WAIT_MS)
    assert "top" in page.text_content("#error").lower()
    assert page.text_content("#status") == "Failed"
    assert page.is_enabled("#generate")


def test_the_api_key_is_sent_and_kept_for_the_tab(browser, trained, tmp_path):
    with serving(trained, tmp_path / "serve.log", env={"CHARGEN_API_KEY": "sesame"}) as url:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("document.getElementById('error').textContent !== ''", timeout=WAIT_MS)
            assert "API key" in page.text_content("#error")  # the server's own words
            page.fill("#api-key", "sesame")
            page.press("#api-key", "Tab")  # leaving the field sends it
            page.wait_for_function("document.getElementById('model').value !== ''", timeout=WAIT_MS)
            assert page.text_content("#error") == ""
            page.fill("#prompt", PROMPT)
            assert alternatives_for(page, PROMPT)  # the panel's requests bring the key too
            page.reload()  # the key stays for the tab
            assert page.input_value("#api-key") == "sesame"
            page.wait_for_function("document.getElementById('model').value !== ''", timeout=WAIT_MS)
        finally:
            context.close()
