"""The `triage` command line: serve, classify, ingest, taxonomy, eval.

Every command works offline on the embedded default; `TRIAGE_LLM_BASE_URL` points it at any
OpenAI-compatible endpoint instead.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from agent.contracts import Classification, TicketIn
from agent.service import TicketError, TriageService, running_service
from agent.settings import Mode, Settings
from agent.taxonomy import TaxonomyError, load_taxonomy

app = typer.Typer(
    help="LLM-assisted ticket triage: service type, channel and support tier from a taxonomy, offline by default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
taxonomy_app = typer.Typer(help="Inspect and validate taxonomy files.", no_args_is_help=True)
app.add_typer(taxonomy_app, name="taxonomy")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings(mode: Mode | None = None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"bad TRIAGE_* setting: {exc}")
    return settings.model_copy(update={"mode": mode}) if mode else settings


def _read_ticket(subject: str | None, body: str | None, channel: str | None, file: Path | None) -> TicketIn:
    raw: dict[str, object]
    if file is not None:
        source = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        try:
            raw = json.loads(source)
        except json.JSONDecodeError as exc:
            fail(f"{file} is not a JSON ticket ({exc}); expected {{\"subject\", \"body\", \"channel\"?, \"messages\"?}}")
    elif subject is None and body is None and not sys.stdin.isatty():
        text = sys.stdin.read()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raw = {"body": text}
    else:
        raw = {"subject": subject or "", "body": body or ""}
    if channel is not None:
        raw["channel"] = channel
    try:
        return TicketIn.model_validate(raw)
    except ValidationError as exc:
        fail(f"invalid ticket: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
    raise AssertionError("unreachable")


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
    subject: Annotated[Optional[str], typer.Option(help="Ticket subject line.")] = None,
    body: Annotated[Optional[str], typer.Option(help="Ticket body text.")] = None,
    channel: Annotated[Optional[str], typer.Option(help="Intake channel (email, phone, chat, social, portal, api); taken as is.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="A JSON ticket file ({subject, body, channel?, messages?}); '-' for stdin.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the classification JSON contract.")] = False,
    mode: Annotated[Optional[str], typer.Option(help="hybrid (default), proposal (no LLM) or llm.")] = None,
) -> None:
    """Classify one ticket.

    Examples:

      triage classify --subject "Charged twice" --body "Refund one, please." --channel email

      echo '{"subject": "VPN down", "body": "Nobody can connect"}' | triage classify --json

      triage classify --file ticket.json --mode proposal
    """
    if mode not in (None, "hybrid", "proposal", "llm"):
        fail(f"--mode must be hybrid, proposal or llm, not {mode!r}")
    ticket = _read_ticket(subject, body, channel, file)
    settings = _settings(mode)  # type: ignore[arg-type]
    try:
        with running_service(settings, progress=not as_json) as service:
            result = service.classify(ticket)
    except (TicketError, TaxonomyError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        _print_human(result)


@app.command()
def ingest(
    seed: Annotated[Optional[Path], typer.Option(help="Labelled tickets JSONL (default: knowledge_base/seed/tickets.jsonl).")] = None,
    articles: Annotated[Optional[Path], typer.Option(help="KB articles JSONL (default: knowledge_base/articles/articles.jsonl).")] = None,
) -> None:
    """Seed the vector store with labelled tickets and KB articles (idempotent), then train the proposal head."""
    settings = _settings("proposal")
    try:
        service = TriageService(settings)
        report = service.ingest(seed_path=seed, articles_path=articles, progress=True)
    except (TaxonomyError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(
        f"tickets: +{report.tickets_added} (total {report.tickets_total}, skipped {report.skipped}) · "
        f"articles: +{report.articles_added} (total {report.articles_total}) · store: {settings.data_dir}"
    )


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="API port (default 8000).")] = None,
) -> None:
    """Serve the HTTP API (and start the embedded LLM when no endpoint is configured). Ctrl-C stops all."""
    import uvicorn

    from agent.api import create_app

    settings = _settings()
    host, port = host or settings.api_host, port or settings.api_port
    typer.secho(f"API on http://{host}:{port}  (docs: http://{host}:{port}/docs) · data in {settings.data_dir}", bold=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@taxonomy_app.command("validate")
def taxonomy_validate(path: Path) -> None:
    """Check a taxonomy YAML file; exits 0 and prints its label counts when it is usable."""
    try:
        taxonomy = load_taxonomy(path)
    except TaxonomyError as exc:
        fail(str(exc))
    counts = ", ".join(f"{axis}: {len(axis_def.labels)}" for axis, axis_def in taxonomy.axes.items())
    typer.echo(f"{taxonomy.ref} is valid ({counts})")


@taxonomy_app.command("show")
def taxonomy_show(path: Annotated[Optional[Path], typer.Argument(help="Default: the taxonomy in force.")] = None) -> None:
    """Print the labels of a taxonomy with their routing."""
    try:
        taxonomy = load_taxonomy(path or Settings().taxonomy_path)
    except TaxonomyError as exc:
        fail(str(exc))
    typer.secho(taxonomy.ref, bold=True)
    for axis, axis_def in taxonomy.axes.items():
        typer.secho(f"\n{axis} (fallback {axis_def.fallback})", bold=True)
        for label in axis_def.labels:
            route = f"  -> {label.routing.team}" if label.routing else ""
            typer.echo(f"  {label.id:24} {label.name}{route}")


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
