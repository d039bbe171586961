"""Start-up refuses a taxonomy that strands stored tickets (labels it lacks and no migration step moves), with
the labels, the number of tickets and the fix; a fresh deployment and a covering migration start as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.records import Records, TaxonomyVersionRow, TicketRow, utcnow
from agent.service import StrandedLabelsError, check_labels_in_use, check_stored_labels, labels_in_use, running_service
from agent.settings import Settings
from agent.taxonomy import TaxonomyError, load_taxonomy
from evals.migration_demo import DEFAULT, write_v2


def add_tickets(records: Records, labels: list[tuple[str, str, str] | None]) -> None:
    """One ticket per (service, channel, tier); None is a ticket with no current revision."""
    now = utcnow()
    with records.write() as session:
        for i, current in enumerate(labels):
            service, channel, tier = current or (None, None, None)
            session.add(TicketRow(id=f"tk_{i}", created_by="test", created_at=now, updated_at=now, current_seq=1 if current else None,
                                  current_service=service, current_channel=channel, current_tier=tier))


def register(records: Records, path: Path) -> None:
    """As Lifecycle.register_taxonomy records a served version."""
    taxonomy = load_taxonomy(path)
    with records.write() as session:
        session.add(TaxonomyVersionRow(ref=taxonomy.ref, name=taxonomy.name, version=taxonomy.version, sha256="x",
                                       content=taxonomy.model_dump(mode="json"), created_at=utcnow()))


def without_network(path: Path, version: str | None = None) -> Path:
    raw = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    raw["axes"]["service"]["labels"] = [label for label in raw["axes"]["service"]["labels"] if label["id"] != "network"]
    raw["version"] = version or raw["version"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


STORED = [("network", "email", "L2"), ("network", "chat", "L1"), ("billing_payments", "email", "L2"), None]


def test_labels_in_use_are_counted_per_combination(records: Records) -> None:
    add_tickets(records, [*STORED, ("network", "email", "L2")])
    counts = {tuple(labels.values()): n for labels, n in labels_in_use(records)}
    assert counts == {("network", "email", "L2"): 2, ("network", "chat", "L1"): 1, ("billing_payments", "email", "L2"): 1}


def test_a_new_version_that_drops_a_used_label_without_a_migration_is_refused(records: Records, tmp_path: Path) -> None:
    add_tickets(records, STORED)
    register(records, DEFAULT)
    check_labels_in_use(load_taxonomy(DEFAULT), records)  # the version they were labelled under
    with pytest.raises(StrandedLabelsError, match=(
        r"taxonomy default@2026.12.1 \(.*v2.yaml\) lacks labels that 2 stored tickets use: service 'network' \(2 tickets\), "
        r"and it has no `migration:` section; add one naming from_version '2026.11.1' with a rename, merge, split or retire step "
        r"for each .*, or keep the labels"
    )):
        path = without_network(tmp_path / "v2.yaml", "2026.12.1")
        check_labels_in_use(load_taxonomy(path), records, path=path)
    check_labels_in_use(load_taxonomy(write_v2(tmp_path / "v3.yaml")), records)  # its merge step moves network


def test_a_migration_whose_steps_miss_a_used_label_is_refused(records: Records, tmp_path: Path) -> None:
    add_tickets(records, [("technical_support", "email", "L2")])
    partial = load_taxonomy(write_v2(tmp_path / "v2.yaml", steps=[{"op": "merge", "axis": "service", "from": ["network", "cloud"], "to": "infrastructure"}]))
    with pytest.raises(StrandedLabelsError, match=r"service 'technical_support' \(1 ticket\), and no step of its `migration:` moves them"):
        check_labels_in_use(partial, records)


def test_a_label_dropped_under_the_same_version_is_told_to_bump_it(records: Records, tmp_path: Path) -> None:
    add_tickets(records, STORED)
    register(records, DEFAULT)
    with pytest.raises(StrandedLabelsError, match=(
        r"the file was changed without a new version: put the labels back, or bump `version` and add a `migration:` "
        r"naming from_version '2026.11.1'"
    )):
        check_labels_in_use(load_taxonomy(without_network(tmp_path / "same.yaml")), records)


def test_start_up_checks_the_deployments_records_and_creates_none(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", taxonomy_path=without_network(tmp_path / "v2.yaml", "2026.12.1"), mode="proposal")
    check_stored_labels(settings, load_taxonomy(settings.taxonomy_path))  # a fresh data directory: nothing stored
    assert not (tmp_path / "data" / "triage.db").exists()
    records = Records.open(settings)
    add_tickets(records, STORED)
    records.close()
    with pytest.raises(TaxonomyError, match="lacks labels that 2 stored tickets use"), running_service(settings):
        pass  # refused before the LLM, the embedder or the store start
