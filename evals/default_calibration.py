"""The shipped calibration: knowledge_base/taxonomies/default.calibration.json, fitted on the seed tickets.

    python -m evals.default_calibration [--llm-vote-weight W]

5-fold cross-validation of the proposal (head + kNN vote, exactly as the graph mixes them) over
knowledge_base/seed/tickets.jsonl with the default taxonomy; per axis (service, tier) the per-class auto-apply
thresholds at target precision 0.9 (evals/calibration.py explains the rule). The out-of-scope threshold stays
null for the default taxonomy: the seed covers its labels unevenly (thousands of chat messages from two
datasets, a few hundred hand-written IT tickets), so a nearest-neighbour floor fitted on it would flag
legitimate IT tickets; a deployment fits one with `triage eval --oos-label` on its own data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.contracts import LabelledTicket
from agent.service import make_embedder
from agent.settings import REPO_ROOT, Settings
from agent.taxonomy import load_taxonomy
from evals import calibration as cal
from evals.runner import CachedEmbedder, normalized
from evals.splits import RUNS

AXES_FITTED = ("service", "tier")


def fit_default(
    *,
    seed_path: Path | None = None,
    taxonomy_path: Path | None = None,
    out_path: Path | None = None,
    target: float = 0.9,
    folds: int = 5,
    llm_vote_weight: float | dict[str, float] | None = None,
    progress: bool = True,
) -> cal.FittedCalibration:
    settings = Settings()
    seed_path = seed_path or settings.knowledge_base_dir / "seed" / "tickets.jsonl"
    taxonomy_path = taxonomy_path or settings.taxonomy_path
    out_path = out_path or taxonomy_path.with_suffix(".calibration.json")
    taxonomy = load_taxonomy(taxonomy_path)
    tickets = [LabelledTicket.model_validate(json.loads(line)) for line in seed_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [normalized(t.text()) for t in tickets]
    embedder = CachedEmbedder(make_embedder(settings), RUNS / ".cache" / "embeddings.sqlite")
    vectors = embedder.embed_batched(texts, progress=progress, desc="embedding seed")
    labels = {axis: [t.labels.get(axis) for t in tickets] for axis in AXES_FITTED}
    oof = cal.out_of_fold(texts, vectors, labels, taxonomy, folds=folds, seed=0, progress=progress)
    summary: dict[str, object] = {"source": str(seed_path.relative_to(REPO_ROOT)) if seed_path.is_relative_to(REPO_ROOT) else str(seed_path), "n": len(tickets), "folds": folds, "target_precision": target}
    fits = cal.fit_axis_thresholds(oof, labels, AXES_FITTED, target)
    fitted = cal.FittedCalibration.from_fits(fits, summary, default=target, out_of_scope_threshold=None, llm_vote_weight=llm_vote_weight)
    fitted.write(out_path)
    return fitted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm-vote-weight", type=float, default=None, help="measured weight of the LLM's vote (evals/README.md)")
    args = parser.parse_args(argv)
    fitted = fit_default(llm_vote_weight=args.llm_vote_weight)
    print(json.dumps(fitted.fitted_on, indent=2))


if __name__ == "__main__":
    main()
