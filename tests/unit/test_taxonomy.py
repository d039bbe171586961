from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.settings import REPO_ROOT
from agent.taxonomy import TaxonomyError, answer_model, label_glossary, load_taxonomy

DEFAULT = REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml"


def test_default_taxonomy_has_the_contract_ids() -> None:
    taxonomy = load_taxonomy(DEFAULT)
    assert taxonomy.axes["tier"].ids == ["L1", "L2", "L3"]
    assert taxonomy.axes["channel"].ids == ["email", "phone", "chat", "social", "portal", "api"]
    services = taxonomy.axes["service"].ids
    assert {"billing_payments", "technical_support", "it_help_desk", "cybersecurity", "network", "cloud"} <= set(services)
    assert all(s == s.lower() and " " not in s for s in services)
    for axis in taxonomy.axes.values():
        assert all(label.description for label in axis.labels)
    assert "L3" in label_glossary(taxonomy, "tier")


AXES_OK = (
    "name: {name}\nversion: {version}\naxes:\n"
    "  service: {{fallback: a, labels: [{{id: a, name: A, description: d}}]}}\n"
    "  channel: {{fallback: a, labels: [{{id: a, name: A, description: d}}]}}\n"
    "  tier: {{fallback: a, labels: [{{id: a, name: A, description: d}}]}}\n"
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nversion: '1'\naxes: [\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: x\nversion: '1'\naxes:\n  service: {fallback: a, labels: [{id: a, name: A, description: d}]}\n", "lacks axes"),
        (
            "name: x\nversion: '1'\naxes:\n"
            "  service: {fallback: zzz, labels: [{id: a, name: A, description: d}]}\n"
            "  channel: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  tier: {fallback: a, labels: [{id: a, name: A, description: d}]}\n",
            "fallback 'zzz' is not one of its labels",
        ),
        (
            "name: x\nversion: '1'\naxes:\n"
            "  service: {fallback: a, labels: [{id: a, name: A, description: d}, {id: a, name: B, description: d}]}\n"
            "  channel: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  tier: {fallback: a, labels: [{id: a, name: A, description: d}]}\n",
            "duplicate label id",
        ),
        (
            "name: x\nversion: 2.10\naxes:\n"
            "  service: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  channel: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  tier: {fallback: a, labels: [{id: a, name: A, description: d}]}\n",
            'write the version as a quoted string, e.g. version: "2.1"',
        ),
        (  # YAML would keep the last `name:` silently
            "name: x\nversion: '1'\nname: y\naxes:\n"
            "  service: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  channel: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  tier: {fallback: a, labels: [{id: a, name: A, description: d}]}\n",
            r"line 3: key 'name' is written twice in one mapping \(first on line 1\); keep one",
        ),
        (
            "name: x\nversion: '1'\naxes:\n"
            "  service: {fallback: a, labels: [{id: a, name: A, description: d, name: B}]}\n"
            "  channel: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  tier: {fallback: a, labels: [{id: a, name: A, description: d}]}\n",
            r"line 4: key 'name' is written twice",
        ),
        (  # escalation moves to the next tier listed, so the list runs from the front line up
            "name: x\nversion: '1'\naxes:\n"
            "  service: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  channel: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  tier: {fallback: L2, labels: [{id: L3, name: A, description: d}, {id: L2, name: B, description: d}, {id: L1, name: C, description: d}]}\n",
            r"axes.tier lists \['L3', 'L2', 'L1'\]; tiers rank in list order .* from the front line up: \['L1', 'L2', 'L3'\]",
        ),
        ("name: caf\xe9\n", "not UTF-8 text"),
        (  # channels are matched case-insensitively: such a pair made both ambiguous
            "name: x\nversion: '1'\naxes:\n"
            "  service: {fallback: a, labels: [{id: a, name: A, description: d}]}\n"
            "  channel: {fallback: email, labels: [{id: email, name: A, description: d}, {id: Email, name: B, description: d}]}\n"
            "  tier: {fallback: a, labels: [{id: a, name: A, description: d}]}\n",
            r"axes.channel has labels 'email' and 'Email', which differ only in case",
        ),
        # name@version names a version in revisions and GET /v1/taxonomy/versions/{ref}: a half-written or odd one
        (AXES_OK.format(name="x", version="''"), r"version is empty; give it a value"),
        (AXES_OK.format(name="'  '", version="'1'"), r"name is empty"),
        (AXES_OK.format(name="x", version="'2026/12'"), r"version '2026/12' holds '/', which name@version cannot carry"),
        (AXES_OK.format(name="acme@eu", version="'1'"), r"name 'acme@eu' holds '@'"),
        (AXES_OK.format(name="x", version="'" + "9" * 81 + "'"), r"version has 81 characters; keep it to 80"),
    ],
)
def test_broken_taxonomy_files_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(TaxonomyError, match=message) as info:
        load_taxonomy(path)
    assert str(path) in str(info.value)


