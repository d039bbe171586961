"""`triage eval`: train the agent on one labelled file, classify another, and report.

What happens, in order (also in evals/README.md):
1. Read train and test (CSV or JSONL); join the text columns; map raw labels to taxonomy ids (`--taxonomy auto`
   derives the scored axes' labels from train). Train rows with the `--oos-label` are dropped.
2. Embed train (cached on disk by text), fit the auto-apply thresholds and the out-of-scope threshold by
   cross-validation on train only, and write the calibration file.
3. Store train as labelled tickets in a fresh Chroma under DIR/data, fit the proposal head on them.
4. Embed the test rows still to do in batches (into the cache the graph's retrieve node reads), then classify
   each through the real graph (`TriageService.classify`) in the chosen mode, appending one line per row to
   DIR/predictions.jsonl (a re-run with the same DIR skips the rows already there).
5. Score: metrics.json (fixed keys), report.md, PNG plots.
Nothing is fitted on the test file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from agent.contracts import AXES, AxisDef, LabelDef, LabelledTicket, Taxonomy, TicketIn
from agent.embeddings import Embedder
from agent.export import MIN_TRAIN_ROWS
from agent.llm import LLMClient
from agent.nodes.normalize import clean, redact, thread_text, ticket_text
from agent.proposal import HeadOptions, ProposalHead
from agent.service import TicketError, TriageService, embedding_model_name, load_head, make_embedder
from agent.service import llm_for as service_llm_for
from agent.settings import Settings, vote_weight_for
from agent.store import TICKETS
from agent.taxonomy import load_taxonomy
from evals import calibration as cal
from evals.datasets import DatasetError, EvalRow, LabelCodec, is_oos_row, load_rows, unknown_labels

log = logging.getLogger(__name__)

MODES = ("proposal", "llm", "hybrid")
RUN_FORMAT = 2  # 2: calibrations carry confidence models (a cached calibration of format 1 is re-fitted)


@dataclass
class EvalConfig:
    train: Path
    test: Path
    text: list[str]
    labels: dict[str, str]
    out: Path
    taxonomy: str | None = None  # a YAML path, "auto", or None for the taxonomy in force (TRIAGE_TAXONOMY_PATH)
    mode: str = "proposal"
    limit: int | None = None
    seed: int = 0
    target_precision: float = 0.9
    oos_label: str | None = None
    calibration: Path | None = None
    folds: int | None = None  # calibration folds; None: evals.calibration.default_folds(train rows)
    head: HeadOptions = field(default_factory=HeadOptions)
    cache_dir: Path | None = None  # embedding cache; default <data_dir>/cache, shared across runs
    max_false_flag: float = 0.08  # out-of-scope budget on held-out in-scope train rows (measured: evals/README.md)
    oos_score: str = "learned"  # the in-scope score (agent/out_of_scope.py; measured: evals/README.md, "Out of scope")

    def _spec(self, train_sha: str, embedder: str, taxonomy_sha: str | None = None) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "train": train_sha,
            "embedder": embedder,
            "text": self.text,
            "labels": self.labels,
            "taxonomy": self.taxonomy,
            "seed": self.seed,
            "target_precision": self.target_precision,
            "oos_label": self.oos_label,
            "folds": self.folds,
            "head": asdict(self.head),
            "max_false_flag": self.max_false_flag,
            "oos_score": self.oos_score,
            **({"oos_fit": cal.oos_fit_spec()} if self.oos_label is not None else {}),
            # the taxonomy file's content, not its path: its ids decide which train labels are learned
            **({"taxonomy_sha": taxonomy_sha} if taxonomy_sha is not None else {}),
        }

    def calibration_fingerprint(self, train_sha: str, embedder: str, taxonomy_sha: str | None = None) -> str:
        """What the fitted calibration depends on (not the test file, the mode or the sample)."""
        return _digest(self._spec(train_sha, embedder, taxonomy_sha))

    def fingerprint(
        self, train_sha: str, test_sha: str, embedder: str, llm: dict[str, Any] | None = None, taxonomy_sha: str | None = None
    ) -> str:
        """`llm` (the endpoint, model and vote weights) counts in llm/hybrid mode only: a resumed run must not mix
        rows labelled by two models or weights, and a proposal run does not depend on them."""
        spec = {**self._spec(train_sha, embedder, taxonomy_sha), "test": test_sha, "mode": self.mode, "limit": self.limit}
        if self.mode != "proposal" and llm:
            spec["llm"] = llm if self.mode == "hybrid" else {k: v for k, v in llm.items() if k != "vote_weight"}  # llm: weight 1
        return _digest(spec)


def llm_identity(settings: Settings) -> dict[str, Any]:
    """What an llm/hybrid run's labels depend on besides the data: the endpoint, the model, the vote weights."""
    return {
        "base_url": settings.llm_base_url or "embedded",
        "model": settings.llm_model,
        "vote_weight": {axis: vote_weight_for(axis, settings.llm_vote_weight) for axis in AXES},
    }


