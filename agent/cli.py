"""The `triage` command line: serve, classify, ingest, taxonomy, eval.

Every command works offline on the embedded default; `TRIAGE_LLM_BASE_URL` points it at any
OpenAI-compatible endpoint instead.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from agent.contracts import Classification, Taxonomy, TicketIn, otherwise_phrase
from agent.local_llm import die_with_parent, stop_process
from agent.settings import REPO_ROOT, Mode, Settings, settings_problem, unknown_env_names
from agent.taxonomy import TaxonomyError, load_taxonomy
from agent.textfiles import not_utf8
from agent.urls import is_loopback

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agent.records import Records
    from agent.service import TriageService

app = typer.Typer(
    help="LLM-assisted ticket triage: service type, channel and support tier from a taxonomy, offline by default.\n\n"
    "Examples:\n\n"
    "  triage ingest\n\n"
    "  triage classify --subject \"Charged twice\" --body \"Refund one, please.\" --channel email\n\n"
    "  triage serve\n\n"
    "Each command's --help says what it does, with an example.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
taxonomy_app = typer.Typer(help="Inspect and validate taxonomy files; move the stored history to a new version (migrate).", no_args_is_help=True)
app.add_typer(taxonomy_app, name="taxonomy")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings(mode: Mode | None = None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(settings_problem(exc))
    _warn_unknown_env()
    return settings.model_copy(update={"mode": mode}) if mode else settings


@functools.cache
def _warn_unknown_env() -> None:
    """Once per command, on stderr (results stay alone on stdout): a misspelt setting's name changes nothing."""
    for line in unknown_env_names():
        typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)


