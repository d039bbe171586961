"""The graph with injected fakes (scripted LLM, hashing embedder) over a real on-disk Chroma store."""

from __future__ import annotations

import json

import pytest

from agent.contracts import Decision, LabelledTicket, TicketIn
from agent.llm import LLMUnavailable
from agent.nodes.decide import combine
from agent.nodes.validate import extract_json
from agent.proposal import in_scope_score
from agent.service import TicketError, TriageService
from agent.state import Calibration
from tests.fakes import ScriptedLLM

GOOD = json.dumps({"service": "billing_payments", "tier": "L2", "confidence": 0.9, "rationale": "like [t-bill-1]"})
CHARGED_TWICE = TicketIn(subject="Charged twice", body="My card was charged twice for my order, please refund one.", channel="email")


def make_service(settings, embedder, store, answers):  # noqa: ANN001, ANN201
    llm = ScriptedLLM(answers)
    return TriageService(settings, llm=llm, embedder=embedder, store=store), llm  # type: ignore[arg-type]


def test_valid_answer_flows_through_every_node(settings, embedder, store) -> None:  # noqa: ANN001
    service, llm = make_service(settings, embedder, store, [GOOD, "Refund is on its way [kb-refund]."])
    result = service.classify(CHARGED_TWICE)
    assert result.labels["service"].label == "billing_payments"
    assert result.labels["channel"].label == "email" and result.labels["channel"].source == "intake"
    assert result.labels["tier"].label in {"L1", "L2", "L3"}
    assert result.evidence.tickets[0].id == "t-bill-1"
    assert "[t-bill-1]" in result.rationale
    assert result.draft is not None and result.draft.citations == ["kb-refund"]
    assert result.usage.prompt_tokens == 20  # classify + draft
    assert len(llm.calls) == 2
    assert "<<<TICKET" in llm.calls[0][1]["content"]


def test_invalid_answers_are_reasked_with_the_error_then_fall_back(settings, embedder, store) -> None:  # noqa: ANN001
    bad = json.dumps({"service": "refunds_department", "tier": "L9", "confidence": 0.9, "rationale": "x"})
    service, llm = make_service(settings, embedder, store, ["not json at all", bad, bad, "draft"])
    result = service.classify(CHARGED_TWICE)
    assert len(llm.calls) == 4  # 1 ask + 2 re-asks + draft
    assert "previous answer was rejected" in llm.calls[1][1]["content"]
    assert result.decision == Decision.NEEDS_REVIEW
    assert any("invalid after 3 tries" in w for w in result.warnings)
    ids = set(service.taxonomy.axes["service"].ids)
    assert result.labels["service"].label in ids and result.labels["service"].source == "proposal"


def test_a_reask_that_succeeds_uses_the_llm_answer(settings, embedder, store) -> None:  # noqa: ANN001
    settings = settings.model_copy(update={"llm_vote_weight": 0.15})  # one weight for every axis: service votes too
    service, llm = make_service(settings, embedder, store, ["```json\n{\"service\": 1}\n```", GOOD, "ok [kb-refund]"])
    result = service.classify(CHARGED_TWICE)
    assert len(llm.calls) == 3
    assert result.labels["service"].source == "llm"
    assert "LLM: like [t-bill-1]" in result.rationale


def test_the_vote_weight_is_per_axis_and_the_calibration_file_wins(settings, embedder, store) -> None:  # noqa: ANN001
    says_tech = json.dumps({"service": "technical_support", "tier": "L3", "confidence": 0.9, "rationale": "x"})
    # the measured defaults: the embedded model's service vote has weight 0, its tier vote 0.15
    service, _ = make_service(settings, embedder, store, [says_tech, "draft"])
    result = service.classify(CHARGED_TWICE)
    assert result.labels["service"].label == "billing_payments" and result.labels["service"].source == "proposal"
    # a deployment that measured a capable model sets the axis it trusts; the others keep their defaults
    service, _ = make_service(settings.model_copy(update={"llm_vote_weight": {"service": 1.0}}), embedder, store, [says_tech, "draft"])
    assert service.classify(CHARGED_TWICE).labels["service"].label == "technical_support"
    # the calibration file's weight is used before the setting's
    service, _ = make_service(settings.model_copy(update={"llm_vote_weight": {"service": 1.0}}), embedder, store, [says_tech, "draft"])
    service.calibration = Calibration(llm_vote_weight={"service": 0.0})
    assert service.classify(CHARGED_TWICE).labels["service"].label == "billing_payments"
    service, _ = make_service(settings, embedder, store, [says_tech, "draft"])
    service.calibration = Calibration(llm_vote_weight=1.0)  # one number: every axis
    labels = service.classify(CHARGED_TWICE).labels
    assert (labels["service"].label, labels["tier"].label) == ("technical_support", "L3")


