"""API keys: created once (the secret is shown once), stored as a SHA-256 hash, checked per request.

Keys are 256-bit random tokens, so a plain SHA-256 is enough (a slow password hash protects guessable
secrets; these are not guessable) and keeps the per-request check to one indexed lookup.
Scopes are ordered: `bot` < `lead` < `admin`; a key holds its own scope and everything below it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from agent.records import ApiKeyRow, Records, new_id, utcnow
from agent.settings import Settings

Scope = Literal["bot", "lead", "admin"]
SCOPES: tuple[Scope, ...] = ("bot", "lead", "admin")
KEY_PREFIX = "trg_"
# A name is shown as the actor user:NAME in every timeline (API, UI, `triage history`): no spaces, line breaks or
# markup, so a name cannot forge a line or an actor there.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class AuthError(PermissionError):
    """A key that is missing, unknown or revoked (401) or lacks a scope (403); the message says what to do."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its name (the actor in `user:<name>`) and its scope."""

    key_id: str
    name: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    scope: Scope
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.scope, row.created_by, row.created_at, row.revoked_at)  # type: ignore[arg-type]


def create_key(records: Records, *, scope: str, name: str, created_by: str = "cli") -> tuple[str, KeyInfo]:
    """A new key; the returned secret is the only copy (only its hash is stored)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    name = check_key_name(name)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(
        id=new_id("key"), name=name, scope=scope, key_hash=hash_key(secret), created_by=created_by, created_at=utcnow()
    )
    with records.write() as session:
        session.add(row)
    return secret, _info(row)


def check_key_name(name: str) -> str:
    """The name without surrounding spaces, or ValueError naming the rule (a name is the actor user:NAME)."""
    name = name.strip()
    if not KEY_NAME.fullmatch(name):
        raise ValueError(
            f"invalid key name {name[:80]!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit (e.g. alice or helpdesk-bot); it is shown as the actor user:NAME in revisions"
        )
    return name


def authenticate(records: Records, key: str | None) -> Principal:
    if not key:
        raise AuthError(
            "no API key: send `Authorization: Bearer <key>`; an admin creates one with "
            "`triage keys create --scope bot --name NAME`",
            status=401,
        )
    with records.read() as session:
        row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(key))).first()
    if row is None or row.revoked_at is not None:
        state = "revoked" if row is not None else "unknown"
        raise AuthError(f"the API key is {state}; ask an admin for a new one (`triage keys create`)", status=401)
    return Principal(key_id=row.id, name=row.name, scope=row.scope)  # type: ignore[arg-type]


def require(principal: Principal, needed: Scope) -> None:
    if not principal.allows(needed):
        raise AuthError(
            f"this needs a key with scope {needed!r} (or higher); the key {principal.name!r} has {principal.scope!r}",
            status=403,
        )


def list_keys(records: Records) -> list[KeyInfo]:
    with records.read() as session:
        return [_info(row) for row in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]


def revoke_key(records: Records, key_id: str) -> KeyInfo:
    with records.write() as session:
        row = session.get(ApiKeyRow, key_id)
        if row is None:
            raise LookupError(f"no API key {key_id[:80]!r}; `triage keys list` shows the ids")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


def admin_key_path(settings: Settings) -> Path:
    return settings.data_dir / "admin.key"


def ensure_admin_key(settings: Settings, records: Records | None = None) -> tuple[str | None, Path]:
    """On first start, create a local admin key and keep it in data_dir/admin.key (mode 600).

    Returns the new key (to print once) and the file; `(None, path)` when the file already holds a live key.
    A file whose key is unknown to the database (the records were reset) is replaced.
    """
    path = admin_key_path(settings)
    owned = records is None
    records = records or Records.open(settings)
    try:
        if path.is_file():
            try:
                authenticate(records, path.read_text(encoding="utf-8").strip())
                return None, path
            except AuthError:
                pass
        key, _ = create_key(records, scope="admin", name="local-admin", created_by="first-start")
        write_secret(path, key + "\n")
        return key, path
    finally:
        if owned:
            records.close()


def write_secret(path: Path, content: str) -> None:
    """Write a secret readable by its owner only (mode 600), replacing any old file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
