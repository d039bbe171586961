"""`triage eval`: the typer command (registered by agent/cli.py). All the work is in evals.runner."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from agent.taxonomy import TaxonomyError
from evals.datasets import DatasetError, parse_label_specs, parse_text_columns


def eval_command(
    train: Annotated[Path, typer.Option("--train", help="Labelled file the agent may learn from (CSV or JSONL). It is stored as past tickets, trains the proposal head and, by cross-validation, fits the confidence model and the auto-apply thresholds. Nothing is fitted on --test.")],
    test: Annotated[Path, typer.Option("--test", help="Labelled file to score (CSV or JSONL, same columns as --train). Each file is self-contained.")],
    text: Annotated[str, typer.Option("--text", help="Text column(s), comma-separated; several are joined with a blank line, e.g. --text subject,body.")],
    label: Annotated[list[str], typer.Option("--label", metavar="AXIS=COLUMN", help="Score the agent's axis service, channel or tier against COLUMN; repeat for several axes, e.g. --label service=queue --label tier=priority. An intent, category or queue column is scored on service: --label service=intent.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: metrics.json, predictions.jsonl, report.md, PNG plots, calibration.json, and the run's own Chroma store under data/. Re-running with the same --out resumes: rows already in predictions.jsonl are skipped.")],
    taxonomy: Annotated[str | None, typer.Option("--taxonomy", help="Taxonomy YAML whose label ids the data uses, or 'auto' to derive each scored axis's labels from --train (raw values become safe ids; reports show the raw values). Default: the taxonomy in force (TRIAGE_TAXONOMY_PATH). A test label the taxonomy lacks counts as an error for that row.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="proposal: retrieval + calibrated head, no LLM (fast). llm: the LLM alone with the taxonomy descriptions. hybrid: the graph as shipped. llm/hybrid start the embedded LLM unless TRIAGE_LLM_BASE_URL is set.")] = "proposal",
    limit: Annotated[int | None, typer.Option("--limit", help="Score a seeded random sample of N test rows (the same N and --seed give the same rows).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --limit sampling and the cross-validation folds, 0 to 4294967295.")] = 0,
    target_precision: Annotated[float, typer.Option("--target-precision", help="Precision the per-class auto-apply thresholds aim for (fitted on train), above 0 and below 1; metrics.json reports the coverage and precision reached on test.")] = 0.9,
    oos_label: Annotated[str | None, typer.Option("--oos-label", help="Label value that marks out-of-scope rows: dropped from train; in test the agent must flag them out_of_scope. Adds recall and in-scope accuracy to metrics.json.")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="Also write the fitted calibration JSON here (the format `decide` reads, e.g. knowledge_base/taxonomies/default.calibration.json); an existing file is replaced. Always written to DIR/calibration.json. Not with --mode llm, which fits none.")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Embedding cache (SQLite, keyed by model and text), shared by runs so a train file is embedded once. Default: data/cache/ under TRIAGE_DATA_DIR.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars; print only the metrics JSON.")] = False,
) -> None:
    """Score the agent on a labelled file: accuracy, macro-F1, calibration, auto-apply coverage, latency, tokens.

    Examples:

      triage eval --train train.csv --test test.csv --text text --label service=category --taxonomy auto --out runs/b77

      triage eval --train t.jsonl --test v.jsonl --text subject,body --label service=queue --label tier=tier --mode hybrid --limit 100 --out runs/h

      triage eval ... --oos-label oos --calibration knowledge_base/taxonomies/default.calibration.json
    """
    from agent.embeddings import EmbeddingError, EmbeddingSettingError
    from agent.store import StoreUnavailable
    from evals.runner import EvalConfig, EvalError, run_eval  # the graph and the models: only when a run starts

    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        cfg = EvalConfig(
            train=train,
            test=test,
            text=parse_text_columns(text),
            labels=parse_label_specs(label),
            out=out,
            taxonomy="auto" if taxonomy is not None and taxonomy.strip().lower() == "auto" and not Path(taxonomy).exists() else taxonomy,
            mode=mode,
            limit=limit,
            seed=seed,
            target_precision=target_precision,
            oos_label=oos_label,
            calibration=calibration,
            cache_dir=cache_dir,
        )
        metrics = run_eval(cfg, progress=not quiet)
    except (KeyboardInterrupt, _Stopped) as exc:
        # the cross-validation's worker processes are stopped on the way out (joblib aborts them on any exception)
        typer.secho(f"interrupted: the rows done are kept in {out / 'predictions.jsonl'}; run the same command again to resume", err=True)
        raise typer.Exit(128 + (exc.args[0] if isinstance(exc, _Stopped) else signal.SIGINT)) from None
    except (DatasetError, EvalError, TaxonomyError, EmbeddingSettingError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except (EmbeddingError, StoreUnavailable) as exc:  # a part down or damaged: exit 1, as in every command
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:
        if not exc.filename:
            raise
        # a disk that filled up or a path that became unwritable mid-run: finished rows are in predictions.jsonl
        typer.secho(f"error: cannot write or read {exc.filename}: {exc.strerror or exc}; fix that and run the same command again to resume", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(json.dumps(metrics, indent=2))
    if not quiet:
        typer.secho(f"report: {out / 'report.md'}", bold=True, err=True)


class _Stopped(BaseException):
    """SIGTERM unwinds like Ctrl-C: Python's default ended the process at once and left the cross-validation's two
    worker processes running as orphans (about 250 MB each), and `kill`, `timeout` or a CI job's cancel send SIGTERM.
    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way records it as a failed row."""


def _stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)