def _check_data_dir(settings: Settings) -> None:
    """TRIAGE_DATA_DIR that is a file (or lies under one), cannot be created or cannot be written: one line, exit 2,
    before the store or the records trip on it (a NotADirectoryError traceback from deep inside Chroma's set-up, or
    a 'move the store aside' hint that does not apply)."""
    data_dir = settings.data_dir
    blocking = next((p for p in (data_dir, *data_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "" if blocking == data_dir else f" ({blocking} is a file)"
        fail(f"TRIAGE_DATA_DIR {data_dir} is not a directory{where}; point it at a directory (it is created if missing)")
    try:
        # the records hold every ticket's text (customers' names, addresses, what they wrote) and the store the same:
        # a folder this user creates is readable by this user only (an existing one keeps the mode it was given)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"TRIAGE_DATA_DIR {data_dir} cannot be created ({exc.strerror or exc}); point it at a directory this user can write")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        fail(f"TRIAGE_DATA_DIR {data_dir} is not writable by this user; point it at a directory this user can write")


@contextmanager
def _unavailable_parts() -> Iterator[None]:
    """A part the command needs that is down or damaged (the Chroma server or store, the embedding endpoint): its
    one-line error and exit code 1, a runtime failure, instead of a traceback from inside the graph. A
    TRIAGE_EMBEDDING_* setting that names no usable model is the caller's to fix: exit 2, as for any bad setting."""
    from agent.embeddings import EmbeddingError, EmbeddingSettingError
    from agent.store import StoreUnavailable

    try:
        yield
    except EmbeddingSettingError as exc:
        fail(str(exc))
    except (EmbeddingError, StoreUnavailable) as exc:
        fail(str(exc), 1)


def _lock_store(settings: Settings, command: str, stack: ExitStack) -> None:
    """Hold the local vector store's one-writer lock until `stack` unwinds (agent/store_lock.py); taken: one line
    naming the process that holds it, exit 2."""
    from agent.store_lock import StoreBusy, store_writer

    try:
        stack.enter_context(store_writer(settings, command))
    except StoreBusy as exc:
        fail(str(exc))


def _read_utf8(path: Path, what: str) -> str:
    """A text file's content, or a one-line error that says what is wrong with the path instead of a traceback."""
    if path.is_dir():
        fail(f"{what} {path} is a directory; give the path of a file")
    if not path.exists():
        fail(f"{what} {path} does not exist")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(not_utf8(f"{what} {path}", exc))
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}")
    raise AssertionError("unreachable")


def _read_stdin() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(not_utf8("the ticket on stdin", exc))
    raise AssertionError("unreachable")


def _load_taxonomy(path: Path, option: str | None = None) -> Taxonomy:
    """load_taxonomy, its TaxonomyError (which names the file and the fix) as a one-line error, not a traceback.
    A file named on the command line (`option`) that is missing is that option's fault, not TRIAGE_TAXONOMY_PATH's,
    which the loader's message would otherwise tell the user to set."""
    if option is not None and not path.exists():
        fail(f"{option} {path} does not exist; give the path of a taxonomy YAML file")
    try:
        return load_taxonomy(path)
    except TaxonomyError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def _read_ticket(subject: str | None, body: str | None, channel: str | None, file: Path | None) -> TicketIn:
    raw: object
    shape = '{"subject", "body", "channel"?, "messages"?}'
    where = "the ticket on stdin" if file is None or str(file) == "-" else f"ticket file {file}"
    if file is not None and (subject is not None or body is not None):  # one of the two was silently dropped
        fail("give the ticket either with --file or with --subject/--body, not both (--channel goes with either)")
    if file is not None:
        source = _read_stdin() if str(file) == "-" else _read_utf8(file, "ticket file")
        if not source.strip():
            fail(f"{where} is empty; expected one JSON object {shape}")
        try:
            raw = json.loads(source)
        except json.JSONDecodeError as exc:
            fail(f"{file} is not a JSON ticket ({exc}); expected {shape}")
    elif subject is None and body is None and not sys.stdin.isatty():
        text = _read_stdin()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raw = {"body": text}
        if not isinstance(raw, dict | list):  # `echo 1234 | triage classify`: plain text that happens to parse as JSON
            raw = {"body": text}
    else:
        raw = {"subject": subject or "", "body": body or ""}
    if not isinstance(raw, dict):
        fail(f"{where} holds a JSON {type(raw).__name__}; give one ticket as a JSON object {shape} "
             "(for many tickets, the review UI's Batch page or POST /v1/tickets)")
    if channel is not None:
        raw["channel"] = channel
    try:
        return TicketIn.model_validate(raw)
    except ValidationError as exc:
        fail(_ticket_problem(exc))
    raise AssertionError("unreachable")


def _ticket_problem(exc: ValidationError) -> str:
    """The first problem of a ticket in words: the field as `messages[0].text`, and for a field over its length
    limit the size, the limit and the fix (pydantic names the limit only)."""
    error = exc.errors()[0]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".") or "the ticket"
    if error["type"] == "string_too_long":
        size = len(error["input"]) if isinstance(error["input"], str) else "too many"
        return (f"invalid ticket: {field} has {size} characters, more than the limit of {error['ctx']['max_length']}; "
                "send the first part")
    if error["type"] == "extra_forbidden":
        return f"invalid ticket: unknown field {field!r}; a ticket has {', '.join(TicketIn.model_fields)}"
    return f"invalid ticket: {field}: {error['msg']}"


def _print_human(result: Classification) -> None:
    typer.secho(f"decision: {result.decision.value}" + ("  (out of scope)" if result.out_of_scope else ""), bold=True)
    for axis, label in result.labels.items():
        alts = ", ".join(f"{a.label} {a.confidence:.2f}" for a in label.alternatives)
        typer.echo(f"  {axis:8} {label.label:24} {label.confidence:5.2f}  [{label.source}]" + (f"  alt: {alts}" if alts else ""))
    typer.echo(f"route:    {result.route.team}" + (f" / {result.route.queue}" if result.route.queue else ""))
    typer.echo(f"why:      {result.rationale}")
    if result.draft:
        typer.echo("draft:\n  " + result.draft.text.replace("\n", "\n  "))
    for warning in result.warnings:
        typer.secho(f"warning:  {warning}", fg=typer.colors.YELLOW)
    typer.echo(f"model {result.model} · {result.taxonomy_version} · {result.latency_ms:.0f} ms")


@app.command()
def classify(
    subject: Annotated[str | None, typer.Option(help="Ticket subject line.")] = None,
    body: Annotated[str | None, typer.Option(help="Ticket body text.")] = None,
    channel: Annotated[str | None, typer.Option(help="Intake channel, a channel id of the taxonomy in any case (email, phone, chat, social, portal, api); taken as is, inferred when missing or empty.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A JSON ticket file ({subject, body, channel?, messages?}); '-' for stdin. Not with --subject or --body.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the classification JSON contract.")] = False,
    mode: Annotated[str | None, typer.Option(help="hybrid (default), proposal (no LLM) or llm.")] = None,
) -> None:
    """Classify one ticket.

    Examples:

      triage classify --subject "Charged twice" --body "Refund one, please." --channel email

      echo '{"subject": "VPN down", "body": "Nobody can connect"}' | triage classify --json

      triage classify --file ticket.json --mode proposal
    """
    if mode not in (None, "hybrid", "proposal", "llm"):
        fail(f"--mode must be hybrid, proposal or llm, not {mode!r}")
    from agent.service import CalibrationError, TicketError, running_service  # heavy imports only when needed

    ticket = _read_ticket(subject, body, channel, file)
    settings = _settings(mode)  # type: ignore[arg-type]
    _load_taxonomy(settings.taxonomy_path)  # a one-line error before any model loads
    _check_data_dir(settings)
    with _unavailable_parts():
        try:
            # progress bars go to stderr, so a terminal sees them even with --json (stdout stays JSON for jq)
            with running_service(settings, progress=not as_json or sys.stderr.isatty()) as service:
                result = service.classify(ticket)
        except (TicketError, TaxonomyError, CalibrationError) as exc:
            fail(str(exc))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        _print_human(result)


@app.command()
def ingest(
    seed: Annotated[Path | None, typer.Option(help="Labelled tickets JSONL (default: knowledge_base/seed/tickets.jsonl).")] = None,
    articles: Annotated[Path | None, typer.Option(help="KB articles JSONL (default: knowledge_base/articles/articles.jsonl).")] = None,
) -> None:
    """Seed the vector store with labelled tickets and KB articles (idempotent), then train the proposal head.

    Each file is JSON Lines, one object a line: a ticket has id, subject, body, channel and labels
    ({"service": ..., "tier": ...}, ids of the taxonomy in force); an article has id, title and text. Both files are
    checked whole before anything is stored. Only new or changed rows are embedded, so a second run is quick, and
    an interrupted run is finished by running it again. An article ingested from the same file before and no longer
    in it is removed from the store, so drafts stop citing it. Tickets with labels outside the taxonomy, or no text, are
    skipped with a warning.

      triage ingest

      triage ingest --articles help-centre.jsonl
    """
    from agent.jsonl import InputFileError
    from agent.service import CalibrationError, TriageService

    for option, path in (("--seed", seed), ("--articles", articles)):
        if path is not None and path.is_dir():
            fail(f"{option} {path} is a directory; give the path of a JSON Lines file")
        if path is not None and not path.exists():
            fail(f"{option} {path} does not exist")
    settings = _settings("proposal")
    _check_data_dir(settings)
    try:
        with ExitStack() as stack, _unavailable_parts():
            _lock_store(settings, "triage ingest", stack)
            service = TriageService(settings)
            report = service.ingest(seed_path=seed, articles_path=articles, progress=True)
    except (TaxonomyError, InputFileError, CalibrationError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; what was stored is kept, and `triage ingest` again finishes the rest", 130)
    typer.echo(
        f"tickets: +{report.tickets_added} (total {report.tickets_total}, skipped {report.skipped}) · "
        f"articles: +{report.articles_added}{f', removed {report.articles_removed}' if report.articles_removed else ''} "
        f"(total {report.articles_total}) · store: {settings.vector_store_location}"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: TRIAGE_API_HOST, else 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="API port (default: TRIAGE_API_PORT, else 8000).")] = None,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Also serve the review UI (Streamlit) on TRIAGE_UI_PORT.")] = True,
) -> None:
    """Serve the HTTP API and the review UI; start the embedded LLM when no endpoint is configured.

    On first start it creates a local admin key, prints it once and keeps it in data/admin.key (mode 600).
    Ctrl-C stops every process it started.

      triage serve

      TRIAGE_UI_PORT=8601 triage serve --port 8100

      TRIAGE_LLM_BASE_URL=http://127.0.0.1:11434/v1 TRIAGE_LLM_MODEL=qwen2.5:7b triage serve --no-ui
    """
    import uvicorn

    from agent.api import create_app
    from agent.auth import ensure_admin_key
    from agent.service import check_labels_in_use

    settings = _settings()
    # the app loads both at start-up, where an error drowns in uvicorn's traceback: check them first, one line each
    taxonomy = _load_taxonomy(settings.taxonomy_path)
    host, port = host or settings.api_host, port or settings.api_port
    _check_port(host, port, "API", "--port or TRIAGE_API_PORT")
    if ui:
        _check_port(host, settings.ui_port, "review UI", "TRIAGE_UI_PORT, or serve without the UI with --no-ui")
    records = _records()
    try:
        check_labels_in_use(taxonomy, records, path=settings.taxonomy_path)
        key, key_path = ensure_admin_key(settings, records)
    except TaxonomyError as exc:
        fail(str(exc))
    finally:
        records.close()
    if settings.anonymous_classify and not is_loopback(host):
        typer.secho(
            f"warning: POST /v1/classify answers without a key and {host} is reachable from other machines; "
            "set TRIAGE_ANONYMOUS_CLASSIFY=false to require a bot key (`triage keys create --scope bot --name NAME`)",
            err=True, fg=typer.colors.YELLOW,
        )
    if key:
        typer.secho(f"admin API key (shown once, also stored in {key_path}): {key}", fg=typer.colors.GREEN, bold=True)
    else:
        typer.echo(f"admin API key: in {key_path}")
    serving, api_app = False, None
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        with ExitStack() as stack:  # on any exit: the UI stopped, then the embedded LLM
            service = _start_service(settings, stack)
            ui_process = _start_ui(settings, host, f"http://{host}:{port}", key_path) if ui else None
            if ui_process is not None:
                stack.callback(stop_process, ui_process)
            typer.secho(f"API on http://{host}:{port}  (docs: http://{host}:{port}/docs) · {where_data_lives(settings)}", bold=True)
            if ui_process is not None:
                typer.secho(f"UI  on http://{host}:{settings.ui_port}", bold=True)
            serving = True
            # uvicorn handles SIGINT and SIGTERM itself, then raises them again: they end up below
            api_app = create_app(settings, service)
            logging.getLogger("uvicorn.error").addFilter(_cancelled_at_shutdown)
            uvicorn.run(api_app, host=host, port=port, log_level="info", timeout_graceful_shutdown=settings.shutdown_grace_s)
        _exit_past_running_jobs(api_app, 0)  # uvicorn returns when the signal it re-raises is ignored (a background job)
    except (KeyboardInterrupt, _Stopped) as exc:
        if not serving:
            typer.echo("stopped during start-up; nothing it started is left running", err=True)
        code = 128 + (exc.args[0] if isinstance(exc, _Stopped) else signal.SIGINT)
        _exit_past_running_jobs(api_app, code)
        raise typer.Exit(code) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cancelled_at_shutdown(record: logging.LogRecord) -> bool:
    """uvicorn logs a request it cancels when the shutdown grace has run out as 'Exception in ASGI application' with
    the CancelledError's traceback; one line says what happened instead."""
    if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
        record.msg, record.args = "a request still running when the shutdown grace ran out was cancelled (TRIAGE_SHUTDOWN_GRACE_S)", ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def _exit_past_running_jobs(api_app: FastAPI | None, code: int) -> None:
    """Exit now when a classification is still running after the API's shutdown (waiting on a hung LLM endpoint):
    the interpreter's exit joins the pool's threads and so waited out its attempts x timeout, minutes after Ctrl-C.
    The API has logged it; the UI and the embedded LLM are stopped by then."""
    pool = getattr(api_app.state, "pool", None) if api_app is not None else None
    if pool is not None and pool.unfinished:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def where_data_lives(settings: Settings) -> str:
    """The banner's words for where tickets go: 'data in DIR' named the local folder for records kept in PostgreSQL
    and vectors in a Chroma server too, sending an operator to back up the wrong place. Passwords masked."""
    from agent.urls import shown_url

    if not settings.database_url and not settings.chroma_url:
        return f"data in {settings.data_dir}"
    records = shown_url(settings.database_url) if settings.database_url else str(settings.data_dir / "triage.db")
    vectors = shown_url(settings.chroma_url) if settings.chroma_url else str(settings.chroma_dir)
    return f"records in {records} · vectors in {vectors} · head and logs in {settings.data_dir}"


