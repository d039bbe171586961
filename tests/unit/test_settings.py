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


def test_a_misspelt_setting_name_is_named_with_the_setting_it_resembles(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """TRIAGE_MODEL=proposal (for TRIAGE_MODE) was ignored without a word: the agent ran in hybrid mode and the user
    did not know why. Unknown TRIAGE_* names, from the environment or .env, are now each a warning on stderr."""
    from agent.settings import unknown_env_names

    env_file = tmp_path / ".env"
    env_file.write_text("TRIAGE_CHROMA_ULR=http://chroma-host:8000\nTRIAGE_MODE=proposal\n", encoding="utf-8")
    lines = unknown_env_names(
        {"TRIAGE_MODEL": "proposal", "TRIAGE_FOO": "1", "TRIAGE_API_URL": "http://x", "triage_mode": "llm", "HOME": "/"},
        env_file,
    )
    assert len(lines) == 3, lines
    assert lines[0].startswith("TRIAGE_CHROMA_ULR is not a setting") and "did you mean TRIAGE_CHROMA_URL?" in lines[0]
    assert lines[1].startswith("TRIAGE_FOO is not a setting") and "did you mean" not in lines[1]
    assert "TRIAGE_MODEL is not a setting and is ignored; did you mean TRIAGE_MODE?" in lines[2]

    from agent.cli import _warn_unknown_env

    _warn_unknown_env.cache_clear()  # once per process: an earlier test's command may have warned already
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRIAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRIAGE_MODEL", "proposal")
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # results alone on stdout
    assert result.stderr.count("warning: TRIAGE_MODEL is not a setting") == 1, result.stderr
    assert "TRIAGE_CHROMA_ULR" in result.stderr  # the .env in the working directory counts too
