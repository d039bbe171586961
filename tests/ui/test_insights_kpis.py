"""The KPIs of agent/insights.py on hand-made ticket facts (no database): each number checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.insights import (
    TicketFact,
    cited_articles,
    decision_shares,
    filter_facts,
    kb_gaps,
    overturn_rates,
    pending,
    stats_report,
    time_to_decision,
    volumes,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday
BILLING = {"service": "billing_payments", "tier": "L2", "channel": "email"}
NETWORK = {"service": "network", "tier": "L3", "channel": "phone"}


def fact(i: int, labels: dict, decision: str, *, days: int = 0, review: str | None = None, review_labels: dict | None = None,
         reviewed_after_s: float | None = None, score: float | None = 0.8, text: str = "", citations: tuple[str, ...] = ()) -> TicketFact:
    created = T0 + timedelta(days=days)
    return TicketFact(
        id=f"tk_{i}", created_at=created, labels=labels, text=text, agent_decision=decision, agent_labels=dict(labels),
        agent_at=created + timedelta(seconds=2), review_action=review, review_labels=review_labels or {},
        reviewed_at=created + timedelta(seconds=reviewed_after_s) if reviewed_after_s is not None else None,
        best_article_id="kb-1" if score is not None else None, best_article_score=score, citations=citations,
    )


FACTS = [
    fact(1, BILLING, "auto_apply", citations=("kb-refund",)),
    fact(2, BILLING, "suggest", review="accept", reviewed_after_s=600, citations=("kb-refund", "kb-invoice")),
    fact(3, BILLING, "needs_review", days=1, review="edit", review_labels={"service": "returns_refunds"}, reviewed_after_s=3600),
    fact(4, NETWORK, "needs_review", days=8, review="reject", reviewed_after_s=7200),
    fact(5, NETWORK, "suggest", days=8),
]


def test_volumes_per_day_and_per_week() -> None:
    assert volumes(FACTS, "service") == [
        {"period": "2026-11-02", "group": "billing_payments", "count": 2},
        {"period": "2026-11-03", "group": "billing_payments", "count": 1},
        {"period": "2026-11-10", "group": "network", "count": 2},
    ]
    assert volumes(FACTS, "tier", "week") == [
        {"period": "2026-11-02", "group": "L2", "count": 3},
        {"period": "2026-11-09", "group": "L3", "count": 2},
    ]


def test_decision_shares_per_group_and_overall() -> None:
    rows = {r["group"]: r for r in decision_shares(FACTS, "service")}
    assert rows["(all)"]["total"] == 5 and rows["(all)"]["auto_apply"] == 1 and rows["(all)"]["needs_review_share"] == 0.4
    assert rows["billing_payments"]["suggest_share"] == round(1 / 3, 4) and rows["network"]["auto_apply"] == 0
    assert next(iter(decision_shares(FACTS, "service")))["group"] == "(all)"


def test_overturn_counts_edits_of_that_axis_and_rejects_of_every_axis() -> None:
    rows = {(r["axis"], r["label"]): r for r in overturn_rates(FACTS)}
    assert rows[("service", "billing_payments")] == {"axis": "service", "label": "billing_payments", "reviewed": 2, "overturned": 1, "rate": 0.5}
    assert rows[("tier", "L2")]["overturned"] == 0  # the edit changed the service only
    assert rows[("service", "network")]["rate"] == 1.0 and rows[("channel", "phone")]["rate"] == 1.0  # a reject overturns all
    assert ("service", "network") in rows and sum(r["reviewed"] for r in rows.values() if r["axis"] == "service") == 3


def test_time_to_decision_by_path() -> None:
    rows = {(r["group"], r["path"]): r for r in time_to_decision(FACTS, "service")}
    assert rows[("(all)", "auto")] == {"group": "(all)", "path": "auto", "n": 1, "p50_s": 2.0, "p90_s": 2.0, "mean_s": 2.0}
    review = rows[("(all)", "review")]
    assert review["n"] == 3 and review["p50_s"] == 3600.0 and review["p90_s"] == 6480.0
    assert pending(FACTS, now=T0 + timedelta(days=9))["n"] == 1  # tk_5 waits; tk_1 was auto-applied


def test_cited_articles_count_drafts_not_mentions() -> None:
    doubled = [fact(9, BILLING, "suggest", citations=("kb-refund", "kb-refund"))]
    assert cited_articles(FACTS + doubled, {"kb-refund": "Refunds"}) == [
        {"article_id": "kb-refund", "title": "Refunds", "drafts": 3},
        {"article_id": "kb-invoice", "title": "kb-invoice", "drafts": 1},
    ]


def test_kb_gaps_cluster_weakly_matched_tickets_by_their_words() -> None:
    vpn = [fact(10 + i, NETWORK, "needs_review", days=i, score=0.2, text=f"VPN client error 809 cannot connect office {i}") for i in range(4)]
    printer = [fact(20 + i, NETWORK, "suggest", days=i, score=0.25, text=f"printer paper jam on floor three tray {i}") for i in range(3)]
    strong = [fact(30, BILLING, "auto_apply", score=0.9, text="refund for duplicate charge")]
    lonely = [fact(31, BILLING, "suggest", score=0.1, text="zebra")]
    gaps = kb_gaps(vpn + printer + strong + lonely, threshold=0.35)
    assert gaps["weak"] == 8 and gaps["tickets_with_kb_match"] == 9 and gaps["weak_share"] == round(8 / 9, 4)
    sizes = [(c["size"], c["service"]) for c in gaps["clusters"]]
    assert sizes == [(4, "network"), (3, "network")]
    assert 0 < len(gaps["clusters"][0]["terms"]) <= 5 and set(gaps["clusters"][0]["terms"]) <= {"vpn", "client", "error", "809", "connect", "office"}
    assert set(gaps["clusters"][1]["terms"]) <= {"printer", "paper", "jam", "floor", "tray"}
    assert len(gaps["clusters"][0]["examples"]) == 3 and all(e["id"].startswith("tk_1") for e in gaps["clusters"][0]["examples"])
    assert kb_gaps(strong, threshold=0.35)["clusters"] == []


def test_filters_and_the_whole_report() -> None:
    assert [f.id for f in filter_facts(FACTS, since=T0 + timedelta(days=1))] == ["tk_3", "tk_4", "tk_5"]
    assert [f.id for f in filter_facts(FACTS, service="network", tier="L3")] == ["tk_4", "tk_5"]
    report = stats_report(FACTS, now=T0 + timedelta(days=9), by="channel")
    assert report["totals"] == {"tickets": 5, "auto_apply": 1, "suggest": 2, "needs_review": 2, "reviewed": 3, "pending_review": 1, "with_draft": 2}
    assert {r["group"] for r in report["decisions"]} == {"(all)", "email", "phone"}
    assert report["draft_rate"] == 0.4
