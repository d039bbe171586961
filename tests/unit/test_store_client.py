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
