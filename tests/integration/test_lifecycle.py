"""The ticket lifecycle through the real API, on SQLite and on PostgreSQL, with the real seeded store.

Proposal mode (no LLM): what is tested here is the history, not the LLM, and proposal mode is deterministic,
so a revision can be compared with a stateless classification of the same thread.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from agent.records import Records
from agent.service import TriageService
from tests.integration.conftest import TRIAGE, cli_env
from tests.records_support import Api, copy_seeded, database_url, proposal_settings, running_api

PASSWORD = {"subject": "Cannot log in", "body": "I forgot my password and cannot log in to my account.", "channel": "chat"}
VAGUE = ["asdf qwer zxcv", "hello?", "see attached", "question", "ok thanks", "call me back"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, seeded_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Per backend its own copy of the store too: reviews write verified tickets into it."""
    data_dir = copy_seeded(seeded_data_dir, tmp_path_factory.mktemp(f"lifecycle-{request.param}") / "data")
    url = database_url(request.param, request, data_dir)
    with running_api(TriageService(proposal_settings(data_dir)), url) as running:
        yield running


def create(api: Api, body: dict, **headers: str) -> dict:
    response = api.post("/v1/tickets", body, **headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_every_revision_is_kept_in_order_with_reason_and_actor(api: Api) -> None:
    """Create, two messages, an escalation, an edit review and a reject: six revisions, none overwritten."""
    seen = [create(api, PASSWORD)]
    ticket_id = seen[0]["id"]
    for message in ("The reset e-mail never arrives, I checked the spam folder.", "Now two colleagues cannot log in either."):
        response = api.post(f"/v1/tickets/{ticket_id}/messages", {"author": "customer", "text": message})
        assert response.status_code == 201, response.text
        seen.append(response.json())
    tier_before = seen[-1]["current"]["labels"]["tier"]
    escalated = api.post(f"/v1/tickets/{ticket_id}/escalations", {"note": "customer called twice"})
    assert escalated.status_code == 201, escalated.text
    seen.append(escalated.json())
    assert seen[-1]["current"]["labels"]["tier"] == {"L1": "L2", "L2": "L3", "L3": "L3"}[tier_before]
    edited = api.post(
        f"/v1/tickets/{ticket_id}/reviews",
        {"action": "edit", "labels": {"service": "it_help_desk"}, "comment": "staff accounts go to the help desk", "revision": 4},
        scope="lead",
    )
    assert edited.status_code == 201, edited.text
    seen.append(edited.json())
    rejected = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "reject", "revision": 5, "comment": "wrong team"}, scope="lead")
    assert rejected.status_code == 201, rejected.text

    revisions = api.get(f"/v1/tickets/{ticket_id}/revisions").json()
    assert [r["seq"] for r in revisions] == [1, 2, 3, 4, 5, 6]
    assert [r["reason"] for r in revisions] == ["new_ticket", "new_message", "new_message", "escalation", "human_review", "human_review"]
    assert all(r["actor"].startswith("agent:proposal:") for r in revisions[:4])
    assert [r["actor"] for r in revisions[4:]] == ["user:lead-tester", "user:lead-tester"]
    assert [r["supersedes"] for r in revisions] == [None, 1, 2, 3, 4, 5]
    assert [r["review"]["action"] if r["review"] else None for r in revisions] == [None, None, None, None, "edit", "reject"]
    assert revisions[5]["rejects"] == 5 and revisions[4]["rejected_by"] == 6 and revisions[5]["classification"] is None
    assert revisions[4]["labels"]["service"] == "it_help_desk" and revisions[4]["note"] == "staff accounts go to the help desk"
    assert revisions[3]["note"] == "customer called twice"
    assert ("tier" in revisions[3]["changed_axes"]) == (tier_before != "L3")
    created = [r["created_at"] for r in revisions]
    assert created == sorted(created)
    # nothing was overwritten: each revision is exactly what the call that made it answered
    for answer, stored in zip(seen, revisions[:5], strict=True):
        assert answer["current"]["seq"] == stored["seq"]
        assert answer["current"]["classification"] == stored["classification"]
        assert answer["current"]["labels"] == stored["labels"]

    ticket = api.get(f"/v1/tickets/{ticket_id}").json()
    assert ticket["current_seq"] == 4 and ticket["current"]["reason"] == "escalation"  # the reject fell back to #4
    assert ticket["revisions"] == 6 and [m["seq"] for m in ticket["messages"]] == [1, 2]

    # the same timeline in a terminal
    env = cli_env(Path("/nonexistent"), TRIAGE_DATABASE_URL=api.records.url)
    done = subprocess.run([TRIAGE, "history", ticket_id], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout
    assert lines.index("new_ticket") < lines.index("new_message") < lines.index("escalation") < lines.index("human_review")
    assert "user:lead-tester edit" in lines and "rejects #5" in lines and "rejected by #6" in lines
    if api.records.dialect == "sqlite":  # the CLI starts slowly; one backend is enough for `tickets show`
        shown = subprocess.run([TRIAGE, "tickets", "show", ticket_id, "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and json.loads(shown.stdout)["current_seq"] == 4


def test_a_new_message_reclassifies_the_whole_thread(api: Api) -> None:
    body = {"subject": "Question", "body": "Hello, I have a question about my account."}
    message = {"author": "customer", "text": "Since this morning nobody in the office can connect to the VPN, the network is down."}
    ticket = create(api, body)
    answer = api.post(f"/v1/tickets/{ticket['id']}/messages", message).json()["current"]["classification"]
    thread = api.post("/v1/classify", {**body, "messages": [message]}).json()
    only_message = api.post("/v1/classify", {"body": message["text"]}).json()
    assert answer["labels"] == thread["labels"]
    assert [e["id"] for e in answer["evidence"]["tickets"]] == [e["id"] for e in thread["evidence"]["tickets"]]
    assert answer["labels"] != only_message["labels"] or answer["evidence"] != only_message["evidence"]


def test_a_human_label_wins_over_later_agent_revisions(api: Api) -> None:
    ticket = create(api, {"subject": "Charged twice", "body": "My card was charged twice for order 1234, please refund one.", "channel": "email"})
    agent_service = ticket["current"]["labels"]["service"]
    assert agent_service != "hardware"
    edited = api.post(f"/v1/tickets/{ticket['id']}/reviews", {"action": "edit", "labels": {"service": "hardware"}}, scope="lead").json()
    assert edited["in_queue"] is False and edited["current"]["classification"]["labels"]["service"]["source"] == "human"

    after = api.post(f"/v1/tickets/{ticket['id']}/messages", {"text": "Still waiting for the refund of the double charge."}).json()
    current = after["current"]
    assert current["reason"] == "new_message" and current["actor"].startswith("agent:")
    assert current["labels"]["service"] == "hardware" and current["classification"]["labels"]["service"]["source"] == "human"
    assert current["suggestion"]["service"]["label"] != "hardware"  # the agent still proposes, as a suggestion
    assert after["in_queue"] and after["decision"] == "suggest"
    queued = [item["id"] for item in api.get("/v1/review-queue", scope="lead", decision="suggest", limit=200).json()["items"]]
    assert ticket["id"] in queued

    again = api.post(f"/v1/tickets/{ticket['id']}/reclassifications", {}, scope="lead").json()
    assert again["current"]["reason"] == "reclassify" and again["current"]["seq"] == 4
    assert again["labels"]["service"] == "hardware" and again["current"]["supersedes"] == 3

    accepted = api.post(f"/v1/tickets/{ticket['id']}/reviews", {"action": "accept"}, scope="lead").json()
    assert accepted["labels"]["service"] == current["suggestion"]["service"]["label"]  # accept takes the agent's proposal
    assert accepted["in_queue"] is False


def test_only_a_human_lowers_the_tier(api: Api) -> None:
    ticket = create(api, {"subject": "Outage", "body": "The whole platform is down for all our users since this morning."})
    ticket_id = ticket["id"]
    escalated = api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": "L3", "note": "major incident"}).json()
    assert escalated["labels"]["tier"] == "L3"
    calm = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": "Thanks, it works again. One small question: how do I change my password?"}).json()
    assert calm["labels"]["tier"] == "L3"
    lower = api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": "L1"})
    assert lower.status_code == 422 and "cannot lower the tier" in lower.json()["detail"]
    lowered = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "edit", "labels": {"tier": "L1"}}, scope="lead").json()
    assert lowered["labels"]["tier"] == "L1" and lowered["current"]["actor"] == "user:lead-tester"


def test_an_idempotency_key_returns_the_first_ticket(api: Api) -> None:
    body = {"subject": "Refund", "body": "Please refund my last order, it arrived broken.", "channel": "email"}
    first = api.post("/v1/tickets", body, **{"Idempotency-Key": "retry-1"})
    again = api.post("/v1/tickets", body, **{"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["revisions"] == 1
    other_body = api.post("/v1/tickets", {**body, "body": "Something else"}, **{"Idempotency-Key": "retry-1"})
    assert other_body.status_code == 422 and "Idempotency-Key" in other_body.json()["detail"]
    other_caller = api.post("/v1/tickets", body, scope="lead", **{"Idempotency-Key": "retry-1"})  # keys are per API key
    assert other_caller.status_code == 201 and other_caller.json()["id"] != first.json()["id"]


def test_the_review_queue_is_ordered_filtered_paged_and_emptied_by_reviews(api: Api) -> None:
    ours = {create(api, {"body": text})["id"] for text in VAGUE}
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/review-queue", scope="lead", **params).json()
        pages.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [item["id"] for item in pages]
    assert len(ids) == len(set(ids))
    rank = {"needs_review": 0, "suggest": 1}
    keys = [(rank[item["decision"]], item["confidence"]) for item in pages]
    assert keys == sorted(keys)  # needs_review first, then suggest; lowest confidence first
    queued_ours = ours & set(ids)
    assert queued_ours, "vague tickets should wait for a lead"
    one_shot = api.get("/v1/review-queue", scope="lead", limit=200).json()["items"]
    assert [i["id"] for i in one_shot] == ids  # paging neither skips nor repeats
    assert all(item["current"]["classification"]["evidence"] is not None for item in pages)

    needs_review = api.get("/v1/review-queue", scope="lead", decision="needs_review", limit=200).json()["items"]
    assert needs_review and all(item["decision"] == "needs_review" for item in needs_review)
    service = needs_review[0]["labels"]["service"]
    by_service = api.get("/v1/review-queue", scope="lead", service=service, limit=200).json()["items"]
    assert by_service and all(item["labels"]["service"] == service for item in by_service)
    channel = api.get("/v1/review-queue", scope="lead", channel="social", limit=200).json()["items"]
    assert all(item["labels"]["channel"] == "social" for item in channel)

    reviewed = sorted(queued_ours)[0]
    assert api.post(f"/v1/tickets/{reviewed}/reviews", {"action": "accept"}, scope="lead").status_code == 201
    after = {item["id"] for item in api.get("/v1/review-queue", scope="lead", limit=200).json()["items"]}
    assert reviewed not in after and (queued_ours - {reviewed}) <= after


def test_the_review_queue_filters_by_creation_time(api: Api) -> None:
    """The age filter is a query (pages through all matches), on both backends; a time without a zone is UTC."""
    for body in VAGUE[:3]:
        create(api, {"body": body})
    everything = api.get("/v1/review-queue", scope="lead", limit=200).json()["items"]
    created = {item["id"]: datetime.fromisoformat(item["created_at"]) for item in everything}
    cut = sorted(created.values())[len(created) // 2]
    after = {i["id"] for i in api.get("/v1/review-queue", scope="lead", limit=200, created_after=cut.isoformat()).json()["items"]}
    before = {i["id"] for i in api.get("/v1/review-queue", scope="lead", limit=200, created_before=cut.isoformat()).json()["items"]}
    assert after and before and not (after & before) and after | before == set(created)
    assert all(created[i] >= cut for i in after) and all(created[i] < cut for i in before)
    counts_after = api.get("/v1/stats/queue", scope="lead", created_after=cut.isoformat()).json()
    counts_before = api.get("/v1/stats/queue", scope="lead", created_before=cut.isoformat()).json()
    assert counts_after["needs_review"] + counts_after["suggest"] == len(after)  # the counts above a filtered queue
    assert counts_before["needs_review"] + counts_before["suggest"] == len(before)
    assert api.get("/v1/stats/queue", scope="lead", created_before="2000-01-01T00:00:00").json()["total"] == 0
    vague_rows = [item for item in everything if not item["subject"]]
    assert vague_rows and all(item["preview"] in VAGUE for item in vague_rows)  # subject-less tickets show their body
    naive_past = api.get("/v1/review-queue", scope="lead", created_before="2000-01-01T00:00:00").json()
    assert naive_past["items"] == []
    assert api.get("/v1/review-queue", scope="lead", created_after="next tuesday").status_code == 422


def test_the_answer_a_lead_sent_is_kept_with_the_review(api: Api) -> None:
    ticket = create(api, PASSWORD)
    sent = {"text": "Here is a new reset link; it works for 24 hours.", "citations": ["kb-password"]}
    refused = api.post(f"/v1/tickets/{ticket['id']}/reviews", {"action": "reject", "comment": "no", "draft": sent}, scope="lead")
    assert refused.status_code == 422 and "reject takes no draft" in refused.text
    reviewed = api.post(f"/v1/tickets/{ticket['id']}/reviews", {"action": "accept", "draft": sent}, scope="lead")
    assert reviewed.status_code == 201, reviewed.text
    assert reviewed.json()["current"]["classification"]["draft"] == sent
    revisions = api.get(f"/v1/tickets/{ticket['id']}/revisions").json()
    assert revisions[0]["classification"]["draft"] != sent  # the agent's own draft stays in its revision


def test_listing_pages_through_every_ticket_newest_first(api: Api) -> None:
    create(api, {"body": "The printer on floor 3 is jammed again."})
    everything = api.get("/v1/tickets", limit=200).json()["items"]
    seen, cursor = [], None
    while True:
        page = api.get("/v1/tickets", limit=3, **({"cursor": cursor} if cursor else {})).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in everything] == sorted(seen, reverse=True)


def test_lifecycle_errors_are_json_that_say_what_to_do(api: Api) -> None:
    missing = api.get("/v1/tickets/tk_nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found" and "GET /v1/tickets" in missing.json()["detail"]
    ticket_id = create(api, PASSWORD)["id"]
    cases = [
        ({"action": "edit"}, 422, "an edit needs labels"),
        ({"action": "accept", "labels": {"tier": "L1"}}, 422, "use action"),
        ({"action": "edit", "labels": {"service": "plumbing"}}, 422, "unknown service label 'plumbing'"),
        ({"action": "maybe"}, 422, "action"),
        ({"action": "accept", "revision": 7}, 422, "has no revision 7"),
    ]
    for body, status, needle in cases:
        response = api.post(f"/v1/tickets/{ticket_id}/reviews", body, scope="lead")
        assert response.status_code == status and needle in response.json()["detail"], (body, response.text)
    assert api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "reject"}, scope="lead").status_code == 201
    nothing = api.post(f"/v1/tickets/{ticket_id}/reviews", {"action": "accept"}, scope="lead")
    assert nothing.status_code == 409 and "send an edit" in nothing.json()["detail"]
    fresh = api.get(f"/v1/tickets/{ticket_id}").json()
    assert fresh["current"] is None and fresh["in_queue"] and fresh["decision"] == "needs_review"
    labelled = api.post(
        f"/v1/tickets/{ticket_id}/reviews", {"action": "edit", "labels": {"service": "account_management", "tier": "L1", "channel": "chat"}},
        scope="lead",
    )
    assert labelled.status_code == 201 and labelled.json()["current_seq"] == 3
    bad_tier = api.post(f"/v1/tickets/{ticket_id}/escalations", {"tier": "L9"})
    assert bad_tier.status_code == 422 and "unknown tier" in bad_tier.json()["detail"]
    bad_cursor = api.get("/v1/review-queue", scope="lead", cursor="not-a-cursor")
    assert bad_cursor.status_code == 422 and "next_cursor" in bad_cursor.json()["detail"]
    empty = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": ""})
    assert empty.status_code == 422 and "text" in empty.json()["detail"]


def test_text_with_nul_characters_is_taken_on_every_backend(api: Api) -> None:
    """PostgreSQL's text and JSONB refuse NUL: a ticket, a message or a lead's comment holding one answered 503
    'database busy, retry' there, and a lookup with %00 in the URL did too. Now NULs are dropped on the way in."""
    ticket = create(api, {"subject": "Cannot\u0000 log in", "body": PASSWORD["body"] + "\u0000", "channel": "chat"})
    assert ticket["subject"] == "Cannot log in" and ticket["body"] == PASSWORD["body"]
    message = api.post(f"/v1/tickets/{ticket['id']}/messages", {"text": "Still\u0000 locked out."})
    assert message.status_code == 201 and message.json()["messages"][-1]["text"] == "Still locked out.", message.text
    review = {"action": "accept", "comment": "ok\u0000", "draft": {"text": "Reset\u0000 link sent.", "citations": []}}
    reviewed = api.post(f"/v1/tickets/{ticket['id']}/reviews", review, scope="lead")
    assert reviewed.status_code == 201 and reviewed.json()["current"]["note"] == "ok", reviewed.text
    assert [r["reason"] for r in api.get(f"/v1/tickets/{ticket['id']}/revisions").json()] == ["new_ticket", "new_message", "human_review"]
    lookup = api.get("/v1/tickets", external_id="EXT\u0000")
    assert lookup.status_code == 422 and "NUL" in lookup.json()["detail"], lookup.text


def test_a_ticket_id_longer_than_its_column_is_a_422_on_every_backend(api: Api) -> None:
    """PostgreSQL refused a `ticket_id` over 200 characters at the insert: 503 'database busy, retry'."""
    response = api.post("/v1/tickets", {**PASSWORD, "ticket_id": "EXT-" + "9" * 300})
    assert response.status_code == 422 and "more than the 200" in response.json()["detail"], response.text


def test_records_hold_what_the_api_acknowledged(api: Api) -> None:
    """The acknowledgement is the commit: a second, independent connection sees the new revision at once."""
    ticket = create(api, {"body": "My parcel has not arrived after two weeks."})
    independent = Records(api.records.url)
    try:
        with independent.engine.connect() as conn:
            rows = conn.execute(text("SELECT seq, reason FROM revisions WHERE ticket_id = :t"), {"t": ticket["id"]}).all()
    finally:
        independent.close()
    assert [tuple(r) for r in rows] == [(1, "new_ticket")]


def test_a_thread_past_the_input_limit_leaves_out_its_oldest_messages(api: Api) -> None:
    ticket_id = create(api, {"subject": "Long thread", "body": "The export keeps failing."})["id"]
    for i in range(3):  # 3 x 40,000 characters: over the 100,000 input limit at the third message
        answer = api.post(f"/v1/tickets/{ticket_id}/messages", {"text": f"log {i}: " + "error line " * 4_000})
        assert answer.status_code == 201, answer.text
    warnings = answer.json()["current"]["classification"]["warnings"]
    assert "the 1 oldest messages were left out to stay under the input limit" in warnings
    assert len(answer.json()["messages"]) == 3  # stored in full; only the classification input is cut


def test_reviewed_tickets_export_as_a_labelled_file_eval_reads(api: Api, tmp_path: Path) -> None:
    """`triage tickets export`: the labels a lead stood behind and the thread as the lead saw it, nothing else."""
    from evals.datasets import load_rows

    accepted = create(api, PASSWORD)
    edited = create(api, {"subject": "Invoice copy", "body": "Please send me a copy of last month's invoice."})
    rejected = create(api, {"body": "The app crashes every time I open the settings page."})
    unreviewed = create(api, {"body": "Where is my parcel? It was due on Monday."})
    assert api.post(f"/v1/tickets/{accepted['id']}/reviews", {"action": "accept"}, scope="lead").status_code == 201
    later = "Also, how do I change the e-mail address on my account?"
    assert api.post(f"/v1/tickets/{accepted['id']}/messages", {"author": "customer", "text": later}).status_code == 201
    edit = api.post(f"/v1/tickets/{edited['id']}/reviews", {"action": "edit", "labels": {"service": "billing_payments", "tier": "L2"}}, scope="lead")
    assert edit.status_code == 201, edit.text
    wrong = api.post(f"/v1/tickets/{rejected['id']}/reviews", {"action": "edit", "labels": {"service": "billing_payments"}}, scope="lead").json()
    undo = api.post(f"/v1/tickets/{rejected['id']}/reviews", {"action": "reject", "revision": wrong["current"]["seq"]}, scope="lead")
    assert undo.status_code == 201, undo.text

    env = cli_env(Path("/nonexistent"), TRIAGE_DATABASE_URL=api.records.url)
    out = tmp_path / "reviewed.csv"
    done = subprocess.run([TRIAGE, "tickets", "export", "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {r.id: r for r in load_rows(out, ["subject", "body"], {"service": "service", "tier": "tier", "channel": "channel"})}
    assert accepted["id"] in rows and edited["id"] in rows
    assert rejected["id"] not in rows and unreviewed["id"] not in rows  # a rejected edit is no label; no review, no row
    assert rows[edited["id"]].labels["service"] == "billing_payments" and rows[edited["id"]].labels["tier"] == "L2"
    assert rows[accepted["id"]].labels == {axis: accepted["current"]["labels"][axis] for axis in ("service", "tier", "channel")}
    assert "invoice" in rows[edited["id"]].text and later not in rows[accepted["id"]].text  # the thread as reviewed

    split = tmp_path / "split.jsonl"
    for _ in range(2):  # the split is by ticket id: a second export puts every ticket on the same side
        done = subprocess.run([TRIAGE, "tickets", "export", "--out", str(split), "--test-share", "0.5"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        sides = [{json.loads(line)["id"] for line in (tmp_path / f"split.{side}.jsonl").read_text().splitlines()} for side in ("train", "test")]
        if _ == 0:
            first = sides
    assert sides == first and not (sides[0] & sides[1]) and sides[0] | sides[1] == set(rows)
    # too few reviews to score: the export says so, with the counts, instead of printing an eval line that fails;
    # the records may hold earlier tests' reviews too (a PostgreSQL database is shared), so the rule is checked
    # on the counts this export wrote (both sides of it with fixed counts: tests/unit/test_export.py)
    from agent.export import MIN_TRAIN_ROWS

    train_n, test_n = len(sides[0]), len(sides[1])
    if train_n >= MIN_TRAIN_ROWS and test_n >= 1:
        assert "triage eval --train" in done.stdout and "too few" not in done.stdout, done.stdout
    else:
        assert f"too few reviewed tickets to score the agent and re-fit its thresholds: {train_n} in train, {test_n} in test" in done.stdout, done.stdout
        assert "triage eval --train" not in done.stdout, done.stdout
