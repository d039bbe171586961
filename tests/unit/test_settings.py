"""A TRIAGE_* value the service cannot use is refused at start-up in one line that names the variable, instead of
binding another port, failing every LLM request, or reaching a Chroma server nobody named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from agent.cli import app
from agent.settings import Settings, settings_problem


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return settings_problem(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("TRIAGE_API_PORT", "70000", "less than or equal to 65535"),
        ("TRIAGE_UI_PORT", "0", "greater than or equal to 1"),
        ("TRIAGE_LLM_TIMEOUT_S", "-1", "greater than 0"),
        ("TRIAGE_LLM_BASE_URL", "localhost:8080/v1", "http:// or https://"),
        ("TRIAGE_CHROMA_URL", "chroma-host:8000", "http:// or https://"),
        ("TRIAGE_EMBEDDING_BASE_URL", "http://host:99999/v1", "port is invalid"),
        ("TRIAGE_EMBEDDING_BATCH_SIZE", "0", "greater than or equal to 1"),
    ],
)
def test_an_unusable_value_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str) -> None:
    message = refusal(monkeypatch, **{name: value})
    assert message.startswith(f"bad setting {name}={value!r}: ") and needle in message and "\n" not in message, message


def test_a_union_setting_says_what_it_takes_once() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(llm_vote_weight=2)  # type: ignore[arg-type]
    message = settings_problem(caught.value)
    assert message.count("TRIAGE_LLM_VOTE_WEIGHT") == 1 and "less than or equal to 1" in message, message


def test_empty_urls_mean_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_LLM_BASE_URL", "")
    monkeypatch.setenv("TRIAGE_CHROMA_URL", " ")
    settings = Settings()
    assert settings.llm_base_url is None and settings.chroma_url is None


def test_the_cli_prints_the_refusal_in_one_line(tmp_path) -> None:  # noqa: ANN001
    env = {"TRIAGE_DATA_DIR": str(tmp_path / "data"), "TRIAGE_CHROMA_URL": "chroma-host:8000"}
    result = CliRunner().invoke(app, ["taxonomy", "show"], env=env)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: bad setting TRIAGE_CHROMA_URL='chroma-host:8000': give an http:// or https:// URL with a host, "
        "e.g. http://127.0.0.1:8080/v1, or leave it empty; fix or unset it (in the environment or .env)"
    )


def test_messages_name_the_chroma_server_not_the_local_folder_when_one_is_set(tmp_path) -> None:  # noqa: ANN001
    """`triage ingest` printed `store: <TRIAGE_DATA_DIR>` for a store on a Chroma server, sending operators to a
    folder that holds nothing."""
    assert Settings(data_dir=tmp_path).vector_store_location == str(tmp_path / "chroma")
    remote = Settings(data_dir=tmp_path, chroma_url="http://ops:hunter2@chroma-host:8000")
    assert remote.vector_store_location == "the Chroma server at http://ops:***@chroma-host:8000"
