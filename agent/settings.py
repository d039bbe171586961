"""Every setting in one typed place, read from `TRIAGE_*` environment variables (or a `.env` file).

Nothing else in the package reads `os.environ`: components get a `Settings` instance injected.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.contracts import AxisName
from agent.urls import shown_url

REPO_ROOT = Path(__file__).resolve().parent.parent

Mode = Literal["hybrid", "proposal", "llm"]
Weight = Annotated[float, Field(ge=0.0, le=1.0)]
Port = Annotated[int, Field(ge=1, le=65535)]
VoteWeight = Weight | dict[AxisName, Weight]

# The embedded SmolLM2-135M's vote, measured per axis by replaying the bench's hybrid runs (evals/README.md,
# "Hybrid and the LLM's vote"): on service it answers one label for nearly every ticket, and no weight from 0.05
# to 0.2 turned a proposal's wrong label right on Banking77 or Tobi-Bueck (0.15 cost one row on each); on tier
# 0.15 moved two of 100 gold tickets to the right tier and none away. Channel has no labelled measurement: it
# keeps the earlier single default.
MEASURED_VOTE_WEIGHTS: dict[str, float] = {"service": 0.0, "channel": 0.15, "tier": 0.15}


def vote_weight_for(axis: str, *sources: float | dict[str, float] | None) -> float:
    """The first source that sets `axis` (a number sets every axis), else the measured default."""
    for source in sources:
        if isinstance(source, dict):
            if axis in source:
                return float(source[axis])
        elif source is not None:
            return float(source)
    return MEASURED_VOTE_WEIGHTS.get(axis, 0.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_file=".env", extra="ignore")

    # where state lives
    data_dir: Path = Field(default=REPO_ROOT / "data", description="Chroma store, SQLite records, trained heads.")
    knowledge_base_dir: Path = REPO_ROOT / "knowledge_base"
    prompts_dir: Path = REPO_ROOT / "prompts"
    taxonomy_path: Path = REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml"
    calibration_path: Path | None = Field(
        default=None, description="Per-class thresholds from `triage eval`; default: next to the taxonomy."
    )

    # LLM: empty base URL = start the embedded llama.cpp server on loopback
    llm_base_url: str | None = None
    llm_model: str = "SmolLM2-135M-Instruct"
    llm_api_key: str = "not-needed"
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_attempts: int = Field(default=3, ge=1, le=10, description="Transport retries (tenacity).")
    llm_max_reasks: int = Field(default=2, ge=0, le=5, description="Re-asks after an invalid answer.")
    llm_max_tokens: int = Field(default=256, ge=1)
    llm_structured: Literal["auto", "json_schema", "json_object", "none"] = "auto"
    llm_gguf_path: Path | None = Field(default=None, description="GGUF for the embedded server; default: packaged.")
    llm_ctx: int = Field(
        default=4096,
        ge=1,
        description="The LLM's context in tokens: the embedded server is started with it, and the ticket text in the "
        "classify prompt is cut to fit it; set it to a remote endpoint's context size.",
    )
    llm_label_chars: int = Field(
        default=140, ge=0, description="Label descriptions in prompts cut to this many characters; 0 = full text."
    )
    llm_threads: int | None = Field(default=None, ge=1)
    llm_breaker_failures: int = Field(
        default=3, ge=1, description="Consecutive LLM transport failures (timeout, connection, 5xx) after which tickets "
        "skip the LLM for a cool-down (proposal labels, needs_review) instead of each paying timeout x attempts."
    )
    llm_breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="First cool-down of the LLM circuit breaker; then one probe request goes through."
    )
    llm_breaker_max_cooldown_s: float = Field(
        default=300.0, gt=0, description="The cool-down doubles each time the probe fails, up to this."
    )

    # embeddings: empty URL = packaged ONNX model
    embedding_base_url: str | None = None
    embedding_api_key: str | None = Field(default=None, description="The embedding endpoint's key; default: TRIAGE_LLM_API_KEY.")
    embedding_timeout_s: float = Field(
        default=30.0, gt=0, description="Each request to the embedding endpoint (2 retries); a ticket waits on it."
    )
    embedding_model: str = Field(
        default="auto",
        description=(
            "auto (triage eval: use-multilingual-v3 when >= 10 % of the train texts are not English, else "
            "all-MiniLM-L6-v2-int8; the service: all-MiniLM-L6-v2-int8), one of those two packaged models, or the "
            "model name of TRIAGE_EMBEDDING_BASE_URL."
        ),
    )
    embedding_model_dir: Path | None = None
    # packaged ONNX models: a batch holds at most this many texts and this many padded tokens (evals/README.md, "Speed")
    embedding_batch_size: int = Field(default=64, ge=1)
    embedding_batch_tokens: int = Field(default=1024, ge=1)

    # vector store: empty URL = embedded PersistentClient under data_dir
    chroma_url: str | None = None

    # the pipeline
    mode: Mode = "hybrid"
    top_k_tickets: int = Field(default=8, ge=1, le=50)
    top_k_articles: int = Field(default=3, ge=0, le=20)
    max_ticket_chars: int = Field(default=6000, ge=200)
    max_input_chars: int = Field(default=100_000, ge=1, description="Longer input is refused with a clear error.")
    llm_vote_weight: VoteWeight = Field(
        default_factory=lambda: dict(MEASURED_VOTE_WEIGHTS),
        description="The LLM's vote in decide: one number for every axis, or {axis: weight} (axes it leaves out keep "
        "the measured defaults). Measured per model and axis with evals.vote_weight (evals/README.md, 'Hybrid').",
    )
    auto_apply_threshold: float = Field(default=0.9, description="Used where no calibration file has a class.")
    review_threshold: float = Field(default=0.5, description="Below this, needs_review.")
    store_recheck_s: float = Field(
        default=2.0, ge=0.0, description="How long a classify trusts its last look at the store size (another process's ingest is seen within it)."
    )
    draft_min_article_score: float = Field(default=0.35, description="Weaker KB evidence gets no draft.")
    out_of_scope_threshold: float = Field(default=0.0, description="Best neighbour similarity below this: OOS.")

    # servers
    api_host: str = "127.0.0.1"
    api_port: Port = 8000
    ui_port: Port = 8501

    # records and the API (agent/records.py, agent/api.py)
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the records; default: SQLite (WAL) at data_dir/triage.db."
    )
    anonymous_classify: bool = Field(
        default=True, description="POST /v1/classify without a key (stores nothing); false: a bot key is needed."
    )
    api_workers: int = Field(default=2, ge=1, le=64, description="Classifications run at once; the rest wait.")
    queue_limit: int = Field(default=100, ge=0, description="Classifications allowed to wait; beyond: 503.")
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, le=3600, description="On Ctrl-C/SIGTERM, seconds running requests get to finish before serve stops."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get a 413.")
    verified_match_score: float = Field(
        default=0.9, ge=0.0, le=1.0, description="A human-verified neighbour this similar decides service and tier."
    )

    @field_validator("llm_base_url", "embedding_base_url", "chroma_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        """An endpoint is an http(s) URL with a host; empty means the embedded default. Without this a URL that lacks
        its scheme fails on every request (the LLM silently falls back) or, for Chroma, reaches 127.0.0.1:8000."""
        if not url or not url.strip():
            return None
        parsed = urlparse(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("give an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1, or leave it empty")
        try:
            parsed.port  # noqa: B018 - raises on a port that is not a number or out of range
        except ValueError as exc:
            raise ValueError(f"the URL's port is invalid ({exc})") from None
        return url.strip()

    @field_validator("database_url")
    @classmethod
    def _database_port(cls, url: str | None) -> str | None:
        """A port that is not a number fails SQLAlchemy's URL parsing with a bare ValueError, which escaped `triage
        serve`, `keys` and `classify` as a traceback; here it is the one-line bad-setting error. Other unusable URLs
        (no scheme, another database) keep their own message where the records are opened."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if url:
            try:
                make_url(url.strip())
            except ArgumentError:
                pass
            except ValueError:
                raise ValueError(
                    "the URL's port is not a number; use postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
                ) from None
        return url

    @cached_property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def vector_store_location(self) -> str:
        """Where the vector store is, as messages name it: the Chroma server (credentials masked) when one is set,
        else the folder under TRIAGE_DATA_DIR; naming the local folder for a server sent operators to the wrong place."""
        return f"the Chroma server at {shown_url(self.chroma_url)}" if self.chroma_url else str(self.chroma_dir)

    @cached_property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'triage.db'}"

    @property
    def resolved_calibration_path(self) -> Path:
        if self.calibration_path is not None:
            return self.calibration_path
        return self.taxonomy_path.with_suffix(".calibration.json")


def settings_problem(exc: ValidationError) -> str:
    """A Settings validation error as one line that names each environment variable, what it holds and what it must
    be: pydantic's own text spans several lines per field (and one per member of a union such as the vote weight)."""
    problems: dict[str, list[str]] = {}
    values: dict[str, object] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"TRIAGE_{field.upper()}" if field else "TRIAGE_*"
        values.setdefault(name, error.get("input"))
        message = error["msg"].removeprefix("Value error, ")
        if len(error["loc"]) > 2:  # a key inside a mapping value, e.g. {"service": 2} -> "service: ..."
            message = f"{error['loc'][-1]}: {message}"
        if message not in problems.setdefault(name, []):
            problems[name].append(message)
    parts = []
    for name, messages in problems.items():
        shown = values[name]
        held = f"={shown_url(str(shown))[:80]!r}" if isinstance(shown, str | int | float) else ""  # a URL's password masked
        parts.append(f"{name}{held}: {' or '.join(messages)}")
    return "bad setting " + "; ".join(parts) + "; fix or unset it (in the environment or .env)"


# TRIAGE_* names read outside Settings: the review UI's API client and folders (ui/), and the tests' fixtures
OTHER_ENV_NAMES = frozenset({
    "TRIAGE_API_URL", "TRIAGE_API_KEY", "TRIAGE_API_KEY_FILE", "TRIAGE_API_TIMEOUT_S", "TRIAGE_UI_PAGE_SIZE",
    "TRIAGE_UI_REPORTS_DIR", "TRIAGE_UI_SCREENSHOTS_DIR", "TRIAGE_UI_TAXONOMIES_DIR", "TRIAGE_TEST_PG_BIN",
    "TRIAGE_TEST_SEEDED_DIR",
})


def unknown_env_names(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> list[str]:
    """One line per TRIAGE_* name (environment or .env) that nothing reads, with the setting it most resembles:
    a typo such as TRIAGE_MODEL=proposal was ignored without a word, and the agent ran in its default mode."""
    names = set(os.environ if environ is None else environ)
    if env_file is not None and env_file.is_file():
        from dotenv import dotenv_values

        names |= set(dotenv_values(env_file))
    known = {f"TRIAGE_{field.upper()}" for field in Settings.model_fields} | OTHER_ENV_NAMES
    lines = []
    for name in sorted(n for n in names if n.upper().startswith("TRIAGE_") and n.upper() not in known):
        # matched without the shared prefix, which would make any name look like some setting
        close = difflib.get_close_matches(name.upper().removeprefix("TRIAGE_"), sorted(k.removeprefix("TRIAGE_") for k in known), n=1, cutoff=0.75)
        hint = f"did you mean TRIAGE_{close[0]}? " if close else ""
        lines.append(f"{name} is not a setting and is ignored; {hint}every setting is listed in agent/settings.py")
    return lines
