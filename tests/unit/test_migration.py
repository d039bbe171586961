"""Planning a taxonomy migration: each kind of step, and the mistakes a YAML author makes, refused with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.contracts import AxisLabel, LabelAlternative
from agent.migration import (
    MigrationError,
    carried_thresholds,
    choose,
    migrate_stored_labels,
    plan_migration,
    stranded_labels,
)
from agent.taxonomy import TaxonomyError, load_taxonomy
from evals.migration_demo import DEFAULT, STEPS, write_v2


def test_each_step_moves_its_labels_and_a_split_is_re_asked(tmp_path: Path) -> None:
    old, new = load_taxonomy(DEFAULT), load_taxonomy(write_v2(tmp_path / "v2.yaml"))
    plan = plan_migration(old, new)
    assert plan.previous == old.ref and plan.target == new.ref
    cases = {
        "it_help_desk": ("service_desk", {}),
        "cloud": ("infrastructure", {}),
        "network": ("infrastructure", {}),
        "feedback_complaints": ("general_information", {}),
        "billing_payments": ("billing_payments", {}),
        "technical_support": ("technical_support", {"service": ("software_application", "hardware")}),
    }
    for old_label, (expected, reask) in cases.items():
        moved = plan.apply({"service": old_label, "tier": "L2", "channel": "email"}, "My laptop will not boot")
        assert (moved.labels["service"], moved.reask, moved.ruled) == (expected, reask, {}), old_label
        assert moved.labels["tier"] == "L2" and moved.labels["channel"] == "email"
    # a stored example teaches nothing about a split it predates: that axis is dropped, the others kept
    assert plan.stored_labels({"service": "technical_support", "tier": "L3"}) == {"tier": "L3"}
    assert migrate_stored_labels(new, {"service": "cloud", "tier": "L1"}) == {"service": "infrastructure", "tier": "L1"}
    assert migrate_stored_labels(old, {"service": "cloud"}) == {"service": "cloud"}  # no migration: unchanged


def test_a_label_gone_without_a_step_is_refused_naming_it(tmp_path: Path) -> None:
    old, new = load_taxonomy(DEFAULT), load_taxonomy(write_v2(tmp_path / "v2.yaml", steps=STEPS[:2]))
    with pytest.raises(MigrationError, match=r"\['technical_support', 'feedback_complaints'\].*no migration step"):
        plan_migration(old, new)
    with pytest.raises(MigrationError, match="no `migration:` section"):
        plan_migration(new, old)


def without_network(version: str | None = None, *, description: str | None = None) -> dict:
    """default.yaml's content with `network` dropped (unless only the description changes), under `version`."""
    raw = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    service = raw["axes"]["service"]
    if description is None:
        service["labels"] = [label for label in service["labels"] if label["id"] != "network"]
    else:
        service["labels"][0]["description"] = description
    raw["version"] = version or raw["version"]
    return raw


def write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_a_version_that_keeps_every_label_needs_no_migration_section(tmp_path: Path) -> None:
    old = load_taxonomy(DEFAULT)
    assert plan_migration(old, load_taxonomy(DEFAULT)).moves == {}  # the same file
    reworded = load_taxonomy(write(tmp_path / "v2.yaml", without_network("2026.12.2", description="Reworded.")))
    plan = plan_migration(old, reworded)
    assert (plan.previous, plan.target, plan.moves) == (old.ref, reworded.ref, {})
    assert plan.apply({"service": "network", "tier": "L2"}).labels == {"service": "network", "tier": "L2"}


def test_a_label_gone_from_a_version_without_migration_is_named(tmp_path: Path) -> None:
    old = load_taxonomy(DEFAULT)
    new = load_taxonomy(write(tmp_path / "v2.yaml", without_network("2026.12.1")))
    with pytest.raises(MigrationError, match=r"no `migration:` section, but service labels \['network'\] of default@2026.11.1 "
                       r"are gone from it; add one naming from_version '2026.11.1'"):
        plan_migration(old, new)


