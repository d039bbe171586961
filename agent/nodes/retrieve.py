"""retrieve: the nearest labelled past tickets and KB articles from the Chroma store."""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.migration import migrate_stored_labels
from agent.state import TriageContext, TriageState


def retrieve(state: TriageState, runtime: Runtime[TriageContext]) -> TriageState:
    ctx = runtime.context
    vector = ctx.embedder.embed([state["text"]])[0]
    own = state["ticket"].ticket_id
    k = ctx.settings.top_k_tickets
    # a stored ticket (a reviewed one is in the store) is never evidence for itself when it is re-classified
    hidden = ctx.hidden_ids | {own} if own else ctx.hidden_ids
    neighbours = [n for n in ctx.store.similar_tickets(vector, k + len(hidden)) if n.id not in hidden][:k]
    if ctx.taxonomy.migration is not None:  # tickets stored under the previous version vote in the new ids
        neighbours = [n.model_copy(update={"labels": migrate_stored_labels(ctx.taxonomy, n.labels, n.text)}) for n in neighbours]
    articles = ctx.store.similar_articles(vector, ctx.settings.top_k_articles) if ctx.settings.top_k_articles else []
    warnings = [] if neighbours else ["the ticket store is empty: run `triage ingest` to seed it"]
    return {"vector": vector, "neighbours": neighbours, "articles": articles, "warnings": warnings}
