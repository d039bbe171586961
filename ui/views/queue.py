"""Review queue: tickets that need review first, then suggestions, lowest confidence first; filters and counts."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.api_client import ApiError
from ui.common import PAGES, api_errors, client, label_ids, label_names, settings, taxonomy
from ui.format import (
    AGE_FILTERS,
    DECISION_BADGE,
    age_params,
    age_text,
    bold_line,
    bulk_accept_request,
    escape_md,
    within_age,
)

ANY = "any"


def queue_label(item: dict[str, Any], service_names: dict[str, str]) -> str:
    """One line per ticket (one link: light to draw, one Tab stop): subject, decision, labels, confidence, age."""
    labels = item.get("labels") or {}
    confidence = item.get("confidence")
    colour = "gray" if confidence is None else "red" if confidence < 0.5 else "orange" if confidence < 0.8 else "green"
    parts = [
        bold_line((item.get("subject") or "").strip() or (item.get("preview") or "").strip() or "(no subject)"),
        DECISION_BADGE.get(item.get("decision") or "", escape_md(str(item.get("decision")))),
        escape_md(service_names.get(labels.get("service") or "", labels.get("service") or "–")),
        labels.get("tier") or "–",
        labels.get("channel") or "–",
        f":{colour}[{confidence:.2f}]" if confidence is not None else "–",
        age_text(item.get("created_at")),
    ]
    return " · ".join(parts)


def pick_key(item: dict[str, Any]) -> str:
    return f"q_pick_{item['id']}"


def accept_many(picked: list[dict[str, Any]]) -> None:
    """Accept each picked row's labels as the row shows them, at the revision the row shows: a ticket that moved on
    since the page was drawn (a new message, another lead) is refused by the API (409) and left for a look."""
    done, problems = 0, []
    bar = st.progress(0.0, text=f"Accepting {len(picked)} tickets…")
    for n, item in enumerate(picked, 1):
        request = bulk_accept_request(item)
        if request is not None:
            action, labels = request
            try:
                client().review(item["id"], action, labels=labels, revision=item.get("current_seq"))  # type: ignore[arg-type]
                done += 1
            except ApiError as err:
                why = "it changed since this page was drawn; open it to review" if err.status == 409 else str(err)
                problems.append(f"{item['id']}: {why}")
        bar.progress(n / len(picked), text=f"Accepting {len(picked)} tickets… {n}/{len(picked)}")
    for key in [k for k in st.session_state if str(k).startswith("q_pick_")]:
        del st.session_state[key]
    st.session_state["q_bulk_done"] = (done, problems)
    st.rerun()


DECISIONS = {"all": None, "needs review": "needs_review", "suggest": "suggest"}

st.title("Review queue")
st.caption(
    "Needs review first, then suggestions; lowest confidence first. "
    "Keyboard: Tab moves through filters and tickets, Enter opens one; **O** opens the first ticket, **J** / **K** page."
)

tax = taxonomy()

# ---------------------------------------------------------------- filters
cols = st.columns([2.1, 1.4, 1, 1, 1.2])  # the Decision control's three options: at 1.6 "suggest" was cut off
decision_label = cols[0].segmented_control("Decision", list(DECISIONS), default="all", key="q_decision") or "all"
filters: dict[str, Any] = {"decision": DECISIONS[decision_label]}
for col, axis in zip(cols[1:4], ("service", "tier", "channel"), strict=True):
    names = label_names(tax, axis)
    choice = col.selectbox(
        axis.capitalize(), [ANY, *label_ids(tax, axis)], key=f"q_{axis}", format_func=lambda v, n=names: v if v == ANY else n.get(v, v)
    )
    filters[axis] = None if choice == ANY else choice
age_filter = cols[4].selectbox("Age", list(AGE_FILTERS), key="q_age")

# ---------------------------------------------------------------- counts per state and the page of tickets
state_key = repr(sorted({**filters, "age": age_filter}.items()))
if st.session_state.get("q_state") != state_key:
    st.session_state["q_state"], st.session_state["q_cursors"] = state_key, [None]
cursors: list[str | None] = st.session_state["q_cursors"]

age = age_params(age_filter)
with api_errors():
    counts = client().queue_counts(**{k: v for k, v in filters.items() if k != "decision"}, **age)
    page = client().review_queue(limit=settings().ui_page_size, cursor=cursors[-1], **filters, **age)
items = [item for item in page.items if within_age(item.get("created_at"), age_filter)]

c = st.columns(5)
c[0].metric("Needs review", counts.get("needs_review", 0))
c[1].metric("Suggested", counts.get("suggest", 0))
c[2].metric("Auto-applied", counts.get("auto_apply", 0))
c[3].metric("Reviewed by a lead", counts.get("reviewed", 0))
c[4].metric("All tickets", counts.get("total", 0))

if not items:
    if any(filters.values()) or age_filter != "any age":
        st.info("No ticket in the queue matches these filters.", icon=":material/search:")
    elif len(cursors) > 1:
        st.info("No more tickets on this page.")
    else:
        st.success("Nothing to review: the queue is empty. New tickets that need a lead will show up here.", icon=":material/check_circle:")

if report := st.session_state.pop("q_bulk_done", None):
    done, problems = report
    if done:
        st.success(f"Accepted {done} ticket{'' if done == 1 else 's'} as shown.", icon=":material/done_all:")
    for problem in problems:
        st.warning(escape_md(problem), icon=":material/sync_problem:")

service_names = label_names(tax, "service")
if items:
    bulk = st.toggle(
        "Select tickets to accept", key="q_bulk",
        help="Tick rows whose labels are right as shown and accept them at once; each is accepted at the revision listed.",
    )
    st.caption("**ticket** · decision · service · tier · channel · confidence · age")
    with st.container(gap="small"):
        for item in items:
            link = dict(page=PAGES["ticket"], label=queue_label(item, service_names), query_params={"id": item["id"]}, help=item["id"])
            if not bulk:
                st.page_link(**link)
                continue
            row = st.columns([0.04, 0.96], vertical_alignment="center")
            row[0].checkbox(
                f"select {item['id']}", key=pick_key(item), label_visibility="collapsed", disabled=not item.get("labels"),
                help=None if item.get("labels") else "No labels in force: set them on the ticket page",
            )
            row[1].page_link(**link)
    # the page reloads the queue before it reads a press, so a press belongs to the rows drawn in the previous run:
    # those labels and revisions are what the lead ticked (a row that changed since is then refused, and named)
    seen_rows = st.session_state.get("q_seen_rows", {})
    st.session_state["q_seen_rows"] = drawn = {item["id"]: item for item in items}
    if bulk:
        # a ticked row gone from this page since (another lead reviewed it) is sent too, to be refused and named
        rows = {**drawn, **seen_rows}
        picked = [row for row in rows.values() if st.session_state.get(pick_key(row))]
        label = f"Accept {len(picked)} selected"
        if st.button(label, key="q_bulk_accept", type="primary", disabled=not picked, icon=":material/done_all:"):
            accept_many(picked)

nav = st.columns([1, 1, 1, 4])
if items and nav[0].button("Open first", shortcut="O", help="Open the first ticket of this page (O)"):
    st.switch_page(PAGES["ticket"], query_params={"id": items[0]["id"]})
if len(cursors) > 1 and nav[1].button("Previous page", shortcut="K"):
    cursors.pop()
    st.rerun()
if page.next_cursor and nav[2].button("Next page", shortcut="J"):
    cursors.append(page.next_cursor)
    st.rerun()
