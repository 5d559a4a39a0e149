"""Connections to the source database, with errors a user can act on."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

from dataset_assets.errors import SourceError
from dataset_assets.startup import hidden

# ADBC's DB-API registers a polars parameter backend when it can import polars (0.17 s); parameters
# are bound through its default pyarrow backend, so polars stays out of this import (startup.py).
with hidden("polars", "kept out of ADBC's DB-API import by dataset_assets.source.connect"):
    import adbc_driver_postgresql.dbapi as pgdbapi


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


def _userinfo_end(rest: str) -> int:
    """Where the ``user:password`` part of a URI ends: the index of its ``@`` in ``rest`` (the URI
    after ``://``), or -1. The last ``@`` before the query counts, so a password holding ``@``, ``:``
    or ``/`` (encoded or not) is covered whole; with none there, the last ``@`` of all when no ``/``
    comes before it (a password holding ``?``)."""
    head = rest.split("?", 1)[0]
    at = head.rfind("@")
    if at < 0:
        at = rest.rfind("@")
        if at >= 0 and "/" in rest[:at]:
            at = -1  # an '@' in the query, after the path
    return at


def _split(uri: str) -> tuple[str, str | None, str]:
    """``scheme://``, the user info (``user[:password]``, None if absent) and the rest of ``uri``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "", None, uri
    at = _userinfo_end(rest)
    if at < 0:
        return scheme + sep, None, rest
    return scheme + sep, rest[:at], rest[at + 1:]


def identity(uri: str) -> SourceIdentity:
    """Host, port, database and user of ``uri``, as libpq would use them: from the URI, its query
    (``?host=``, ``?port=``, ``?user=``, ``?dbname=``, ``?service=``) or libpq's environment
    (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGDATABASE``, ``PGSERVICE``). Never the password."""
    scheme, info, rest = _split(uri)
    user_part = info.split(":", 1)[0] if info is not None else ""
    u = urlparse(f"{scheme}{rest}")  # parsed without the user info: nothing of the password can leak into a field
    q = parse_qs(u.query)
    env = os.environ

    def first(*values: str | None) -> str:
        return next((v for v in values if v), "")

    try:
        uri_port = u.port
    except ValueError:
        uri_port = None
    service = first(q.get("service", [""])[0], env.get("PGSERVICE"))
    host = first(unquote(u.hostname or ""), q.get("host", [""])[0], env.get("PGHOST"))
    if not host:
        host = f"service {service}" if service else "localhost"
    try:
        port = uri_port or int(first(q.get("port", [""])[0], env.get("PGPORT")) or 0) or None
    except ValueError:
        port = None
    user = first(unquote(user_part), q.get("user", [""])[0], env.get("PGUSER")) or "postgres"
    database = first(unquote(u.path.lstrip("/")), q.get("dbname", [""])[0], env.get("PGDATABASE")) or user
    return SourceIdentity(host=host, port=port, database=database, user=user)


# A URI inside any text: scheme, then everything up to white space or a quote.
_URI = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
# password=... in a URI's query or a libpq conninfo string (quoted or not); PGPASSWORD=... too.
_KV_PASSWORD = re.compile(r"(?i)(\b(?:pg)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&'\"]+)")
_QUOTED = re.compile(r'"[^"]*"')


def _redact_uri(uri: str) -> str:
    scheme, info, rest = _split(uri)
    if info is None or ":" not in info:
        return uri
    return f"{scheme}{info.split(':', 1)[0]}:***@{rest}"


def redact(text: str) -> str:
    """``text`` (a URI, or a message holding URIs) with every password replaced by ``***``: the
    ``user:password@`` of each URI, whatever the password holds (``@``, ``:``, ``/``, ``?``,
    percent-encoded or not), and ``password=...`` in a URI's query or a conninfo string."""
    if not text:
        return text
    text = _URI.sub(lambda m: _redact_uri(m.group(0)), text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + "***", text)


def secrets(uri: str) -> set[str]:
    """Every spelling of the password(s) in ``uri``: as written and percent-decoded, and the pieces
    between ``@``, ``:`` and ``/`` that a driver may quote after misreading the URI. Empty if none."""
    out: set[str] = set()
    _, info, _ = _split(uri)
    if info is not None and ":" in info:
        out.add(info.split(":", 1)[1])
    out.update(m.group(2).strip("'\"") for m in _KV_PASSWORD.finditer(uri))
    for s in list(out):
        out.add(unquote(s))
    for s in list(out):
        out.update(re.split(r"[@:/]", s))
    return {s for s in out if s}


def redact_error(text: str, uri: str) -> str:
    """A driver's message about ``uri``, safe to show: :func:`redact`, then every quoted value that
    holds a piece of the password, and the password's longer spellings anywhere, become ``***``."""
    text = redact(text)
    found = sorted(secrets(uri), key=len, reverse=True)
    if not found:
        return text
    text = _QUOTED.sub(lambda m: '"***"' if any(s in m.group(0) for s in found) else m.group(0), text)
    for s in found:
        if len(s) >= 4:
            text = text.replace(s, "***")
    return text


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be used as it is (a sentence that never shows the password), or None."""
    if not uri:
        return "No source database given; pass --source postgresql://user@host:port/db or set DATASET_ASSETS_SOURCE_URI."
    if not uri.startswith(("postgresql://", "postgres://")):
        return f"The source {redact(uri)!r} is not a postgresql:// URI; pass one like postgresql://user@host:5432/db."
    _, info, _ = _split(uri)
    if info is not None:
        user, sep, password = info.partition(":")
        # libpq ends the user info at the first '@' or '/': either inside the password is misread
        slash = sep and "/" not in user and "/" in password and not password.split("/", 1)[0].isdigit()
        if "@" in info or slash:
            return (f"The password in the source URI {redact(uri)!r} holds an '@' or '/' that is not percent-encoded; "
                    "write '@' as %40 and '/' as %2F, or leave the password out of the URI and set PGPASSWORD or ~/.pgpass.")
    return None


def connect(uri: str, *, autocommit: bool = True):
    """An ADBC DB-API connection; connection failures become one clear sentence.

    The password may be left out of ``uri``: libpq (under ADBC) then reads ``PGPASSWORD``, the
    password file (``~/.pgpass`` or ``PGPASSFILE``), and a service (``PGSERVICE`` or ``?service=``,
    from ``~/.pg_service.conf`` or ``PGSERVICEFILE``)."""
    problem = uri_problem(uri)
    if problem is not None:
        raise SourceError(problem)
    try:
        return pgdbapi.connect(uri, autocommit=autocommit)
    except Exception as exc:  # noqa: BLE001 - the driver raises several types
        raise connection_error(uri, exc) from None


_PASSWORD_SOURCES = "PGPASSWORD, ~/.pgpass (or the file PGPASSFILE names), a service in PGSERVICE, or the source URI"


def connection_error(uri: str, exc: BaseException) -> SourceError:
    ident = identity(uri)
    msg = redact_error(str(exc), uri)
    where = f"{ident.host}" + (f":{ident.port}" if ident.port else "")
    if "no password supplied" in msg:
        return SourceError(f"The database at {where} asks user {ident.user!r} for a password and none was given: "
                           f"set it in {_PASSWORD_SOURCES}.")
    if "password authentication failed" in msg or "authentication failed" in msg:
        return SourceError(f"The database at {where} rejected user {ident.user!r}: check the user name and the password "
                           f"({_PASSWORD_SOURCES}).")
    if re.search(r'database "[^"]+" does not exist', msg):
        return SourceError(f"The database {ident.database!r} does not exist on {where}: check the database name in the source URI.")
    if re.search(r'role "[^"]+" does not exist', msg):
        return SourceError(f"The user {ident.user!r} does not exist on {where}: check the user name in the source URI.")
    if re.search(r'definition of service "[^"]*" not found|service file "[^"]*" not found', msg):
        return SourceError(f"The connection service is not defined ({msg.strip().splitlines()[0]}): check PGSERVICE and the service file (~/.pg_service.conf or PGSERVICEFILE).")
    if "Connection refused" in msg or "could not connect" in msg or "No such file or directory" in msg or "timeout" in msg.lower() or "could not translate host name" in msg:
        return SourceError(f"Cannot reach the database at {where}: check that Postgres is running there and that host and port in the source URI are right.")
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    return SourceError(f"Cannot connect to the database at {where} ({first}): check the source URI.")


def quote_ident(name: str) -> str:
    """A safely quoted SQL identifier (schema-qualified names are quoted per part)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