def _check_port(host: str, port: int, what: str, setting: str) -> None:
    """A taken port is found before a model loads, not by uvicorn after the whole start-up (or, for the UI, by a
    Streamlit that exits while serve announces it). The advice follows the cause: a host that is not this machine's
    asks for another --host, not another port."""
    import errno
    import socket

    from agent.local_llm import bind_error

    exc = bind_error(host, port)
    if exc is None:
        return
    cannot = f"the {what} cannot listen on {host}:{port} ({exc.strerror or exc})"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        fail(f"{cannot}: {host} is not an address of this machine; bind to one it has with --host or TRIAGE_API_HOST "
             "(127.0.0.1 for this machine only, 0.0.0.0 for every interface)")
    if exc.errno == errno.EACCES:
        fail(f"{cannot}: ports below 1024 need privileges; choose a port from 1024 up with {setting}")
    fail(f"{cannot}: stop what uses it (another `triage serve`?) or choose another port with {setting}")


class _Stopped(Exception):
    """SIGTERM: unwinds like Ctrl-C, so the UI and the embedded LLM are stopped on the way out, not orphaned."""


def _stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def _start_service(settings: Settings, stack: ExitStack) -> TriageService:
    """The embedded LLM, the store (seeded when empty) and the proposal head, ready before uvicorn starts.

    Here rather than in the app's lifespan: there a long start-up (the first seeding, a head to train) ignored
    Ctrl-C and SIGTERM until it had finished, and a failure printed uvicorn's traceback. Here Ctrl-C or SIGTERM
    stops it at once, and a failure is one line naming the cause and the fix.
    """
    from agent.local_llm import LocalLLMError
    from agent.service import CalibrationError, running_service

    # a failure unwinds `stack` (serve's ExitStack), which stops whatever was started
    _lock_store(settings, "triage serve", stack)
    with _unavailable_parts():  # a part down or damaged: exit 1, as in every command
        try:
            service = stack.enter_context(running_service(settings, progress=True))
            service.ensure_head(progress=True)
            return service
        except (LocalLLMError, CalibrationError, TaxonomyError) as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot start: {exc.strerror or exc}: {exc.filename or ''}; check that TRIAGE_DATA_DIR ({settings.data_dir}) is a writable directory")
    raise AssertionError("unreachable")


