"""propose: per-axis probabilities from the trained head mixed with the neighbours' vote; also the fallback."""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.corrections import follow_verified_neighbours
from agent.proposal import KNN_WEIGHT, head_mix_options, propose_distribution
from agent.state import TriageContext, TriageState

__all__ = ["KNN_WEIGHT", "propose"]


def propose(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    head_probs = ctx.head.predict([state["text"]], state["vector"][None, :])[0] if ctx.head else {}
    proposal = propose_distribution(head_probs, state["neighbours"], ctx.taxonomy, **head_mix_options(ctx.head))
    proposal = follow_verified_neighbours(
        proposal, state["neighbours"], ctx.taxonomy, min_score=ctx.settings.verified_match_score
    )
    return {"proposal": proposal}
