"""Batch: upload a CSV or JSONL of tickets, classify them (POST /v1/classify) with a progress bar, download results."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import streamlit as st

from agent.contracts import TicketIn
from ui.api_client import ApiAuthError, ApiError, ApiUnreachable
from ui.batch_io import FileProblem, flat_row, parse_tickets, to_csv, to_jsonl
from ui.common import client, show_error

WORKERS = 2  # the API classifies two at a time by default (TRIAGE_API_WORKERS); more would only queue there
BUSY_RETRIES = 5  # a row sent while bots keep the API's pool full waits its Retry-After rather than failing
KEPT_FILES = 4  # batches kept by this UI process across page reloads (a 2,000-row result is about 50 MB in memory)


@st.cache_resource
def kept_batches() -> tuple[OrderedDict[str, dict[str, Any]], threading.Lock]:
    """The latest batches' results, by file and key, kept in this UI process rather than in the browser's session:
    a page reload starts a new session, and the lead who uploads the same file again finds the rows already done."""
    return OrderedDict(), threading.Lock()


st.title("Batch")
st.caption(
    "Upload tickets as CSV (header row: `subject`, `body` or `text`, optional `channel`, `id`) or JSONL "
    "(one `{\"subject\", \"body\", \"channel\"?, \"messages\"?}` per line) or a `.json` array of them. Nothing is stored: each ticket goes to "
    "`POST /v1/classify`. The results stay in this UI's memory (the latest few files): after a page reload, "
    "upload the same file again to see them, or to carry on where it stopped."
)

upload = st.file_uploader("Tickets file", type=["csv", "jsonl", "json"], key="batch_file")
if upload is None:
    st.info("Choose a file to start.", icon=":material/upload_file:")
    st.stop()

data = upload.getvalue()
digest = hashlib.sha256(data).hexdigest()[:16]
tickets, problems = parse_tickets(upload.name, data)
for problem in (p for p in problems if isinstance(p, FileProblem)):  # the whole file's, never counted as a row
    st.warning(problem, icon=":material/upload_file:")
if skipped := [p for p in problems if not isinstance(p, FileProblem)]:
    with st.expander(f"{len(skipped)} row{'s' if len(skipped) != 1 else ''} skipped", expanded=not tickets):
        st.write("\n".join(f"- {p}" for p in skipped[:50]))
if not tickets:
    st.error("No ticket to classify in this file.", icon=":material/upload_file:")
    st.stop()
st.write(f"**{len(tickets)}** tickets in `{upload.name}`.")
st.dataframe(
    [{"id": t.ticket_id or "", "subject": t.subject, "body": t.body[:120], "channel": t.channel or ""} for t in tickets[:20]],
    hide_index=True,
)


def classify_all(batch: list[TicketIn], state: dict[str, Any]) -> ApiError | None:
    """Classify the tickets of `batch` that have no result in `state` yet, two at a time, updating a progress bar;
    stop early if the API is down or the key bad.

    Each result goes into `state` (the session's) as it comes: a run the lead interrupts (Stop, another click,
    another page) keeps the rows already classified, and the next press sends only the rest. The tickets not yet
    sent are cancelled on any exit, so an interrupted run does not keep classifying in the background."""
    results: list[dict[str, Any] | None] = state["results"]
    errors: list[str | None] = state["errors"]
    todo = [i for i, r in enumerate(results) if r is None]
    done = len(batch) - len(todo)
    bar = st.progress(done / len(batch), text=f"{done} / {len(batch)} classified")
    api = client()
    fatal: ApiError | None = None
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        pending: dict[Future[Any], int] = {
            pool.submit(api.classify, batch[i].model_dump(exclude_defaults=True), busy_retries=BUSY_RETRIES): i for i in todo
        }
        while pending and fatal is None:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                try:
                    results[i], errors[i] = future.result().model_dump(mode="json"), None
                except (ApiUnreachable, ApiAuthError) as err:
                    fatal, errors[i] = err, str(err)
                except ApiError as err:
                    errors[i] = str(err)
                done += 1
            bar.progress(done / len(batch), text=f"{done} / {len(batch)} classified")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return fatal


api = client()
owner = hashlib.sha256(f"{api.base_url}\n{api.api_key or ''}\n{digest}".encode()).hexdigest()
kept, kept_lock = kept_batches()
with kept_lock:
    state = kept.get(owner)
    if state is not None:
        kept.move_to_end(owner)
remaining = len(tickets) if state is None else sum(1 for r in state["results"] if r is None)
label = "Classify" if remaining == len(tickets) else f"Classify the remaining {remaining}"
if remaining and st.button(label, type="primary", shortcut="Ctrl+Enter", help="Ctrl+Enter", key="batch_go"):
    if state is None:
        state = {"digest": digest, "results": [None] * len(tickets), "errors": [None] * len(tickets)}
        with kept_lock:
            kept[owner] = state
            while len(kept) > KEPT_FILES:
                kept.popitem(last=False)
    st.button("Stop", icon=":material/stop:", key="batch_stop", help="Keeps the rows classified so far")
    state["fatal"] = None
    state["fatal"] = classify_all(tickets, state)
    st.rerun()  # the button's label and the table follow what is left

if state is None:
    st.stop()
if state.get("fatal") is not None:
    show_error(state["fatal"])
    st.warning("Classification stopped; the rows done so far are below.")

NOT_YET = "not classified: the batch was stopped before this row"
rows = [
    flat_row(i + 1, t, r, e or (NOT_YET if r is None else None))
    for i, (t, r, e) in enumerate(zip(tickets, state["results"], state["errors"], strict=True))
]
done = [r for r in rows if r["decision"]]
failed = [r for r in rows if r["error"] and r["error"] != NOT_YET]
if remaining:
    st.info(
        f"{len(tickets) - remaining} of {len(tickets)} tickets classified; {remaining} {'is' if remaining == 1 else 'are'} not"
        + (f" ({len(failed)} failed, see `error`)" if failed else "")
        + f": press **{label}** to send only those. The downloads below hold every row.",
        icon=":material/pause_circle:",
    )
cols = st.columns(4)
cols[0].metric("Classified", len(done))
cols[1].metric("Auto-apply", sum(1 for r in done if r["decision"] == "auto_apply"))
cols[2].metric("Needs review", sum(1 for r in done if r["decision"] == "needs_review"))
cols[3].metric("Failed", len(failed))
st.dataframe(
    rows,
    hide_index=True,
    column_config={
        f"{axis}_confidence": st.column_config.ProgressColumn(f"{axis} conf.", min_value=0.0, max_value=1.0, format="%.2f")
        for axis in ("service", "tier", "channel")
    },
)
with st.expander("Full classification of a row"):
    pick = st.number_input("Row", min_value=1, max_value=len(rows), value=1)
    st.json(state["results"][pick - 1] or {"error": state["errors"][pick - 1]}, expanded=False)
dl = st.columns(2)
dl[0].download_button("Download CSV", to_csv(rows), file_name=f"{upload.name.rsplit('.', 1)[0]}-triage.csv", mime="text/csv")
dl[1].download_button(
    "Download JSONL (full contract)",
    to_jsonl(tickets, state["results"], state["errors"]),
    file_name=f"{upload.name.rsplit('.', 1)[0]}-triage.jsonl",
    mime="application/jsonl",
)