def _start_ui(settings: Settings, host: str, api_url: str, key_path: Path) -> subprocess.Popen[bytes] | None:
    """Streamlit as a child that dies with us; it reads the admin key from its file, not from the process list."""
    app_path = REPO_ROOT / "ui" / "app.py"
    if not app_path.is_file():
        return None
    env = {**os.environ, "TRIAGE_API_URL": api_url, "TRIAGE_API_KEY_FILE": str(key_path)}
    command = [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.address", host, "--server.port", str(settings.ui_port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
    ]
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


@taxonomy_app.command("validate")
def taxonomy_validate(
    path: Annotated[Path, typer.Argument(help="The taxonomy YAML file to check.", show_default=False)],
    previous: Annotated[
        Path | None, typer.Option("--previous", help="The version it follows: check that its `migration:` says where every label that is gone goes.")
    ] = None,
) -> None:
    """Check a taxonomy YAML file; exits 0 and prints its label counts when it is usable.

      triage taxonomy validate knowledge_base/taxonomies/default.yaml

    With --previous, also check its `migration:` against that version, offline, before any deployment sees it,
    and print where each moved label goes:

      triage taxonomy validate NEW.yaml --previous knowledge_base/taxonomies/default.yaml
    """
    from agent.migration import MigrationError, plan_migration

    taxonomy = _load_taxonomy(path, "taxonomy file")
    before = _load_taxonomy(previous, "--previous") if previous else None
    counts = ", ".join(f"{axis}: {len(axis_def.labels)}" for axis, axis_def in taxonomy.axes.items())
    if before is None:
        typer.echo(f"{taxonomy.ref} is valid ({counts})")
        if taxonomy.migration is not None:
            typer.echo(f"it migrates from {taxonomy.name}@{taxonomy.migration.from_version}: add --previous PATH to check the steps against that version")
        return
    try:  # before the "is valid" line, which read as the verdict when an error about the migration followed it
        plan = plan_migration(before, taxonomy)
    except MigrationError as exc:
        fail(f"{taxonomy.ref} is a valid taxonomy ({counts}) but not a valid next version of {before.ref}: {exc}")
    typer.echo(f"{taxonomy.ref} is valid ({counts})")
    if any(plan.moves.values()):
        typer.echo(f"the migration from {before.ref} accounts for every label that is gone:")
    else:
        typer.echo(f"it keeps every label of {before.ref}: no migration step is needed")
    for axis, moves in plan.moves.items():
        for old, move in moves.items():
            how = plan.describe(axis, old)
            if move.to is None and (move.rules or move.otherwise):
                how += f" ({len(move.rules)} rule{'s' if len(move.rules) != 1 else ''}, {otherwise_phrase(move.otherwise)})"
            typer.echo(f"  {axis} {old}: {how}")
    kept = sum(len(set(before.axes[a].ids) & set(taxonomy.axes[a].ids)) for a in taxonomy.axes)
    added = sum(len(set(taxonomy.axes[a].ids) - set(before.axes[a].ids)) for a in taxonomy.axes)
    typer.echo(f"  {kept} labels kept, {added} new")


