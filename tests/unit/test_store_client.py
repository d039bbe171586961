"""The Chroma client for TRIAGE_CHROMA_URL: what reaches the server (path prefix, credentials) from the URL."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.store import StoreUnavailable, make_client


class _Recorder(BaseHTTPRequestHandler):
    """Keeps the path and Authorization header of each request, answers 404 (no Chroma here)."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append((self.path, self.headers.get("authorization")))
        body = b'{"error": "not here"}'
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_a_chroma_url_keeps_its_path_prefix_and_sends_its_credentials() -> None:
    """A Chroma server behind a reverse proxy (https://host/chroma) or with basic auth: only the host and port were
    passed to chromadb, so the prefix and `user:password@` were silently dropped and such a server answered 404/401."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    try:
        with pytest.raises(StoreUnavailable):  # nothing Chroma-like answers: what was asked is the point
            make_client(url=f"http://ops:p%40ss@127.0.0.1:{server.server_address[1]}/chroma/")
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen, "the client asked nothing"
    path, auth = _Recorder.seen[0]
    assert path.startswith("/chroma/api/v2/"), path
    assert auth == "Basic b3BzOnBAc3M="  # base64("ops:p@ss")


class _Refuser(BaseHTTPRequestHandler):
    """A reverse proxy that wants other credentials: 401, empty body."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("www-authenticate", 'Basic realm="chroma"')
        self.send_header("content-length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_credentials_the_server_refuses_are_named_not_a_server_that_is_down() -> None:
    """A proxy or server answering 401 to TRIAGE_CHROMA_URL's user:password@ read 'cannot reach the Chroma server
    at ... (ValueError); start it (`chroma run --path DIR`)', though it was up and only wanted other credentials."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with pytest.raises(StoreUnavailable) as wrong:
            make_client(url=f"http://ops:wrong@127.0.0.1:{port}/chroma")
        with pytest.raises(StoreUnavailable) as none:
            make_client(url=f"http://127.0.0.1:{port}/chroma")
    finally:
        server.shutdown()
        server.server_close()
    message = str(wrong.value)
    assert message.startswith(f"the Chroma server at http://ops:***@127.0.0.1:{port}/chroma refused the user:password@ in TRIAGE_CHROMA_URL (HTTP 401)"), message
    assert "start it" not in message and "wrong" not in message, message
    assert "refused a request without credentials (HTTP 401)" in str(none.value), none.value