def taxonomy_file(cfg: EvalConfig, settings: Settings) -> Path | None:
    """The taxonomy file whose ids the data must use: --taxonomy PATH, else the one in force; None for `auto`
    (the labels then come from the train file, already fingerprinted by its content)."""
    if cfg.taxonomy == "auto":
        return None
    return Path(cfg.taxonomy) if cfg.taxonomy else settings.taxonomy_path


def taxonomy_sha(cfg: EvalConfig, settings: Settings, train: Sequence[EvalRow] = ()) -> str | None:
    """The content of the taxonomy file in use, for the fingerprints: an edited taxonomy (a label added or
    removed) changes which train labels are learned, so neither a cached calibration and head nor a run
    directory made with the old one may be reused. With `auto` and `train`: the label spellings merged into one
    id (LabelCodec.derive), if any; a calibration or head cached before spellings were merged has other ids."""
    if cfg.taxonomy == "auto":
        merged = LabelCodec.derive({axis: [r.labels.get(axis, "") for r in train] for axis in cfg.labels}).merged_spellings()
        return _digest({"merged_spellings": merged}) if merged else None
    path = taxonomy_file(cfg, settings)
    return file_sha(path) if path is not None and path.is_file() else None


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


class EvalError(ValueError):
    """A run that cannot go on as asked; the message says what to change."""


# ---------------------------------------------------------------- embedding cache


class CachedEmbedder:
    """Wraps an embedder with an on-disk cache keyed by (model name, text): bench re-runs embed nothing twice."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            # a cache, written one ticket at a time while classifying: WAL with synchronous=NORMAL commits without an
            # fsync (3.5 ms a ticket otherwise, 11 s of the Banking77 protocol); a power cut may lose the last few vectors
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, dim INTEGER, data BLOB)")
        except sqlite3.DatabaseError as exc:
            raise EvalError(
                f"the embedding cache {path} cannot be used ({exc}); delete it (it is only a cache) or pass another --cache-dir"
            ) from None

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.name}\x00{text}".encode()).hexdigest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, _dim, data in self._db.execute(f"SELECT key, dim, data FROM vec WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(data, dtype=np.float32)
        todo = [(k, t) for k, t in dict(zip(keys, texts, strict=True)).items() if k not in found]
        if todo:
            vectors = self.inner.embed([t for _, t in todo])
            rows = []
            for (key, _), vec in zip(todo, vectors, strict=True):
                vec = np.asarray(vec, dtype=np.float32)
                found[key] = vec
                rows.append((key, int(vec.shape[0]), vec.tobytes()))
            self._db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?, ?)", rows)
            self._db.commit()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack([found[k] for k in keys]).astype(np.float32)

    def embed_batched(self, texts: Sequence[str], *, batch: int = 256, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        chunks = range(0, len(texts), batch)
        parts = [self.embed(texts[i : i + batch]) for i in tqdm(chunks, desc=desc, unit="batch", disable=not progress or len(texts) <= batch)]
        return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------- taxonomy


def derive_taxonomy(train: Sequence[EvalRow], axes: Sequence[str], base: Taxonomy, source: str) -> tuple[Taxonomy, LabelCodec]:
    """`--taxonomy auto`: the scored axes' labels from the train file, the other axes copied from `base`."""
    codec = LabelCodec.derive({axis: [r.labels.get(axis, "") for r in train] for axis in axes})
    new_axes: dict[str, AxisDef] = {name: base.axes[name] for name in AXES}
    for axis in axes:
        # by id: spellings of one label apart from case and spaces are one label (LabelCodec.derive)
        counts = Counter(codec.encode(axis, r.labels.get(axis, "")) for r in train if r.labels.get(axis))
        if not counts:
            raise EvalError(f"the train file has no label for axis {axis!r}")
        labels = []
        for label_id, n in sorted(counts.items(), key=lambda kv: natural_key(codec.decode(axis, kv[0] or ""))):
            assert label_id is not None, "every train value is in the codec derived from train"
            raw = codec.decode(axis, label_id)
            example = next((r.text for r in train if codec.encode(axis, r.labels.get(axis, "")) == label_id and 20 <= len(r.text) <= 200), "")
            example = " ".join(example.split())[:160]
            description = f"Tickets labelled {raw!r} in {source} ({n} training examples)."
            if example:
                description += f' For example: "{example}"'
            labels.append(LabelDef(id=label_id, name=raw, description=description))
        fallback = counts.most_common(1)[0][0]
        new_axes[axis] = AxisDef(description=f"Labels of column for axis {axis} in {source}.", fallback=fallback, labels=labels)
    taxonomy = Taxonomy(name=f"auto-{_safe_name(source)}", version="1", description=f"Derived from {source} by `triage eval --taxonomy auto`.", axes=new_axes)
    return taxonomy, codec


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key with numbers in text read as numbers: 'P2' before 'P10', '9' before '10'. The tier axis ranks its
    labels as listed and the service refuses numbered tiers listed out of order, so a tier column 1..12 sorted as
    text ('1', '10', '11', '12', '2', ...) made the derived taxonomy.yaml unreadable and stopped the run."""
    return tuple((0, int(part)) if part.isdecimal() else (1, part.casefold()) for part in re.split(r"(\d+)", text) if part)


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)[:60] or "eval"


def write_taxonomy(taxonomy: Taxonomy, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = taxonomy.model_dump(mode="json", exclude_defaults=False)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")


# ---------------------------------------------------------------- helpers


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def normalized(text: str) -> str:
    """The text as the graph's normalize node leaves it, so train and test are embedded alike."""
    return redact(clean(thread_text([text])))