@taxonomy_app.command("show")
def taxonomy_show(path: Annotated[Path | None, typer.Argument(help="Default: the taxonomy in force.")] = None) -> None:
    """Print the labels of a taxonomy with their routing.

      triage taxonomy show

      triage taxonomy show knowledge_base/taxonomies/default.yaml
    """
    taxonomy = _load_taxonomy(path, "taxonomy file") if path else _load_taxonomy(_settings().taxonomy_path)
    typer.secho(taxonomy.ref, bold=True)
    for axis, axis_def in taxonomy.axes.items():
        typer.secho(f"\n{axis} (fallback {axis_def.fallback})", bold=True)
        for label in axis_def.labels:
            route = f"  -> {label.routing.team}" if label.routing else ""
            typer.echo(f"  {label.id:24} {label.name}{route}")


@taxonomy_app.command("migrate")
def taxonomy_migrate(
    commit: Annotated[bool, typer.Option("--commit", help="Write the revisions and relabel the store (default: a dry run that writes nothing).")] = False,
    previous: Annotated[
        Path | None, typer.Option("--previous", help="The previous version's YAML. Default: the version `migration.from_version` names, as this deployment served it.")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="How re-asked tickets are classified: hybrid, proposal (no LLM) or llm. Default: TRIAGE_MODE.")] = None,
    reviewed_sample: Annotated[int, typer.Option(min=0, help="Reviewed tickets re-classified to measure the agent against the leads' labels.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the MigrationReport JSON.")] = False,
) -> None:
    """Move the stored tickets to the taxonomy in force, following its `migration:` section.

    First without --commit, a dry run that writes nothing: it re-asks the agent where the new version needs it
    (a split, a retirement without a target, unless one of the step's `rules` or its `otherwise` decides) and
    reports how many tickets would change, label by label, and how often the agent agrees with the leads'
    reviewed labels under the new version.

    With --commit: one `taxonomy_migration` revision per changed ticket (earlier revisions stay as they were),
    the retrieval store relabelled, re-asked tickets sent to the review queue.

      export TRIAGE_TAXONOMY_PATH=NEW.yaml   # the new version, with its `migration:`

      triage taxonomy migrate

      triage taxonomy migrate --commit
    """
    if mode not in (None, "hybrid", "proposal", "llm"):
        fail(f"--mode must be hybrid, proposal or llm, not {mode!r}")
    from tqdm import tqdm

    from agent.lifecycle import Lifecycle
    from agent.reader import Invalid, NotFound, StoreUnavailable
    from agent.service import running_service

    settings = _settings(mode)  # type: ignore[arg-type]
    target = _load_taxonomy(settings.taxonomy_path)
    before = _load_taxonomy(previous, "--previous") if previous else None
    if target.migration is None:
        fail(f"the taxonomy in force, {target.ref} ({settings.taxonomy_path}), has no `migration:` section; "
             "point TRIAGE_TAXONOMY_PATH at the new version, whose `migration:` names from_version and the steps")
    _check_data_dir(settings)
    records = _records()
    try:
        with ExitStack() as stack, _unavailable_parts():
            if commit:  # it relabels the store; a dry run only reads it
                _lock_store(settings, "triage taxonomy migrate --commit", stack)
            service = stack.enter_context(running_service(settings, progress=not as_json))
            lifecycle = Lifecycle(service, records)
            before = before or lifecycle.previous_taxonomy()
            with tqdm(desc="tickets", unit="ticket", disable=as_json) as bar:
                def advance(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                report = lifecycle.migrate_taxonomy(before, commit=commit, reviewed_sample=reviewed_sample, progress=advance)  # type: ignore[arg-type]
    except (Invalid, NotFound, StoreUnavailable, TaxonomyError) as exc:
        fail(f"{exc}" + ("; or pass its YAML with --previous PATH" if isinstance(exc, NotFound) else ""))
    finally:
        records.close()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    verb = "changed" if commit else "would change"
    typer.secho(f"{report.previous} -> {report.target}{'' if commit else ' (dry run: nothing written)'}", bold=True)
    typer.echo(f"{report.tickets} tickets: {report.changed} {verb} ({report.reasked} re-asked, {report.ruled} by rules), "
               f"{report.unchanged} unchanged, "
               f"{report.already_current} already on {report.target}")
    for axis, moves in report.transitions.items():
        for move, n in sorted(moves.items(), key=lambda kv: -kv[1]):
            typer.echo(f"  {axis}: {move}  {n}")
    if report.reviewed_tickets:
        scores = ", ".join(f"{axis} {acc:.1%}" for axis, acc in report.reviewed_accuracy.items())
        typer.echo(f"agent vs leads on {report.reviewed_tickets} reviewed tickets under {report.target}: {scores}")
    if commit:
        typer.echo(f"wrote {report.revisions_written} revisions; relabelled {report.store_relabelled} stored tickets")
    elif report.changed:
        typer.echo("run again with --commit to write them")


# ---------------------------------------------------------------- records: keys, tickets, history

keys_app = typer.Typer(help="API keys for the HTTP API (scopes: bot < lead < admin).", no_args_is_help=True)
tickets_app = typer.Typer(help="Stored tickets and their current labels.", no_args_is_help=True)
db_app = typer.Typer(help="The records database (SQLite under data/, or TRIAGE_DATABASE_URL).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tickets_app, name="tickets")
app.add_typer(db_app, name="db")


def _records() -> Records:
    from sqlalchemy.exc import SQLAlchemyError

    from agent.records import Records, RecordsError, open_problem

    settings = _settings()
    if settings.database_url is None:
        _check_data_dir(settings)
    try:
        return Records.open(settings)
    except (SQLAlchemyError, RecordsError, OSError) as exc:
        message, configuration = open_problem(exc, settings.resolved_database_url)
        fail(message, 2 if configuration else 1)  # a wrong URL is the user's to fix; a server down is a runtime failure
    raise AssertionError("unreachable")


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="bot (classify, tickets, messages), lead (+ reviews, queue) or admin (+ keys).")],
    name: Annotated[str, typer.Option(help="Who uses it; shown as the actor user:NAME in revisions.")],
) -> None:
    """Create an API key and print it once (only its hash is stored).

    Example: triage keys create --scope lead --name alice
    """
    from agent.auth import create_key

    records = _records()
    try:
        secret, info = create_key(records, scope=scope, name=name)
    except ValueError as exc:
        fail(str(exc))
    finally:
        records.close()
    typer.echo(secret)
    typer.secho(
        f"key {info.id} ({info.scope}, {info.name}): shown once, only its hash is stored; send it as "
        "`Authorization: Bearer <key>`",
        err=True,
    )


