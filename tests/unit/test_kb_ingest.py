"""Ingesting a help centre's own KB articles (`triage ingest --articles`): what gets into the store, what leaves it
again, and what a wrong file is told (hashing embedder, a real on-disk Chroma store, no LLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.contracts import TicketIn
from agent.jsonl import InputFileError
from agent.service import TriageService
from agent.settings import Settings
from tests.fakes import HashEmbedder

SEED = [
    {"id": "t-1", "body": "I was charged twice on my card for the same order", "labels": {"service": "billing_payments", "tier": "L2"}},
    {"id": "t-2", "body": "Where is my parcel, the delivery is late", "labels": {"service": "orders_delivery", "tier": "L1"}},
    {"id": "t-3", "body": "I forgot my password and cannot sign in", "labels": {"service": "account_management", "tier": "L1"}},
]
REFUND = {"id": "hc-refund", "title": "Double charges", "text": "If your card was charged twice, the duplicate charge is refunded within 5 days."}
TRACKING = {"id": "hc-tracking", "title": "Track your parcel", "text": "Open Orders and click Track to see where your parcel and delivery are."}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def service(settings: Settings) -> TriageService:
    return TriageService(settings.model_copy(update={"mode": "proposal"}), embedder=HashEmbedder())


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "seed.jsonl", SEED)


def stored_articles(service: TriageService) -> list[str]:
    return sorted(service.store.articles.get(include=[])["ids"])


def test_an_article_taken_out_of_the_file_is_no_longer_retrieved_or_cited(service: TriageService, seed: Path, tmp_path: Path) -> None:
    """Re-ingesting a help centre without an article kept the old one in the store for good: a ticket about parcels
    still got a draft citing the article the lead had deleted."""
    kb = write_jsonl(tmp_path / "help-centre.jsonl", [REFUND, TRACKING])
    service.ingest(seed_path=seed, articles_path=kb, progress=False)
    parcel = TicketIn(subject="Parcel", body="Where is my parcel? Please track the delivery.", channel="email")
    assert service.classify(parcel).draft.citations == ["hc-tracking"]  # type: ignore[union-attr]

    edited = {**REFUND, "text": "Duplicate charges are refunded within 3 days."}
    report = service.ingest(seed_path=seed, articles_path=write_jsonl(kb, [edited]), progress=False)
    assert stored_articles(service) == ["hc-refund"]  # replaced, not duplicated; the deleted one gone
    assert (report.articles_added, report.articles_removed, report.articles_total) == (1, 1, 1)
    assert service.store.articles.get(ids=["hc-refund"], include=["documents"])["documents"] == [edited["text"]]
    result = service.classify(parcel)
    assert "hc-tracking" not in {a.id for a in result.evidence.articles}
    assert result.draft is None or "hc-tracking" not in result.draft.citations


def test_another_files_articles_stay_and_an_emptied_file_is_refused(service: TriageService, seed: Path, tmp_path: Path) -> None:
    """Two KB files live side by side: re-ingesting one never removes the other's articles. An articles file that
    was asked for and holds nothing is a mistake (it would empty that file's part of the KB), not an ingest of 0."""
    first = write_jsonl(tmp_path / "billing.jsonl", [REFUND])
    second = write_jsonl(tmp_path / "delivery.jsonl", [TRACKING])
    service.ingest(seed_path=seed, articles_path=first, progress=False)
    service.ingest(seed_path=seed, articles_path=second, progress=False)
    assert service.ingest(seed_path=seed, articles_path=first, progress=False).articles_removed == 0
    assert stored_articles(service) == ["hc-refund", "hc-tracking"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="empty.jsonl holds no articles"):
        service.ingest(seed_path=seed, articles_path=empty, progress=False)
    assert stored_articles(service) == ["hc-refund", "hc-tracking"]


def test_articles_stored_before_origins_were_recorded_are_adopted_by_their_file(service: TriageService, seed: Path, tmp_path: Path) -> None:
    """A store built by an older version has no origin on its articles: the next ingest of the file tags the ones it
    still holds (without embedding them again), so a later deletion from that file removes them too."""
    from agent.contracts import Article

    service.store.upsert_articles([Article.model_validate(REFUND), Article.model_validate(TRACKING)])
    kb = write_jsonl(tmp_path / "help-centre.jsonl", [REFUND, TRACKING])
    assert service.ingest(seed_path=seed, articles_path=kb, progress=False).articles_added == 0
    report = service.ingest(seed_path=seed, articles_path=write_jsonl(kb, [REFUND]), progress=False)
    assert report.articles_removed == 1 and stored_articles(service) == ["hc-refund"]


FRENCH_KB = [
    {"id": "fr-mdp", "title": "Réinitialiser votre mot de passe", "text": "Cliquez sur Mot de passe oublié sur la page de connexion et suivez le lien que nous vous envoyons par e-mail."},
    {"id": "es-envio", "title": "Seguimiento del envío", "text": "Abra Pedidos y haga clic en Seguimiento para ver dónde está su paquete. Los envíos tardan de 2 a 4 días hábiles."},
]


def test_a_ticket_in_french_gets_no_draft_from_an_unrelated_french_article(settings: Settings, seed: Path, tmp_path: Path) -> None:
    """The service's default embedder (MiniLM, English) scored a French invoice question 0.64 against a French
    password-reset article and a Spanish printer fault 0.45 against a Spanish parcel-tracking one, over the 0.35
    floor: the customer was sent the wrong article. Now the draft is withheld, and the warning says how to get
    drafts in that language."""
    from agent.embeddings import MINILM, OnnxEmbedder, packaged_minilm

    service = TriageService(
        settings.model_copy(update={"mode": "proposal", "draft_min_article_score": Settings().draft_min_article_score}),
        embedder=OnnxEmbedder(*packaged_minilm(), name=MINILM),
    )
    service.ingest(seed_path=seed, articles_path=write_jsonl(tmp_path / "kb.jsonl", FRENCH_KB), progress=False)
    tickets = {
        "fr-mdp": TicketIn(subject="Problème de facture", body="Bonjour, je ne trouve pas ma facture pour la commande de mars. Pouvez-vous me l'envoyer par e-mail ?", channel="email"),
        "es-envio": TicketIn(subject="Mi impresora", body="Hola, mi impresora de la oficina no imprime desde ayer. ¿Pueden ayudarme por favor? Gracias.", channel="email"),
    }
    for unrelated, ticket in tickets.items():
        result = service.classify(ticket)
        assert result.evidence.articles[0].id == unrelated and result.evidence.articles[0].score >= service.settings.draft_min_article_score
        assert result.draft is None, result.draft
        assert any(w.startswith("no draft: the ticket reads as") for w in result.warnings), result.warnings
    english = service.classify(TicketIn(subject="Password", body="I forgot my password and cannot sign in, please help", channel="email"))
    assert all(not w.startswith("no draft: the ticket reads as") for w in english.warnings)


def test_seed_tickets_are_stored_with_personal_data_redacted(service: TriageService, tmp_path: Path) -> None:
    """An exported history is seeded as is; its text is evidence for leads and other tickets' prompts."""
    row = {"id": "t-pii", "subject": "Refund to jane.doe@example.com",
           "body": "Card 4111 1111 1111 1111 charged twice for order 100200300400; my password is Hunter2!x",
           "labels": {"service": "billing_payments", "tier": "L2"}}
    service.ingest(seed_path=write_jsonl(tmp_path / "seed.jsonl", [*SEED, row]), progress=False)
    stored = service.store.tickets.get(ids=["t-pii"], include=["documents"])["documents"][0]
    for secret in ("jane.doe", "4111", "Hunter2"):
        assert secret not in stored, stored
    assert "order 100200300400" in stored


def test_a_seed_tickets_answer_is_stored_and_shown_as_evidence_with_personal_data_redacted(
    service: TriageService, tmp_path: Path
) -> None:
    """The answer (how a past ticket was resolved) is returned with every classification it is evidence for, to any
    caller of /v1/classify; it was stored as exported, with the customer's e-mail, phone and card in it."""
    row = {**SEED[0], "id": "t-answer",
           "answer": "Refunded card 4111 1111 1111 1111; confirmation sent to jane.doe@example.com, call +44 20 7946 0958."}
    service.ingest(seed_path=write_jsonl(tmp_path / "seed.jsonl", [*SEED[1:], row]), progress=False)
    stored = service.store.tickets.get(ids=["t-answer"], include=["metadatas"])["metadatas"][0]["answer"]
    shown = {t.id: t.answer for t in service.classify(TicketIn(body=SEED[0]["body"], channel="email")).evidence.tickets}
    for answer in (stored, shown["t-answer"]):
        for secret in ("4111", "jane.doe", "7946"):
            assert secret not in answer, answer
        assert answer.startswith("Refunded card <card>")