def sample_rows(rows: list[EvalRow], limit: int | None, seed: int) -> list[EvalRow]:
    if limit is None or limit >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


@contextmanager
def llm_for(settings: Settings, mode: str) -> Iterator[LLMClient | None]:
    """The LLM client for llm/hybrid modes: TRIAGE_LLM_BASE_URL if set, else the embedded server."""
    with service_llm_for(settings.model_copy(update={"mode": "proposal" if mode == "proposal" else "hybrid"})) as llm:
        yield llm


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run: that row is classified again
            done[record["id"]] = record
    return done


def drop_cut_line(path: Path) -> None:
    """Remove a last line cut by a killed run (kill -9, a full disk) before appending: the first row written on
    resume would otherwise join it, be unreadable and be classified again on every later resume, and the file would
    not be valid JSONL. The cut row itself is not in the file, so it is classified again."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, 2)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


def run_predictions(run_dir: Path) -> dict[str, dict[str, Any]]:
    """A run's predictions by row id: its own file, or its folds' (a cross-validated bench run pools metrics, not
    the file)."""
    found: dict[str, dict[str, Any]] = {}
    for path in [run_dir / "predictions.jsonl", *sorted(run_dir.glob("fold*/predictions.jsonl"))]:
        found.update(read_predictions(path))
    return found


def _slim(prediction: dict[str, Any]) -> dict[str, Any]:
    """The Classification JSON without evidence texts (ids and scores stay): small files, no copied data."""
    evidence = prediction.get("evidence", {})
    for ticket in evidence.get("tickets", []):
        ticket.pop("text", None)
        ticket.pop("answer", None)
    for article in evidence.get("articles", []):
        article.pop("text", None)
    return prediction


# ---------------------------------------------------------------- the run


def run_eval(cfg: EvalConfig, *, progress: bool = True, base_settings: Settings | None = None) -> dict[str, Any]:
    if cfg.mode not in MODES:
        raise EvalError(f"--mode must be one of {MODES}, not {cfg.mode!r}")
    if not 0.0 < cfg.target_precision < 1.0:
        raise EvalError(f"--target-precision must be above 0 and below 1, e.g. 0.9 (got {cfg.target_precision:g})")
    if cfg.taxonomy not in (None, "auto") and not Path(cfg.taxonomy).exists():
        raise EvalError(f"--taxonomy {cfg.taxonomy} does not exist; give a taxonomy YAML file, or --taxonomy auto to take the labels from --train")
    if cfg.limit is not None and cfg.limit < 1:
        raise EvalError("--limit must be a positive number of test rows")
    if not 0 <= cfg.seed < 2**32:  # numpy's and scikit-learn's seeds; a negative one failed after the train embedding
        raise EvalError(f"--seed must be a whole number from 0 to {2**32 - 1} (got {cfg.seed})")
    if cfg.mode == "llm" and cfg.calibration is not None:  # it would overwrite PATH with an empty calibration
        raise EvalError("--mode llm fits no calibration (the LLM alone), so there is nothing to write to --calibration; drop it, or use --mode proposal or hybrid")
    check_writable(cfg.out, "--out", directory=True)
    if cfg.cache_dir is not None:
        check_writable(cfg.cache_dir, "--cache-dir", directory=True)
    if cfg.calibration is not None:
        check_writable(cfg.calibration, "--calibration", directory=False)
    started = time.perf_counter()
    out = cfg.out
    base_settings = base_settings or Settings()
    axes = list(cfg.labels)

    no_text: dict[str, list[str]] = {"train": [], "test": []}
    train_rows = load_rows(cfg.train, cfg.text, cfg.labels, skipped=no_text["train"])
    test_rows = sample_rows(load_rows(cfg.test, cfg.text, cfg.labels, skipped=no_text["test"]), cfg.limit, cfg.seed)
    for side, ids in no_text.items():
        if ids:
            log.warning("%d %s row(s) without text left out (%s); they are named in report.md", len(ids), side, ", ".join(ids[:5]))
    warn_empty_labels(test_rows, axes)
    if cfg.oos_label is not None and not any(is_oos_row(r, cfg.oos_label, axes) for r in test_rows):
        log.warning("no test row is labelled %r (--oos-label) on a scored axis: oos.recall is 0 over no rows; check the value", cfg.oos_label)
    kept = in_scope(train_rows, cfg.oos_label, axes)
    dropped_oos = len(train_rows) - len(kept)
    train_rows = kept
    if not train_rows:
        raise EvalError("no train rows left (all are out of scope or lack text)")
    cfg = with_folds(cfg, len(train_rows))

    # taxonomy and label ids
    if cfg.taxonomy == "auto":
        taxonomy, codec = derive_taxonomy(train_rows, axes, load_taxonomy(base_settings.taxonomy_path), cfg.train.name)
    else:
        taxonomy = load_taxonomy(taxonomy_file(cfg, base_settings) or base_settings.taxonomy_path)
        codec = LabelCodec.for_taxonomy(taxonomy, axes)
    warn_unknown_labels(test_rows, codec, axes, cfg.oos_label, taxonomy.ref)
    warn_unlearned_train_labels(train_rows, codec, axes, taxonomy.ref)

    # train as the agent stores it (checked before run.json claims DIR)
    train_texts = [normalized(r.text) for r in train_rows]
    train_labels = {axis: [codec.encode(axis, r.labels.get(axis, "")) for r in train_rows] for axis in axes}
    usable = [i for i in range(len(train_rows)) if any(train_labels[a][i] for a in axes)]
    train_texts = [train_texts[i] for i in usable]
    train_labels = {a: [ys[i] for i in usable] for a, ys in train_labels.items()}
    train_ids = [f"train:{train_rows[i].id}" for i in usable]
    if cfg.mode != "llm" and len(train_texts) < MIN_TRAIN_ROWS:
        raise EvalError(too_few_train_rows(train_rows, codec, axes, len(train_texts), taxonomy.ref))

    # the embedder: `auto` chooses by the train file's language mix (agent.embeddings.choose_packaged_model)
    cache_dir = cfg.cache_dir or base_settings.data_dir / "cache"
    embedder = CachedEmbedder(make_embedder(base_settings, [r.text for r in train_rows]), cache_dir / "embeddings.sqlite")

    # resumability: DIR belongs to one configuration
    train_sha = file_sha(cfg.train)
    llm_id = llm_identity(base_settings)
    tax_sha = taxonomy_sha(cfg, base_settings, train_rows)
    fingerprint = cfg.fingerprint(train_sha, file_sha(cfg.test), embedder.name, llm_id, tax_sha)
    cal_fingerprint = cfg.calibration_fingerprint(train_sha, embedder.name, tax_sha)
    try:  # only now: a run refused for its inputs leaves no empty directory behind
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvalError(f"cannot create --out {out}: {exc.strerror or exc}; give a directory you can write to") from None
    run_file = out / "run.json"
    predictions_path = out / "predictions.jsonl"
    previous: dict[str, Any] = {}
    if run_file.is_file():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            previous = {}
        if not isinstance(previous, dict) or previous.get("fingerprint") != fingerprint:
            raise EvalError(
                f"{out} holds a run with other inputs or options (run.json); pass a new --out, or delete {out} to start over"
            )
    elif predictions_path.exists():
        raise EvalError(f"{out} has predictions.jsonl but no run.json; pass a new --out or delete {out}")
    elif (out / "data").exists():
        # the run's own store goes under DIR/data and replaces what is there: with --out . in a checkout, the service's
        # data/ (its Chroma store of past tickets and its head) was wiped and refilled with the train file
        raise EvalError(
            f"{out} has a data/ directory but no run.json, so it is not a `triage eval` run directory (a service's data "
            f"directory?), and the run would replace the store in it; pass a new --out, e.g. {out / 'eval-run'}"
        )
    run_state = {"fingerprint": fingerprint, "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    run_file.write_text(json.dumps({**previous, **run_state}, indent=2, default=str) + "\n", encoding="utf-8")
    taxonomy_path = out / "taxonomy.yaml"
    write_taxonomy(taxonomy, taxonomy_path)
    calibration_path = out / "calibration.json"
    settings = base_settings.model_copy(
        update={
            "data_dir": out / "data",
            "taxonomy_path": taxonomy_path,
            "calibration_path": calibration_path,
            "mode": cfg.mode,
            "top_k_articles": 0,  # the eval store holds no KB: classification only
        }
    )

    timings: dict[str, float] = {}

    # 2. calibration (cross-validated on train)
    # the same train + options give the same calibration: it is cached beside the embeddings (hybrid reuses proposal's)
    fitted: cal.FittedCalibration
    t0 = time.perf_counter()
    cached_calibration = cache_dir / f"calibration-{cal_fingerprint}.json"
    if cfg.mode == "llm":
        vectors = None
        fitted = cal.FittedCalibration(fitted_on={"fingerprint": cal_fingerprint, "note": "llm mode: nothing fitted, default threshold"})
    elif (cached := read_cached_calibration(cached_calibration)) is not None:
        fitted = cached
        vectors = embedder.embed_batched(train_texts, progress=progress, desc="embedding train")
    else:
        vectors = embedder.embed_batched(train_texts, progress=progress, desc="embedding train")
        fitted = fit_calibration(cfg, train_texts, vectors, train_labels, taxonomy, axes, progress=progress)
        fitted.fitted_on["fingerprint"] = cal_fingerprint
        fitted.write(cached_calibration)
    timings["calibration_s"] = round(time.perf_counter() - t0, 1)
    fitted.write(calibration_path)
    if cfg.calibration is not None and cfg.calibration.resolve() != calibration_path.resolve():
        fitted.write(cfg.calibration)

    # 3. store + head, 4. classify
    predictions = read_predictions(predictions_path)
    todo = [r for r in test_rows if r.id not in predictions]
    with llm_for(settings, cfg.mode) as llm:
        service = TriageService(settings, llm=llm, embedder=embedder)
        t0 = time.perf_counter()
        if cfg.mode != "llm":
            assert vectors is not None
            prepare_store(
                service, train_ids, train_texts, train_labels, vectors, taxonomy, cfg.head,
                cached_head=cache_dir / f"head-{cal_fingerprint}.pkl", progress=progress, svm_scales=_svm_scales(fitted),
            )
        else:
            service.head = None
        timings["train_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        embed_ahead(embedder, todo, settings, progress=progress)
        timings["embed_test_s"] = round(time.perf_counter() - t0, 1)
        drop_cut_line(predictions_path)
        # the bar closes on an interrupt too, so what the command prints then starts on a line of its own
        with predictions_path.open("a", encoding="utf-8") as fh, tqdm(
            total=len(test_rows), initial=len(test_rows) - len(todo), desc=f"classifying ({cfg.mode})", unit="ticket", disable=not progress
        ) as bar:
            for row in todo:
                record = classify_row(service, row, codec, axes, cfg.oos_label)
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                predictions[row.id] = record
                bar.update(1)

    from evals.report import write_outputs

    records = [predictions[r.id] for r in test_rows]
    llm_unanswered = unanswered_by_llm(records, cfg.mode)
    if llm_unanswered:
        log.warning(
            "the LLM gave no answer for %d of %d test rows (%s), so their labels are %s, not the %s mode's: an endpoint "
            "that is down or too slow (TRIAGE_LLM_BASE_URL, TRIAGE_LLM_TIMEOUT_S)? The reason is in each row's warnings in "
            "predictions.jsonl; report.md counts them", len(llm_unanswered), len(records), ", ".join(llm_unanswered[:5]),
            "the proposal's alone" if cfg.mode == "hybrid" else "the taxonomy's fallbacks", cfg.mode,
        )  # fmt: skip
    timings["total_s"] = round(time.perf_counter() - started, 1)
    timings["classified_now"] = len(todo)
    if not todo and previous.get("timings"):
        timings = previous["timings"]  # a pure resume: report the run that did the work
    run_file.write_text(json.dumps({**previous, **run_state, "timings": timings}, indent=2, default=str) + "\n", encoding="utf-8")
    context = {
        "train": str(cfg.train),
        "test": str(cfg.test),
        "n_train": len(train_texts),
        "dropped_oos_train": dropped_oos,
        # rows nobody can score: the report names them so a lead sees that nothing was lost silently
        "left_out": {
            "train_without_text": no_text["train"],
            "train_without_label": len(train_rows) - len(usable),
            "train_unknown_labels": {
                axis: dict(Counter(r.labels[axis] for r in train_rows if r.labels.get(axis) and codec.encode(axis, r.labels[axis]) is None))
                for axis in axes
            },
            "test_without_text": no_text["test"],
            "test_without_label": {axis: [r.id for r in test_rows if not r.labels.get(axis)] for axis in axes},
        },
        "taxonomy": taxonomy.ref,
        "embedder": embedder.name,
        "head": asdict(cfg.head),
        "timings": timings,
        "mode": cfg.mode,
        "llm": llm_id if cfg.mode != "proposal" else None,
        "llm_unanswered": llm_unanswered,
    }
    return write_outputs(out, records, axes=axes, codec=codec, fitted=fitted, cfg=cfg, context=context)


def unanswered_by_llm(records: Sequence[dict[str, Any]], mode: str) -> list[str]:
    """Ids of the classified rows an llm/hybrid run got no LLM answer for (unreachable, timed out, invalid after the
    re-asks): `decide` then labels them without it, so the run measured those rows in another mode."""
    if mode == "proposal":
        return []
    return [r["id"] for r in records if r.get("prediction") and (r.get("vote") or {}).get("llm_confidence") is None]


def check_writable(path: Path, flag: str, *, directory: bool) -> None:
    """Refuse an output path that cannot be written before any work is done (the calibration alone takes minutes on a
    large train file): a file where a directory is wanted or the reverse, a parent that is a file, no write access."""
    if directory and path.exists() and not path.is_dir():
        raise EvalError(f"{flag} {path} is a file; give a directory: a new one, or a run directory to resume")
    if not directory and path.is_dir():
        raise EvalError(f"{flag} {path} is a directory; give a file path, e.g. {path / 'calibration.json'}")
    parent = path if directory and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise EvalError(f"{flag} {path}: {parent} is a file, not a directory; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EvalError(f"{flag} {path}: {parent} is not writable; give a path you can write to")


def too_few_train_rows(train_rows: Sequence[EvalRow], codec: LabelCodec, axes: Sequence[str], usable: int, taxonomy_ref: str) -> str:
    """Why the proposal has nothing to learn from: nearly always train labels that the taxonomy lacks (a taxonomy
    file or the one in force, where `--taxonomy auto` was meant), which the bare count did not say."""
    unknown: Counter[str] = Counter()
    for values, _ in unknown_labels(train_rows, codec, axes).values():
        unknown.update(values)
    if not unknown:
        return f"only {usable} train row(s) have a label on the scored axes; the proposal needs at least {MIN_TRAIN_ROWS} labelled train rows"
    shown = ", ".join(repr(v) for v, _ in unknown.most_common(3))
    return (
        f"only {usable} train row(s) have a label in taxonomy {taxonomy_ref}; {sum(unknown.values())} have labels it lacks ({shown}); "
        "pass --taxonomy auto to learn the train file's labels, or the taxonomy they come from"
    )


def warn_empty_labels(test_rows: Sequence[EvalRow], axes: Sequence[str]) -> None:
    """On the console: test rows whose gold cell is empty are not scored on that axis (report.md names them)."""
    for axis in axes:
        empty = [r.id for r in test_rows if not r.labels.get(axis)]
        if empty:
            log.warning("%d test row(s) have an empty %s label and are not scored on %s (%s); they are named in report.md",
                        len(empty), axis, axis, ", ".join(empty[:5]))


def warn_unlearned_train_labels(train_rows: Sequence[EvalRow], codec: LabelCodec, axes: Sequence[str], taxonomy_ref: str) -> None:
    """On the console, not only in report.md: train labels a taxonomy file lacks are not learned, so their test rows
    can only be wrong; a taxonomy that does not cover the train file is usually the wrong one."""
    for axis, (unknown, _) in unknown_labels(train_rows, codec, axes).items():
        if unknown:
            shown = ", ".join(f"{value!r} x {count}" for value, count in unknown.most_common(5))
            log.warning(
                "%d train row(s) have %s labels that are not in taxonomy %s (%s); they are not learned (--taxonomy auto "
                "takes the train file's labels)", sum(unknown.values()), axis, taxonomy_ref, shown,
            )


def warn_unknown_labels(test_rows: Sequence[EvalRow], codec: LabelCodec, axes: Sequence[str], oos_label: str | None, taxonomy_ref: str) -> None:
    """Loudly, before the run: when most test labels of an axis are not in the taxonomy, every such row scores as
    an error, which is nearly always a wrong --label column or --taxonomy rather than a bad agent."""
    for axis, (unknown, scored) in unknown_labels(test_rows, codec, axes, oos_label).items():
        n = sum(unknown.values())
        if scored and n * 2 > scored:
            shown = ", ".join(f"{value!r} x {count}" for value, count in unknown.most_common(5))
            log.warning(
                "%d of %d test %s labels are not in taxonomy %s (%s) and will all score as errors: check that "
                "--label %s=COLUMN names the label column and that --taxonomy is the one the labels come from "
                "(--taxonomy auto takes the train file's labels)",
                n, scored, axis, taxonomy_ref, shown, axis,
            )


def in_scope(rows: list[EvalRow], oos_label: str | None, axes: Sequence[str]) -> list[EvalRow]:
    """Train rows the agent may learn from: those labelled `--oos-label` on any scored axis are dropped."""
    if oos_label is None:
        return rows
    return [r for r in rows if not is_oos_row(r, oos_label, axes)]


def with_folds(cfg: EvalConfig, n_train: int) -> EvalConfig:
    """cfg with its calibration folds set: as given, else by the in-scope train rows' count
    (evals.calibration.default_folds), so the run's fingerprint names the folds it used."""
    return cfg if cfg.folds else replace(cfg, folds=cal.default_folds(n_train))