@keys_app.command("list")
def keys_list() -> None:
    """List the keys (ids, names, scopes, active or revoked; never the secrets). Prints nothing when there is none.

    Example: triage keys list
    """
    from agent.auth import list_keys

    records = _records()
    try:
        keys = list_keys(records)
    finally:
        records.close()
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        typer.echo(f"{key.id}  {key.scope:5}  {key.name:24} {state}  created {key.created_at:%Y-%m-%d %H:%M} by {key.created_by}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...), as `triage keys list` shows it; not the secret.", show_default=False)]) -> None:
    """Revoke a key; it is refused (401) from the next request on. The key stays listed, marked revoked.

    Example: triage keys revoke key_01m93qkggr535e4j5dznh2cms1
    """
    from agent.auth import revoke_key

    records = _records()
    try:
        info = revoke_key(records, key_id)
    except LookupError as exc:
        fail(str(exc))
    finally:
        records.close()
    typer.echo(f"revoked {info.id} ({info.name})")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (the API does this on start; use it before rolling out several workers).

    It opens the records of TRIAGE_DATABASE_URL, or SQLite at TRIAGE_DATA_DIR/triage.db (created if missing), and
    says which; running it again changes nothing.

      TRIAGE_DATABASE_URL=postgresql://triage@db-host/triage triage db upgrade
    """
    records = _records()
    records.close()
    from agent.records import display_url

    typer.echo(f"records at {display_url(_settings().resolved_database_url)} are at the current schema")


def _one_line(text: str) -> str:
    """An actor as one terminal line: a key named before names were restricted may hold a line break, an escape
    sequence or a bidi control that forges or reorders timeline lines, so those are shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _labels_line(labels: dict[str, str] | None) -> str:
    if not labels:
        return "(no labels)"
    return " · ".join(labels.get(axis, "?") for axis in ("service", "tier", "channel"))


