"""`GET /v1/stats` figures checked by hand on small histories written through the real API and lifecycle.

A real app (proposal mode, a copy of the seeded store, real records on SQLite and PostgreSQL, a fresh database per
test so every figure is exact), a clock the test moves, and the auto-apply threshold set per ticket so that the
agent's decision is the one the history needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.lifecycle import Lifecycle
from agent.records import Records
from agent.service import TriageService
from agent.settings import Settings
from agent.taxonomy import load_taxonomy
from evals.migration_demo import write_v2
from tests.records_support import TAXONOMY_PATH, Api, copy_seeded, database_url, proposal_settings, running_api

pytestmark = pytest.mark.integration

PASSWORD = {"subject": "Password", "body": "I forgot my password and cannot log in to my account.", "channel": "chat"}
CHARGED = {"subject": "Charged twice", "body": "My card was charged twice for order 1234, please refund one.", "channel": "email"}


class Clock:
    """The lifecycle's clock: what it reads is what the test set."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="module")
def service(seeded_store: Path, tmp_path_factory: pytest.TempPathFactory) -> TriageService:
    data_dir = copy_seeded(seeded_store, tmp_path_factory.mktemp("stats-records") / "data")
    return TriageService(proposal_settings(data_dir))


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, service: TriageService, tmp_path: Path) -> Iterator[Api]:
    calibration = service.calibration
    with running_api(service, database_url(request.param, request, tmp_path)) as running:
        yield running
    service.calibration = calibration


def on_clock(api: Api, start: datetime) -> Clock:
    clock = Clock(start)
    api.client.app.state.lifecycle.clock = clock
    return clock


def deciding(api: Api, decision: str) -> None:
    """The agent's next decisions: every label auto-applied, or none (then suggest or needs_review)."""
    service = api.client.app.state.service
    service.calibration = replace(service.calibration, thresholds={}, default=0.0 if decision == "auto_apply" else 0.9999)


def create(api: Api, body: dict) -> dict:
    response = api.post("/v1/tickets", body)
    assert response.status_code == 201, response.text
    return response.json()


def review(api: Api, ticket_id: str, body: dict) -> dict:
    response = api.post(f"/v1/tickets/{ticket_id}/reviews", body, scope="lead")
    assert response.status_code == 201, response.text
    return response.json()


def stats(api: Api, **params: object) -> dict:
    response = api.get("/v1/stats", "lead", **params)
    assert response.status_code == 200, response.text
    return response.json()


def paths(report: dict) -> dict[str, tuple[int, float]]:
    return {r["path"]: (r["n"], r["p50_s"]) for r in report["time_to_decision"] if r["group"] == "(all)"}


def test_an_auto_applied_ticket_a_lead_reviews_later_stays_on_the_auto_path(api: Api) -> None:
    """Its decision was the auto-apply: counting it on the review path with the auto-apply's seconds pulled the
    lead-review median towards zero and took the ticket off the auto path."""
    clock = on_clock(api, datetime.now(UTC) - timedelta(days=1))
    deciding(api, "auto_apply")
    auto = create(api, CHARGED)
    assert auto["current"]["classification"]["decision"] == "auto_apply"
    deciding(api, "suggest")
    waiting = create(api, PASSWORD)
    clock.advance(hours=1)
    review(api, auto["id"], {"action": "accept"})
    review(api, waiting["id"], {"action": "accept"})
    report = stats(api)
    assert paths(report) == {"auto": (1, 0.0), "review": (1, 3600.0)}
    assert report["totals"]["reviewed"] == 2 and report["pending"]["n"] == 0


def test_a_ticket_the_agent_auto_applies_after_a_message_is_decided_not_waiting(api: Api) -> None:
    """Only the first classification's decision counted: a ticket sent to review, then auto-applied when the
    customer's message made it clear, left the queue but stayed "waiting for a lead" for ever, its wait growing."""
    clock = on_clock(api, datetime.now(UTC) - timedelta(hours=2))
    deciding(api, "suggest")
    ticket = create(api, PASSWORD)
    assert ticket["in_queue"] is True
    clock.advance(minutes=5)
    deciding(api, "auto_apply")
    answer = api.post(f"/v1/tickets/{ticket['id']}/messages", {"text": "The reset e-mail never arrives, I checked spam."})
    assert answer.status_code == 201 and answer.json()["in_queue"] is False, answer.text
    report = stats(api)
    queue = api.get("/v1/stats/queue", "lead").json()
    assert queue["needs_review"] + queue["suggest"] == 0 and queue["auto_apply"] == 1
    assert report["pending"]["n"] == report["totals"]["pending_review"] == 0
    assert paths(report) == {"auto": (1, 300.0)}
    assert report["totals"]["suggest"] == 1  # the share of first decisions is unchanged


def overturn(report: dict) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r["axis"], r["label"]): (r["reviewed"], r["overturned"]) for r in report["overturn"]}