def run_fingerprint(cfg: EvalConfig, settings: Settings) -> str:
    """The fingerprint `run_eval` gives cfg.out (inputs, options and the embedder `auto` resolves to), so the bench
    can clear a run directory left by other code or options before `run_eval` would refuse it."""
    train = in_scope(load_rows(cfg.train, cfg.text, cfg.labels), cfg.oos_label, list(cfg.labels))
    cfg = with_folds(cfg, len(train))
    return cfg.fingerprint(
        file_sha(cfg.train), file_sha(cfg.test), embedding_model_name(settings, [r.text for r in train]), llm_identity(settings),
        taxonomy_sha(cfg, settings, train),
    )


def read_cached_calibration(path: Path) -> cal.FittedCalibration | None:
    """A calibration this command cached earlier, or None if there is none or it no longer loads (written by an
    older version): it is then fitted again."""
    if not path.is_file():
        return None
    try:
        return cal.FittedCalibration.read(path)
    except (ValueError, TypeError) as exc:
        log.warning("cached calibration %s is unusable (%s); fitting it again", path, exc)
        return None


def fit_calibration(
    cfg: EvalConfig,
    texts: list[str],
    vectors: np.ndarray,
    labels: dict[str, list[str | None]],
    taxonomy: Taxonomy,
    axes: list[str],
    *,
    progress: bool,
) -> cal.FittedCalibration:
    folds = cfg.folds
    assert folds, "run_eval sets the folds before calibrating (with_folds)"
    oof = cal.out_of_fold(texts, vectors, labels, taxonomy, folds=folds, seed=cfg.seed, options=cfg.head, progress=progress)
    # the head `prepare_store` fits takes the SVM scales fitted here: the graph scores at the scale the thresholds saw
    summary: dict[str, Any] = {"folds": folds, "n": len(texts), "target_precision": cfg.target_precision, "svm_scales": oof.svm_scales}
    fitted = cal.FittedCalibration.from_fits(cal.fit_axis_thresholds(oof, labels, axes, cfg.target_precision), summary)
    if cfg.oos_label is not None:
        scored = {axes[0]: labels[axes[0]], **labels}
        threshold, stats, model = cal.fit_oos_threshold(
            texts, vectors, scored, taxonomy, rule=cfg.oos_score, seed=cfg.seed, max_false_flag=cfg.max_false_flag, options=cfg.head
        )
        fitted.out_of_scope_threshold = threshold
        fitted.out_of_scope_score = str(stats.get("score", cfg.oos_score))  # "learned" falls back on a small train file
        fitted.out_of_scope_model = model
        fitted.fitted_on["oos"] = stats
    release_workers()
    return fitted