def test_tiers_without_numbers_rank_as_listed_and_merge_keys_may_override(tmp_path: Path) -> None:
    path = tmp_path / "named.yaml"
    path.write_text(
        "name: x\nversion: '1'\naxes:\n"
        "  service: {fallback: a, labels: [&base {id: a, name: A, description: d}, {<<: *base, id: b, name: B}]}\n"
        "  channel: {fallback: a, labels: [{<<: *base}]}\n"
        "  tier: {fallback: desk, labels: [{<<: *base, id: desk}, {<<: *base, id: experts}]}\n",
        encoding="utf-8",
    )
    taxonomy = load_taxonomy(path)
    assert taxonomy.axes["tier"].ids == ["desk", "experts"]
    assert [label.name for label in taxonomy.axes["service"].labels] == ["A", "B"]


def test_missing_taxonomy_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="TRIAGE_TAXONOMY_PATH"):
        load_taxonomy(tmp_path / "nope.yaml")


def test_answer_model_rejects_out_of_taxonomy_labels() -> None:
    taxonomy = load_taxonomy(DEFAULT)
    model = answer_model(taxonomy, with_channel=False)
    ok = model.model_validate({"service": "billing_payments", "tier": "L2", "confidence": 0.7, "rationale": "see [t1]"})
    assert ok.service == "billing_payments"
    with pytest.raises(ValidationError):
        model.model_validate({"service": "refunds_and_stuff", "tier": "L2", "confidence": 0.7, "rationale": "x"})
    with pytest.raises(ValidationError):
        model.model_validate({"service": "billing_payments", "tier": "L4", "confidence": 0.7, "rationale": "x"})
    schema = answer_model(taxonomy, with_channel=True).model_json_schema()
    assert set(schema["required"]) == {"service", "channel", "tier", "confidence", "rationale"}
    assert schema["properties"]["channel"]["enum"] == taxonomy.axes["channel"].ids


def test_a_label_in_another_case_or_with_spaces_is_the_taxonomy_id() -> None:
    """An endpoint that ignores the schema (or TRIAGE_LLM_STRUCTURED=none) answering " Billing_Payments " or "l2 "
    was rejected as out of taxonomy: every re-ask spent and the ticket fell to the proposal with needs_review."""
    model = answer_model(load_taxonomy(DEFAULT), with_channel=True)
    answer = model.model_validate(
        {"service": " Billing_Payments ", "channel": "EMAIL", "tier": "l2 ", "confidence": 0.7, "rationale": "x"}
    )
    assert (answer.service, answer.channel, answer.tier) == ("billing_payments", "email", "L2")
    with pytest.raises(ValidationError):
        model.model_validate({"service": "billing payments", "channel": "email", "tier": "L2", "confidence": 0.7, "rationale": "x"})


def test_confidence_is_read_as_a_probability() -> None:
    model = answer_model(load_taxonomy(DEFAULT), with_channel=False)
    base = {"service": "billing_payments", "tier": "L2", "rationale": "x"}
    assert model.model_validate({**base, "confidence": 85}).confidence == 0.85
    assert model.model_validate({**base, "confidence": 10.5}).confidence == 0.105
    assert model.model_validate({**base, "confidence": 1e9}).confidence == 1.0
    assert model.model_validate({**base, "confidence": -3}).confidence == 0.0
    with pytest.raises(ValidationError):
        model.model_validate({**base, "confidence": "very"})


@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_confidence_is_invalid_not_certainty(flag: bool) -> None:
    """{"confidence": true} validated as certainty, 1.0: in llm mode such a broken answer was suggested at 0.87."""
    model = answer_model(load_taxonomy(DEFAULT), with_channel=False)
    with pytest.raises(ValidationError, match="not true or false"):
        model.model_validate({"service": "billing_payments", "tier": "L2", "rationale": "x", "confidence": flag})


def test_a_yaml_syntax_error_is_one_line_with_its_spot(tmp_path: Path) -> None:
    """PyYAML's message spans four lines (context, quoted line, caret), which broke the CLI's one-line errors."""
    path = tmp_path / "t.yaml"
    path.write_text("name: x\naxes: [\n  service: {\n", encoding="utf-8")
    with pytest.raises(TaxonomyError) as caught:
        load_taxonomy(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"taxonomy file {path} is not valid YAML: line 4, column 1: expected the node content")