def test_a_file_changed_under_the_same_version_is_told_to_bump_it(tmp_path: Path) -> None:
    old = load_taxonomy(DEFAULT)
    reworded = load_taxonomy(write(tmp_path / "same.yaml", without_network(description="Reworded.")))
    with pytest.raises(MigrationError, match=r"this file changes taxonomy default@2026.11.1 under the same version: bump `version` in it \(") as info:
        plan_migration(old, reworded)
    assert "migration" not in str(info.value)
    dropped = load_taxonomy(write(tmp_path / "dropped.yaml", without_network()))
    with pytest.raises(MigrationError, match=r"bump `version` in it, and add a `migration:` naming from_version "
                       r"'2026.11.1' with a rename, merge, split or retire step for service labels \['network'\]"):
        plan_migration(old, dropped)


def test_another_taxonomy_is_no_previous_version(tmp_path: Path) -> None:
    other = load_taxonomy(write(tmp_path / "acme.yaml", {**without_network("1"), "name": "acme"}))
    with pytest.raises(MigrationError, match="acme@1 is not a version of 'default'"):
        plan_migration(load_taxonomy(DEFAULT), other)


def test_stranded_labels_are_those_neither_kept_nor_moved(tmp_path: Path) -> None:
    in_use = [
        ({"service": "network", "channel": "email", "tier": "L2"}, 3),
        ({"service": "network", "channel": "pigeon", "tier": "L2"}, 1),
        ({"service": "billing_payments", "channel": "email", "tier": None}, 5),
    ]
    dropped = load_taxonomy(write(tmp_path / "v2.yaml", without_network("2026.12.1")))
    stranded = stranded_labels(dropped, in_use)
    assert (stranded.labels, stranded.tickets) == ({"service": {"network": 4}, "channel": {"pigeon": 1}}, 4)
    assert stranded.describe() == "service 'network' (4 tickets), channel 'pigeon' (1 ticket)"
    # a step that moves network strands nothing; the default keeps it
    migrated = load_taxonomy(write_v2(tmp_path / "v3.yaml"))
    assert stranded_labels(migrated, in_use[:1]).tickets == 0
    assert stranded_labels(load_taxonomy(DEFAULT), in_use).labels == {"channel": {"pigeon": 1}}


def test_migration_from_another_version_is_refused(tmp_path: Path) -> None:
    new = load_taxonomy(write_v2(tmp_path / "v2.yaml"))
    older = load_taxonomy(DEFAULT).model_copy(update={"version": "1999.1"})
    with pytest.raises(MigrationError, match=f"migrates from default@{load_taxonomy(DEFAULT).version}"):
        plan_migration(older, new)


RULED_SPLIT = {
    "op": "split", "axis": "service", "from": "technical_support", "to": ["software_application", "hardware"],
    "rules": [
        {"to": "hardware", "keywords": ["laptop", "printer", "docking station"]},
        {"to": "software_application", "pattern": r"\bapp(lication)?\b.*\b(crash|freez)", "when": {"tier": ["L2", "L3"]}},
    ],
}


