"""A real PostgreSQL 15 for the records tests, from Debian's binaries, in a temp dir, on loopback only.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user (`runuser`); the
socket stays in the cluster directory, the server listens on 127.0.0.1 and a free port only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.local_llm import free_port

PG_BIN = Path(os.environ.get("TRIAGE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class PostgresServer:
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{secrets.token_hex(6)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root needs `runuser` (util-linux) to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *cmd]


def start_postgres() -> Iterator[PostgresServer]:
    """Start a throw-away cluster; stopped and deleted when the generator is closed."""
    for tool in ("initdb", "pg_ctl"):
        if not (PG_BIN / tool).is_file():
            pytest.fail(f"{PG_BIN / tool} is missing: `apt-get install postgresql-15` (or set TRIAGE_TEST_PG_BIN)")
    # directly under the system temp dir: pytest's own temp dirs are mode 700 and the postgres user cannot enter them
    cluster = Path(tempfile.mkdtemp(prefix="triage-pg-"))
    if os.geteuid() == 0:
        shutil.chown(cluster, "postgres", "postgres")
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    init = subprocess.run(
        _as_owner([str(PG_BIN / "initdb"), "-D", str(cluster), "-U", user, "--auth=trust", "--no-sync", "-E", "UTF8"]),
        capture_output=True, text=True, timeout=120,
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {cluster} -c fsync=on -c max_connections=200"
    start = subprocess.run(
        _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(cluster), "-l", str(cluster / "server.log"), "-o", options, "-w", "-t", "60", "start"]),
        capture_output=True, text=True, timeout=90,
    )
    assert start.returncode == 0, start.stderr + (cluster / "server.log").read_text(errors="replace")
    try:
        yield PostgresServer(port=port, user=user)
    finally:
        subprocess.run(
            _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "-w", "stop"]),
            capture_output=True, timeout=60,
        )
        shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One server for the whole session; each test takes its own database from it."""
    yield from start_postgres()
