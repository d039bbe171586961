"""Ticket: the thread, labels with confidence and alternatives, the cited evidence, the draft, the review, the timeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from agent.contracts import DRAFT_MAX_CHARS
from ui.api_client import ApiError, ApiNotFound
from ui.common import PAGES, client, label_ids, label_names, show_error, taxonomy
from ui.format import (
    AXES,
    Escalation,
    agent_classification,
    ago,
    anchor,
    cited_ids,
    code_span,
    decision_badge,
    escape_md,
    label_changes,
    link_citations,
    message_text,
    no_draft_reason,
    review_request,
    shown_warnings,
    tier_escalation,
    tiers_above,
    timeline,
)

AVATARS = {"customer": ":material/person:", "agent": ":material/support_agent:", "system": ":material/settings:"}


def pick_ticket() -> str:
    """The ticket id of the URL, else one typed. The page's title is drawn here as "Ticket", in the slot the
    ticket's subject takes later (`heading`): an unknown id or an API error stopped the page with no title."""
    heading.title("Ticket")
    ticket_id = st.query_params.get("id", "")
    if not ticket_id:
        st.info("Open a ticket from the review queue, or type its id.", icon=":material/confirmation_number:")
        typed = st.text_input("Ticket id", placeholder="tk_…")
        if not typed:
            st.page_link(PAGES["queue"], label="Go to the review queue", icon=":material/inbox:")
            st.stop()
        st.query_params["id"] = typed.strip()
        return typed.strip()
    return ticket_id