def test_a_split_with_rules_decides_where_a_rule_matches_and_re_asks_the_rest(tmp_path: Path) -> None:
    steps = [step for step in STEPS if step["op"] != "split"] + [RULED_SPLIT]
    old, new = load_taxonomy(DEFAULT), load_taxonomy(write_v2(tmp_path / "v2.yaml", steps=steps))
    plan = plan_migration(old, new)
    labels = {"service": "technical_support", "tier": "L2", "channel": "email"}
    # keywords: whole words, any case; the first matching rule wins
    moved = plan.apply(labels, "Subject: LAPTOP\n\nthe app crashes when I dock it")
    assert moved.labels["service"] == "hardware" and moved.reask == {}
    assert moved.ruled == {"service": "rule 1 (keywords laptop, printer, docking station)"}
    assert plan.describe("service", "technical_support", "hardware", moved.ruled["service"]) == (
        "split -> hardware by rule 1 (keywords laptop, printer, docking station)"
    )
    assert plan.apply(labels, "our laptops").reask == {"service": ("software_application", "hardware")}  # not a whole word
    # pattern and `when` together: the labels read are those under the previous version
    moved = plan.apply(labels, "The application keeps crashing on start")
    assert moved.labels["service"] == "software_application" and moved.ruled["service"].startswith("rule 2 (pattern")
    assert plan.apply({**labels, "tier": "L1"}, "The application keeps crashing").reask  # tier L1: rule 2 does not hold
    # without a rule that matches, or without the text a rule reads, the agent is re-asked
    assert plan.apply(labels, "How do I export a report?").reask == {"service": ("software_application", "hardware")}
    assert plan.apply(labels).reask and plan.stored_labels(labels) == {"tier": "L2", "channel": "email"}
    assert plan.stored_labels(labels, "printer jam") == {"service": "hardware", "tier": "L2", "channel": "email"}
    assert migrate_stored_labels(new, {"service": "technical_support"}, "new docking station") == {"service": "hardware"}
    # `otherwise` takes what no rule matched, so nothing is re-asked
    steps[-1] = {**RULED_SPLIT, "otherwise": "software_application"}
    plan = plan_migration(old, load_taxonomy(write_v2(tmp_path / "v3.yaml", steps=steps)))
    moved = plan.apply(labels, "How do I export a report?")
    assert (moved.labels["service"], moved.reask, moved.ruled) == ("software_application", {}, {"service": "otherwise"})


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"op": "rename", "axis": "service", "from": "it_help_desk", "to": "nowhere"}, "not labels of axis service"),
        ({"op": "rename", "axis": "service", "from": "billing_payments", "to": "service_desk"}, "still labels of axis service"),
        ({"op": "merge", "axis": "service", "from": "cloud", "to": "infrastructure"}, "merge on axis service needs"),
        ({"op": "split", "axis": "service", "from": "technical_support", "to": "hardware"}, "split on axis service needs"),
        ({"op": "explode", "axis": "service", "from": "cloud"}, "op"),
        ({**RULED_SPLIT, "rules": [{"to": "hardware"}]}, "has no condition"),
        ({**RULED_SPLIT, "rules": [{"to": "hardware", "pattern": "(unclosed"}]}, "not a regular expression"),
        ({**RULED_SPLIT, "rules": [{"to": "general_information", "keywords": ["faq"]}]}, r"not among its targets \['software_application', 'hardware'\]"),
        ({**RULED_SPLIT, "otherwise": "nowhere"}, "not among its targets"),
        ({"op": "rename", "axis": "service", "from": "it_help_desk", "to": "service_desk", "otherwise": "service_desk"},
         "belong to a split or a retire without `to`"),
        ({"op": "retire", "axis": "service", "from": "cloud", "rules": [{"to": "nowhere", "keywords": "vm"}]}, "not labels of axis service"),
    ],
)
def test_a_broken_step_is_refused_when_the_file_is_loaded(tmp_path: Path, step: dict, message: str) -> None:
    path = write_v2(tmp_path / "v2.yaml", steps=[step])
    with pytest.raises(TaxonomyError, match=message):
        load_taxonomy(path)


