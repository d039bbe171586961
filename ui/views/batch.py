"""Batch: upload a CSV or JSONL of tickets, classify them (POST /v1/classify) with a progress bar, download results."""

from __future__ import annotations

import hashlib
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import streamlit as st

from agent.contracts import TicketIn
from ui.api_client import ApiAuthError, ApiError, ApiUnreachable
from ui.batch_io import flat_row, parse_tickets, to_csv, to_jsonl
from ui.common import client, show_error

WORKERS = 2  # the API classifies two at a time by default (TRIAGE_API_WORKERS); more would only queue there
BUSY_RETRIES = 5  # a row sent while bots keep the API's pool full waits its Retry-After rather than failing

st.title("Batch")
st.caption(
    "Upload tickets as CSV (header row: `subject`, `body` or `text`, optional `channel`, `id`) or JSONL "
    "(one `{\"subject\", \"body\", \"channel\"?, \"messages\"?}` per line) or a `.json` array of them. Nothing is stored: each ticket goes to "
    "`POST /v1/classify`."
)

upload = st.file_uploader("Tickets file", type=["csv", "jsonl", "json"], key="batch_file")
if upload is None:
    st.info("Choose a file to start.", icon=":material/upload_file:")
    st.stop()

data = upload.getvalue()
digest = hashlib.sha256(data).hexdigest()[:16]
tickets, problems = parse_tickets(upload.name, data)
if problems:
    with st.expander(f"{len(problems)} row{'s' if len(problems) != 1 else ''} skipped", expanded=not tickets):
        st.write("\n".join(f"- {p}" for p in problems[:50]))
if not tickets:
    st.error("No ticket to classify in this file.", icon=":material/upload_file:")
    st.stop()
st.write(f"**{len(tickets)}** tickets in `{upload.name}`.")
st.dataframe(
    [{"id": t.ticket_id or "", "subject": t.subject, "body": t.body[:120], "channel": t.channel or ""} for t in tickets[:20]],
    hide_index=True,
)


def classify_all(batch: list[TicketIn]) -> tuple[list[dict[str, Any] | None], list[str | None], ApiError | None]:
    """Classify every ticket, two at a time, updating a progress bar; stop early if the API is down or the key bad."""
    results: list[dict[str, Any] | None] = [None] * len(batch)
    errors: list[str | None] = [None] * len(batch)
    bar = st.progress(0.0, text=f"0 / {len(batch)} classified")
    api = client()
    fatal: ApiError | None = None
    done = 0
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        pending: dict[Future[Any], int] = {
            pool.submit(api.classify, t.model_dump(exclude_defaults=True), busy_retries=BUSY_RETRIES): i for i, t in enumerate(batch)
        }
        while pending and fatal is None:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                try:
                    results[i] = future.result().model_dump(mode="json")
                except (ApiUnreachable, ApiAuthError) as err:
                    fatal, errors[i] = err, str(err)
                except ApiError as err:
                    errors[i] = str(err)
                done += 1
            bar.progress(done / len(batch), text=f"{done} / {len(batch)} classified")
        for future in pending:
            future.cancel()
    return results, errors, fatal


state = st.session_state.get("batch_result")
if st.button("Classify", type="primary", shortcut="Ctrl+Enter", help="Ctrl+Enter"):
    results, errors, fatal = classify_all(tickets)
    state = {"digest": digest, "results": results, "errors": errors}
    st.session_state["batch_result"] = state
    if fatal is not None:
        show_error(fatal)
        st.warning("Classification stopped; the rows done so far are below.")

if state is None or state["digest"] != digest:
    st.stop()

rows = [flat_row(i + 1, t, r, e) for i, (t, r, e) in enumerate(zip(tickets, state["results"], state["errors"], strict=True))]
done = [r for r in rows if r["decision"]]
failed = [r for r in rows if r["error"]]
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
