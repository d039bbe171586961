"""One writing process per local vector store.

Chroma's embedded (persistent) mode is not safe across processes: two processes upserting into one directory
lose entries from its nearest-neighbour index (`python -m evals.chroma_writers`: 12-43 of 150 exact-vector lookups
missed their own row after two concurrent writers, 0 of 150 after the same writes one process after the other). So the commands that write
the store (`serve`, `ingest`, `taxonomy migrate --commit`) hold an advisory lock beside it for as long as they
run; the kernel drops it when the process ends, however it ends, so a crash leaves nothing stale. A Chroma server
(`TRIAGE_CHROMA_URL`) orders writes from any number of processes itself and needs no lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.settings import Settings


class StoreBusy(RuntimeError):
    """Another process writes the same local vector store."""


def lock_path(settings: Settings) -> Path:
    return settings.chroma_dir.with_name(settings.chroma_dir.name + ".lock")


@contextmanager
def store_writer(settings: Settings, command: str) -> Iterator[None]:
    """Hold the store's lock while the block runs, or raise `StoreBusy` naming the process that holds it."""
    if settings.chroma_url:
        yield
        return
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise StoreBusy(
                f"the vector store in {settings.chroma_dir} is in use by {holder}: stop it first, or run this with "
                "its own TRIAGE_DATA_DIR (two processes writing one local store damage its index; a Chroma server, "
                "TRIAGE_CHROMA_URL, takes several)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`{command}` (pid {os.getpid()})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
