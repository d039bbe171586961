"""propose: per-axis probabilities from the trained head mixed with the neighbours' vote; also the fallback."""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.proposal import KNN_WEIGHT, propose_distribution
from agent.state import TriageContext, TriageState

__all__ = ["KNN_WEIGHT", "propose"]


def propose(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    head_probs = ctx.head.predict([state["text"]], state["vector"][None, :])[0] if ctx.head else {}
    knn_weight = getattr(ctx.head, "knn_weight", KNN_WEIGHT) if ctx.head else KNN_WEIGHT
    proposal = propose_distribution(head_probs, state["neighbours"], ctx.taxonomy, knn_weight=knn_weight)
    return {"proposal": proposal}
