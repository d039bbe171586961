"""Corrections teach at once: with the real seeded Chroma store and the real ONNX embedder, a near-duplicate of
a ticket a lead corrected gets the lead's label, and loses it again when the lead's revision is rejected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import TriageService
from tests.records_support import Api, copy_seeded, proposal_settings, running_api

ORIGINAL = {
    "subject": "Laptop screen flickers",
    "body": "The screen of my work laptop flickers and goes black every few minutes since the update.",
}
NEAR_DUPLICATE = {
    "subject": "Laptop screen flickering",
    "body": "The screen on my work laptop flickers and turns black every few minutes after the update.",
}
UNRELATED = {"subject": "Charged twice", "body": "My card was charged twice for order 1234, please refund one."}


@pytest.fixture(scope="module")
def api(seeded_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = copy_seeded(seeded_data_dir, tmp_path_factory.mktemp("learning") / "data")
    service = TriageService(proposal_settings(data_dir))
    with running_api(service, f"sqlite:///{data_dir / 'triage.db'}") as running:
        yield running


def service_of(api: Api, ticket: dict) -> dict:
    response = api.post("/v1/classify", ticket)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_near_duplicate_follows_the_human_label(api: Api) -> None:
    before = service_of(api, NEAR_DUPLICATE)
    agent_label = before["labels"]["service"]["label"]
    unrelated_before = service_of(api, UNRELATED)["labels"]["service"]
    corrected = "software_application" if agent_label != "software_application" else "hardware"

    ticket = api.post("/v1/tickets", ORIGINAL).json()
    assert ticket["labels"]["service"] == agent_label  # the agent makes the same call on the original
    review = api.post(
        f"/v1/tickets/{ticket['id']}/reviews",
        {"action": "edit", "labels": {"service": corrected, "tier": "L2"}, "comment": "the update broke the display driver"},
        scope="lead",
    )
    assert review.status_code == 201, review.text

    # the store holds the ticket with the human labels, verified
    stored = api.client.app.state.service.store.tickets.get(ids=[ticket["id"]], include=["metadatas"])
    assert stored["metadatas"][0]["verified"] is True and stored["metadatas"][0]["source"] == "human"

    after = service_of(api, NEAR_DUPLICATE)
    assert after["labels"]["service"]["label"] == corrected
    assert after["labels"]["tier"]["label"] == "L2"
    top = after["evidence"]["tickets"][0]
    assert top["id"] == ticket["id"] and top["verified"] and top["score"] >= 0.9 and top["labels"]["service"] == corrected
    assert service_of(api, UNRELATED)["labels"]["service"] == unrelated_before  # only look-alikes follow

    stored_dup = api.post("/v1/tickets", NEAR_DUPLICATE).json()  # the lifecycle path gets it too
    assert stored_dup["labels"]["service"] == corrected

    # the lead takes the correction back: the store forgets it, and the look-alike goes back to the agent's call
    rejected = api.post(f"/v1/tickets/{ticket['id']}/reviews", {"action": "reject"}, scope="lead")
    assert rejected.status_code == 201 and rejected.json()["labels"]["service"] == agent_label
    assert api.client.app.state.service.store.tickets.get(ids=[ticket["id"]])["ids"] == []
    assert service_of(api, NEAR_DUPLICATE)["labels"]["service"]["label"] == agent_label

