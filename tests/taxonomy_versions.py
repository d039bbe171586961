"""A second version of the default taxonomy with one migration step of each kind, for the migration tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.settings import REPO_ROOT

DEFAULT = REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml"
STEPS = [
    {"op": "rename", "axis": "service", "from": "it_help_desk", "to": "service_desk"},
    {"op": "merge", "axis": "service", "from": ["network", "cloud"], "to": "infrastructure"},
    {"op": "split", "axis": "service", "from": "technical_support", "to": ["software_application", "hardware"]},
    {"op": "retire", "axis": "service", "from": "feedback_complaints", "to": "general_information"},
]


def write_v2(dest: Path, steps: list[dict] | None = None) -> Path:
    """default.yaml as version `<v>.2`: it_help_desk renamed, network + cloud merged, technical_support split,
    feedback_complaints retired into general_information."""
    raw = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    previous = raw["version"]
    service = raw["axes"]["service"]
    by_id = {label["id"]: label for label in service["labels"]}
    gone = {"network", "cloud", "technical_support", "feedback_complaints"}
    labels = []
    for label in service["labels"]:
        if label["id"] == "it_help_desk":
            label = {**label, "id": "service_desk", "name": "Service desk"}
        if label["id"] == "network":
            merged = f"{by_id['network']['description']} {by_id['cloud']['description']}"
            label = {**label, "id": "infrastructure", "name": "Infrastructure", "description": merged,
                     "examples": by_id["network"].get("examples", []) + by_id["cloud"].get("examples", [])}
        elif label["id"] in gone:
            continue
        labels.append(label)
    service["labels"] = labels
    if service["fallback"] in gone:
        service["fallback"] = "general_information"
    raw["version"] = f"{previous}.2"
    raw["migration"] = {"from_version": previous, "steps": STEPS if steps is None else steps}
    dest.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return dest
