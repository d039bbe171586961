"""What every page shares: the refusal of a rebound host name, the session's API client, the sidebar, and errors
shown as messages, not tracebacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from agent.urls import rebound_host
from ui.api_client import ApiAuthError, ApiError, ApiUnreachable, TriageClient
from ui.config import UiSettings
from ui.format import code_span, escape_md, health_notes

PAGES = {
    "queue": "views/queue.py",
    "ticket": "views/ticket.py",
    "batch": "views/batch.py",
    "insights": "views/insights.py",
    "evals": "views/evals.py",
    "taxonomy": "views/taxonomy.py",
}


def refuse_rebound_host() -> None:
    """Stop the run, before any API call, when the UI is bound to loopback and the browser named another host.

    The UI acts with its server-side key (`triage serve` gives it the local admin key), so whoever drives it acts
    as that key. A web page the operator opens can re-point its own name (evil.test) at 127.0.0.1 and load
    http://evil.test:8501: for the browser that is the page's own origin, so it may script the UI and read it.
    Streamlit's own options do not stop that:
    - the WebSocket's Origin check admits an Origin equal to the Host, and after rebinding both are evil.test;
      `server.enableCORS` and `server.corsAllowedOrigins` only decide which *other* origins are admitted;
    - `server.enableXsrfProtection` guards file uploads with a cookie token, which the rebound page gets as its
      own origin's cookie, and the WebSocket needs no token at all (the option's own description says so);
    - `server.allowedHosts` (a Host allow-list) would stop it, but it is empty by default, must be set by whoever starts
      Streamlit (README's own command does not), and refuses the socket with a bare "connection error".
    So the check is here, where every page's run passes (ui/app.py calls it first), with agent/urls.py's rules,
    as the API's `rebound` applies them; a UI bound to the network (behind a proxy with its own name) is not
    asked."""
    name = rebound_host(st.get_option("server.address"), st.context.headers.get("host"))
    if name is None:
        return
    port = st.get_option("server.port")
    st.error(
        f"Refused: this UI listens on loopback only and was opened as {code_span(name)}. A web page can point its "
        "own name at 127.0.0.1 (DNS rebinding) to use this UI and its key, so it answers only under a loopback name.",
        icon=":material/gpp_bad:",
    )
    st.info(
        f"Open it as http://127.0.0.1:{port} or http://localhost:{port}. Behind a reverse proxy, bind the UI to the "
        "address the proxy reaches (`--server.address`, or `triage serve --host`)."
    )
    st.stop()


def settings() -> UiSettings:
    """Read once per session (environment and `.env`); the sidebar may override the key."""
    if "ui_settings" not in st.session_state:
        st.session_state["ui_settings"] = UiSettings()
    return st.session_state["ui_settings"]


def client() -> TriageClient:
    """The session's client, rebuilt when the URL or key changes."""
    cfg = settings()
    # a key is pasted or kept in a file with spaces around it; with them it is not the key
    key = (st.session_state.get("api_key_override") or "").strip() or (cfg.resolved_api_key or "").strip() or None
    wanted = (cfg.api_url, key)
    current: TriageClient | None = st.session_state.get("api_client")
    if current is None or (current.base_url, current.api_key) != (cfg.api_url.rstrip("/"), key):
        if current is not None:
            current.close()
        current = TriageClient(*wanted, timeout=cfg.api_timeout_s)
        st.session_state["api_client"] = current
    return current


def show_error(err: ApiError) -> None:
    """One clear message and what to do about it (a refused key is checked again on the next run: see key_refusal)."""
    if isinstance(err, ApiAuthError):
        st.session_state.pop("key_accepted", None)
    icon = ":material/cloud_off:" if isinstance(err, ApiUnreachable) else ":material/key:" if isinstance(err, ApiAuthError) else ":material/warning:"
    st.error(f"{err}", icon=icon)
    if err.hint:
        st.info(err.hint)


@contextmanager
def api_errors(*, stop: bool = True) -> Iterator[None]:
    """Turn an API failure inside the block into a message; `stop` ends the page there (nothing half-drawn)."""
    try:
        yield
    except ApiError as err:
        show_error(err)
        if stop:
            st.stop()


def fetch(call: str, *args: Any, **kwargs: Any) -> Any:
    """`client().<call>(...)`, stopping the page with a clear message if the API fails."""
    with api_errors():
        return getattr(client(), call)(*args, **kwargs)
    raise AssertionError("unreachable")  # st.stop() raises


def key_refusal() -> ApiAuthError | None:
    """Why the API refuses this session's key (401/403), or None. `/healthz` needs no key, so the sidebar said
    "API up" with a wrong key and kept the key field closed; one lead-scope call (the served taxonomy versions, a
    short list) tells. A key once accepted is not asked about again until a page meets an auth error."""
    api = client()
    checked = (api.base_url, api.api_key)
    if st.session_state.get("key_accepted") == checked:
        return None
    try:
        api.taxonomy_versions()
    except ApiAuthError as err:
        return err
    except ApiError:
        return None  # not about the key: the page says what it is
    st.session_state["key_accepted"] = checked
    return None


def key_state(refusal: ApiAuthError | None, has_key: bool) -> tuple[str, str]:
    """The sidebar's badge and key-field label for a key check: the label changes with the problem, so Streamlit
    draws a new expander and opens it where the lead must paste a key."""
    if refusal is None:
        return "", "API key"
    if not has_key:
        return ":orange-badge[no API key]", "API key: paste a lead key here"
    if refusal.status == 403:
        return ":red-badge[API key lacks the lead scope]", "API key: refused, paste a lead key here"
    return ":red-badge[API key refused]", "API key: refused, paste a new key here"


def sidebar() -> None:
    """Where the UI points, whether the API answers and takes the key, and a field to paste a lead key."""
    cfg = settings()
    refusal = None
    with st.sidebar:
        st.caption(f"API: `{cfg.api_url}`")
        try:
            health = client().health()
            badge = ":green-badge[API up]" if health.status == "ok" else ":orange-badge[API degraded]"
            st.caption(f"{badge} {health.taxonomy} · {health.model} · v{health.version}")
            for note in health_notes(health.problems, health.llm):
                st.caption(f":orange[{note}]")
            refusal = key_refusal()
        except ApiError:
            st.caption(":red-badge[API not answering]")
        badge, label = key_state(refusal, bool(client().api_key))
        if badge:
            st.caption(badge)
        with st.expander(label, expanded=refusal is not None or not (st.session_state.get("api_key_override") or cfg.resolved_api_key)):
            if refusal is not None:
                st.caption(escape_md(str(refusal)))
            st.text_input(
                "Lead key",
                type="password",
                key="api_key_override",
                help="Overrides TRIAGE_API_KEY for this browser session. `triage keys create --scope lead --name NAME`.",
            )


def taxonomy() -> dict[str, Any]:
    """The taxonomy in force, cached for the session (it changes only with a new API version)."""
    cached = st.session_state.get("taxonomy_cache")
    if cached is None:
        cached = fetch("taxonomy")
        st.session_state["taxonomy_cache"] = cached
    return cached


def label_ids(tax: dict[str, Any], axis: str) -> list[str]:
    axes = tax.get("axes", tax.get("taxonomy", {}).get("axes", {}))
    return [label["id"] for label in axes.get(axis, {}).get("labels", [])]


def label_names(tax: dict[str, Any], axis: str) -> dict[str, str]:
    axes = tax.get("axes", tax.get("taxonomy", {}).get("axes", {}))
    return {label["id"]: label.get("name", label["id"]) for label in axes.get(axis, {}).get("labels", [])}
