"""Connections to the source database, with errors a user can act on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

import adbc_driver_postgresql.dbapi as pgdbapi

from dataset_assets.errors import SourceError


@dataclass(frozen=True)
class SourceIdentity:
    """Where the data came from, safe to publish (no password)."""

    host: str
    port: int | None
    database: str
    user: str

    def as_dict(self) -> dict:
        return {"host": self.host, "port": self.port, "database": self.database, "user": self.user}

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.user}@{self.host}{port}/{self.database}"


def identity(uri: str) -> SourceIdentity:
    u = urlparse(uri)
    q = parse_qs(u.query)
    host = unquote(u.hostname or "") or (q.get("host", [""])[0]) or "localhost"
    try:
        port = u.port or (int(q["port"][0]) if "port" in q else None)
    except ValueError:
        port = None
    return SourceIdentity(
        host=host,
        port=port,
        database=unquote(u.path.lstrip("/")) or unquote(u.username or "") or "postgres",
        user=unquote(u.username or "") or q.get("user", [""])[0] or "postgres",
    )


def redact(uri: str) -> str:
    """The URI with its password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", uri)


def connect(uri: str, *, autocommit: bool = True):
    """An ADBC DB-API connection; connection failures become one clear sentence."""
    if not uri:
        raise SourceError("No source database given; pass --source postgresql://user:pass@host:port/db or set DATASET_ASSETS_SOURCE_URI.")
    if not uri.startswith(("postgresql://", "postgres://")):
        raise SourceError(f"The source {redact(uri)!r} is not a postgresql:// URI; pass one like postgresql://user:pass@host:5432/db.")
    try:
        return pgdbapi.connect(uri, autocommit=autocommit)
    except Exception as exc:  # noqa: BLE001 - the driver raises several types
        raise connection_error(uri, exc) from None


def connection_error(uri: str, exc: BaseException) -> SourceError:
    ident = identity(uri)
    msg = str(exc)
    where = f"{ident.host}" + (f":{ident.port}" if ident.port else "")
    if "password authentication failed" in msg or "no password supplied" in msg or "authentication failed" in msg:
        return SourceError(f"The database at {where} rejected user {ident.user!r}: check the user name and password in the source URI.")
    if re.search(r'database "[^"]+" does not exist', msg):
        return SourceError(f"The database {ident.database!r} does not exist on {where}: check the database name in the source URI.")
    if re.search(r'role "[^"]+" does not exist', msg):
        return SourceError(f"The user {ident.user!r} does not exist on {where}: check the user name in the source URI.")
    if "Connection refused" in msg or "could not connect" in msg or "No such file or directory" in msg or "timeout" in msg.lower() or "could not translate host name" in msg:
        return SourceError(f"Cannot reach the database at {where}: check that Postgres is running there and that host and port in the source URI are right.")
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    return SourceError(f"Cannot connect to the database at {where} ({redact(first)}): check the source URI.")


def quote_ident(name: str) -> str:
    """A safely quoted SQL identifier (schema-qualified names are quoted per part)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