def test_llm_down_gives_proposal_labels_and_needs_review(settings, embedder, store) -> None:  # noqa: ANN001
    service, _ = make_service(settings, embedder, store, [LLMUnavailable("connection refused")])
    result = service.classify(CHARGED_TWICE)
    assert result.decision == Decision.NEEDS_REVIEW
    assert result.labels["service"].label == "billing_payments"
    assert any("LLM unreachable" in w for w in result.warnings)
    assert result.draft is not None and "[kb-refund]" in result.draft.text  # extractive, still cited


def test_channel_is_inferred_only_without_intake(settings, embedder, store) -> None:  # noqa: ANN001
    answer = json.dumps({"service": "cloud", "channel": "phone", "tier": "L3", "confidence": 0.8, "rationale": "outage [t-out-1]"})
    service, llm = make_service(settings, embedder, store, [answer, "x"])
    result = service.classify(TicketIn(subject="Outage", body="The platform is down for all users since this morning"))
    assert result.labels["channel"].source in {"llm", "proposal"}
    assert "Channels (field \"channel\"" in llm.calls[0][1]["content"]
    assert result.labels["tier"].label == "L3"


def test_empty_store_falls_back_to_the_taxonomy_fallback(settings, embedder) -> None:  # noqa: ANN001
    from agent.store import VectorStore, make_client

    empty = VectorStore(make_client(path=settings.data_dir / "empty"), embedder)
    service, _ = make_service(settings, embedder, empty, [LLMUnavailable("down")])
    result = service.classify(CHARGED_TWICE)
    assert result.labels["service"].label == "general_information" and result.labels["service"].source == "fallback"
    assert result.decision == Decision.NEEDS_REVIEW
    assert any("triage ingest" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("ticket", "message"),
    [
        (TicketIn(subject=" ", body="\n"), "no text"),
        (TicketIn(body="hello", channel="carrier_pigeon"), "unknown channel 'carrier_pigeon'"),
        (TicketIn(body="x" * 99_000, messages=[{"text": "y" * 5_000}]), "more than the limit"),
    ],
)
def test_bad_tickets_get_clear_errors(settings, embedder, store, ticket, message) -> None:  # noqa: ANN001
    service, llm = make_service(settings, embedder, store, [])
    with pytest.raises(TicketError, match=message):
        service.classify(ticket)
    assert llm.calls == []


def test_proposal_mode_never_calls_the_llm(settings, embedder, store) -> None:  # noqa: ANN001
    service, llm = make_service(settings.model_copy(update={"mode": "proposal"}), embedder, store, [GOOD])
    result = service.classify(CHARGED_TWICE)
    assert llm.calls == [] and result.labels["service"].source == "proposal"
    assert result.model.startswith("proposal:")


def test_extract_json_tolerates_chatter() -> None:
    assert extract_json('Sure! ```json\n{"a": 1}\n``` hope it helps') == {"a": 1}
    assert extract_json('here: {"a": {"b": 2}} trailing') == {"a": {"b": 2}}
    assert extract_json('{"rationale": "line one\nline two"}') == {"rationale": "line one\nline two"}  # raw newline
    cut = '{"service": "network", "tier": "L2", "confidence": 0.7, "rationale": "the VPN drops and'
    assert extract_json(cut)["service"] == "network"  # cut by max_tokens inside the last field
    with pytest.raises(ValueError):
        extract_json("no json")


def test_combine_lets_the_llm_break_ties_but_not_override() -> None:
    tie = combine({"a": 0.5, "b": 0.5}, "b", 0.9, 0.15)
    assert max(tie, key=tie.get) == "b"
    strong = combine({"a": 0.9, "b": 0.1}, "b", 0.9, 0.15)
    assert max(strong, key=strong.get) == "a"
    assert abs(sum(strong.values()) - 1.0) < 1e-9


def test_in_scope_score_adds_the_proposal_confidence() -> None:
    proposal = {"service": {"billing_payments": 0.7, "technical_support": 0.3}, "tier": {"L1": 0.9}}
    assert in_scope_score("similarity", 0.6, proposal) == 0.6
    assert in_scope_score("similarity+confidence", 0.6, proposal) == pytest.approx(1.3)  # service first, not tier
    assert in_scope_score("similarity+confidence", 0.6, {"tier": {"L1": 0.9}}) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown in-scope score"):
        in_scope_score("vibes", 0.6, proposal)


