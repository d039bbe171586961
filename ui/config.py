"""The UI's settings, from `TRIAGE_*` environment variables: where the API is, the key, where eval reports live."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class UiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_file=".env", extra="ignore")

    api_url: str = Field(default="http://127.0.0.1:8000", description="Base URL of the triage API.")
    api_key: str | None = Field(default=None, description="A key with scope `lead` (`triage keys create --scope lead`).")
    api_key_file: Path | None = Field(default=None, description="A file holding the key (read when api_key is unset).")
    api_timeout_s: float = Field(default=15.0, gt=0, description="Per request; a classification may take longer.")
    ui_reports_dir: Path = Field(default=REPO_ROOT / "evals" / "reports", description="Where `triage eval` reports are.")
    ui_taxonomies_dir: Path = Field(
        default=REPO_ROOT / "knowledge_base" / "taxonomies", description="Candidate taxonomy YAMLs to diff against."
    )
    ui_page_size: int = Field(default=25, ge=5, le=200, description="Review-queue rows per page (the API allows 200).")

    @property
    def resolved_api_key(self) -> str | None:
        """TRIAGE_API_KEY, else the first line of TRIAGE_API_KEY_FILE (a key kept out of the process list)."""
        if self.api_key:
            return self.api_key
        if self.api_key_file is not None and self.api_key_file.is_file():
            lines = self.api_key_file.read_text(encoding="utf-8").split()
            return lines[0] if lines else None
        return None