def test_reviews_after_a_taxonomy_migration_count_in_the_overturn_rate(seeded_store: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A lead who reviews a ticket after the migration renamed or merged its label looks at the migration's
    revision; the overturn rate read only the agent's own revisions, so three reviews (an edit, a reject, an
    accept) left the table empty: "No review yet". (SQLite only: the commit relabels a whole store; the query that
    reads the revisions runs on PostgreSQL in the tests above.)"""
    data_dir = copy_seeded(seeded_store, tmp_path / "data")  # its own store: the commit relabels it
    url = database_url("sqlite", request, tmp_path)
    ids = {}
    with running_api(TriageService(proposal_settings(data_dir)), url) as v1:
        for name, body in {
            "locked": "My work laptop says my Windows account is locked. Please unlock it.",
            "locked_too": "My Windows account at work is locked after too many attempts, please unlock it.",
            "vpn": "The office VPN drops every few minutes since this morning.",
        }.items():
            ids[name] = create(v1, {"subject": name, "body": body, "channel": "email"})["id"]
    v2 = Settings(data_dir=data_dir, taxonomy_path=write_v2(tmp_path / "default-v2.yaml"), mode="proposal")
    service = TriageService(v2)
    records = Records(url)
    try:
        lifecycle = Lifecycle(service, records)
        previous = lifecycle.served_taxonomy(load_taxonomy(TAXONOMY_PATH).ref)
        assert previous is not None and lifecycle.migrate_taxonomy(previous, commit=True).revisions_written == 3
    finally:
        records.close()
    with running_api(service, url) as api:
        labels = {name: api.get(f"/v1/tickets/{ticket_id}").json()["labels"] for name, ticket_id in ids.items()}
        assert {labels[n]["service"] for n in ids} == {"service_desk", "infrastructure"}  # renamed and merged
        review(api, ids["locked"], {"action": "edit", "labels": {"service": "hardware"}})
        review(api, ids["locked_too"], {"action": "accept"})
        review(api, ids["vpn"], {"action": "reject"})
        report = stats(api)
    assert report["totals"]["reviewed"] == 3
    expected: dict[tuple[str, str], list[int]] = {}
    for name, overturned in {"locked": {"service"}, "locked_too": set(), "vpn": {"service", "tier", "channel"}}.items():
        for axis, label in labels[name].items():
            counts = expected.setdefault((axis, label), [0, 0])
            counts[0] += 1
            counts[1] += axis in overturned
    assert overturn(report) == {key: tuple(counts) for key, counts in expected.items()}


def test_the_cited_articles_are_those_of_the_answer_the_lead_sent(api: Api) -> None:
    """A review stores the draft the lead actually sent; the stats read only the agent's drafts, so an article the
    lead cut from the answer kept its count and one the lead cited instead never got one."""
    ticket = create(api, PASSWORD)
    classification = ticket["current"]["classification"]
    assert classification["draft"] and classification["draft"]["citations"], "the seeded KB drafts an answer to it"
    agent_cites = classification["draft"]["citations"][0]
    sent = next(a["id"] for a in classification["evidence"]["articles"] if a["id"] != agent_cites)
    before = {r["article_id"]: r["drafts"] for r in stats(api)["cited_articles"]}
    assert before == {agent_cites: 1}
    review(api, ticket["id"], {"action": "accept", "draft": {"text": f"Reset it from the sign-in page [{sent}].", "citations": [sent]}})
    report = stats(api)
    assert {r["article_id"]: r["drafts"] for r in report["cited_articles"]} == {sent: 1}
    assert report["totals"]["with_draft"] == 1 and report["draft_rate"] == 1.0


def test_volumes_count_the_days_of_the_leads_time_zone(api: Api) -> None:
    """Days were UTC's, with no way to ask for another: a New York desk's tickets of 21:00 counted on the next day.
    `tz` counts them on the lead's calendar day; an unknown zone is a 422 that names the parameter."""
    clock = on_clock(api, datetime(2026, 11, 3, 1, 30, tzinfo=UTC))  # 20:30 on 2 November in New York (EST)
    create(api, PASSWORD)
    clock.advance(hours=3)  # 23:30 in New York, 04:30 UTC
    create(api, CHARGED)
    clock.advance(hours=1)  # 00:30 on 3 November in New York
    create(api, PASSWORD)

    def per_day(report: dict) -> dict[str, int]:
        days: dict[str, int] = {}
        for row in report["volumes"]:
            days[row["period"]] = days.get(row["period"], 0) + row["count"]
        return days

    assert per_day(stats(api)) == {"2026-11-03": 3}
    local = stats(api, tz="America/New_York")
    assert per_day(local) == {"2026-11-02": 2, "2026-11-03": 1} and local["timezone"] == "America/New_York"
    assert per_day(stats(api, tz="America/New_York", bucket="week")) == {"2026-11-02": 3}
    for bad in ("Mars/Olympus", "America", "../etc/passwd"):
        refused = api.get("/v1/stats", "lead", tz=bad)
        assert refused.status_code == 422 and "tz=" in refused.json()["detail"], refused.text
