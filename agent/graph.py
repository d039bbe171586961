"""The triage graph, readable in one place.

    normalize -> retrieve -> propose -> classify -> validate --ok--> decide -> draft -> END
                                  |         ^            | invalid (bounded re-asks, error fed back)
                                  |         +------------+ then decide falls back to the proposal
                                  +--(proposal mode, no LLM, LLM down)--> decide
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agent.nodes.classify import classify
from agent.nodes.decide import decide
from agent.nodes.draft import draft
from agent.nodes.normalize import normalize
from agent.nodes.propose import propose
from agent.nodes.retrieve import retrieve
from agent.nodes.validate import route_after_validate, validate
from agent.state import TriageContext, TriageState


def route_after_propose(state: TriageState, runtime: Runtime[TriageContext]) -> str:
    ctx = runtime.context
    return "decide" if ctx.settings.mode == "proposal" or ctx.llm is None else "classify"


def route_after_classify(state: TriageState) -> str:
    return "decide" if state.get("llm_failed") else "validate"


def build_graph() -> StateGraph:
    graph = StateGraph(TriageState, context_schema=TriageContext)
    graph.add_node("normalize", normalize)
    graph.add_node("retrieve", retrieve)
    graph.add_node("propose", propose)
    graph.add_node("classify", classify)
    graph.add_node("validate", validate)
    graph.add_node("decide", decide)
    graph.add_node("draft", draft)
    graph.add_edge(START, "normalize")
    graph.add_edge("normalize", "retrieve")
    graph.add_edge("retrieve", "propose")
    graph.add_conditional_edges("propose", route_after_propose, ["classify", "decide"])
    graph.add_conditional_edges("classify", route_after_classify, ["validate", "decide"])
    graph.add_conditional_edges("validate", route_after_validate, ["classify", "decide"])
    graph.add_edge("decide", "draft")
    graph.add_edge("draft", END)
    return graph


triage_graph = build_graph().compile()
