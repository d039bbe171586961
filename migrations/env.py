"""Alembic environment: runs on the connection `Records.upgrade` hands over (already locked), or on the URL
given to the `alembic` command (`alembic -c migrations/alembic.ini -x url=... upgrade head`)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from agent.records import Base, normalise_url

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -c migrations/alembic.ini -x url=sqlite:///data/triage.db upgrade head")
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run against a database")
run_migrations()
