"""An embedded PostgreSQL 16 (the ``pgserver`` wheel) for local use, tests and benchmarks.

``embedded_uri()`` starts the server the first time and leaves it running when
the process exits; later processes find it through ``postmaster.pid`` in the
data directory and reuse it. The data directory is ``local_dir() / "pg"`` by
default.

Why the server is started here and not by ``pgserver.get_server``: pgserver
always passes ``-h ""`` (no TCP) and a unix socket directory on the postgres
command line, and command-line options override the configuration files, so a
pgserver-started server can only be reached through a unix socket. A socket
URI (``?host=/dir``) works for libpq clients but not for every client that
dagster-postgres or SQLAlchemy users plug in, and socket paths are limited to
~107 bytes. So this module uses pgserver's binaries (and its ``pgserver``
system user when running as root), but runs ``pg_ctl`` itself with a small
configuration file in the data directory that listens on 127.0.0.1 only, on a
port recorded there (stable per data directory), with no unix socket. The URI
is then ``postgresql://postgres@127.0.0.1:<port>/<db>``, which works for
ADBC, psycopg, psycopg2 and SQLAlchemy alike. Authentication is ``trust``: the
server is for local development only and is not reachable from other hosts.

If the data directory is already served by a server started some other way
(e.g. ``pgserver.get_server`` from another tool), it is reused as is and a
socket URI (with its port) is returned. If the TCP start fails, the server is
started socket-only, with the socket in the data directory or, when that path
is too long, in a short directory under /tmp named by a hash of the data dir.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dataset_assets.settings import local_dir
from dataset_assets.errors import SourceError, UserError

USER = "postgres"
SYSTEM_USER = "pgserver"  # what pgserver runs postgres as when Python runs as root
CONF_NAME = "dataset_assets.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_NAME}'"
HOST = "127.0.0.1"
_PORT_RANGE = (15432, 25432)
_SOCKET_PATH_MAX = 107
_START_TIMEOUT = 90

# Settings that make bulk seeding and big scans pleasant on a laptop-sized box.
# fsync stays on: the data directory is meant to survive crashes.
_SERVER_SETTINGS = {
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    "shared_buffers": "'256MB'",
    "maintenance_work_mem": "'256MB'",
    "work_mem": "'32MB'",
    "max_connections": "100",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
}


def _log(msg: str) -> None:
    print(f"[embedded-postgres] {msg}", file=sys.stderr, flush=True)


def _resolve(data_dir: Path | str | None) -> Path:
    return Path(data_dir if data_dir is not None else local_dir() / "pg").expanduser().resolve()


def _system_user() -> str | None:
    if platform.system() != "Windows" and os.geteuid() == 0:
        return SYSTEM_USER
    return None


def _pg():
    try:
        import pgserver  # noqa: F401  (imports the command wrappers)
        from pgserver import _commands
        from pgserver.utils import PostmasterInfo
    except ImportError as err:  # pragma: no cover - dependency of the project
        raise UserError(f"The embedded database needs the pgserver package ({err}); install the project's dependencies.") from None
    return _commands, PostmasterInfo


def _run(cmd: str, args: list[str], data_dir: Path, timeout: float | None = None) -> str:
    commands, _ = _pg()
    fn = getattr(commands, cmd)
    user = _system_user()
    kwargs = {"user": user, "cwd": str(data_dir)}
    if timeout is not None:
        kwargs["timeout"] = timeout
    return fn(args, pgdata=data_dir, **kwargs)


def _lock(data_dir: Path):
    import fasteners

    return fasteners.InterProcessLock(str(data_dir.parent / f".{data_dir.name}.lock"))


def _running_info(data_dir: Path):
    """PostmasterInfo of a live server on this data dir, else None."""
    _, PostmasterInfo = _pg()
    try:
        info = PostmasterInfo.read_from_pgdata(data_dir)
    except (AssertionError, ValueError, OSError):
        return None  # half-written or foreign pid file: not a ready server
    if info is None or not info.is_running():
        return None
    try:  # the pid may have been reused by an unrelated process after a reboot
        if "postgres" not in (info.process.name() or ""):
            return None
    except Exception:
        return None
    return info


def _pid_file_state(data_dir: Path) -> str:
    """'absent', 'live' (its pid is a postgres process), 'stale', or 'unknown' (unreadable)."""
    pid_file = data_dir / "postmaster.pid"
    try:
        first = pid_file.read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return "absent"
    except OSError:
        return "unknown"
    if not first.isdigit():
        return "unknown"
    import psutil

    try:
        proc = psutil.Process(int(first))
        return "live" if "postgres" in (proc.name() or "") else "stale"
    except psutil.NoSuchProcess:
        return "stale"
    except psutil.Error:
        return "unknown"


def _wait_ready(data_dir: Path, timeout: float = _START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        info = _running_info(data_dir)
        if info is not None and info.status == "ready":
            return info
        if time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def _uri_from_info(info, database: str = USER) -> str:
    if info.socket_dir is not None and str(info.socket_dir) != "":
        port = f"&port={info.port}" if info.port else ""
        return f"postgresql://{USER}@/{database}?host={info.socket_dir}{port}"
    if info.port is None:
        raise SourceError(f"The embedded PostgreSQL in {info.pgdata} listens neither on TCP nor on a socket; stop it with stop_embedded() and retry.")
    host = info.hostname if info.hostname not in (None, "", "*", "0.0.0.0") else HOST
    if host == "::1" or ":" in host:
        host = f"[{host}]"
    return f"postgresql://{USER}@{host}:{info.port}/{database}"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # postgres binds with SO_REUSEADDR too: connections in TIME_WAIT do not block it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _preferred_port(data_dir: Path) -> int:
    """A port that stays the same for a data dir (so URIs are stable), if free."""
    lo, hi = _PORT_RANGE
    h = int(hashlib.sha256(str(data_dir).encode()).hexdigest()[:8], 16)
    for i in range(64):
        port = lo + (h + i * 7919) % (hi - lo)
        if _port_free(port):
            return port
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]
    except OSError:  # no usable loopback: the start attempt fails and falls back to a socket
        return lo + h % (hi - lo)


def _recorded_port(data_dir: Path) -> int | None:
    conf = data_dir / CONF_NAME
    if conf.exists():
        m = re.search(r"^port\s*=\s*(\d+)", conf.read_text(), re.M)
        if m:
            return int(m.group(1))
    return None


def _short_socket_dir(data_dir: Path, port: int) -> Path:
    if len(str(data_dir / f".s.PGSQL.{port}").encode()) <= _SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"dataset-assets-pg-{digest}"


def _write_conf(data_dir: Path, *, port: int, tcp: bool, socket_dir: Path | None) -> None:
    lines = [
        "# Written by dataset_assets.local.embedded; rewritten on every start.",
        f"listen_addresses = '{HOST if tcp else ''}'",
        f"port = {port}",
        f"unix_socket_directories = '{socket_dir if socket_dir else ''}'",
    ]
    lines += [f"{k} = {v}" for k, v in _SERVER_SETTINGS.items()]
    conf = data_dir / CONF_NAME
    conf.write_text("\n".join(lines) + "\n")
    main_conf = data_dir / "postgresql.conf"
    text = main_conf.read_text()
    if INCLUDE_LINE not in text:
        main_conf.write_text(text.rstrip("\n") + f"\n\n{INCLUDE_LINE}\n")


def _ensure_initialized(data_dir: Path) -> None:
    if (data_dir / "PG_VERSION").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        raise UserError(
            f"{data_dir} is not empty and is not a PostgreSQL data directory; "
            "point the embedded database somewhere else or empty that folder."
        )
    user = _system_user()
    if user is not None:
        import pwd

        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(user)
        ensure_prefix_permissions(data_dir)
        pw = pwd.getpwnam(user)
        os.chown(data_dir, pw.pw_uid, pw.pw_gid)
    _log(f"initializing a new database cluster in {data_dir}")
    _run("initdb", ["--auth=trust", "--auth-local=trust", "--encoding=UTF8", "--no-locale", "-U", USER], data_dir, timeout=300)


def _prepare_socket_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    user = _system_user()
    if user is not None:
        import pwd

        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _start(data_dir: Path):
    """Start the server (called with the lock held and no server running)."""
    log = data_dir / "log"
    attempts: list[tuple[bool, int]] = []
    recorded = _recorded_port(data_dir)
    if recorded and _port_free(recorded):
        attempts.append((True, recorded))
    preferred = _preferred_port(data_dir)
    attempts.append((True, preferred))
    attempts.append((False, recorded or preferred))  # socket-only fallback
    last_err: Exception | None = None
    for tcp, port in attempts:
        sock_dir = None
        if not tcp:
            sock_dir = _short_socket_dir(data_dir, port)
            _prepare_socket_dir(sock_dir)
        _write_conf(data_dir, port=port, tcp=tcp, socket_dir=sock_dir)
        try:
            _run("pg_ctl", ["-w", "-t", str(_START_TIMEOUT), "-l", str(log), "start"], data_dir, timeout=_START_TIMEOUT + 10)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            last_err = err
            _log(f"start {'on ' + HOST + ':' + str(port) if tcp else 'with a unix socket'} failed; see {log}")
            if _running_info(data_dir) is not None:  # timed out but came up after all
                break
            continue
        break
    info = _wait_ready(data_dir)
    if info is None or info.status != "ready":
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise SourceError(
            f"The embedded PostgreSQL in {data_dir} did not start ({last_err}); its log {log} ends with: {tail.strip()[-500:]}"
        )
    return info


def embedded_uri(data_dir: Path | str | None = None, database: str = USER) -> str:
    """Start (or reuse) the embedded server and return a libpq URI for ``database``.

    The URI is ``postgresql://postgres@127.0.0.1:<port>/<database>`` (trust
    authentication, loopback only), usable by ADBC, psycopg/psycopg2 and
    SQLAlchemy. The server keeps running after this process exits; stop it with
    :func:`stop_embedded`.
    """
    dd = _resolve(data_dir)
    try:
        dd.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create {dd.parent} for the embedded database ({err.strerror}); set DATASET_ASSETS_HOME to a writable folder.") from None
    info = _running_info(dd)
    if info is None or info.status != "ready":
        with _lock(dd):
            info = _running_info(dd)
            if info is None and _pid_file_state(dd) == "live":  # being started by someone else
                info = _wait_ready(dd, timeout=60)
            elif info is not None and info.status != "ready":
                info = _wait_ready(dd, timeout=60)
            if info is None:
                if _pid_file_state(dd) == "stale":  # left by a crash or a reboot (its pid may be reused)
                    (dd / "postmaster.pid").unlink(missing_ok=True)
                _ensure_initialized(dd)
                info = _start(dd)
                _log(f"started PostgreSQL (pid {info.pid}) for {dd}: {_uri_from_info(info)}")
    return _uri_from_info(info, database)


def stop_embedded(data_dir: Path | str | None = None) -> bool:
    """Stop the embedded server for ``data_dir``; True if one was running."""
    dd = _resolve(data_dir)
    if not (dd / "PG_VERSION").exists():
        return False
    with _lock(dd):
        info = _running_info(dd)
        if info is None:
            return False
        try:
            _run("pg_ctl", ["-w", "-t", "60", "-m", "fast", "stop"], dd, timeout=70)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _log(f"pg_ctl stop failed for {dd}; terminating pid {info.pid}")
            info.process.terminate()
            try:
                info.process.wait(10)
            except Exception:
                info.process.kill()
        _log(f"stopped PostgreSQL for {dd}")
        return True


_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _connect_autocommit(uri: str):
    import adbc_driver_postgresql.dbapi as pg

    try:
        return pg.connect(uri, autocommit=True)
    except Exception as err:
        from dataset_assets.source.connect import redact, redact_error

        raise SourceError(f"Cannot connect to {redact(uri)} ({redact_error(str(err).strip().splitlines()[0], uri)}); "
                          f"check that the database server is running.") from None


def ensure_database(uri: str, name: str) -> str:
    """Create database ``name`` on the server of ``uri`` if missing; return its URI."""
    if not _DB_NAME.match(name):
        raise UserError(f"{name!r} is not a valid database name here: use letters, digits and underscores (at most 63).")
    with _connect_autocommit(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if cur.fetchone() is None:
            try:
                cur.execute(f'CREATE DATABASE "{name}"')
            except Exception as err:
                if "already exists" not in str(err):  # lost a race with another process: fine
                    raise SourceError(f"Cannot create database {name!r} ({str(err).strip().splitlines()[0]}).") from None
    return _with_database(uri, name)


def drop_database(uri: str, name: str) -> bool:
    """Drop database ``name`` (disconnecting its sessions); True if it existed."""
    if not _DB_NAME.match(name):
        raise UserError(f"{name!r} is not a valid database name here: use letters, digits and underscores (at most 63).")
    admin = uri if urlsplit(uri).path.strip("/") != name else _with_database(uri, USER)
    with _connect_autocommit(admin) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if cur.fetchone() is None:
            return False
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return True


if __name__ == "__main__":  # python -m dataset_assets.local.embedded [stop]
    if sys.argv[1:] == ["stop"]:
        print(stop_embedded())
    else:
        print(embedded_uri())