def _svm_scales(fitted: cal.FittedCalibration) -> dict[str, float] | None:
    """The SVM scales cross-validation fitted (None in a calibration cached before they were kept: a holdout fits them)."""
    scales = fitted.fitted_on.get("svm_scales")
    return {str(axis): float(s) for axis, s in scales.items()} if isinstance(scales, dict) else None


def release_workers() -> None:
    """Stop joblib's reusable worker processes (the parallel folds) so a finished run leaves nothing behind."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def prepare_store(
    service: TriageService,
    ids: list[str],
    texts: list[str],
    labels: dict[str, list[str | None]],
    vectors: np.ndarray,
    taxonomy: Taxonomy,
    options: HeadOptions,
    *,
    cached_head: Path | None = None,
    progress: bool,
    svm_scales: dict[str, float] | None = None,
) -> None:
    """Store train as labelled tickets (once per DIR) and fit the head with the eval's options.

    `cached_head` is keyed by the train file and the options (like the calibration), so a re-run on the same
    train file with a new --out skips the fit.
    """
    store = service.store
    if store.counts()[TICKETS] != len(ids):
        if store.counts()[TICKETS]:
            service.store.client.delete_collection(TICKETS)
            service.store = type(store)(store.client, service.embedder)
            store = service.store
        tickets = [
            LabelledTicket(id=i, body=t, labels={a: ys[k] for a, ys in labels.items() if ys[k]}, source="eval-train")
            for k, (i, t) in enumerate(zip(ids, texts, strict=True))
        ]
        for start in tqdm(range(0, len(tickets), 512), desc="storing train", unit="batch", disable=not progress):
            store.upsert_tickets(tickets[start : start + 512], vectors[start : start + 512])
    fingerprint = service._store_fingerprint(fresh=True)
    head_path = service.head_path
    head = None
    if head_path.is_file():
        loaded = load_head(head_path)
        if loaded is not None and loaded.fingerprint == fingerprint:
            head = loaded
    if head is None and cached_head is not None and cached_head.is_file():
        head = load_head(cached_head)
        if head is not None:
            head.fingerprint = fingerprint
            head.save(head_path)
    if head is None:
        head = ProposalHead.fit(texts, vectors, labels, taxonomy, fingerprint=fingerprint, options=options, svm_scales=svm_scales)
        head.save(head_path)
        if cached_head is not None:
            head.save(cached_head)
    service.head = head


def row_ticket(row: EvalRow, settings: Settings) -> TicketIn:
    return TicketIn(body=row.text[: settings.max_input_chars], ticket_id=row.id)


def embed_ahead(embedder: CachedEmbedder, rows: Sequence[EvalRow], settings: Settings, *, progress: bool) -> None:
    """Embed the test tickets in batches before the graph sees them, into the cache its retrieve node reads.

    Short texts embed 2-3 times faster in batches than one at a time, long ones at the same speed on less CPU
    (evals/README.md, "Speed"); the vectors are the same. So the per-ticket latency in metrics.json is the graph
    with the ticket's vector ready, and the embedding's share is `embed_test_s` in the timings.
    """
    texts = [ticket_text(row_ticket(row, settings), settings.max_ticket_chars)[0] for row in rows]
    embedder.embed_batched(texts, batch=1024, progress=progress, desc="embedding test")


def classify_row(service: TriageService, row: EvalRow, codec: LabelCodec, axes: list[str], oos_label: str | None) -> dict[str, Any]:
    gold_oos = is_oos_row(row, oos_label, axes)
    record: dict[str, Any] = {
        "id": row.id,
        "gold": {a: row.labels.get(a, "") for a in axes},
        "gold_id": {a: (None if gold_oos else codec.encode(a, row.labels.get(a, ""))) for a in axes},
        "oos_gold": gold_oos,
    }
    ticket = row_ticket(row, service.settings)
    trace: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        result = service.classify(ticket, trace=trace)
    except TicketError as exc:
        record.update(prediction=None, error=str(exc), wall_ms=round((time.perf_counter() - t0) * 1000, 1))
        return record
    record["wall_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    if service.settings.mode != "proposal":
        record["vote"] = vote_record(trace, axes)
    record["predicted"] = {a: codec.decode(a, result.labels[a].label) for a in axes}  # type: ignore[index]
    # the auto-apply threshold in force for this row (so cross-validated runs can be pooled)
    record["threshold"] = {a: service.calibration.threshold(a, result.labels[a].label) for a in axes}  # type: ignore[index]
    record["prediction"] = _slim(result.model_dump(mode="json"))
    return record


def vote_record(trace: dict[str, Any], axes: list[str]) -> dict[str, Any]:
    """What `decide` combined for the scored axes: the proposal's distribution and the LLM's label and stated
    confidence (None when it gave no answer). `evals.vote_weight` replays other vote weights from it."""
    answer = trace.get("llm_answer") or {}
    proposal = trace.get("proposal") or {}
    return {
        "proposal": {a: {label: round(p, 6) for label, p in (proposal.get(a) or {}).items() if p > 0} for a in axes},
        "llm": {a: answer.get(a) for a in axes},
        "llm_confidence": float(answer.get("confidence", 0.5)) if answer else None,
    }


def clear_run(out: Path) -> None:
    """Delete a run directory's state (predictions, store, calibration) but keep the embedding cache."""
    for name in ("predictions.jsonl", "run.json", "calibration.json", "taxonomy.yaml"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "data", ignore_errors=True)


__all__ = ["DatasetError", "EvalConfig", "EvalError", "run_eval", "run_fingerprint", "clear_run"]
