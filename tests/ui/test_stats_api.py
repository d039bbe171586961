"""`GET /v1/stats` and `GET /v1/stats/queue` on the real API: auth, and KPIs that move with a real review."""

from __future__ import annotations

import pytest

from tests.ui.conftest import LiveApi

pytestmark = pytest.mark.integration


def overturn(stats: dict, axis: str, label: str) -> tuple[int, int]:
    row = next((r for r in stats["overturn"] if r["axis"] == axis and r["label"] == label), None)
    return (row["reviewed"], row["overturned"]) if row else (0, 0)


def review_path(stats: dict) -> int:
    return next((r["n"] for r in stats["time_to_decision"] if r["group"] == "(all)" and r["path"] == "review"), 0)


def test_stats_need_a_lead_key(api: LiveApi) -> None:
    with api.http("bot") as bot:
        assert bot.get("/v1/stats").status_code == 403 and bot.get("/v1/stats/queue").status_code == 403
    with api.http("bot") as bot:
        bot.headers.pop("Authorization")
        assert bot.get("/v1/stats").status_code == 401


def test_a_lead_edit_moves_the_overturn_rate_the_review_time_and_the_counts(api: LiveApi) -> None:
    with api.http("bot") as bot:
        created = bot.post("/v1/tickets", json={"subject": "Printer", "body": "The office printer on floor 3 jams on every page.", "channel": "portal"})
    assert created.status_code == 201, created.text
    ticket = created.json()
    label = ticket["labels"]["service"]
    other = "hardware" if label != "hardware" else "it_help_desk"
    with api.http() as lead:
        before, counts_before = lead.get("/v1/stats").json(), lead.get("/v1/stats/queue").json()
        edited = lead.post(f"/v1/tickets/{ticket['id']}/reviews", json={"action": "edit", "labels": {"service": other}, "comment": "printers are hardware"})
        assert edited.status_code == 201, edited.text
        after, counts_after = lead.get("/v1/stats").json(), lead.get("/v1/stats/queue").json()
    assert after["totals"]["tickets"] == before["totals"]["tickets"]
    assert after["totals"]["reviewed"] == before["totals"]["reviewed"] + 1
    reviewed, overturned = overturn(before, "service", label)
    assert overturn(after, "service", label) == (reviewed + 1, overturned + 1)
    tier_reviewed, tier_overturned = overturn(before, "tier", ticket["labels"]["tier"])
    assert overturn(after, "tier", ticket["labels"]["tier"]) == (tier_reviewed + 1, tier_overturned)  # tier was kept
    assert review_path(after) == review_path(before) + 1
    assert counts_after["reviewed"] == counts_before["reviewed"] + 1 and counts_after["total"] == counts_before["total"]
    queued_before = counts_before["needs_review"] + counts_before["suggest"]
    queued_after = counts_after["needs_review"] + counts_after["suggest"]
    assert queued_after == queued_before - (1 if ticket["in_queue"] else 0)


def test_stats_filter_and_kb_gaps_follow_the_parameters(api: LiveApi) -> None:
    with api.http() as lead:
        tickets = lead.get("/v1/tickets", params={"limit": 200}).json()["items"]
        service = tickets[0]["labels"]["service"]
        filtered = lead.get("/v1/stats", params={"service": service, "group_by": "tier"}).json()
        everything = lead.get("/v1/stats", params={"gap_threshold": 1.0}).json()
        assert lead.get("/v1/stats", params={"group_by": "colour"}).status_code == 422
    assert filtered["totals"]["tickets"] == sum(1 for t in tickets if t["labels"] and t["labels"]["service"] == service)
    assert filtered["group_by"] == "tier" and {r["group"] for r in filtered["volumes"]} <= {"L1", "L2", "L3"}
    gaps = everything["kb_gaps"]
    assert gaps["threshold"] == 1.0 and gaps["weak"] == gaps["tickets_with_kb_match"] == len(tickets)
    assert sum(c["size"] for c in gaps["clusters"]) <= gaps["clustered"] and all(c["examples"] for c in gaps["clusters"])
