"""propose: per-axis probabilities from the trained head mixed with the neighbours' vote; also the fallback."""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.contracts import AXES
from agent.proposal import knn_vote, mix
from agent.state import TriageContext, TriageState

KNN_WEIGHT = 0.3


def propose(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    head_probs = ctx.head.predict([state["text"]], state["vector"][None, :])[0] if ctx.head else {}
    proposal = {}
    for axis in AXES:
        valid = set(ctx.taxonomy.axes[axis].ids)
        dist = mix(head_probs.get(axis, {}), knn_vote(state["neighbours"], axis), KNN_WEIGHT)
        proposal[axis] = {label: p for label, p in dist.items() if label in valid}
    return {"proposal": proposal}
