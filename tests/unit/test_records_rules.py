"""The revision rules (agent/revisions.py), the correction rule (agent/corrections.py) and the worker pool."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from agent.contracts import AxisLabel, Classification, Decision, Evidence, EvidenceTicket, Route
from agent.corrections import follow_verified_neighbours
from agent.pool import PoolFull, WorkerPool
from agent.revisions import (
    LabelRuleError,
    changed_axes,
    current_seq,
    escalation_target,
    human_classification,
    merge_agent,
    rejected_by,
)
from agent.settings import REPO_ROOT
from agent.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy(REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml")


def agent_says(service: str, tier: str, *, channel: str = "email", confidence: float = 0.8,
               decision: Decision = Decision.SUGGEST) -> Classification:
    return Classification(
        labels={
            "service": AxisLabel(label=service, confidence=confidence, source="proposal"),
            "channel": AxisLabel(label=channel, confidence=1.0, source="intake"),
            "tier": AxisLabel(label=tier, confidence=confidence, source="proposal"),
        },
        decision=decision, rationale="r", evidence=Evidence(), route=Route(team="x"),
        taxonomy_version=TAXONOMY.ref, model="proposal:test", latency_ms=1.0,
    )


def human_says(service: str, tier: str) -> Classification:
    return human_classification(agent_says(service, tier), {"service": service, "tier": tier, "channel": "email"},
                                TAXONOMY, reviewer="alice", comment=None)


@dataclass
class Rev:
    seq: int
    classification: dict | None
    rejects: int | None = None


# ---------------------------------------------------------------- current labels


def test_current_is_the_latest_revision_no_human_rejected() -> None:
    history = [Rev(1, {}), Rev(2, {}), Rev(3, {}), Rev(4, None, rejects=3)]
    assert current_seq(history) == 2
    assert current_seq(history, rejected={2}) == 1
    assert current_seq([Rev(1, {}), Rev(2, None, rejects=1)]) is None
    assert rejected_by(history) == {3: 4}


def test_changed_axes_lists_only_what_moved() -> None:
    assert changed_axes(None, {"service": "cloud", "channel": "email", "tier": "L1"}) == ["service", "channel", "tier"]
    assert changed_axes({"service": "cloud", "tier": "L1"}, {"service": "cloud", "tier": "L3"}) == ["tier"]


# ---------------------------------------------------------------- a human's label wins


def test_a_human_label_wins_and_the_agent_is_kept_as_a_suggestion() -> None:
    merged, suggestion = merge_agent(human_says("billing_payments", "L2"), agent_says("cloud", "L2"), TAXONOMY)
    assert merged.labels["service"].label == "billing_payments" and merged.labels["service"].source == "human"
    assert suggestion["service"].label == "cloud"
    assert merged.decision == Decision.SUGGEST  # a lead should see the disagreement
    assert merged.route.team == TAXONOMY.axes["service"].get("billing_payments").routing.team


def test_an_agreeing_agent_leaves_human_labels_applied() -> None:
    merged, suggestion = merge_agent(human_says("cloud", "L2"), agent_says("cloud", "L2"), TAXONOMY)
    assert suggestion == {} and merged.decision == Decision.AUTO_APPLY
    assert {label.source for label in merged.labels.values()} == {"human"}


def test_without_a_human_the_agent_labels_apply_as_proposed() -> None:
    proposed = agent_says("cloud", "L2", decision=Decision.NEEDS_REVIEW)
    merged, suggestion = merge_agent(agent_says("network", "L1"), proposed, TAXONOMY)
    assert merged.labels == proposed.labels and suggestion == {} and merged.decision == Decision.NEEDS_REVIEW


# ---------------------------------------------------------------- tiers


def test_the_agent_never_lowers_the_tier() -> None:
    merged, suggestion = merge_agent(agent_says("cloud", "L3"), agent_says("cloud", "L1", decision=Decision.AUTO_APPLY), TAXONOMY)
    assert merged.labels["tier"].label == "L3"
    assert suggestion["tier"].label == "L1"
    assert any("only a human lowers" in w for w in merged.warnings)
    raised, _ = merge_agent(agent_says("cloud", "L1"), agent_says("cloud", "L2"), TAXONOMY)
    assert raised.labels["tier"].label == "L2"  # raising is the agent's to do


def test_an_escalation_raises_one_step_or_to_the_asked_tier_and_never_lowers() -> None:
    assert escalation_target(TAXONOMY, "L1", None) == "L2"
    assert escalation_target(TAXONOMY, "L3", None) == "L3"
    assert escalation_target(TAXONOMY, "L1", "L3") == "L3"
    with pytest.raises(LabelRuleError, match="cannot lower"):
        escalation_target(TAXONOMY, "L3", "L1")
    with pytest.raises(LabelRuleError, match="unknown tier"):
        escalation_target(TAXONOMY, "L1", "L9")
    merged, _ = merge_agent(human_says("cloud", "L1"), agent_says("cloud", "L1"), TAXONOMY, escalate_to="L2")
    assert merged.labels["tier"] == AxisLabel(label="L2", confidence=1.0, source="intake")
    assert merged.labels["service"].source == "human"


def test_a_human_review_needs_every_axis_and_known_labels() -> None:
    with pytest.raises(LabelRuleError, match="missing"):
        human_classification(None, {"service": "cloud"}, TAXONOMY, reviewer="a", comment=None)
    with pytest.raises(LabelRuleError, match="unknown service label 'clod'"):
        human_classification(None, {"service": "clod", "tier": "L1", "channel": "email"}, TAXONOMY, reviewer="a", comment=None)
    reviewed = human_classification(agent_says("cloud", "L2"), {"service": "network", "tier": "L1", "channel": "chat"},
                                    TAXONOMY, reviewer="alice", comment="VPN, not cloud")
    assert reviewed.model == "human" and reviewed.decision == Decision.AUTO_APPLY
    assert "alice" in reviewed.rationale and "VPN" in reviewed.rationale
    assert all(label.confidence == 1.0 and label.source == "human" for label in reviewed.labels.values())


# ---------------------------------------------------------------- corrections


def neighbour(id_: str, score: float, service: str, *, verified: bool, tier: str = "L2") -> EvidenceTicket:
    return EvidenceTicket(id=id_, score=score, labels={"service": service, "tier": tier, "channel": "chat"}, verified=verified)


def test_a_near_duplicate_of_a_verified_ticket_follows_its_labels() -> None:
    proposal = {"service": {"cloud": 0.7, "network": 0.3}, "tier": {"L1": 0.9, "L2": 0.1}, "channel": {"email": 1.0}}
    seed = [neighbour("s1", 0.97, "cloud", verified=False), neighbour("h1", 0.95, "hardware", verified=True, tier="L2")]
    out = follow_verified_neighbours(proposal, seed, TAXONOMY, min_score=0.9)
    assert max(out["service"], key=out["service"].get) == "hardware" and out["service"]["hardware"] == pytest.approx(0.95)
    assert out["service"]["cloud"] == pytest.approx(0.05 * 0.7)
    assert sum(out["service"].values()) == pytest.approx(1.0)
    assert max(out["tier"], key=out["tier"].get) == "L2"
    assert out["channel"] == {"email": 1.0}  # intake metadata of another ticket says nothing about this one


def test_a_verified_ticket_below_the_similarity_floor_or_off_taxonomy_changes_nothing() -> None:
    proposal = {"service": {"cloud": 0.7, "network": 0.3}, "tier": {"L1": 1.0}}
    assert follow_verified_neighbours(proposal, [neighbour("h1", 0.85, "hardware", verified=True)], TAXONOMY, min_score=0.9) == proposal
    stale = neighbour("h1", 0.99, "retired_label", verified=True, tier="L7")
    assert follow_verified_neighbours(proposal, [stale], TAXONOMY, min_score=0.9) == proposal


# ---------------------------------------------------------------- the worker pool


def test_the_pool_refuses_past_its_queue_and_frees_slots_when_jobs_end() -> None:
    async def scenario() -> None:
        pool = WorkerPool(workers=1, queue_limit=1)
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run(gate.wait, 5))
        second = asyncio.ensure_future(pool.run(lambda: "queued"))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolFull) as full:
            await pool.run(lambda: "refused")
        assert full.value.retry_after_s >= 1 and pool.pending == 2
        second.cancel()  # a client that goes away still holds its slot until its job really ends
        await asyncio.sleep(0.05)
        assert pool.pending == 2
        gate.set()
        assert await first is True
        for _ in range(100):
            if pool.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.pending == 0
        assert await pool.run(lambda: 42) == 42
        pool.shutdown()

    asyncio.run(scenario())


def test_the_pools_shutdown_gives_a_job_stuck_on_the_llm_its_grace_not_its_whole_timeout() -> None:
    """Stopping the API waited for every running classification (`shutdown(wait=True)`): one waiting on a hung LLM
    endpoint held Ctrl-C for its attempts x timeout. The wait is bounded, and says how many jobs it left running."""
    import time

    async def scenario() -> None:
        pool = WorkerPool(workers=1, queue_limit=1)
        gate = threading.Event()
        stuck = asyncio.ensure_future(pool.run(gate.wait, 30))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert pool.shutdown(0.2) == 1 and pool.unfinished == 1
        assert time.monotonic() - started < 2
        gate.set()
        assert await stuck is True and pool.unfinished == 0

    asyncio.run(scenario())
