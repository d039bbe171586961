"""An unreachable API, a bad or revoked key and a key without the lead scope: a clear message on every page, no traceback."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.conftest import TRIAGE, cli_env
from tests.ui.conftest import LiveApi, app_test, free_port, run_page, texts

pytestmark = pytest.mark.integration
API_PAGES = [None, "views/ticket.py", "views/insights.py", "views/taxonomy.py"]


def open_page(at, page: str | None):
    return run_page(at, page, **({"id": "tk_anything"} if page == "views/ticket.py" else {}))


@pytest.mark.parametrize("page", API_PAGES)
def test_an_unreachable_api_is_a_clear_message(page: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    at = open_page(app_test(monkeypatch, url, "trg_whatever"), page)
    assert [e.value for e in at.error] == [
        f"Cannot reach the triage API at {url}: nothing answers there (connection refused); the API is not running, "
        "or it runs on another port."
    ]
    assert "Start it with `triage serve`" in texts(at)
    if page == "views/ticket.py":
        assert [t.value for t in at.title] == ["Ticket"]  # the page stopped with no title
    if page is None:  # AppTest keeps the sidebar of the first run only
        assert "API not answering" in texts(at)


@pytest.mark.parametrize("page", API_PAGES)
def test_an_invalid_key_is_a_clear_message(page: str | None, api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(app_test(monkeypatch, api.url, "trg_not-a-real-key"), page)
    assert len(at.error) == 1 and "the API key is invalid, revoked or expired" in at.error[0].value
    assert "triage keys create --scope lead" in texts(at)


def test_a_revoked_key_and_a_missing_key_are_clear_messages(api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    key = api.key("lead", "ui-revoked")
    assert run_page(app_test(monkeypatch, api.url, key)).error == []
    listed = subprocess.run([TRIAGE, "keys", "list"], env=cli_env(api.data_dir), capture_output=True, text=True, timeout=120)
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if "ui-revoked" in line)
    revoked = subprocess.run([TRIAGE, "keys", "revoke", key_id], env=cli_env(api.data_dir), capture_output=True, text=True, timeout=120)
    assert revoked.returncode == 0, revoked.stderr
    at = run_page(app_test(monkeypatch, api.url, key))
    assert "the API key is invalid, revoked or expired" in at.error[0].value and "revoked" in at.error[0].value
    at = run_page(app_test(monkeypatch, api.url, None))
    assert "no API key was sent" in at.error[0].value


def test_a_key_without_the_lead_scope_says_which_scope_it_needs(api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(app_test(monkeypatch, api.url, api.key("bot")))
    assert "The API key may not do this" in at.error[0].value and "'lead'" in at.error[0].value
    assert "needs a key with scope `lead`" in texts(at)


def test_a_refused_key_opens_the_key_field_in_the_sidebar(api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """/healthz needs no key, so with a wrong key the sidebar said "API up" and kept the key field closed: the lead
    had to find where to paste a new one. A refused key (401) or one without the lead scope (403) now says so
    there and opens the field; a key that works leaves it closed."""
    cases = (("trg_not-a-real-key", "API key refused", "API key: refused, paste a new key here"),
             (api.key("bot"), "API key lacks the lead scope", "API key: refused, paste a lead key here"))
    for key, badge, label in cases:
        at = run_page(app_test(monkeypatch, api.url, key), "views/evals.py")  # a page that calls no API itself
        sidebar = "\n".join(str(c.value) for c in at.sidebar.caption)
        assert badge in sidebar, sidebar
        (field,) = at.sidebar.expander
        assert field.label == label and field.proto.expanded
    at = run_page(app_test(monkeypatch, api.url, api.key("lead")))
    (field,) = at.sidebar.expander
    assert field.label == "API key" and not field.proto.expanded and "refused" not in texts(at)


def test_a_key_pasted_in_the_sidebar_replaces_a_bad_one(api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page(app_test(monkeypatch, api.url, "trg_not-a-real-key"))
    assert at.error
    at.sidebar.text_input(key="api_key_override").set_value(api.key("lead")).run()
    assert not at.exception and not at.error and at.metric


def test_a_degraded_api_is_explained_in_the_sidebar(monkeypatch: pytest.MonkeyPatch) -> None:
    """/healthz degraded (the embedded LLM died, its breaker open) showed as a green "API up": the sidebar now says
    degraded, with each problem and what a skipped LLM means for the suggestions."""
    health = {"status": "degraded", "version": "0", "taxonomy": "default@1", "model": "m", "store": {},
              "problems": ["embedded LLM: exited with code -9; it is being started again"],
              "llm": {"state": "open", "retry_in_s": 12.0, "last_error": "Connection error.", "consecutive_failures": 3}}

    class Degraded(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            ok = self.path == "/healthz"
            body = json.dumps(health if ok else {"detail": "not in this test"}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Degraded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        at = run_page(app_test(monkeypatch, f"http://127.0.0.1:{server.server_port}", "trg_whatever"))
    finally:
        server.shutdown()
    shown = texts(at)
    assert "API degraded" in shown and "API up" not in shown
    assert "embedded LLM: exited with code -9; it is being started again" in shown
    assert "LLM skipped for 12 s after failures (Connection error.)" in shown



def test_a_key_pasted_with_spaces_or_a_stray_character_is_read_or_explained(api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key copied with the space after it read as "Cannot reach the triage API" (with the key on the page), and
    one with a curly quote picked up while copying was a traceback; now the spaces are dropped and the character
    is named."""
    at = run_page(app_test(monkeypatch, api.url, None))
    at.sidebar.text_input(key="api_key_override").set_value(f" {api.key('lead')} ").run()
    assert not at.exception and not at.error and at.metric
    at.sidebar.text_input(key="api_key_override").set_value(api.key("lead") + "\u2019").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        "The API key has a character no key has (U+2019 at position 48); paste it again exactly as `triage keys create` printed it."
    ]
    assert api.key("lead") not in texts(at)
