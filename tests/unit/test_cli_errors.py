"""The CLI answers a wrong path, a file that is not UTF-8, a broken taxonomy or a bad key name with an error that
says what to fix and exit code 2, never a traceback (typer's CliRunner, nothing served, no model loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import _one_line, app
from agent.settings import REPO_ROOT

TAXONOMY = REPO_ROOT / "knowledge_base" / "taxonomies" / "default.yaml"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"TRIAGE_DATA_DIR": str(tmp_path / "data"), "TRIAGE_TAXONOMY_PATH": str(TAXONOMY), "TRIAGE_MODE": "proposal"}


def assert_error(result, *needles: str) -> None:  # noqa: ANN001
    """Exit code 2 and only the error: its first line says what is wrong (a YAML error may add the spot)."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    first = result.output.strip().splitlines()[0]
    assert first.startswith("error: ") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in first, first


@pytest.fixture
def latin1(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"subject": "Caf\xe9", "body": "r\xe9sum\xe9 refund"}')
    return path


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfename: x\n")
    return path


def test_classify_names_a_missing_ticket_file(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["classify", "--file", str(tmp_path / "nope.json")], env=env)
    assert_error(result, "ticket file", "nope.json does not exist")


def test_classify_refuses_a_file_and_subject_or_body_together(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """`triage classify --file t.json --subject X` classified the file and dropped --subject without a word."""
    ticket = tmp_path / "t.json"
    ticket.write_text('{"subject": "VPN down", "body": "Nobody can connect"}', encoding="utf-8")
    for extra in (["--subject", "Printer offline"], ["--body", "The printer jams"]):
        assert_error(runner.invoke(app, ["classify", "--file", str(ticket), *extra], env=env), "either with --file or with --subject/--body")


def test_classify_names_a_directory_given_as_the_ticket_file(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["classify", "--file", str(tmp_path)], env=env)
    assert_error(result, "is a directory")


def test_classify_says_how_to_convert_a_file_that_is_not_utf8(runner: CliRunner, env: dict[str, str], latin1: Path) -> None:
    result = runner.invoke(app, ["classify", "--file", str(latin1)], env=env)
    assert_error(result, "is not UTF-8 text (byte 0xe9 on line 1)", "iconv")


def test_classify_says_so_when_stdin_is_not_utf8(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(app, ["classify", "--file", "-"], input=b'{"body": "caf\xe9"}', env=env)
    assert_error(result, "the ticket on stdin is not UTF-8")


def test_taxonomy_validate_reports_a_binary_file_and_a_directory(runner: CliRunner, binary: Path, tmp_path: Path) -> None:
    # the loader may word it itself (agent/taxonomy.py); either way one line that says what is wrong
    assert_error(runner.invoke(app, ["taxonomy", "validate", str(binary)]), f"taxonomy file {binary} is not UTF-8")
    assert_error(runner.invoke(app, ["taxonomy", "validate", str(tmp_path)]), "is a directory")
    assert_error(runner.invoke(app, ["taxonomy", "validate", str(TAXONOMY), "--previous", str(tmp_path)]), "is a directory")
    result = runner.invoke(app, ["taxonomy", "validate", str(TAXONOMY)])
    assert result.exit_code == 0 and "is valid" in result.output


@pytest.mark.parametrize("content", [b"name: broken\naxes: [\n", b"\xff\xfe\x00"], ids=["bad-yaml", "binary"])
def test_serve_refuses_a_broken_taxonomy_before_starting_anything(
    runner: CliRunner, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("uvicorn started with a broken taxonomy")

    monkeypatch.setattr(uvicorn, "run", never)
    taxonomy = tmp_path / "broken.yaml"
    taxonomy.write_bytes(content)
    result = runner.invoke(app, ["serve", "--no-ui"], env={**env, "TRIAGE_TAXONOMY_PATH": str(taxonomy)})
    assert_error(result, f"taxonomy file {taxonomy}")
    assert "API on" not in result.output and not (tmp_path / "data" / "admin.key").exists()  # refused before anything starts


def test_keys_create_refuses_a_name_that_could_forge_a_timeline_line(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(app, ["keys", "create", "--scope", "bot", "--name", "alice\nuser:admin <script>"], env=env)
    assert_error(result, "invalid key name", "letters, digits")
    assert runner.invoke(app, ["keys", "list"], env=env).output == ""
    created = runner.invoke(app, ["keys", "create", "--scope", "bot", "--name", "helpdesk-bot"], env=env)
    assert created.exit_code == 0, created.output


def test_an_actor_is_printed_on_one_line_whatever_it_holds() -> None:
    """Keys named before names were restricted are still shown; their controls come out escaped."""
    assert _one_line("alice\nuser:admin \u202e\x1b[31m café") == "alice\\nuser:admin \\u202e\\x1b[31m café"
    assert _one_line("agent:proposal:x+tfidf for user:bot") == "agent:proposal:x+tfidf for user:bot"


def test_serve_refuses_a_taxonomy_that_strands_stored_tickets_in_one_line(
    runner: CliRunner, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from agent.records import Records
    from agent.settings import Settings
    from tests.unit.test_stored_labels import STORED, add_tickets, without_network

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("uvicorn started with a taxonomy that strands tickets")

    monkeypatch.setattr(uvicorn, "run", never)
    taxonomy = without_network(tmp_path / "v2.yaml", "2026.12.1")
    records = Records.open(Settings(data_dir=tmp_path / "data", taxonomy_path=taxonomy, mode="proposal"))
    add_tickets(records, STORED)
    records.close()
    result = runner.invoke(app, ["serve", "--no-ui"], env={**env, "TRIAGE_TAXONOMY_PATH": str(taxonomy)})
    assert_error(result, "lacks labels that 2 stored tickets use", "'network'")
    assert "API on" not in result.output


@pytest.fixture
def eval_files(tmp_path: Path) -> list[str]:
    data = tmp_path / "d.csv"
    data.write_text("text,y\nmy card never arrived,a\nrefund the double charge,b\n", encoding="utf-8")
    return ["eval", "--train", str(data), "--test", str(data), "--text", "text", "--label", "service=y", "--taxonomy", "auto", "--quiet"]


def test_eval_refuses_an_output_path_it_cannot_write_before_any_work(runner: CliRunner, env: dict[str, str], eval_files: list[str], tmp_path: Path) -> None:
    """--out naming a file, or --calibration naming a directory, crashed with a traceback (the latter only after the
    whole calibration was fitted)."""
    a_file = tmp_path / "d.csv"
    assert_error(runner.invoke(app, [*eval_files, "--out", str(a_file)], env=env), "--out", "is a file; give a directory")
    assert_error(runner.invoke(app, [*eval_files, "--out", str(a_file / "sub")], env=env), "--out", "is a file, not a directory")
    result = runner.invoke(app, [*eval_files, "--out", str(tmp_path / "o"), "--calibration", str(tmp_path)], env=env)
    assert_error(result, "--calibration", "is a directory; give a file path")
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_eval_says_how_to_fix_a_taxonomy_or_target_it_cannot_use(runner: CliRunner, env: dict[str, str], eval_files: list[str], tmp_path: Path) -> None:
    """A missing --taxonomy file was blamed on TRIAGE_TAXONOMY_PATH, --target-precision 1 was 'not between 0 and 1',
    --seed -1 crashed."""
    out = ["--out", str(tmp_path / "o")]
    no_auto = [a for a in eval_files if a not in ("--taxonomy", "auto")]
    result = runner.invoke(app, [*no_auto, *out, "--taxonomy", str(tmp_path / "nope.yaml")], env=env)
    assert_error(result, "--taxonomy", "nope.yaml does not exist", "--taxonomy auto")
    assert_error(runner.invoke(app, [*eval_files, *out, "--target-precision", "1"], env=env), "above 0 and below 1", "(got 1)")
    calibration = tmp_path / "kept.calibration.json"  # an llm run overwrote it with an empty calibration
    calibration.write_text('{"thresholds": {"service": {"*": 0.5}}}', encoding="utf-8")
    result = runner.invoke(app, [*eval_files, *out, "--mode", "llm", "--calibration", str(calibration)], env=env)
    assert_error(result, "--mode llm fits no calibration", "drop it")
    assert calibration.read_text(encoding="utf-8") == '{"thresholds": {"service": {"*": 0.5}}}'
    for seed in ("-1", str(2**32)):  # numpy refused it with a traceback once the train file was embedded
        assert_error(runner.invoke(app, [*eval_files, *out, "--seed", seed], env=env), "--seed must be a whole number from 0 to 4294967295")


def test_too_few_train_rows_in_the_taxonomy_says_to_use_the_auto_taxonomy() -> None:
    """Train labels the taxonomy in force lacks left 'fewer than 4 usable train rows' and nothing about why."""
    from evals.datasets import EvalRow, LabelCodec
    from evals.runner import too_few_train_rows

    rows = [EvalRow(id=str(i), text="t", labels={"service": "exchange_rate"}) for i in range(9)]
    message = too_few_train_rows(rows, LabelCodec.for_ids({"service": ["billing_payments"]}), ["service"], 0, "default@1")
    assert message.startswith("only 0 train row(s) have a label in taxonomy default@1; 9 have labels it lacks ('exchange_rate')")
    assert "--taxonomy auto" in message


def test_eval_refuses_an_unusable_embedding_cache_in_one_line(runner: CliRunner, env: dict[str, str], eval_files: list[str], tmp_path: Path) -> None:
    """A --cache-dir that is a file, or a cache file that is not SQLite, ended in a traceback."""
    from evals.runner import CachedEmbedder, EvalError

    out = ["--out", str(tmp_path / "o")]
    assert_error(runner.invoke(app, [*eval_files, *out, "--cache-dir", str(tmp_path / "d.csv")], env=env), "--cache-dir", "is a file")
    broken = tmp_path / "cache" / "embeddings.sqlite"
    broken.parent.mkdir()
    broken.write_bytes(b"not a database, " * 512)

    class Inner:
        name = "stub"

    with pytest.raises(EvalError, match=r"embedding cache .* cannot be used \(file is not a database\); delete it \(it is only a cache\)"):
        CachedEmbedder(Inner(), broken)  # type: ignore[arg-type]


def assert_one_line(result) -> None:  # noqa: ANN001
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_bad_setting_names_the_variable_in_one_line(runner: CliRunner, env: dict[str, str]) -> None:
    """TRIAGE_TOP_K_TICKETS=abc printed pydantic's five-line dump, naming the field top_k_tickets, not the variable."""
    result = runner.invoke(app, ["keys", "list"], env={**env, "TRIAGE_TOP_K_TICKETS": "abc"})
    assert_error(result, "TRIAGE_TOP_K_TICKETS='abc'", "valid integer", "fix or unset it")
    assert_one_line(result)
    result = runner.invoke(app, ["taxonomy", "show"], env={**env, "TRIAGE_LLM_VOTE_WEIGHT": '{"service": 2}'})
    assert_error(result, "TRIAGE_LLM_VOTE_WEIGHT", "service: Input should be less than or equal to 1")
    assert_one_line(result)


def test_records_that_cannot_be_opened_say_why_in_one_line(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """A damaged triage.db or a PostgreSQL server that is down printed SQLAlchemy's text over two or three lines, the
    URL with its password, and exit code 2 as for a usage error; a data directory that is a file, '[Errno 17]'."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "triage.db").write_bytes(b"SQLite format 3\x00" + b"\x07junk" * 2000)
    result = runner.invoke(app, ["keys", "list"], env=env)
    assert result.exit_code == 1 and result.output.startswith("error: "), result.output
    assert "not a usable SQLite database" in result.output and "move it aside" in result.output
    assert_one_line(result)
    server_down = {**env, "TRIAGE_DATABASE_URL": "postgresql+psycopg://nobody:s3cret@127.0.0.1:1/x"}
    result = runner.invoke(app, ["db", "upgrade"], env=server_down)
    assert result.exit_code == 1 and "nobody:***@127.0.0.1:1/x" in result.output and "s3cret" not in result.output, result.output
    assert "check that the server is up" in result.output and "Background on this error" not in result.output
    assert_one_line(result)
    assert_error(runner.invoke(app, ["db", "upgrade"], env={**env, "TRIAGE_DATABASE_URL": "notaurl"}), "'notaurl' is not a database URL")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for data_dir in (a_file, a_file / "data"):
        assert_error(runner.invoke(app, ["tickets", "list"], env={**env, "TRIAGE_DATA_DIR": str(data_dir)}), "is not a directory")


def test_an_embedding_setting_that_names_no_model_is_exit_2_in_one_line(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """TRIAGE_EMBEDDING_MODEL=bogus, TRIAGE_EMBEDDING_BASE_URL without a model name, or a TRIAGE_EMBEDDING_MODEL_DIR
    without model.onnx exited 1, as if a part were down, though the README gives 2 for a bad TRIAGE_* setting;
    `triage eval` ended the first in a traceback."""
    for extra, needle in [
        ({"TRIAGE_EMBEDDING_MODEL": "bogus"}, "unknown embedding model 'bogus'"),
        ({"TRIAGE_EMBEDDING_BASE_URL": "http://127.0.0.1:1/v1"}, "also set TRIAGE_EMBEDDING_MODEL"),
        ({"TRIAGE_EMBEDDING_MODEL_DIR": str(tmp_path)}, f"TRIAGE_EMBEDDING_MODEL_DIR {tmp_path} has no model.onnx or tokenizer.json"),
    ]:
        result = runner.invoke(app, ["classify", "--body", "The VPN is down", "--mode", "proposal"], env={**env, **extra})
        assert_error(result, needle)
        assert_one_line(result)
    data = tmp_path / "four.csv"
    data.write_text("text,y\nmy card never arrived,a\nrefund the double charge,b\nwhere is my parcel,a\ncharged twice,b\n")
    files = ["eval", "--train", str(data), "--test", str(data), "--text", "text", "--label", "service=y", "--taxonomy", "auto"]
    result = runner.invoke(app, [*files, "--quiet", "--out", str(tmp_path / "o")], env={**env, "TRIAGE_EMBEDDING_MODEL": "bogus"})
    assert_error(result, "unknown embedding model 'bogus'")
    assert_one_line(result)


def test_a_store_embedded_by_another_model_is_named_not_a_traceback(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """TRIAGE_EMBEDDING_MODEL=use-multilingual-v3 over a store ingested with MiniLM ended classify in chromadb's
    'expecting embedding with dimension of 384, got 512' traceback, and `triage ingest` reported '+0' and left the
    store unusable: the README's way is a fresh TRIAGE_DATA_DIR, and the error now says so."""
    from agent.contracts import LabelledTicket
    from agent.store import VectorStore, make_client
    from tests.fakes import HashEmbedder

    store = VectorStore(make_client(path=tmp_path / "data" / "chroma"), HashEmbedder())
    store.upsert_tickets([LabelledTicket(id="t1", body="The VPN is down", labels={"service": "network", "tier": "L1"})])
    for command in (["classify", "--body", "The VPN is down", "--mode", "proposal"], ["ingest"]):
        result = runner.invoke(app, command, env={**env, "TRIAGE_EMBEDDING_MODEL": "all-MiniLM-L6-v2-int8"})
        assert_error(result, "tickets were embedded with hash-test", "now name all-MiniLM-L6-v2-int8", "fresh TRIAGE_DATA_DIR")
        assert_one_line(result)


def test_ingest_names_a_missing_or_directory_input_before_any_work(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """A missing --articles file was skipped without a word (exit 0, no articles); a directory as --seed was an
    IsADirectoryError traceback."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_error(runner.invoke(app, ["ingest", "--seed", str(empty), "--articles", str(tmp_path / "nope.jsonl")], env=env), "--articles", "nope.jsonl does not exist")
    assert_error(runner.invoke(app, ["ingest", "--seed", str(tmp_path)], env=env), "--seed", "is a directory")
    assert not (tmp_path / "data").exists()  # refused before the store was created


def test_ingest_refuses_a_bad_line_in_one_line(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"id": "t-1", "labels": {"service": "network"}}\n', encoding="utf-8")
    result = runner.invoke(app, ["ingest", "--seed", str(seed)], env=env)
    assert_error(result, "seed.jsonl:1 is not a valid ticket: body: Field required")
    assert_one_line(result)


def test_ingest_refuses_an_article_without_an_id_title_or_text_a_draft_can_use(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """An empty id ended ingest in chromadb's InvalidArgumentError traceback (exit 1) after the seed tickets were
    already stored; a blank title or text, or an id with spaces or brackets that no draft citation can name, was
    stored without a word."""
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"id": "t-1", "body": "refund please", "labels": {"service": "billing_payments", "tier": "L1"}}\n', encoding="utf-8")
    cases = [
        ('{"id": "", "title": "Refunds", "text": "We refund."}', "id: '' is not an id a draft can cite"),
        ('{"id": "how to [refund]", "title": "Refunds", "text": "We refund."}', "use letters, digits and - _ : . only"),
        ('{"id": "kb-1", "title": "  ", "text": "We refund."}', "title: the title is empty; give each article a title"),
        ('{"id": "kb-1", "title": "Refunds", "text": "\\u200b"}', "text: the text is empty; give each article a text"),
    ]
    for row, needle in cases:
        articles = tmp_path / "articles.jsonl"
        articles.write_text('{"id": "kb-0", "title": "Fine", "text": "A fine article."}\n' + row + "\n", encoding="utf-8")
        result = runner.invoke(app, ["ingest", "--seed", str(seed), "--articles", str(articles)], env=env)
        assert_error(result, "articles.jsonl:2 is not a valid article", needle)
        assert_one_line(result)
    from agent.store import make_client

    assert make_client(path=tmp_path / "data" / "chroma").get_collection("tickets").count() == 0  # nothing stored


def test_classify_says_which_part_is_down_in_one_line(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """A Chroma server that is down, a damaged store file or an embedding endpoint that is down ended classify in a
    chromadb or openai traceback; a data directory that is a file, in a NotADirectoryError one."""
    from agent.local_llm import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    ticket = ["classify", "--body", "The VPN is down", "--mode", "proposal", "--json"]
    for extra, needle in [
        ({"TRIAGE_CHROMA_URL": closed}, f"cannot reach the Chroma server at {closed}"),
        ({"TRIAGE_EMBEDDING_BASE_URL": f"{closed}/v1", "TRIAGE_EMBEDDING_MODEL": "e5"}, f"the embedding endpoint {closed}/v1 (model 'e5') failed"),
    ]:
        result = runner.invoke(app, ticket, env={**env, **extra})
        assert result.exit_code == 1 and result.output.startswith(f"error: {needle}"), result.output
        assert_one_line(result)
    store = tmp_path / "damaged" / "chroma"
    store.mkdir(parents=True)
    (store / "chroma.sqlite3").write_bytes(b"\x07junk" * 4000)
    result = runner.invoke(app, ticket, env={**env, "TRIAGE_DATA_DIR": str(store.parent)})
    assert result.exit_code == 1 and "cannot open the vector store" in result.output and "triage ingest" in result.output, result.output
    assert_one_line(result)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_error(runner.invoke(app, ticket, env={**env, "TRIAGE_DATA_DIR": str(a_file)}), f"TRIAGE_DATA_DIR {a_file} is not a directory")


def test_classify_says_what_is_wrong_with_a_ticket_in_words(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """A JSON array or string read 'invalid ticket: (): Input should be a valid dictionary or instance of TicketIn',
    a long body "('body',): String should have at most 100000 characters", an empty stdin '- is not a JSON ticket
    (Expecting value: line 1 column 1 (char 0))'."""
    many = tmp_path / "many.json"
    many.write_text('[{"subject": "a", "body": "b"}]', encoding="utf-8")
    assert_error(runner.invoke(app, ["classify", "--file", str(many)], env=env), "holds a JSON list", "give one ticket as a JSON object")
    assert_error(runner.invoke(app, ["classify"], input='[{"body": "b"}]', env=env), "the ticket on stdin holds a JSON list")
    long = tmp_path / "long.json"
    long.write_text('{"body": "%s"}' % ("refund " * 20_000), encoding="utf-8")
    assert_error(runner.invoke(app, ["classify", "--file", str(long)], env=env), "body has 140000 characters, more than the limit of 100000")
    other = tmp_path / "other.json"
    other.write_text('{"title": "a", "text": "b"}', encoding="utf-8")
    assert_error(runner.invoke(app, ["classify", "--file", str(other)], env=env), "unknown field 'title'; a ticket has subject, body")
    thread = tmp_path / "thread.json"
    thread.write_text('{"body": "b", "messages": [{"text": ""}]}', encoding="utf-8")
    assert_error(runner.invoke(app, ["classify", "--file", str(thread)], env=env), "invalid ticket: messages[0].text: String should have at least 1 character")
    assert_error(runner.invoke(app, ["classify", "--file", "-"], input="", env=env), "the ticket on stdin is empty")


def test_taxonomy_validate_words_a_bad_migration_and_a_missing_previous_file(runner: CliRunner, tmp_path: Path) -> None:
    """A rename to a label the new version lacks read 'is invalid: : Value error, migration step 0 ...'; a missing
    --previous file was answered 'set TRIAGE_TAXONOMY_PATH to a taxonomy YAML', which has nothing to do with it."""
    import yaml

    content = yaml.safe_load(TAXONOMY.read_text(encoding="utf-8"))
    content["version"] = "2026.12.1"
    content["axes"]["service"]["labels"] = [label for label in content["axes"]["service"]["labels"] if label["id"] != "network"]
    content["migration"] = {"from_version": "2026.11.1", "steps": [{"op": "rename", "axis": "service", "from": "network", "to": "nowhere"}]}
    v2 = tmp_path / "v2.yaml"
    v2.write_text(yaml.safe_dump(content), encoding="utf-8")
    result = runner.invoke(app, ["taxonomy", "validate", str(v2)])
    assert_error(result, "is invalid: migration step 0 (rename): ['nowhere'] are not labels of axis service")
    assert "Value error" not in result.output and ": :" not in result.output
    result = runner.invoke(app, ["taxonomy", "validate", str(TAXONOMY), "--previous", str(tmp_path / "old.yaml")])
    assert_error(result, "--previous", "old.yaml does not exist")
    assert "TRIAGE_TAXONOMY_PATH" not in result.output


def test_every_argument_and_option_is_explained_in_help() -> None:
    """`triage history --help` listed `ticket_id <str> [required]` and nothing else; so did tickets show, keys revoke
    and taxonomy validate's PATH."""
    import click
    import typer.main

    def walk(command: click.Command, path: str) -> list[str]:
        bare = [f"{path} {p.name}" for p in command.params if not getattr(p, "help", None) and p.name != "help"]
        if not (command.help or "").strip():
            bare.append(f"{path}: no description")
        for name, sub in getattr(command, "commands", {}).items():
            bare += walk(sub, f"{path} {name}")
        return bare

    assert walk(typer.main.get_command(app), "triage") == []


def test_every_command_help_shows_an_example() -> None:
    """`triage serve --help` and `triage keys list --help` said what they do but showed no command line, and
    `triage --help` none at all; every command's help now carries one that starts with its own name."""
    import click
    import typer.main

    def walk(command: click.Command, path: str) -> list[str]:
        subcommands = getattr(command, "commands", {})
        missing = [] if subcommands or path in (command.help or "") else [path]
        for name, sub in subcommands.items():
            missing += walk(sub, f"{path} {name}")
        return missing

    root = typer.main.get_command(app)
    assert walk(root, "triage") == []
    assert "triage classify --subject" in (root.help or "")


def test_serve_help_names_the_settings_behind_its_defaults() -> None:
    """`triage serve --help` gave --port's default as 8000 and --host's as 127.0.0.1, while the README sends a user
    there for TRIAGE_API_PORT and TRIAGE_API_HOST, which set those defaults and which the help never named."""
    import typer.main

    options = {p.name: p.help or "" for p in typer.main.get_command(app).commands["serve"].params}  # type: ignore[attr-defined]
    assert "TRIAGE_API_PORT" in options["port"] and "8000" in options["port"]
    assert "TRIAGE_API_HOST" in options["host"] and "127.0.0.1" in options["host"]
    assert "TRIAGE_UI_PORT" in options["ui"]


def test_a_first_classify_says_it_seeds_the_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """`triage classify --json` in a fresh data directory embedded the ~6,900 seed tickets for minutes without a
    word or a progress bar; it now says so on stderr (logging), and a terminal gets the bars even with --json."""
    import logging

    from agent.service import TriageService, running_service
    from agent.settings import Settings

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(TriageService, "ingest", lambda self, **kwargs: calls.append(kwargs))
    with caplog.at_level(logging.WARNING, logger="agent.service"), running_service(Settings(data_dir=tmp_path, mode="proposal")):
        pass
    assert calls == [{"progress": False}]
    assert "is empty: seeding it from" in caplog.text and "a few minutes, once" in caplog.text


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where no folder can be created")
def test_a_data_dir_that_cannot_be_created_is_named(runner: CliRunner, env: dict[str, str]) -> None:
    """It read 'cannot open the vector store ... move that folder aside' (exit 1) or '[Errno 2] No such file or directory'."""
    for command in (["ingest"], ["keys", "list"]):
        result = runner.invoke(app, command, env={**env, "TRIAGE_DATA_DIR": "/proc/triage-qa/data"})
        assert_error(result, "TRIAGE_DATA_DIR /proc/triage-qa/data cannot be created", "a directory this user can write")


def test_a_password_in_an_endpoint_url_is_never_printed(runner: CliRunner, env: dict[str, str]) -> None:
    """Credentials in a URL (`http://user:password@gateway`, sent as basic auth, or a gateway's `?key=`) were echoed
    whole in the Chroma server's, the embedding endpoint's and a bad setting's error line; the password is masked."""
    from agent.local_llm import free_port

    port = free_port()
    ticket = ["classify", "--body", "The VPN is down", "--mode", "proposal", "--json"]
    for extra, needle in [
        ({"TRIAGE_CHROMA_URL": f"http://ops:hunter2@127.0.0.1:{port}"}, f"Chroma server at http://ops:***@127.0.0.1:{port} "),
        (
            {"TRIAGE_EMBEDDING_BASE_URL": f"http://ops:hunter2@127.0.0.1:{port}/v1?key=hunter2", "TRIAGE_EMBEDDING_MODEL": "e5"},
            f"endpoint http://ops:***@127.0.0.1:{port}/v1?key=*** (model 'e5')",
        ),
        ({"TRIAGE_LLM_BASE_URL": "http://ops:hunter2@gateway:port/v1"}, "TRIAGE_LLM_BASE_URL='http://ops:***@gateway:port/v1'"),
    ]:
        result = runner.invoke(app, ticket, env={**env, **extra})
        assert result.exit_code in (1, 2) and needle in result.output, result.output
        assert "hunter2" not in result.output, result.output
    for url, needle in [
        ("ops:hunter2@db/triage", "TRIAGE_DATABASE_URL 'ops:***@db/triage' is not a database URL"),
        ("postgresql://ops:hunter2@127.0.0.1:9/triage", "the records at postgresql+psycopg://ops:***@127.0.0.1:9/triage"),
    ]:
        result = runner.invoke(app, ["keys", "list"], env={**env, "TRIAGE_DATABASE_URL": url})
        assert result.exit_code in (1, 2) and needle in result.output, result.output
        assert "hunter2" not in result.output, result.output


def test_a_chroma_url_where_another_server_answers_is_one_line(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """TRIAGE_CHROMA_URL at a port where something else answers (another service, a server of an older API): the
    error held that answer's whole HTML page, a dozen lines; it is now one line that says what answered and the fix."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = runner.invoke(app, ["classify", "--body", "The VPN is down", "--mode", "proposal"], env={**env, "TRIAGE_CHROMA_URL": url})
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1 and result.output.startswith(f"error: something answers at {url}, but not as a Chroma server"), result.output
    assert "404" in result.output and "TRIAGE_CHROMA_URL" in result.output and "<" not in result.output
    assert_one_line(result)


@pytest.mark.parametrize("command", [["keys", "list"], ["serve", "--no-ui", "--port", "18199"], ["classify", "--body", "VPN down"]])
def test_a_database_url_whose_port_is_not_a_number_is_one_line(runner: CliRunner, env: dict[str, str], command: list[str]) -> None:
    """postgresql://...@db:port/triage (a placeholder left in) ended keys, serve and classify in SQLAlchemy's
    ValueError traceback; it is the one-line bad-setting error, exit 2, with the password masked."""
    result = runner.invoke(app, command, env={**env, "TRIAGE_DATABASE_URL": "postgresql://ops:hunter2@db:port/triage"})
    assert_error(result, "bad setting TRIAGE_DATABASE_URL='postgresql://ops:***@db:port/triage': the URL's port is not a number")
    assert "hunter2" not in result.output


def test_taxonomy_validate_previous_does_not_call_valid_what_it_then_refuses(runner: CliRunner, tmp_path: Path) -> None:
    """A new version dropping a label with no migration step printed '... is valid (...)' and then the error with
    exit 2: the first line read as the verdict. The error comes alone now and says which check failed."""
    import yaml

    content = yaml.safe_load(TAXONOMY.read_text(encoding="utf-8"))
    content["version"] = "2099.1.1"
    content["axes"]["service"]["labels"] = [label for label in content["axes"]["service"]["labels"] if label["id"] != "network"]
    v2 = tmp_path / "v2.yaml"
    v2.write_text(yaml.safe_dump(content), encoding="utf-8")
    result = runner.invoke(app, ["taxonomy", "validate", str(v2), "--previous", str(TAXONOMY)])
    assert_error(result, "is a valid taxonomy", "but not a valid next version of")
    assert " is valid (" not in result.output, result.output


def test_eval_refuses_an_out_directory_whose_data_is_not_its_own(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    """QA: `--out .` in a checkout put the run's store under ./data, the service's data directory: the eval deleted
    its Chroma tickets collection and refilled it with the train file (a store of 400 tickets became 6)."""
    data = tmp_path / "d.csv"
    data.write_text("text,y\nmy card never arrived,a\nrefund the double charge,b\ncard lost,a\nfee refund,b\n", encoding="utf-8")
    service_dir = tmp_path / "checkout"
    (service_dir / "data" / "chroma").mkdir(parents=True)
    marker = service_dir / "data" / "chroma" / "chroma.sqlite3"
    marker.write_bytes(b"the service's store")
    args = ["eval", "--train", str(data), "--test", str(data), "--text", "text", "--label", "service=y", "--taxonomy", "auto", "--quiet"]
    result = runner.invoke(app, [*args, "--out", str(service_dir), "--cache-dir", str(tmp_path / "cache")], env=env)
    assert_error(result, "has a data/ directory but no run.json", "pass a new --out")
    assert marker.read_bytes() == b"the service's store" and not (service_dir / "run.json").exists()
