"""KPIs of the triage for support leads and dashboards (`GET /v1/stats`), as pure functions over ticket facts.

A `TicketFact` is one ticket as the KPIs see it (read from the records by `agent/api_insights.py`): when it came
in, its current labels, what the agent first decided, what a lead did with it, and how well the KB matched it.
Everything here is a function of a list of facts, so each KPI is tested without a database.

- volumes over time, per service, channel or tier;
- the share of tickets the agent auto-applied, suggested or sent to review;
- the human overturn rate per label: of the agent's labels a lead reviewed, how many the lead changed or rejected;
- the time from intake to a decision (the agent's auto-apply, else the first human review);
- which KB articles the drafts cite;
- KB gaps: clusters of recent tickets whose best KB article match is weak, with examples.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

from agent.contracts import AXES

GroupBy = Literal["service", "channel", "tier"]
DECISIONS: tuple[str, ...] = ("auto_apply", "suggest", "needs_review")
UNLABELLED = "(none)"


@dataclass(frozen=True)
class TicketFact:
    """One ticket, reduced to what the KPIs need."""

    id: str
    created_at: datetime
    labels: dict[str, str]  # current labels per axis
    text: str = ""
    agent_decision: str | None = None  # the agent's decision on its first classification
    agent_labels: dict[str, str] = field(default_factory=dict)  # the agent's labels that a lead first looked at
    agent_at: datetime | None = None  # when the agent's first classification was written
    auto_applied_at: datetime | None = None  # when an agent revision first auto-applied (a re-classification too)
    review_action: str | None = None  # the first review of an agent revision: accept, edit or reject
    review_labels: dict[str, str] = field(default_factory=dict)  # the labels that review left
    reviewed_at: datetime | None = None
    best_article_id: str | None = None
    best_article_score: float | None = None
    citations: tuple[str, ...] = ()  # the KB article ids the current draft cites

    def group(self, by: GroupBy) -> str:
        return self.labels.get(by) or UNLABELLED

    @property
    def auto_at(self) -> datetime | None:
        """The agent's first auto-apply: on the first classification, or on a later one (after a message)."""
        if self.auto_applied_at is not None:
            return self.auto_applied_at
        return self.agent_at if self.agent_decision == "auto_apply" else None

    @property
    def decided_at(self) -> datetime | None:
        """When the ticket got labels someone stands behind: the agent's auto-apply, else the first review."""
        if self.decided_by_agent:
            return self.auto_at
        return self.reviewed_at

    @property
    def decided_by_agent(self) -> bool:
        """Whether the agent's auto-apply settled the ticket before any lead did: a lead who reviews an auto-applied
        ticket later does not make it a review-path decision (its time is the auto-apply's), and a ticket the agent
        auto-applied once a message made it clear is decided, not waiting for a lead."""
        auto = self.auto_at
        return auto is not None and (self.reviewed_at is None or auto <= self.reviewed_at)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def filter_facts(
    facts: Iterable[TicketFact],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    service: str | None = None,
    channel: str | None = None,
    tier: str | None = None,
) -> list[TicketFact]:
    wanted = {"service": service, "channel": channel, "tier": tier}
    return [
        f
        for f in facts
        if (since is None or f.created_at >= since)
        and (until is None or f.created_at < until)
        and all(not value or f.labels.get(axis) == value for axis, value in wanted.items())  # empty: no filter
    ]


def bucket_start(moment: datetime, bucket: Literal["day", "week"], zone: tzinfo = UTC) -> str:
    """The first day of the bucket holding `moment`, as a calendar day in `zone` (a lead's day, not UTC's)."""
    day = moment.astimezone(zone).date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    return day.isoformat()


def volumes(
    facts: Sequence[TicketFact], by: GroupBy, bucket: Literal["day", "week"] = "day", zone: tzinfo = UTC
) -> list[dict[str, Any]]:
    """Tickets per time bucket (the bucket's first day in `zone`, ISO) and group, oldest first."""
    counts = Counter((bucket_start(f.created_at, bucket, zone), f.group(by)) for f in facts)
    return [{"period": period, "group": group, "count": n} for (period, group), n in sorted(counts.items())]


