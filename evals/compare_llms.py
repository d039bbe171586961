"""Compare packaged LLM candidates for the embedded default: JSON validity, label accuracy, latency.

LLM alone (no retrieval, no proposal), on the project's own hand-written tickets, so the number is the
model's, not the store's. Usage:

    python -m evals.compare_llms --gguf SmolLM2=<path> --gguf Gemma3-270M=<path> [--limit 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from pydantic import ValidationError

from agent.contracts import TicketIn
from agent.llm import LLMClient, LLMUnavailable
from agent.local_llm import LocalLLMServer
from agent.nodes.classify import build_messages
from agent.nodes.validate import extract_json
from agent.service import read_jsonl
from agent.settings import REPO_ROOT, Settings
from agent.state import TriageContext
from agent.taxonomy import answer_model, load_taxonomy


def evaluate(name: str, gguf: Path, tickets: list[dict], structured: str) -> dict:
    settings = Settings()
    taxonomy = load_taxonomy(settings.taxonomy_path)
    ctx = TriageContext(settings=settings, taxonomy=taxonomy, embedder=None, store=None, head=None, llm=None)  # type: ignore[arg-type]
    model = answer_model(taxonomy, with_channel=False)
    valid = service_ok = tier_ok = failures = 0
    latencies: list[float] = []
    with LocalLLMServer(model_path=gguf, model_alias=name) as server:
        client = LLMClient(base_url=server.base_url, model=name, structured=structured, timeout_s=120, max_attempts=1)  # type: ignore[arg-type]
        for row in tickets:
            ticket = TicketIn(subject=row["subject"], body=row["body"], channel=row["channel"])
            state = {"ticket": ticket, "text": ticket.full_text(), "proposal": {}, "neighbours": [], "articles": []}
            started = time.perf_counter()
            try:
                reply = client.chat(build_messages(state, ctx), schema=model.model_json_schema(), max_tokens=200)  # type: ignore[arg-type]
                answer = model.model_validate(extract_json(reply.text))
            except (LLMUnavailable, ValueError, ValidationError):
                failures += 1
                continue
            finally:
                latencies.append((time.perf_counter() - started) * 1000)
            valid += 1
            service_ok += answer.service == row["labels"]["service"]
            tier_ok += answer.tier == row["labels"]["tier"]
    n = len(tickets)
    return {
        "model": name,
        "structured": structured,
        "n": n,
        "valid_json": round(valid / n, 3),
        "service_accuracy": round(service_ok / n, 3),
        "tier_accuracy": round(tier_ok / n, 3),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "gguf_mb": round(gguf.stat().st_size / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", action="append", required=True, help="NAME=PATH of a GGUF file; repeat per candidate")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evals" / "reports" / "llm_candidates.json")
    args = parser.parse_args()
    rows = list(read_jsonl(REPO_ROOT / "knowledge_base" / "seed" / "handwritten.jsonl"))[:: max(1, 182 // args.limit)][: args.limit]
    results = []
    for spec in args.gguf:
        name, path = spec.split("=", 1)
        for structured in ("json_object", "none"):
            result = evaluate(name, Path(path), rows, structured)
            print(json.dumps(result))
            results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
