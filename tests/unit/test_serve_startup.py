"""`triage serve` refuses a bad environment before uvicorn starts: a taken port, records or a vector store it cannot
open, a GGUF that is not there. Each is one line naming the cause and the fix, exit code 2, no traceback, nothing
left behind (typer's CliRunner; uvicorn.run is replaced by a trap, no model loads)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.local_llm import free_port
from tests.unit.test_cli_errors import TAXONOMY


def assert_error(result, *needles: str, code: int = 2) -> None:  # noqa: ANN001
    """One error line, the output's last (the admin key may be printed before it), no traceback; exit code 2 for what
    the caller can fix, 1 for a part that is down or damaged (README, "Classify a ticket")."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    assert sum(line.startswith("error: ") for line in lines) == 1 and not lines[0].startswith(" "), result.output
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("uvicorn started although start-up should have been refused")

    monkeypatch.setattr(uvicorn, "run", never)
    return CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"TRIAGE_DATA_DIR": str(tmp_path / "data"), "TRIAGE_TAXONOMY_PATH": str(TAXONOMY), "TRIAGE_MODE": "proposal"}


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_api_port_is_refused_before_anything_starts(runner: CliRunner, env: dict[str, str], taken_port: int, tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--no-ui", "--port", str(taken_port)], env=env)
    assert_error(result, f"127.0.0.1:{taken_port}", "in use", "--port or TRIAGE_API_PORT")
    assert not (tmp_path / "data").exists()


def test_a_taken_ui_port_is_refused_instead_of_announcing_someone_elses_server(
    runner: CliRunner, env: dict[str, str], taken_port: int
) -> None:
    result = runner.invoke(app, ["serve", "--port", str(free_port())], env={**env, "TRIAGE_UI_PORT": str(taken_port)})
    assert_error(result, f"review UI cannot listen on 127.0.0.1:{taken_port}", "TRIAGE_UI_PORT", "--no-ui")
    assert "UI  on" not in result.output


def test_a_host_that_is_not_this_machines_asks_for_another_host_not_another_port(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    """`--host 10.255.255.1` (an address no interface has) or a name that does not resolve was answered 'stop what
    uses it (another `triage serve`?) or choose another port', which no port can fix."""
    for host in ("10.255.255.1", "no-such-host.invalid"):
        result = runner.invoke(app, ["serve", "--no-ui", "--host", host, "--port", str(free_port())], env=env)
        assert_error(result, f"API cannot listen on {host}:", "is not an address of this machine", "--host or TRIAGE_API_HOST")
        assert "another port" not in result.output, result.output
    assert not (tmp_path / "data").exists()


def test_a_damaged_records_file_is_named_and_kept(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "data" / "triage.db"
    db.parent.mkdir()
    db.write_bytes(b"\x13 not a database " * 300)
    result = runner.invoke(app, ["serve", "--no-ui", "--port", str(free_port())], env=env)
    assert_error(result, f"cannot open the records at sqlite:///{db}", "file is not a database", "move it aside", code=1)
    assert db.read_bytes() == b"\x13 not a database " * 300


def test_an_unreachable_database_hides_its_password(runner: CliRunner, env: dict[str, str]) -> None:
    url = f"postgresql://triage:s3cret@127.0.0.1:{free_port()}/triage"
    result = runner.invoke(app, ["serve", "--no-ui", "--port", str(free_port())], env={**env, "TRIAGE_DATABASE_URL": url})
    assert_error(result, "cannot open the records at postgresql", "triage:***@127.0.0.1", "TRIAGE_DATABASE_URL", code=1)
    assert "s3cret" not in result.output


def test_an_unreachable_chroma_server_is_one_line(runner: CliRunner, env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["serve", "--no-ui", "--port", str(free_port())], env={**env, "TRIAGE_CHROMA_URL": url})
    assert_error(result, f"cannot reach the Chroma server at {url}", "TRIAGE_CHROMA_URL", code=1)


def test_a_damaged_vector_store_is_named_with_the_way_back(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    chroma = tmp_path / "data" / "chroma"
    chroma.mkdir(parents=True)
    (chroma / "chroma.sqlite3").write_bytes(b"junk" * 2000)
    result = runner.invoke(app, ["serve", "--no-ui", "--port", str(free_port())], env=env)
    assert_error(result, f"cannot open the vector store at {chroma}", "triage ingest", code=1)


def test_a_missing_gguf_names_the_settings_that_fix_it(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "model.gguf"
    result = runner.invoke(
        app, ["serve", "--no-ui", "--port", str(free_port())], env={**env, "TRIAGE_MODE": "hybrid", "TRIAGE_LLM_GGUF_PATH": str(missing)}
    )
    assert_error(result, f"the GGUF model {missing} is not a file", "TRIAGE_LLM_GGUF_PATH", "TRIAGE_MODE=proposal")


def test_serving_an_open_classify_beyond_loopback_warns(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """POST /v1/classify answers without a key by default (the README's curl); bound to 0.0.0.0 that served anyone on
    the network, and only a docstring said to close it. Start-up now says so (the damaged store ends it quickly)."""
    from agent.cli import is_loopback

    chroma = tmp_path / "data" / "chroma"
    chroma.mkdir(parents=True)
    (chroma / "chroma.sqlite3").write_bytes(b"junk" * 2000)
    said = {}
    for host, extra in (("0.0.0.0", {}), ("127.0.0.1", {}), ("0.0.0.0", {"TRIAGE_ANONYMOUS_CLASSIFY": "false"})):
        result = runner.invoke(app, ["serve", "--no-ui", "--host", host, "--port", str(free_port())], env={**env, **extra})
        assert_error(result, "cannot open the vector store", code=1)
        said[(host, bool(extra))] = "TRIAGE_ANONYMOUS_CLASSIFY=false to require a bot key" in result.output
    assert said == {("0.0.0.0", False): True, ("127.0.0.1", False): False, ("0.0.0.0", True): False}
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "10.0.0.5", "api.example")] == [
        True, True, True, True, False, False, False,
    ]


def test_the_banner_names_where_records_and_vectors_live(tmp_path: Path) -> None:
    """'data in DIR' was printed with records in PostgreSQL and vectors on a Chroma server too; the banner names each
    place (passwords masked) when they are not the data folder, and stays 'data in DIR' when they are."""
    from agent.cli import where_data_lives
    from agent.settings import Settings

    local = Settings(data_dir=tmp_path)
    assert where_data_lives(local) == f"data in {tmp_path}"
    remote = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://triage:s3cret@db:5432/triage", chroma_url="http://vec:8000")
    said = where_data_lives(remote)
    assert "postgresql+psycopg://triage:***@db:5432/triage" in said and "http://vec:8000" in said and "s3cret" not in said, said
    assert said.startswith("records in "), said