@tickets_app.command("show")
def tickets_show(ticket_id: Annotated[str, typer.Argument(help="The ticket's id (tk_...), as `triage tickets list` or the API shows it.", show_default=False)], as_json: Annotated[bool, typer.Option("--json", help="Print the ticket JSON.")] = False) -> None:
    """A ticket, its thread and its current labels.

    Example: triage tickets show tk_01m93qqtft6vmd48n44j0d2n3m --json
    """
    from agent.reader import LifecycleError, TicketReader

    records = _records()
    try:
        view = TicketReader(records).ticket(ticket_id)
    except LifecycleError as exc:
        fail(str(exc))
    finally:
        records.close()
    if as_json:
        typer.echo(view.model_dump_json(indent=2))
        return
    typer.secho(f"{view.id}  {view.subject or '(no subject)'}", bold=True)
    typer.echo(f"channel {view.channel or '-'} · created {view.created_at:%Y-%m-%d %H:%M:%S} by {view.created_by} · {view.revisions} revisions")
    current = view.current
    if current is None:
        typer.secho("current: no labels (every agent proposal was rejected); a lead sets them with an edit review", fg=typer.colors.YELLOW)
    else:
        typer.echo(f"current: #{current.seq} {_labels_line(current.labels)}  [{view.decision}, {_one_line(current.actor)}]")
        if current.classification:
            typer.echo(f"route:   {current.classification.route.team}")
        if current.suggestion:
            typer.secho("agent suggests: " + ", ".join(f"{a} {s.label}" for a, s in current.suggestion.items()), fg=typer.colors.YELLOW)
    if view.in_queue:
        typer.secho("waiting in the review queue", fg=typer.colors.YELLOW)
    typer.echo("\n" + (view.body or "").strip())
    for message in view.messages:
        typer.echo(f"\n[{message.seq}] {message.author} · {message.created_at:%Y-%m-%d %H:%M:%S}\n{message.text.strip()}")


@tickets_app.command("list")
def tickets_list(
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many, newest first.")] = 20,
    queue: Annotated[bool, typer.Option("--queue", help="Only the review queue (needs_review first, lowest confidence first).")] = False,
) -> None:
    """The newest tickets with their current labels, or the review queue: id, decision, confidence, labels
    (service · tier · channel) and subject, one a line. Prints nothing when there is none.

      triage tickets list --limit 50

      triage tickets list --queue
    """
    from agent.reader import TicketReader

    records = _records()
    try:
        reader = TicketReader(records)
        items = reader.review_queue(limit=limit).items if queue else reader.list_tickets(limit=limit).items
    finally:
        records.close()
    for item in items:
        confidence = f"{item.confidence:.2f}" if item.confidence is not None else "  - "
        typer.echo(f"{item.id}  {item.decision or '-':12} {confidence}  {_labels_line(item.labels):40} {item.subject[:50]}")


