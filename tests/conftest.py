from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.contracts import Article, LabelledTicket
from agent.records import Records
from agent.settings import REPO_ROOT, Settings
from agent.store import VectorStore, make_client
from tests.fakes import HashEmbedder
from tests.pg import PostgresServer, postgres  # noqa: F401  (session fixture: a real PostgreSQL for the records tests)

SEED = [
    LabelledTicket(id="t-bill-1", body="I was charged twice on my credit card for the same order, please refund", labels={"service": "billing_payments", "tier": "L2", "channel": "email"}, answer="We refunded the duplicate charge."),
    LabelledTicket(id="t-bill-2", body="Duplicate charge on my card for my subscription payment", labels={"service": "billing_payments", "tier": "L2", "channel": "chat"}),
    LabelledTicket(id="t-pw-1", body="How do I reset my password, I forgot it", labels={"service": "account_management", "tier": "L1", "channel": "chat"}),
    LabelledTicket(id="t-pw-2", body="Forgot my password and cannot log in to my account", labels={"service": "account_management", "tier": "L1", "channel": "portal"}),
    LabelledTicket(id="t-out-1", body="The whole platform is down for all our users since this morning outage", labels={"service": "cloud", "tier": "L3", "channel": "email"}),
    LabelledTicket(id="t-out-2", body="Service outage: nobody in the company can reach the cloud dashboard", labels={"service": "cloud", "tier": "L3", "channel": "phone"}),
]
ARTICLES = [
    Article(id="kb-refund", title="Refunds for duplicate charges", text="If you were charged twice, we refund the duplicate charge within 5 days. Open Billing, pick the charge and click Refund."),
    Article(id="kb-password", title="Reset your password", text="Click Forgot password on the login page and follow the link we e-mail you."),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Records]:
    """A fresh, migrated records database of each kind (SQLite, PostgreSQL)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'triage.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database()
    recs = Records(url)
    recs.upgrade()
    yield recs
    recs.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # the hashing embedder scores lower than a real model, so the draft floor is lowered with it
    return Settings(
        data_dir=tmp_path / "data",
        taxonomy_path=REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml",
        draft_min_article_score=0.1,
    )


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def store(settings: Settings, embedder: HashEmbedder) -> VectorStore:
    """A real Chroma store on disk (temp dir) with a handful of labelled tickets and articles."""
    vs = VectorStore(make_client(path=settings.chroma_dir), embedder)
    vs.upsert_tickets(SEED)
    vs.upsert_articles(ARTICLES)
    return vs