def decision_shares(facts: Sequence[TicketFact], by: GroupBy) -> list[dict[str, Any]]:
    """Per group: how many tickets the agent auto-applied, suggested or sent to review, and the shares."""
    per_group: dict[str, Counter[str]] = defaultdict(Counter)
    for f in facts:
        if f.agent_decision in DECISIONS:
            per_group[f.group(by)][f.agent_decision] += 1
            per_group["(all)"][f.agent_decision] += 1
    rows = []
    for group, counts in per_group.items():
        total = sum(counts.values())
        row: dict[str, Any] = {"group": group, "total": total}
        for decision in DECISIONS:
            row[decision] = counts[decision]
            row[f"{decision}_share"] = round(counts[decision] / total, 4) if total else 0.0
        rows.append(row)
    return sorted(rows, key=lambda r: (r["group"] != "(all)", -r["total"], r["group"]))


def overturn_rates(facts: Sequence[TicketFact]) -> list[dict[str, Any]]:
    """Per axis and agent label: reviews of it, how many a lead overturned (edited away or rejected), the rate."""
    reviewed: Counter[tuple[str, str]] = Counter()
    overturned: Counter[tuple[str, str]] = Counter()
    for f in facts:
        if f.review_action is None:
            continue
        for axis in AXES:
            label = f.agent_labels.get(axis)
            if label is None:
                continue
            reviewed[(axis, label)] += 1
            if f.review_action == "reject" or (f.review_action == "edit" and f.review_labels.get(axis, label) != label):
                overturned[(axis, label)] += 1
    rows = [
        {"axis": axis, "label": label, "reviewed": n, "overturned": overturned[(axis, label)], "rate": round(overturned[(axis, label)] / n, 4)}
        for (axis, label), n in reviewed.items()
    ]
    return sorted(rows, key=lambda r: (AXES.index(r["axis"]), -r["rate"], -r["reviewed"], r["label"]))


def time_to_decision(facts: Sequence[TicketFact], by: GroupBy) -> list[dict[str, Any]]:
    """Seconds from intake to a decision, per group and path (`auto` by the agent, `review` by a lead)."""
    spans: dict[tuple[str, str], list[float]] = defaultdict(list)
    for f in facts:
        decided = f.decided_at
        if decided is None:
            continue
        path = "auto" if f.decided_by_agent else "review"  # the path that made `decided`, whatever came after
        seconds = max((decided - f.created_at).total_seconds(), 0.0)
        spans[(f.group(by), path)].append(seconds)
        spans[("(all)", path)].append(seconds)
    rows = []
    for (group, path), values in spans.items():
        rows.append(
            {
                "group": group,
                "path": path,
                "n": len(values),
                "p50_s": round(_percentile(values, 50) or 0.0, 3),
                "p90_s": round(_percentile(values, 90) or 0.0, 3),
                "mean_s": round(sum(values) / len(values), 3),
            }
        )
    return sorted(rows, key=lambda r: (r["group"] != "(all)", r["group"], r["path"]))


def pending(facts: Sequence[TicketFact], now: datetime) -> dict[str, Any]:
    """Tickets with no decision yet (waiting for a lead) and how long they have waited."""
    waits = [(now - f.created_at).total_seconds() for f in facts if f.decided_at is None and f.agent_decision is not None]
    return {"n": len(waits), "p50_wait_s": round(_percentile(waits, 50) or 0.0, 1), "max_wait_s": round(max(waits, default=0.0), 1)}


def cited_articles(facts: Sequence[TicketFact], titles: dict[str, str] | None = None, top: int = 20) -> list[dict[str, Any]]:
    """The KB articles the drafts cite most, with how many drafts cite each."""
    counts = Counter(article for f in facts for article in dict.fromkeys(f.citations))
    titles = titles or {}
    return [{"article_id": a, "title": titles.get(a, a), "drafts": n} for a, n in counts.most_common(top)]


def draft_rate(facts: Sequence[TicketFact]) -> float:
    with_text = [f for f in facts if f.agent_decision is not None]
    return round(sum(1 for f in with_text if f.citations) / len(with_text), 4) if with_text else 0.0


# ---------------------------------------------------------------- KB gaps