def test_a_step_moving_a_label_twice_is_refused(tmp_path: Path) -> None:
    path = write_v2(tmp_path / "v2.yaml", steps=[*STEPS, {"op": "retire", "axis": "service", "from": "cloud"}])
    with pytest.raises(TaxonomyError, match="already moved"):
        load_taxonomy(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["migration"]["from_version"] == load_taxonomy(DEFAULT).version


def test_choose_keeps_the_agent_inside_the_split_targets() -> None:
    suggested = AxisLabel(label="cloud", confidence=0.6, source="proposal",
                          alternatives=[LabelAlternative(label="network", confidence=0.2), LabelAlternative(label="hardware", confidence=0.1)])
    picked = choose(suggested, ("software_application", "hardware"))
    assert (picked.label, picked.confidence) == ("hardware", 0.1)
    none_fit = choose(AxisLabel(label="cloud", confidence=0.9, source="proposal"), ("software_application", "hardware"))
    assert (none_fit.label, none_fit.confidence, none_fit.source) == ("software_application", 0.0, "fallback")
    assert choose(suggested, ("cloud", "hardware")) == suggested


def test_a_moved_label_takes_its_alternatives_along_and_none_is_left_outside_the_new_version(tmp_path: Path) -> None:
    old, new = load_taxonomy(DEFAULT), load_taxonomy(write_v2(tmp_path / "v2.yaml"))
    plan = plan_migration(old, new)
    held = AxisLabel(label="it_help_desk", confidence=0.7, source="proposal", alternatives=[
        LabelAlternative(label="network", confidence=0.1), LabelAlternative(label="cloud", confidence=0.15),
        LabelAlternative(label="technical_support", confidence=0.03), LabelAlternative(label="billing_payments", confidence=0.02)])
    moved = plan.moved_label("service", held, "service_desk")
    assert (moved.label, moved.confidence, moved.source) == ("service_desk", 0.7, "proposal")
    # network + cloud merged keep the higher confidence; the split one is the agent's to choose, so it goes
    assert [(a.label, a.confidence) for a in moved.alternatives] == [("infrastructure", 0.15), ("billing_payments", 0.02)]
    assert {a.label for a in moved.alternatives} <= set(new.axes["service"].ids)
    assert plan.move("service", "billing_payments") == "billing_payments" and plan.move("service", "technical_support") is None


def test_a_suggestion_moves_with_the_labels_and_is_dropped_once_it_agrees(tmp_path: Path) -> None:
    plan = plan_migration(load_taxonomy(DEFAULT), load_taxonomy(write_v2(tmp_path / "v2.yaml")))
    held = {"service": AxisLabel(label="infrastructure", confidence=1.0, source="human")}
    renamed = AxisLabel(label="it_help_desk", confidence=0.8, source="proposal", alternatives=[LabelAlternative(label="cloud", confidence=0.1)])
    moved = plan.moved_suggestion({"service": renamed}, held)["service"]
    assert (moved.label, [(a.label, a.confidence) for a in moved.alternatives]) == ("service_desk", [("infrastructure", 0.1)])
    # network held, cloud suggested: both infrastructure now, so nothing is left to suggest
    assert plan.moved_suggestion({"service": AxisLabel(label="cloud", confidence=0.8, source="proposal")}, held) == {}
    # a split label is the agent's best alternative among its targets, or none
    split = AxisLabel(label="technical_support", confidence=0.8, source="proposal", alternatives=[LabelAlternative(label="hardware", confidence=0.1)])
    assert plan.moved_suggestion({"service": split}, held)["service"].label == "hardware"
    assert plan.moved_suggestion({"service": split.model_copy(update={"alternatives": []})}, held) == {}


def test_the_demo_names_a_missing_tickets_file_before_touching_its_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m evals.migration_demo`, as the README gives it, died with a FileNotFoundError traceback: its default
    tickets file was never committed. The default is now the hand-written seed; a missing --written is named."""
    from evals import migration_demo

    monkeypatch.setattr(migration_demo, "WRITTEN", tmp_path / "missing.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        migration_demo.main(["--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--written" in err and "missing.jsonl does not exist" in err and "labelled tickets" in err
    assert (out / "keep").exists()


def test_the_demo_prints_a_taxonomy_path_outside_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out /tmp/demo` (or a relative --out) filed every ticket, then died on `v2.relative_to(REPO_ROOT)`."""
    from evals.migration_demo import REPO_ROOT, shown

    assert shown(tmp_path / "default-v2.yaml") == tmp_path / "default-v2.yaml"
    assert shown(REPO_ROOT / "evals" / "runs" / "v2.yaml") == Path("evals/runs/v2.yaml")
    monkeypatch.chdir(REPO_ROOT)
    assert shown(Path("evals/runs/v2.yaml")) == Path("evals/runs/v2.yaml")


def test_thresholds_follow_the_migration_to_the_strictest_and_fitted_ones_stand(tmp_path: Path) -> None:
    new = load_taxonomy(write_v2(tmp_path / "v2.yaml"))
    fitted = {"service": {"*": 0.2, "network": 0.5, "cloud": 0.3, "technical_support": 0.1, "general_information": 0.25,
                          "feedback_complaints": 0.9, "it_help_desk": 0.15}, "tier": {"L3": 1.001}}
    carried, notes = carried_thresholds(fitted, 0.9, new)
    assert carried["service"]["infrastructure"] == 0.5  # merged: the stricter of the two
    assert "software_application" not in carried["service"]  # split from a laxer class than the pooled: pooled stays
    assert carried["service"]["general_information"] == 0.25  # fitted for itself: it stands
    assert carried["service"]["service_desk"] == 0.15  # renamed: the same class, its own threshold
    assert carried["tier"] == {"L3": 1.001}
    assert set(carried["service"]) == {"*", "infrastructure", "general_information", "service_desk"}
    assert len(notes) == 3 and any("infrastructure" in n and "network, cloud" in n for n in notes)
    assert carried_thresholds({"service": {"network": 1.001}}, 0.9, load_taxonomy(DEFAULT)) == ({"service": {"network": 1.001}}, [])
