"""Endpoint URLs as messages, logs and /healthz show them: with their secrets masked; and which hosts are loopback.

An endpoint behind a gateway is often configured with its credentials in the URL (`https://user:password@host/v1`,
which httpx sends as basic auth, or a gateway's `?key=...`), so the URL itself is a secret there. Every place that
names the LLM, embedding or Chroma endpoint (the open /healthz, ticket warnings stored in revisions, CLI errors,
logs) shows `shown_url(url)` instead.
"""

from __future__ import annotations

import ipaddress
import re

# user:password@ (or user@) right after the scheme's `//` (or at the start of a URL that lacks its scheme), up to
# the first `/`, `?` or `#`
_USERINFO = re.compile(r"(?P<scheme>//|^)(?P<user>[^/?#@:]*)(?::[^/?#@]*)?@")
_QUERY_VALUE = re.compile(r"(?P<key>[?&][^=&#]*=)[^&#]*")


def shown_url(url: str) -> str:
    """`url` with a password in its userinfo and every query value replaced by `***`; the scheme, user, host, port
    and path stay, so the message still says which endpoint it is. Works on URLs too broken to parse."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m.group(0).count(":") else m.group(0), url)
    return _QUERY_VALUE.sub(lambda m: f"{m['key']}***", masked)


def without_key(text: str, api_key: str | None) -> str:
    """`text` with the endpoint's API key replaced by `***`. Endpoints and proxies echo the key in their errors
    ("Incorrect API key provided: sk-...", a 500 quoting the Authorization header), and those texts reach ticket
    warnings, stored records, /healthz, CLI errors and logs. A placeholder key (`not-needed`, anything under 8
    characters) is no secret and would mask ordinary words."""
    if not api_key or len(api_key) < 8 or api_key == "not-needed":
        return text
    return text.replace(api_key, "***")


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only (127.x, ::1, localhost); 0.0.0.0 and a LAN
    address are not, and an open endpoint there serves anyone on the network."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume the network


def host_header_name(header: str) -> str:
    """The host of an HTTP Host header, without its port: `[::1]:8000` is `::1`, `localhost:8000` is `localhost`."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def rebound_host(bind_address: str | None, host_header: str | None) -> str | None:
    """The host a request named when it reached a server bound to loopback under a name that is not loopback, else
    None: what a browser sends after a web page re-points its own name at 127.0.0.1 (DNS rebinding) and opens the
    API or the UI as its own origin. A server bound to the network (no address: all interfaces, 0.0.0.0, a LAN
    address) is not asked: a reverse proxy there has its own name. No Host (not a browser) is not asked either.
    The API's open classify and the review UI both ask it."""
    if not bind_address or not host_header or not is_loopback(bind_address):
        return None
    name = host_header_name(host_header.strip())
    return None if is_loopback(name) else name