def load(ticket_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        return client().ticket(ticket_id), client().revisions(ticket_id)
    except ApiNotFound:
        st.warning(f"There is no ticket {code_span(ticket_id)}.", icon=":material/search:")
        st.page_link(PAGES["queue"], label="Back to the review queue", icon=":material/inbox:")
        st.stop()
    except ApiError as err:
        show_error(err)
        st.stop()
    raise AssertionError("unreachable")


def render_message(text: str) -> None:
    """One message: its text with its line breaks, a long one cut with the rest behind an expander."""
    shown = message_text(text or "(no body)")
    if shown.was_html:
        st.caption("an HTML e-mail, shown as its text")
    st.markdown(shown.shown)
    if shown.rest:
        with st.expander(f"Show the rest of the message ({shown.rest_chars:,} more characters)"):
            st.markdown(shown.rest)


def render_thread(ticket: dict[str, Any]) -> None:
    st.subheader("Thread")
    with st.chat_message("customer", avatar=AVATARS["customer"]):
        render_message(ticket.get("body") or "")
    for message in ticket.get("messages", []):
        with st.chat_message(message["author"], avatar=AVATARS.get(message["author"], ":material/chat:")):
            st.caption(f"{message['author']} · {ago(message.get('created_at'))}")
            render_message(message["text"])


def render_labels(
    classification: dict[str, Any], suggestion: dict[str, Any] | None, names: dict[str, dict[str, str]], escalation: Escalation | None = None
) -> None:
    """Each axis's label, confidence and source; a tier an escalation set reads "escalated by <who>", not "intake"."""
    st.subheader("Labels")
    for axis in AXES:
        label = classification["labels"][axis]
        name = names[axis].get(label["label"], label["label"])
        source = f"escalated by {escape_md(escalation.by)}" if axis == "tier" and escalation else label["source"]
        st.progress(
            float(label["confidence"]),
            text=f"**{axis}**: {escape_md(name)} (`{label['label']}`) · {label['confidence']:.2f} · {source}",
        )
        alternatives = label.get("alternatives") or []
        if alternatives:
            st.caption("alternatives: " + ", ".join(f"`{a['label']}` {a['confidence']:.2f}" for a in alternatives))
        if suggestion and axis in suggestion:
            s = suggestion[axis]
            st.caption(f":orange[the agent now suggests `{s['label']}` ({s['confidence']:.2f}); a lead's label is kept]")
    route = classification.get("route") or {}
    st.caption(f"route: **{escape_md(route.get('team', '–'))}**" + (f" / {escape_md(route['queue'])}" if route.get("queue") else ""))
    for warning in shown_warnings(classification):
        st.warning(warning, icon=":material/warning:")


def _ticket_card(item: dict[str, Any], cited: set[str]) -> None:
    with st.container(border=True):
        st.html(f"<div id='{anchor(item['id'])}'></div>")
        mark = " :orange-badge[cited]" if item["id"] in cited else ""
        verified = " :green-badge[verified by a lead]" if item.get("verified") else ""
        st.markdown(f"**{escape_md(item['id'])}** · similarity {item['score']:.2f}{mark}{verified}")
        st.caption(" · ".join(f"{axis}: `{label}`" for axis, label in (item.get("labels") or {}).items()))
        if item.get("text"):
            st.markdown(escape_md(item["text"][:300]))
        if item.get("answer"):
            st.markdown("**Resolved with:** " + escape_md(item["answer"][:300]))


def _article_card(item: dict[str, Any], cited: set[str]) -> None:
    with st.container(border=True):
        st.html(f"<div id='{anchor(item['id'])}'></div>")
        mark = " :orange-badge[cited]" if item["id"] in cited else ""
        title = escape_md(item.get("title") or item["id"])
        linked = f"[{title}]({item['url']})" if item.get("url") else title
        st.markdown(f"**{linked}** · `{item['id']}` · similarity {item['score']:.2f}{mark}")
        if item.get("text"):
            st.caption(escape_md(" ".join(item["text"].split())[:300]))


def render_evidence(evidence: dict[str, Any], cited: set[str], shown: int = 4) -> None:
    """Similar past tickets and KB articles side by side; cited ones first and marked, each linkable by its id."""
    columns = st.columns(2)
    for col, title, items, card in (
        (columns[0], "Similar past tickets", evidence.get("tickets", []), _ticket_card),
        (columns[1], "KB articles", evidence.get("articles", []), _article_card),
    ):
        with col:
            st.subheader(title)
            if not items:
                st.caption("none retrieved")
            ordered = sorted(items, key=lambda e: (e["id"] not in cited, -e["score"]))
            for item in ordered[:shown]:
                card(item, cited)
            if len(ordered) > shown:
                with st.expander(f"{len(ordered) - shown} more"):
                    for item in ordered[shown:]:
                        card(item, cited)


def draft_key(ticket_id: str, seq: int | None) -> str:
    """The answer box's key, per revision like the label boxes: a box kept across a new revision would show, and
    send with Accept as the lead's edit, the draft of a revision no longer in force."""
    return f"draft_{ticket_id}_{seq}"


def render_draft(
    classification: dict[str, Any], ticket_id: str, seq: int | None, known: set[str], agent: dict[str, Any] | None = None
) -> None:
    """The draft to edit, or why there is none (`agent`: the agent's classification a review was made from)."""
    st.subheader("Drafted answer")
    draft = classification.get("draft")
    if not draft:
        st.caption(escape_md(no_draft_reason(classification, agent)))
        return
    # the API's own limit (a longer answer came back as a 422 after the lead had written it); drafts stay under it
    text = st.text_area(
        "Answer (edit before sending)", value=draft["text"][:DRAFT_MAX_CHARS], height=200, max_chars=DRAFT_MAX_CHARS, key=draft_key(ticket_id, seq)
    )
    citations = draft.get("citations") or []
    if citations:
        st.markdown("Cites: " + ", ".join(link_citations(f"[{c}]", known) for c in citations))
    st.download_button("Download the answer", text, file_name=f"{ticket_id}-answer.txt", mime="text/plain")
    if text != draft["text"]:
        st.caption("Your edited answer is stored with the review when you press Accept.")


def render_review(ticket: dict[str, Any], current: dict[str, Any] | None, tax: dict[str, Any]) -> None:
    st.subheader("Review")
    classification = (current or {}).get("classification") or {}
    current_labels = {axis: classification["labels"][axis]["label"] for axis in AXES} if classification else {}
    suggested = {axis: s["label"] for axis, s in ((current or {}).get("suggestion") or {}).items()}
    seq = ticket.get("current_seq")
    # The page reloads the ticket before it reads a button press, so the press belongs to the revision drawn in the
    # previous run; a review written in between (another lead, or this lead's double click) must not be overwritten.
    shown = st.session_state.get(f"review_shown_{ticket['id']}", seq)
    st.session_state[f"review_shown_{ticket['id']}"] = seq
    # with no labels in force nothing is preselected (except the intake channel): the lead picks every label
    defaults = current_labels or ({"channel": ticket["channel"]} if ticket.get("channel") else {})
    picked: dict[str, str | None] = {}
    for axis in AXES:
        ids = label_ids(tax, axis)
        names = label_names(tax, axis)
        default = defaults.get(axis)
        picked[axis] = st.selectbox(
            axis.capitalize(),
            ids,
            index=ids.index(default) if default in ids else None,
            placeholder="choose a label",
            key=f"review_{axis}_{ticket['id']}_{seq}",
            format_func=lambda v, n=names: f"{n.get(v, v)} ({v})",
        )
    chosen = {axis: label for axis, label in picked.items() if label is not None}
    comment = st.text_input("Comment (why; required to reject)", max_chars=4000, key=f"review_comment_{ticket['id']}_{seq}")
    action, labels = review_request(current_labels, chosen, suggested)
    changes = label_changes(current_labels, chosen)
    if changes:
        st.caption("Accept saves your edit: " + "; ".join(changes))
    elif suggested:
        st.caption("Accept keeps the labels shown; pick the agent's suggestion above to take it instead.")
    buttons = st.columns(2)
    complete = len(chosen) == len(AXES)
    accepted = buttons[0].button("Accept", type="primary", shortcut="Ctrl+Enter", help="Accept the labels as shown above (Ctrl+Enter)", disabled=not complete)
    rejected = buttons[1].button("Reject", shortcut="Ctrl+Shift+X", help="Reject the current labels (Ctrl+Shift+X); needs a comment", disabled=not current_labels)
    if (accepted or rejected) and shown != seq:
        # the boxes above are those of the new revision; what the lead had set on the old one is said back, so a
        # choice or a comment typed against the old revision is not lost with its boxes
        unsent = [
            f"{axis} {code_span(value)}" for axis in AXES if (value := st.session_state.get(f"review_{axis}_{ticket['id']}_{shown}"))
        ]
        if (typed := st.session_state.get(f"review_comment_{ticket['id']}_{shown}") or "").strip():
            unsent.append(f"comment “{escape_md(' '.join(typed.split()))}”")
        st.warning(
            f"The ticket changed while you were looking at it (revision #{shown} → #{seq}), so nothing was sent. "
            "Check the labels and the timeline below, then review again."
            + (f" What you had set, not sent: {'; '.join(unsent)}." if unsent else ""),
            icon=":material/sync_problem:",
        )
    elif accepted:
        send(ticket["id"], action, labels, comment, seq, draft=edited_draft(classification, ticket["id"], seq))
    elif rejected:
        if not comment.strip():
            st.warning("Say why in the comment before rejecting: the comment is kept in the timeline.", icon=":material/edit_note:")
        else:
            send(ticket["id"], "reject", None, comment, seq)


def edited_draft(classification: dict[str, Any], ticket_id: str, seq: int | None) -> dict[str, Any] | None:
    """The answer as the lead edited it above, to store with the review; None when it was left as drafted."""
    draft = classification.get("draft") or {}
    text = st.session_state.get(draft_key(ticket_id, seq))
    if not draft or not text or not text.strip() or text == draft.get("text"):
        return None
    return {"text": text, "citations": draft.get("citations") or []}


def send(
    ticket_id: str, action: str, labels: dict[str, str] | None, comment: str, seq: int | None, *, draft: dict[str, Any] | None = None
) -> None:
    try:
        client().review(ticket_id, action, labels=labels, comment=comment.strip() or None, revision=seq, draft=draft)  # type: ignore[arg-type]
    except ApiError as err:
        show_error(err)
        if err.status == 409:
            st.button("Reload the ticket")
        return
    st.session_state["review_done"] = {"accept": "Accepted", "edit": "Labels saved", "reject": "Rejected"}[action]
    st.rerun()


def render_actions(ticket: dict[str, Any], current: dict[str, Any] | None, tax: dict[str, Any]) -> None:
    """What a lead does when the ticket itself moves on (a simple query that turns into an incident, a reply that
    came by phone): escalate it, add the message, or run the agent again. Each writes a new revision; none
    overwrites one, and a lead's labels stay (the agent's differing view is shown as its suggestion)."""
    ticket_id, seq = ticket["id"], ticket.get("current_seq")
    labels = ((current or {}).get("classification") or {}).get("labels") or {}
    current_tier = (labels.get("tier") or {}).get("label")
    with st.expander("Escalate, add a message, or re-run the agent", icon=":material/trending_up:"):
        st.markdown("**Escalate**")
        targets = tiers_above(label_ids(tax, "tier"), current_tier)
        names = label_names(tax, "tier")
        if not targets:
            st.caption(f"Already at the top tier ({escape_md(current_tier or '')}): add a message or re-run the agent instead.")
        else:
            target = st.selectbox(
                "Escalate to", targets, index=0, key=f"escalate_tier_{ticket_id}_{seq}", format_func=lambda v: f"{names.get(v, v)} ({v})"
            )
            note = st.text_input("Why (kept with the revision)", max_chars=4000, key=f"escalate_note_{ticket_id}_{seq}")
            if st.button("Escalate", icon=":material/trending_up:", key=f"escalate_{ticket_id}"):
                act(lambda: client().escalate(ticket_id, tier=target, note=note.strip() or None), f"Escalated to {target}")
        st.divider()
        st.markdown("**Add a message**")
        author = st.radio("From", ["customer", "agent"], horizontal=True, key=f"message_author_{ticket_id}")
        text = st.text_area(
            "Message", max_chars=100_000, key=f"message_text_{ticket_id}_{seq}",
            placeholder="What the customer wrote back, or what was said on the phone",
        )
        if st.button("Add the message", icon=":material/add_comment:", key=f"message_{ticket_id}"):
            if not text.strip():
                st.warning("Write the message first.", icon=":material/edit_note:")
            else:
                act(lambda: client().add_message(ticket_id, text, author=author), "Message added and the ticket re-classified")
        st.divider()
        st.caption("Run the agent again on the thread as it is, e.g. after the knowledge base, the model or the store changed.")
        if st.button("Re-run the agent", icon=":material/refresh:", key=f"reclassify_{ticket_id}"):
            act(lambda: client().reclassify(ticket_id), "Re-classified")


def act(call: Callable[[], Any], done: str) -> None:
    """Send one ticket action; on success say so after the page is drawn again with the new revision."""
    try:
        with st.spinner("The agent is classifying the thread…"):
            call()
    except ApiError as err:
        show_error(err)
        return
    st.session_state["review_done"] = done
    st.rerun()


def render_timeline(revisions: list[dict[str, Any]]) -> None:
    st.subheader("Revision timeline")
    for row in timeline(revisions):
        with st.container(border=True):
            when = str(row["when"] or "")[:19].replace("T", " ")
            badge = decision_badge(row["decision"], row["reason"])
            rejected = f" :red-badge[rejected by #{row['rejected_by']}]" if row["rejected_by"] else ""
            st.markdown(f"**#{row['seq']}** · {when} UTC · **{escape_md(row['who'])}** {escape_md(row['what'])} {badge}{rejected}")
            for change in row["changes"]:
                st.markdown(f"- {escape_md(change)}")
            if row["why"]:
                st.caption("why: " + escape_md(row["why"][:400]))


# ---------------------------------------------------------------- the page

heading = st.empty()
ticket_id = pick_ticket()
tax = taxonomy()
ticket, revisions = load(ticket_id)
current = ticket.get("current")
classification = (current or {}).get("classification")

if done := st.session_state.pop("review_done", None):
    # the revision just written: after a reject the labels in force are an older revision's (current_seq)
    written = max((r["seq"] for r in revisions), default=ticket.get("current_seq"))
    st.toast(f"{done}: revision #{written}", icon=":material/check_circle:")
    st.success(f"{done}. The ticket {'is still' if ticket.get('in_queue') else 'is no longer'} in the review queue.")

heading.title(escape_md((ticket.get("subject") or "").strip() or "(no subject)"))
st.caption(
    f"`{ticket['id']}`" + (f" · external {code_span(ticket['external_id'])}" if ticket.get("external_id") else "")
    + f" · channel {ticket.get('channel') or 'not given'} · created {ago(ticket.get('created_at'))} by {escape_md(ticket.get('created_by', ''))}"
    + f" · {ticket.get('revisions', 0)} revision{'' if ticket.get('revisions') == 1 else 's'}"
)
top = st.columns([1.2, 2.5, 4])
top[0].page_link(PAGES["queue"], label="Back to queue", icon=":material/inbox:")
if ticket.get("decision"):
    top[1].markdown(decision_badge(ticket["decision"], (current or {}).get("reason")) + (" · in queue" if ticket.get("in_queue") else ""))

left, right = st.columns([3, 2], gap="large")
evidence: dict[str, Any] = (classification or {}).get("evidence") or {}
known = {e["id"] for e in evidence.get("tickets", [])} | {e["id"] for e in evidence.get("articles", [])}
draft = (classification or {}).get("draft") or {}
cited = set(cited_ids((classification or {}).get("rationale", ""))) | set(draft.get("citations") or [])
escalation = tier_escalation(revisions, ticket.get("current_seq")) if classification else None
with left:
    render_thread(ticket)
    if classification:
        st.subheader("Rationale")
        st.markdown(link_citations(classification.get("rationale", ""), known))
        if escalation:  # the agent's rationale speaks of its own tier, not the one a person raised it to
            note = f" ({escape_md(escalation.note[:300])})" if escalation.note else ""  # the timeline shows more
            st.caption(
                f"The tier is {escape_md(escalation.tier)}, escalated by {escape_md(escalation.by)}{note}; the rationale "
                "above is the agent's own reading of the ticket and may name another tier."
            )
        reviewed = (current or {}).get("reason") == "human_review"
        agent = agent_classification(revisions, ticket.get("current_seq")) if reviewed else None
        render_draft(classification, ticket["id"], ticket.get("current_seq"), known, agent)
with right:
    if classification:
        names = {axis: label_names(tax, axis) for axis in AXES}
        render_labels(classification, (current or {}).get("suggestion"), names, escalation)
    else:
        st.info("No labels in force: every labelled revision was rejected. Set the labels below.")
    render_review(ticket, current, tax)
    render_actions(ticket, current, tax)

if classification:
    render_evidence(evidence, cited)
render_timeline(revisions)