def test_decide_flags_out_of_scope_on_the_calibrated_score(settings, embedder, store) -> None:  # noqa: ANN001
    service, _ = make_service(settings.model_copy(update={"mode": "proposal"}), embedder, store, [])
    service.calibration = Calibration()  # no confidence model: the reported confidence is the proposal's own
    in_scope = service.classify(CHARGED_TWICE)
    score = in_scope.evidence.tickets[0].score + in_scope.labels["service"].confidence
    service.calibration = Calibration(out_of_scope_threshold=round(score + 0.01, 4), out_of_scope_score="similarity+confidence")
    flagged = service.classify(CHARGED_TWICE)
    assert flagged.out_of_scope and flagged.decision == Decision.NEEDS_REVIEW
    assert any("similarity + proposal confidence" in w for w in flagged.warnings)
    service.calibration = Calibration(out_of_scope_threshold=round(score - 0.01, 4), out_of_scope_score="similarity+confidence")
    assert not service.classify(CHARGED_TWICE).out_of_scope
    # the same threshold on similarity alone flags it: the rule in the calibration file is what decide compares
    service.calibration = Calibration(out_of_scope_threshold=round(score - 0.01, 4), out_of_scope_score="similarity")
    assert service.classify(CHARGED_TWICE).out_of_scope


def test_the_store_is_looked_at_again_after_store_recheck_s(settings, embedder, store) -> None:  # noqa: ANN001
    service, _ = make_service(settings.model_copy(update={"mode": "proposal", "store_recheck_s": 3600.0}), embedder, store, [])
    before = service._store_fingerprint()
    store.upsert_tickets([LabelledTicket(id="t-extra", body="Where is my parcel?", labels={"service": "general_information"})])
    assert service._store_fingerprint() == before  # trusted within store_recheck_s
    assert service._store_fingerprint(fresh=True) != before  # an ingest (or the recheck time) looks again


def test_a_head_trained_under_other_options_is_not_reused(settings, embedder, store, monkeypatch) -> None:  # noqa: ANN001
    """A deployment upgraded to a new default head retrains the pickled one instead of keeping it."""
    import agent.service

    service, _ = make_service(settings.model_copy(update={"mode": "proposal"}), embedder, store, [])
    head = service.ensure_head()
    assert head is not None and service.ensure_head() is head
    monkeypatch.setattr(agent.service, "HEAD_OPTIONS", agent.service.HEAD_OPTIONS.replace('"mlp_weight": 0.4', '"mlp_weight": 0.0'))
    assert service._store_fingerprint(fresh=True) != head.fingerprint
    retrained = service.ensure_head()
    assert retrained is not head and retrained.fingerprint == service._store_fingerprint()


def test_a_saved_head_is_reloaded_and_a_broken_head_file_is_retrained(settings, embedder, store) -> None:  # noqa: ANN001
    """A fresh process loads the pickled head; a file cut short (a crash mid-write elsewhere) means retrain, not an error."""
    service, _ = make_service(settings.model_copy(update={"mode": "proposal"}), embedder, store, [])
    head = service.ensure_head()
    assert head is not None and service.head_path.is_file()
    reopened, _ = make_service(settings.model_copy(update={"mode": "proposal"}), embedder, store, [])
    loaded = reopened.ensure_head()
    assert loaded is not None and loaded is not head and loaded.fingerprint == head.fingerprint
    assert loaded.priors == head.priors
    service.head_path.write_bytes(service.head_path.read_bytes()[:100])
    broken, _ = make_service(settings.model_copy(update={"mode": "proposal"}), embedder, store, [])
    retrained = broken.ensure_head()
    assert retrained is not None and retrained.fingerprint == head.fingerprint
    assert len(service.head_path.read_bytes()) > 100  # written again, whole


def test_decide_reports_the_calibration_files_confidence_model(settings, embedder, store) -> None:  # noqa: ANN001
    from agent.confidence import ConfidenceModel

    service, _ = make_service(settings.model_copy(update={"mode": "proposal"}), embedder, store, [])
    service.calibration = Calibration()
    plain = service.classify(CHARGED_TWICE).labels["service"]
    service.calibration = Calibration(confidence_models={"service": ConfidenceModel(coef=(0.0, 0.0, 0.0, 0.0), intercept=0.0).to_json()})
    calibrated = service.classify(CHARGED_TWICE).labels["service"]
    assert calibrated.label == plain.label and calibrated.confidence == 0.5 != plain.confidence
    assert service.classify(CHARGED_TWICE).labels["tier"].confidence == plain_tier(service)  # no model for tier: unchanged


def plain_tier(service) -> float:  # noqa: ANN001
    calibration, service.calibration = service.calibration, Calibration()
    try:
        return service.classify(CHARGED_TWICE).labels["tier"].confidence
    finally:
        service.calibration = calibration
