"""Migration jobs' bookkeeping on SQLite and PostgreSQL: progress, the report, failures, one job at a time, and a
job whose worker stopped. The lifecycle is a scripted stand-in: the unit here is the job row, not the migration
(tests/integration/test_taxonomy_migration.py runs real jobs over HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from agent.contracts import MigrationIn, MigrationReport
from agent.migration_jobs import STALE_AFTER, MigrationJobs
from agent.reader import Conflict, Invalid, NotFound
from agent.records import Records

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class ScriptedLifecycle:
    """previous_taxonomy / migrate_taxonomy as a lifecycle answers them; `gate` holds the migration mid-way."""

    def __init__(self, clock: Clock, *, fail: Exception | None = None) -> None:
        self.taxonomy = SimpleNamespace(ref="default@2")
        self.clock, self.fail = clock, fail
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    def previous_taxonomy(self, ref: str | None = None) -> SimpleNamespace:
        if ref == "default@0":
            raise Invalid("never served")
        return SimpleNamespace(ref=ref or "default@1")

    def migrate_taxonomy(self, previous: object, *, commit: bool, reviewed_sample: int, progress: Callable[[int, int], None]) -> MigrationReport:
        for done in range(1, 4):
            progress(done, 3)
            self.started.set()
            if self.gate is not None:
                self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return MigrationReport(previous="default@1", target="default@2", committed=commit, tickets=3, already_current=0,
                               changed=2, unchanged=1, reasked=0, transitions={"service": {"a -> b": 2}}, reviewed_tickets=0)


def test_a_job_reports_progress_then_its_report(records: Records) -> None:
    clock = Clock()
    jobs = MigrationJobs(ScriptedLifecycle(clock), records, clock=clock, run_inline=True)  # type: ignore[arg-type]
    job = jobs.start(MigrationIn(commit=True), created_by="user:ada")
    assert (job.state, job.done, job.total, job.commit, job.previous, job.target) == ("done", 3, 3, True, "default@1", "default@2")
    assert job.report is not None and job.report.changed == 2 and job.finished_at is not None
    assert jobs.get(job.id) == job and [j.id for j in jobs.recent()] == [job.id]
    with pytest.raises(NotFound, match="GET /v1/taxonomy/migration/jobs"):
        jobs.get("mj_missing")
    with pytest.raises(Invalid):  # a version never served is refused before any job exists
        jobs.start(MigrationIn(previous="default@0"), created_by="user:ada")
    assert len(jobs.recent()) == 1


def test_a_failing_migration_is_a_failed_job_with_the_reason(records: Records) -> None:
    clock = Clock()
    jobs = MigrationJobs(ScriptedLifecycle(clock, fail=Invalid("step 2 moves a label twice")), records, clock=clock, run_inline=True)  # type: ignore[arg-type]
    job = jobs.start(MigrationIn(), created_by="user:ada")
    assert (job.state, job.error, job.report) == ("failed", "step 2 moves a label twice", None)
    crash = MigrationJobs(ScriptedLifecycle(clock, fail=RuntimeError("disk full")), records, clock=clock, run_inline=True)  # type: ignore[arg-type]
    job = crash.start(MigrationIn(), created_by="user:ada")
    assert job.state == "failed" and job.error is not None and job.error.startswith("RuntimeError: disk full; see the API log")


def test_one_job_at_a_time_and_a_job_whose_worker_stopped_reads_as_failed(records: Records) -> None:
    clock = Clock()
    lifecycle = ScriptedLifecycle(clock)
    gate = lifecycle.gate = threading.Event()
    jobs = MigrationJobs(lifecycle, records, clock=clock, heartbeat=False)  # type: ignore[arg-type]  # a stopped worker beats no more
    first = jobs.start(MigrationIn(commit=True), created_by="user:ada")
    assert first.state == "running" and lifecycle.started.wait(10)
    with pytest.raises(Conflict, match=f"migration job {first.id} is running .* started by user:ada"):
        jobs.start(MigrationIn(), created_by="user:bob")
    # the worker goes silent (a restart): past STALE_AFTER the job reads as failed and a new one may start
    clock.now = START + STALE_AFTER + timedelta(seconds=1)
    lost = jobs.get(first.id)
    assert lost.state == "failed" and "start the job again" in (lost.error or "")
    second = MigrationJobs(ScriptedLifecycle(clock), records, clock=clock, run_inline=True).start(MigrationIn(), created_by="user:bob")  # type: ignore[arg-type]
    assert second.state == "done"
    assert [j.state for j in jobs.recent()] == ["done", "failed"]
    # a worker that was only slow and finishes after all still records its report
    worker = next((t for t in threading.enumerate() if t.name == f"migration-{first.id}"), None)
    gate.set()
    if worker is not None:
        worker.join(10)
    finished = jobs.get(first.id)
    assert (finished.state, finished.error) == ("done", None) and finished.report is not None


def test_a_job_still_working_before_its_first_ticket_does_not_read_as_lost(records: Records, monkeypatch) -> None:  # noqa: ANN001
    """Scale-out run: a commit job spent its first minutes training the held-out head (no ticket done yet, so no
    progress beat); after two minutes it read 'the worker running this job stopped ... start the job again' while
    it was working, and a second job could start beside it. The job now beats on its own while it runs."""
    import agent.migration_jobs

    monkeypatch.setattr(agent.migration_jobs, "BEAT_EVERY_S", 0.05)
    clock = Clock()
    preparing, release = threading.Event(), threading.Event()

    class SlowStart(ScriptedLifecycle):
        def migrate_taxonomy(self, previous: object, **kwargs: object) -> MigrationReport:
            preparing.set()
            release.wait(10)  # the held-out head trains: no progress yet
            return super().migrate_taxonomy(previous, **kwargs)  # type: ignore[arg-type]

    jobs = MigrationJobs(SlowStart(clock), records, clock=clock)  # type: ignore[arg-type]
    job = jobs.start(MigrationIn(commit=True), created_by="user:ada")
    assert preparing.wait(10)
    clock.now = START + STALE_AFTER + timedelta(seconds=1)
    time.sleep(0.5)  # a few beats at the new time
    assert jobs.get(job.id).state == "running"
    with pytest.raises(Conflict, match=f"migration job {job.id} is running"):
        jobs.start(MigrationIn(), created_by="user:bob")
    release.set()
    worker = next((t for t in threading.enumerate() if t.name == f"migration-{job.id}"), None)
    if worker is not None:
        worker.join(10)
    assert jobs.get(job.id).state == "done"
