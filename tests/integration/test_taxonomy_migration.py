"""Applying a new taxonomy version to the stored history, on SQLite and PostgreSQL, with the real seeded store.

Tickets are created and reviewed through the real API under the default taxonomy; then the next version (one
step of each kind, tests/taxonomy_versions.py) is applied: a dry run writes nothing, the CLI's dry run says the
same, the commit writes one `taxonomy_migration` revision per changed ticket and keeps every earlier revision.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.lifecycle import Lifecycle
from agent.records import Records
from agent.service import TriageService
from agent.settings import Settings
from agent.taxonomy import load_taxonomy
from evals.migration_demo import write_v2
from tests.integration.conftest import TRIAGE, cli_env
from tests.records_support import TAXONOMY_PATH, copy_seeded, database_url, proposal_settings, running_api

TICKETS = {  # the label a lead gives each (None: left as the agent labelled it)
    "help_desk": ({"subject": "Locked out", "body": "My work laptop says my Windows account is locked. Please unlock it.", "channel": "email"}, "it_help_desk"),
    "split": ({"subject": "App crashes", "body": "Your desktop app crashes every time I open the export dialog.", "channel": "email"}, "technical_support"),
    "kept": ({"subject": "Invoice", "body": "Please send me a copy of my March invoice.", "channel": "email"}, "billing_payments"),
    "agent": ({"subject": "VPN", "body": "The office VPN drops every few minutes since this morning.", "channel": "chat"}, None),
}


@dataclass
class Deployment:
    url: str
    data_dir: Path
    v2: Path
    ids: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest, seeded_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"migration-{request.param}")
    data_dir = copy_seeded(seeded_data_dir, root / "data")
    url = database_url(request.param, request, data_dir)
    ids = {}
    with running_api(TriageService(proposal_settings(data_dir)), url) as api:
        for name, (body, label) in TICKETS.items():
            created = api.post("/v1/tickets", body)
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
            if label is not None:
                edit = {"action": "edit", "labels": {"service": label, "tier": "L2"}}
                assert api.post(f"/v1/tickets/{ids[name]}/reviews", edit, scope="lead").status_code == 201
    yield Deployment(url, data_dir, write_v2(root / "default-v2.yaml"), ids)


def lifecycle_on_v2(deployment: Deployment) -> tuple[Lifecycle, Records]:
    records = Records(deployment.url)
    settings = Settings(data_dir=deployment.data_dir, taxonomy_path=deployment.v2, mode="proposal")
    return Lifecycle(TriageService(settings), records), records


def revision_counts(lifecycle: Lifecycle, ids: dict[str, str]) -> dict[str, int]:
    return {name: len(lifecycle.revisions(ticket_id)) for name, ticket_id in ids.items()}


def test_dry_run_then_commit_moves_the_history_and_keeps_every_revision(deployment: Deployment) -> None:
    lifecycle, records = lifecycle_on_v2(deployment)
    previous = lifecycle.served_taxonomy(load_taxonomy(TAXONOMY_PATH).ref)
    assert previous is not None, "the API registered the version it served"
    ids = deployment.ids
    try:
        before = revision_counts(lifecycle, ids)
        dry = lifecycle.migrate_taxonomy(previous)
        assert not dry.committed and dry.revisions_written == 0 and dry.store_relabelled == 0
        assert revision_counts(lifecycle, ids) == before, "a dry run writes nothing"
        changes = {c.ticket_id: c for c in dry.examples}
        assert changes[ids["help_desk"]].after["service"] == "service_desk" and not changes[ids["help_desk"]].reasked
        assert changes[ids["split"]].reasked == ["service"]
        assert changes[ids["split"]].after["service"] in ("software_application", "hardware")
        assert ids["kept"] not in changes
        assert dry.transitions["service"]["it_help_desk -> service_desk"] >= 1
        # three reviewed tickets re-asked; the split one has no truth for service under the new ids
        assert dry.reviewed_tickets == 3 and set(dry.reviewed_accuracy) == {"service", "tier"}
        assert dry.tickets == 4 and dry.changed + dry.unchanged + dry.already_current == 4

        # the CLI's dry run, in another process, reports the same
        env = cli_env(deployment.data_dir, TRIAGE_DATABASE_URL=deployment.url, TRIAGE_TAXONOMY_PATH=str(deployment.v2))
        cli = subprocess.run([TRIAGE, "taxonomy", "migrate", "--mode", "proposal", "--reviewed-sample", "0", "--json"], env=env,
                             capture_output=True, text=True, timeout=600)
        assert cli.returncode == 0, cli.stderr
        assert {k: v for k, v in json.loads(cli.stdout).items() if k in ("changed", "reasked", "transitions")} == {
            "changed": dry.changed, "reasked": dry.reasked, "transitions": dry.transitions}
        # and so does the admin's HTTP call on an API serving the new version
        with running_api(lifecycle.service, deployment.url) as api:
            assert api.post("/v1/taxonomy/migration", {"reviewed_sample": 0}, scope="lead").status_code == 403
            http = api.post("/v1/taxonomy/migration", {"reviewed_sample": 0}, scope="admin")
            assert http.status_code == 200, http.text
            assert (http.json()["changed"], http.json()["committed"]) == (dry.changed, False)
            unknown = api.post("/v1/taxonomy/migration", {"previous": "default@0"}, scope="admin")
            assert unknown.status_code == 404 and "GET /v1/taxonomy/versions" in unknown.json()["detail"]
            # as a background job: answered at once, followed until done, the same report
            started = api.post("/v1/taxonomy/migration/jobs", {"reviewed_sample": 0}, scope="admin")
            assert started.status_code == 202, started.text
            location = started.headers["Location"]
            job = started.json()
            deadline = time.monotonic() + 300
            while job["state"] == "running" and time.monotonic() < deadline:
                time.sleep(0.2)
                job = api.get(location, scope="admin").json()
            assert job["state"] == "done", job
            assert (job["done"], job["total"]) == (dry.tickets, dry.tickets) and job["created_by"] == "user:admin-tester"
            assert {k: job["report"][k] for k in ("changed", "reasked", "transitions", "committed")} == {
                "changed": dry.changed, "reasked": dry.reasked, "transitions": dry.transitions, "committed": False}
            assert [j["id"] for j in api.get("/v1/taxonomy/migration/jobs", scope="admin").json()][:1] == [job["id"]]
            assert api.get("/v1/taxonomy/migration/jobs/mj_nope", scope="admin").status_code == 404
            assert api.post("/v1/taxonomy/migration/jobs", {}, scope="lead").status_code == 403
        assert revision_counts(lifecycle, ids) == before

        done = lifecycle.migrate_taxonomy(previous, commit=True, reviewed_sample=0)  # measured above; a head fit saved
        assert done.committed and done.revisions_written == dry.changed and done.store_relabelled > 0
        after = revision_counts(lifecycle, ids)
        for name in ids:
            moved = name in {"help_desk", "split"} or ids[name] in changes
            assert after[name] == before[name] + moved, name
        ids_now = {axis: set(spec.ids) for axis, spec in lifecycle.taxonomy.axes.items()}
        for name in ids:  # no label of the migrated history, alternatives included, is outside the new version
            for axis, label in lifecycle.revisions(ids[name])[-1].classification.labels.items():
                assert {label.label, *(a.label for a in label.alternatives)} <= ids_now[axis], (name, axis)
        help_desk = lifecycle.revisions(ids["help_desk"])
        last = help_desk[-1]
        assert (last.reason, last.actor) == ("taxonomy_migration", "system:taxonomy-migration")
        assert last.labels["service"] == "service_desk" and last.classification.labels["service"].source == "human"
        assert last.classification.taxonomy_version == lifecycle.taxonomy.ref
        assert "it_help_desk rename -> service_desk" in (last.note or "")
        assert help_desk[-2].labels["service"] == "it_help_desk", "the reviewed revision is kept as it was"
        split = lifecycle.ticket(ids["split"])
        assert split.in_queue and split.current.classification.decision.value == "needs_review"
        assert lifecycle.ticket(ids["kept"]).labels["service"] == "billing_payments"
        assert lifecycle.served_taxonomy(lifecycle.taxonomy.ref) is not None

        # the store teaches the new ids: the reviewed ticket and the seed are relabelled, nothing old is left
        stored = lifecycle.service.store.tickets.get(include=["metadatas"])
        services = {json.loads(m["labels"]).get("service") for m in stored["metadatas"]}
        assert not services & {"it_help_desk", "network", "cloud", "technical_support", "feedback_complaints"}
        taught = lifecycle.service.store.tickets.get(ids=[ids["help_desk"]], include=["metadatas"])["metadatas"][0]
        assert json.loads(taught["labels"])["service"] == "service_desk"

        again = lifecycle.migrate_taxonomy(previous)
        assert again.changed == 0 and again.already_current == done.revisions_written
    finally:
        records.close()


RULED_SPLIT = {
    "op": "split", "axis": "service", "from": "technical_support", "to": ["software_application", "hardware"],
    "rules": [{"to": "hardware", "keywords": ["laptop", "docking station", "printer"]}],
}


def test_a_split_rule_moves_matching_tickets_without_the_agent_and_re_asks_the_rest(
    seeded_data_dir: Path, tmp_path: Path
) -> None:
    data_dir = copy_seeded(seeded_data_dir, tmp_path / "data")
    url = f"sqlite:///{data_dir / 'rules.sqlite'}"
    tickets = {
        "ruled": {"subject": "Dock", "body": "My laptop no longer charges on the docking station since Monday.", "channel": "email"},
        "asked": {"subject": "Export", "body": "The export dialog of your desktop app shows an empty list.", "channel": "email"},
    }
    ids = {}
    with running_api(TriageService(proposal_settings(data_dir)), url) as api:
        for name, body in tickets.items():
            ids[name] = api.post("/v1/tickets", body).json()["id"]
            edit = {"action": "edit", "labels": {"service": "technical_support", "tier": "L2"}}
            assert api.post(f"/v1/tickets/{ids[name]}/reviews", edit, scope="lead").status_code == 201
    steps = [{"op": "rename", "axis": "service", "from": "it_help_desk", "to": "service_desk"},
             {"op": "merge", "axis": "service", "from": ["network", "cloud"], "to": "infrastructure"}, RULED_SPLIT,
             {"op": "retire", "axis": "service", "from": "feedback_complaints", "to": "general_information"}]
    v2 = write_v2(tmp_path / "default-v2.yaml", steps=steps)
    records = Records(url)
    try:
        lifecycle = Lifecycle(TriageService(Settings(data_dir=data_dir, taxonomy_path=v2, mode="proposal")), records)
        previous = lifecycle.previous_taxonomy()
        dry = lifecycle.migrate_taxonomy(previous, reviewed_sample=0)
        changes = {c.ticket_id: c for c in dry.examples}
        assert (changes[ids["ruled"]].after["service"], changes[ids["ruled"]].ruled, changes[ids["ruled"]].reasked) == (
            "hardware", ["service"], [])
        assert changes[ids["asked"]].reasked == ["service"] and changes[ids["asked"]].ruled == []
        assert (dry.ruled, dry.reasked) == (1, 1)

        done = lifecycle.migrate_taxonomy(previous, commit=True, reviewed_sample=0)
        assert done.revisions_written == dry.changed == 2
        ruled = lifecycle.ticket(ids["ruled"])
        last = lifecycle.revisions(ids["ruled"])[-1]
        assert last.reason == "taxonomy_migration" and last.labels["service"] == "hardware"
        assert "technical_support split -> hardware by rule 1 (keywords laptop" in (last.note or "")
        # the rule is the taxonomy owner's decision, like a rename: the lead's label stays theirs, nothing to review
        assert last.classification.labels["service"].source == "human" and not ruled.in_queue
        asked = lifecycle.ticket(ids["asked"])
        assert asked.in_queue and asked.current.classification.decision.value == "needs_review"
        # the store: the ruled ticket teaches `hardware`; the re-asked one teaches no service label until reviewed
        stored = lifecycle.service.store.tickets.get(ids=[ids["ruled"], ids["asked"]], include=["metadatas"])
        services = {i: json.loads(m["labels"]).get("service") for i, m in zip(stored["ids"], stored["metadatas"], strict=True)}
        assert services == {ids["ruled"]: "hardware", ids["asked"]: None}
    finally:
        records.close()
