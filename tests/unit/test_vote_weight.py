"""The vote-weight replay is decide's own arithmetic: weight 0 is the proposal, a near-tie flips to the LLM's label."""

from __future__ import annotations

import json
from pathlib import Path

from evals import vote_weight


def _row(row_id: str, gold: str, proposal: dict[str, float], llm: str | None, confidence: float = 0.9) -> dict:
    top = max(proposal, key=lambda k: proposal[k])
    return {
        "id": row_id,
        "gold_id": {"service": gold},
        "oos_gold": False,
        "prediction": {"labels": {"service": {"label": top}}},
        "vote": {"proposal": {"service": proposal}, "llm": {"service": llm}, "llm_confidence": confidence if llm else None},
    }


ROWS = [
    _row("clear", "billing", {"billing": 0.9, "tech": 0.1}, "tech"),  # strong proposal: the vote cannot move it
    _row("near_tie_helped", "tech", {"billing": 0.52, "tech": 0.48}, "tech"),
    _row("near_tie_hurt", "billing", {"billing": 0.51, "tech": 0.49}, "tech"),
    _row("no_answer", "tech", {"billing": 0.45, "tech": 0.55}, None),
]


def test_replay_moves_only_near_ties_and_counts_both_directions() -> None:
    result = vote_weight.replay(ROWS, "service", (0.0, 0.15, 1.0))
    by_weight = {w["weight"]: w for w in result["weights"]}
    assert result["rows"] == 4
    assert by_weight[0.0] == {"weight": 0.0, "accuracy": 0.75, "changed": 0, "right_to_wrong": 0, "wrong_to_right": 0}
    assert by_weight[0.15]["changed"] == 2 and by_weight[0.15]["right_to_wrong"] == 1 and by_weight[0.15]["wrong_to_right"] == 1
    assert by_weight[1.0]["changed"] == 3 and by_weight[1.0]["accuracy"] == 0.5  # the LLM alone: "clear" goes wrong too


def test_a_stated_confidence_of_zero_is_replayed_as_decide_used_it() -> None:
    proposal = {"billing": 0.40, "tech": 0.35, "returns": 0.25}
    # at confidence 0.5 the vote lifts "tech" over "billing"; at 0 it spreads all its mass onto the other labels
    assert vote_weight.label_at(_row("sure", "tech", proposal, "tech", confidence=0.5), "service", 0.5) == "tech"
    assert vote_weight.label_at(_row("unsure", "tech", proposal, "tech", confidence=0.0), "service", 0.5) == "billing"


def test_a_cross_validated_run_is_read_whole_and_a_proposal_run_is_refused(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    for k, rows in enumerate((ROWS[:2], ROWS[2:])):
        (tmp_path / "cv" / f"fold{k}").mkdir(parents=True)
        (tmp_path / "cv" / f"fold{k}" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(vote_weight.run_records(tmp_path / "cv")) == 4
    assert vote_weight.main([str(tmp_path / "cv"), "--weights", "0,0.15"]) == 0
    assert "| 0.15 | 0.7500 | 2 | 1 | 1 |" in capsys.readouterr().out
    (tmp_path / "proposal").mkdir()
    (tmp_path / "proposal" / "predictions.jsonl").write_text(json.dumps({k: v for k, v in ROWS[0].items() if k != "vote"}) + "\n")
    assert vote_weight.main([str(tmp_path / "proposal")]) == 2
    assert "no recorded votes" in capsys.readouterr().err