def kb_gaps(
    facts: Sequence[TicketFact],
    *,
    threshold: float,
    max_tickets: int = 400,
    max_clusters: int = 8,
    examples: int = 3,
    min_size: int = 2,
) -> dict[str, Any]:
    """Clusters of the most recent tickets whose best KB article scores below `threshold`.

    TF-IDF over the ticket text, average-linkage clustering by cosine distance (no fixed k: a gap is as big
    as the tickets that share it); each cluster with its size, top terms, commonest service and the examples
    nearest its centre. Deterministic for the same facts.
    """
    weak = [f for f in facts if f.best_article_score is not None and f.best_article_score < threshold and f.text.strip()]
    matched = sum(1 for f in facts if f.best_article_score is not None)
    weak.sort(key=lambda f: (f.created_at, f.id), reverse=True)
    sample = weak[:max_tickets]
    result: dict[str, Any] = {
        "threshold": threshold,
        "tickets_with_kb_match": matched,
        "weak": len(weak),
        "weak_share": round(len(weak) / matched, 4) if matched else 0.0,
        "clustered": len(sample),
        "clusters": [],
    }
    if len(sample) < min_size:
        return result
    labels, terms, closeness = _cluster_texts([f.text for f in sample])
    members: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        members[label].append(i)
    clusters = []
    for label, idx in members.items():
        if len(idx) < min_size:
            continue
        group = [sample[i] for i in idx]
        nearest = sorted(idx, key=lambda i: -closeness[i])[:examples]
        services = Counter(f.labels.get("service") or UNLABELLED for f in group)
        scores = [f.best_article_score or 0.0 for f in group]
        best_articles = Counter(f.best_article_id for f in group if f.best_article_id)
        clusters.append(
            {
                "size": len(group),
                "terms": terms[label],
                "service": services.most_common(1)[0][0],
                "mean_best_score": round(sum(scores) / len(scores), 4),
                "nearest_article": best_articles.most_common(1)[0][0] if best_articles else None,
                "latest": max(f.created_at for f in group).isoformat(),
                "examples": [
                    {"id": sample[i].id, "text": sample[i].text[:280], "best_article_score": sample[i].best_article_score}
                    for i in nearest
                ],
            }
        )
    clusters.sort(key=lambda c: (-c["size"], c["mean_best_score"]))
    result["clusters"] = clusters[:max_clusters]
    return result


def _cluster_texts(texts: list[str], distance: float = 0.8) -> tuple[list[int], dict[int, list[str]], list[float]]:
    """Cluster ids per text, the top terms per cluster, and each text's cosine similarity to its cluster centre."""
    import numpy as np
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words="english", ngram_range=(1, 1), min_df=1, max_features=5000, sublinear_tf=True)
    matrix = vectorizer.fit_transform(texts)
    if matrix.shape[1] == 0:
        return [0] * len(texts), {0: []}, [1.0] * len(texts)
    dense = matrix.toarray()
    empty = ~dense.any(axis=1)
    dense[empty] = 1.0 / math.sqrt(dense.shape[1])  # texts of stop words only: one shared direction
    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance)
    labels = model.fit_predict(dense).tolist()
    vocab = np.array(vectorizer.get_feature_names_out())
    terms: dict[int, list[str]] = {}
    closeness = [0.0] * len(texts)
    for label in set(labels):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        centre = dense[idx].mean(axis=0)
        norm = np.linalg.norm(centre) or 1.0
        for i in idx:
            closeness[i] = float(dense[i] @ centre / norm)
        terms[label] = [str(vocab[j]) for j in np.argsort(-centre)[:5] if centre[j] > 0]
    return labels, terms, closeness


# ---------------------------------------------------------------- the whole report


def stats_report(
    facts: Sequence[TicketFact],
    *,
    now: datetime,
    by: GroupBy = "service",
    bucket: Literal["day", "week"] = "day",
    gap_threshold: float = 0.35,
    titles: dict[str, str] | None = None,
    zone: tzinfo = UTC,
) -> dict[str, Any]:
    """Every KPI over the (already filtered) facts, as one JSON-ready dict."""
    counts = Counter(f.agent_decision or "unclassified" for f in facts)
    return {
        "group_by": by,
        "bucket": bucket,
        "totals": {
            "tickets": len(facts),
            **{d: counts[d] for d in DECISIONS},
            "reviewed": sum(1 for f in facts if f.reviewed_at is not None),
            "pending_review": pending(facts, now)["n"],
            "with_draft": sum(1 for f in facts if f.citations),
        },
        "volumes": volumes(facts, by, bucket, zone),
        "decisions": decision_shares(facts, by),
        "overturn": overturn_rates(facts),
        "time_to_decision": time_to_decision(facts, by),
        "pending": pending(facts, now),
        "cited_articles": cited_articles(facts, titles),
        "draft_rate": draft_rate(facts),
        "kb_gaps": kb_gaps(facts, threshold=gap_threshold),
    }