@tickets_app.command("export")
def tickets_export(
    out: Annotated[Path, typer.Option("--out", help="File to write: .csv (RFC-4180, multi-line fields quoted) or .jsonl.")],
    test_share: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Also split: this share goes to OUT's .test twin, the rest to .train (by ticket id, stable across exports).")
    ] = 0.0,
) -> None:
    """Export the tickets leads reviewed (accepted or edited) as a labelled file for `triage eval`.

    Each row holds the labels the lead stood behind (a later rejection removes the review; labels reviewed before a
    taxonomy migration in the ids of the version in force) and the thread as the lead saw it. Use it to measure the agent on your own tickets and to re-fit the auto-apply thresholds on them:
    after a split export it prints the `triage eval` command that does both.

      triage tickets export --out reviewed.csv --test-share 0.2

      triage tickets export --out all-reviewed.jsonl
    """
    from agent.export import ExportError, check_path, scoring_advice, split_paths, too_few_to_score, write_reviewed
    from agent.reader import TicketReader

    try:
        check_path(out, test_share)  # before the records are opened: a wrong name touches nothing
    except ExportError as exc:
        fail(f"--out: {exc}")
    taxonomy = _load_taxonomy(_settings().taxonomy_path)  # labels reviewed before a migration are written in its ids
    records = _records()
    try:
        counts = write_reviewed(TicketReader(records, taxonomy).reviewed(), out, test_share=test_share)
    except ExportError as exc:
        fail(f"--out: {exc}")
    finally:
        records.close()
    for path, n in counts.items():
        typer.echo(f"{path}: {n} reviewed tickets")
    if not sum(counts.values()):
        typer.secho("no reviewed ticket yet: accept or edit tickets in the review queue first", fg=typer.colors.YELLOW)
    elif test_share:
        settings, paths = _settings(), split_paths(out, test_share)
        too_few = too_few_to_score({side: counts[path] for side, path in paths.items()})
        if too_few:
            typer.secho(too_few, fg=typer.colors.YELLOW)
            return
        typer.echo(scoring_advice(paths, settings.taxonomy_path))


@app.command()
def history(ticket_id: Annotated[str, typer.Argument(help="The ticket's id (tk_...), as `triage tickets list` or the API shows it.", show_default=False)], as_json: Annotated[bool, typer.Option("--json", help="Print the revisions JSON.")] = False) -> None:
    """The revision timeline of a ticket: who changed which labels, when and why (nothing is ever overwritten).

    `*` marks the revision in force; a rejected revision says which one rejected it.

    Example: triage history tk_01m93qqtft6vmd48n44j0d2n3m
    """
    from agent.reader import LifecycleError, TicketReader

    records = _records()
    try:
        reader = TicketReader(records)
        view = reader.ticket(ticket_id)
        revisions = reader.revisions(ticket_id)
    except LifecycleError as exc:
        fail(str(exc))
    finally:
        records.close()
    if as_json:
        typer.echo("[" + ",\n".join(r.model_dump_json(indent=2) for r in revisions) + "]")
        return
    from agent.revisions import current_seq

    typer.secho(f"{view.id}  {view.subject or '(no subject)'}", bold=True)
    previous: dict[str, str] = {}
    for i, rev in enumerate(revisions):
        mark = "*" if rev.seq == view.current_seq else " "
        action = f" {rev.review.action}" if rev.review else ""
        head = f"{mark}#{rev.seq:<3} {rev.created_at:%Y-%m-%d %H:%M:%S}  {rev.reason:13} {_one_line(rev.actor)}{action}"
        typer.secho(head, bold=rev.seq == view.current_seq)
        if rev.rejects is not None:
            back = current_seq(revisions[: i + 1])
            in_force = next((r.labels for r in revisions if r.seq == back), None) if back is not None else None
            typer.echo(f"       rejects #{rev.rejects}; in force again: " + (f"#{back} {_labels_line(in_force)}" if in_force else "no labels"))
            previous = dict(in_force or {})
        elif rev.labels:
            changes = [f"{axis} {previous.get(axis, '-')} -> {rev.labels[axis]}" for axis in rev.changed_axes if axis in rev.labels]
            decision = rev.classification.decision.value if rev.classification else ""
            typer.echo(f"       {_labels_line(rev.labels)}  [{decision}]" + (f"  changed: {', '.join(changes)}" if changes else "  (no change)"))
            previous = dict(rev.labels)
        if rev.suggestion:
            typer.echo("       agent suggested: " + ", ".join(f"{a} {s.label}" for a, s in rev.suggestion.items()))
        if rev.note:
            typer.echo(f"       note: {rev.note}")
        if rev.rejected_by is not None:
            typer.secho(f"       rejected by #{rev.rejected_by}", fg=typer.colors.RED)
    typer.echo(f"(* = current: {_labels_line(view.labels)})" if view.current_seq else "(no current labels)")


def _register_eval() -> None:
    """`triage eval` lives with the harness in `evals/`; imported lazily so other commands start fast."""
    try:
        from evals.cli import eval_command
    except ImportError:  # the harness is not installed in this environment
        return
    app.command("eval")(eval_command)


_register_eval()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
