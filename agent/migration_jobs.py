"""Taxonomy migrations as background jobs, for the HTTP API and the review UI.

A migration re-asks the agent for every ticket a split or a target-less retirement moves, so on a large history
it runs for minutes: too long for one HTTP request behind a proxy. A job runs it in a thread of the worker that
accepted it and keeps its progress in the records database, so any worker answers `GET .../jobs/{id}`. The
thread beats (`updated_at`) at least every few seconds while it works; a running job whose heartbeat is older
than `STALE_AFTER` lost its worker (a restart) and reads as failed, with what to do. One job runs at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import select, text

from agent.contracts import MigrationIn, MigrationReport, Taxonomy
from agent.lifecycle import Lifecycle
from agent.reader import Conflict, LifecycleError, NotFound, shown
from agent.records import MigrationJobRow, Records, as_utc, new_id, utcnow

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=2)
BEAT_EVERY_S = 2.0
JobState = Literal["running", "done", "failed"]


class MigrationJob(BaseModel):
    """A migration run in the background: follow it with GET /v1/taxonomy/migration/jobs/{id}."""

    id: str
    state: JobState
    commit: bool
    previous: str
    target: str
    done: int = Field(description="tickets looked at so far")
    total: int = Field(description="tickets with current labels (0 until the job has counted them)")
    created_by: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    report: MigrationReport | None = Field(default=None, description="the MigrationReport, once done")
    error: str | None = None


class MigrationJobs:
    """Starts, runs and reads migration jobs; `run_inline` (tests) runs the job in the caller's thread."""

    def __init__(
        self, lifecycle: Lifecycle, records: Records, *, clock: Callable[[], datetime] = utcnow, run_inline: bool = False,
        heartbeat: bool = True,
    ) -> None:
        self.lifecycle = lifecycle
        self.records = records
        self.clock = clock
        self.run_inline = run_inline
        self.heartbeat = heartbeat  # off only in tests that play a worker which stopped

    def start(self, body: MigrationIn, *, created_by: str) -> MigrationJob:
        previous = self.lifecycle.previous_taxonomy(body.previous)  # unknown version: 404/422 now, not in the job
        now = self.clock()
        with self.records.write() as session:
            if self.records.dialect == "postgresql":  # two admins starting at once: one wins
                session.execute(text("LOCK TABLE migration_jobs IN SHARE ROW EXCLUSIVE MODE"))
            for running in session.scalars(select(MigrationJobRow).where(MigrationJobRow.state == "running")):
                if now - as_utc(running.updated_at) <= STALE_AFTER:
                    raise Conflict(
                        f"migration job {running.id} is running ({running.done}/{running.total} tickets, started by "
                        f"{running.created_by}); follow it with GET /v1/taxonomy/migration/jobs/{running.id}"
                    )
                self._mark_lost(running, now)
            row = MigrationJobRow(
                id=new_id("mj"), state="running", commit=body.commit, previous=previous.ref, target=self.lifecycle.taxonomy.ref,
                reviewed_sample=body.reviewed_sample, done=0, total=0, created_by=created_by, started_at=now, updated_at=now,
            )
            session.add(row)
        if self.run_inline:
            self._run(row.id, previous, body)
        else:
            threading.Thread(target=self._run, args=(row.id, previous, body), name=f"migration-{row.id}", daemon=True).start()
        return self.get(row.id)

    def get(self, job_id: str) -> MigrationJob:
        with self.records.read() as session:
            row = session.get(MigrationJobRow, job_id)
            if row is None:
                raise NotFound(f"no migration job {shown(job_id)}; GET /v1/taxonomy/migration/jobs lists the recent ones")
            return self._view(row)

    def recent(self, limit: int = 20) -> list[MigrationJob]:
        with self.records.read() as session:
            rows = session.scalars(select(MigrationJobRow).order_by(MigrationJobRow.started_at.desc()).limit(limit))
            return [self._view(row) for row in rows]

    # ------------------------------------------------------------ internals

    def _run(self, job_id: str, previous: Taxonomy, body: MigrationIn) -> None:
        last_beat = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last_beat
            if done == total or time.monotonic() - last_beat >= BEAT_EVERY_S:
                last_beat = time.monotonic()
                self._update(job_id, done=done, total=total)

        # the job beats on its own too: before its first ticket a migration trains a held-out head for the agreement
        # score (minutes on 2 cores), and with progress alone as the beat a live job read as lost after two minutes,
        # inviting a second one to start beside it
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(BEAT_EVERY_S):
                try:
                    self._update(job_id)
                except Exception:  # noqa: BLE001 - a missed beat (the database restarting) is retried at the next
                    log.warning("migration job %s: heartbeat not written", job_id, exc_info=True)

        if self.heartbeat:
            threading.Thread(target=beat, name=f"migration-{job_id}-beat", daemon=True).start()
        try:
            report = self.lifecycle.migrate_taxonomy(previous, commit=body.commit, reviewed_sample=body.reviewed_sample, progress=progress)
        except LifecycleError as exc:
            stop.set()
            self._update(job_id, state="failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a thread has no caller: the job row is where the failure is reported
            stop.set()
            log.exception("migration job %s failed", job_id)
            self._update(job_id, state="failed", error=f"{type(exc).__name__}: {exc}; see the API log, then start the job again")
        else:
            stop.set()
            self._update(job_id, state="done", report=report.model_dump(mode="json"), done=report.tickets, total=report.tickets, error=None)

    def _update(self, job_id: str, **values: object) -> None:
        now = self.clock()
        with self.records.write() as session:
            row = session.get(MigrationJobRow, job_id)
            if row is None:
                return
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now
            if values.get("state") in ("done", "failed"):
                row.finished_at = now

    def _mark_lost(self, row: MigrationJobRow, now: datetime) -> None:
        row.state, row.finished_at, row.updated_at = "failed", now, now
        row.error = _LOST

    def _view(self, row: MigrationJobRow) -> MigrationJob:
        view = MigrationJob.model_validate(row, from_attributes=True)
        if view.state == "running" and self.clock() - as_utc(row.updated_at) > STALE_AFTER:
            view = view.model_copy(update={"state": "failed", "error": _LOST})
        return view


_LOST = (
    "the worker running this job stopped (no progress for over 2 minutes): nothing is half-written per ticket; "
    "start the job again and it carries on with the tickets still on the old version"
)
