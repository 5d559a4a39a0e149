"""The one check of stored (or pushed) files against their manifest, and ``verify``:
re-hash every file of a snapshot date (the shards, and the files a manifest records beside
them: the change feed and the row index of layout clustered, :func:`side_files`).

:func:`file_problems` is used by ``verify`` and the checksum asset check (sizes and
sha256 of the store's objects), by the release before a push (sizes), and by the Hub
push after it (sizes and sha256 of the remote files).

Imports only ``errors`` and ``storage``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dataset_assets.errors import UserError
from dataset_assets.storage.layout import MANIFEST, SUCCESS, date_tables, table_prefix
from dataset_assets.storage.manifest import FileEntry, Manifest, load_manifest, root_hash, side_files
from dataset_assets.storage.stores.base import Store


@dataclass(frozen=True)
class Found:
    """A file as found where it is stored: its size, and its sha256 when known without reading it."""

    size: int
    sha256: str | None = None


def file_problems(files: Iterable[FileEntry], found: Mapping[str, Found], where: str, *,
                  digest: Callable[[str], str] | None = None, allowed_extra: Iterable[str] = ()) -> list[str]:
    """How the files ``found`` (name -> :class:`Found`) differ from the manifest's ``files``:
    missing, another size, another sha256 (known, or computed by ``digest(name)``; neither:
    not compared), and files the manifest does not list (but ``allowed_extra``). Each
    problem names ``where/<name>``."""
    problems = []
    listed = set()
    for f in files:
        listed.add(f.path)
        key = f"{where}/{f.path}"
        got = found.get(f.path)
        if got is None:
            problems.append(f"{key}: missing")
            continue
        if got.size != f.bytes:
            problems.append(f"{key}: {got.size} bytes, manifest says {f.bytes}")
            continue
        sha = got.sha256 if got.sha256 is not None else (digest(f.path) if digest else None)
        if sha is not None and sha != f.sha256:
            problems.append(f"{key}: sha256 {sha} differs from the manifest's {f.sha256}")
    extra = set(found) - listed - set(allowed_extra)
    problems += [f"{where}/{name}: not listed in the manifest" for name in sorted(extra)]
    return problems


def stored_files(store: Store, prefix: str) -> dict[str, Found]:
    """The objects directly in ``prefix``, by name."""
    base = prefix.rstrip("/") + "/"
    return {o.key[len(base):]: Found(o.size) for o in store.list(base)}


@dataclass
class VerifyReport:
    table: str
    prefix: str
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_table(store: Store, snapshot: str, table: str) -> VerifyReport:
    prefix = table_prefix(snapshot, table)
    report = VerifyReport(table, prefix)
    if not store.is_complete(prefix):
        report.problems.append(f"{prefix}: no {SUCCESS} marker (incomplete snapshot)")
        if not store.exists(f"{prefix}/{MANIFEST}"):
            return report
    try:
        manifest: Manifest = load_manifest(store, prefix, table, snapshot)
    except UserError as exc:
        report.problems.append(str(exc))
        return report
    if root_hash(manifest.files) != manifest.root_hash:
        report.problems.append(f"{prefix}/{MANIFEST}: root hash does not match its file list")
    try:
        beside = side_files(manifest)
    except UserError as exc:
        report.problems.append(str(exc))
        beside = []
    files = manifest.files + beside
    report.files_checked = len(files)
    report.problems += file_problems(files, stored_files(store, prefix), prefix,
                                     digest=lambda name: store.sha256(f"{prefix}/{name}"),
                                     allowed_extra=(MANIFEST, SUCCESS))
    report.problems += _feed_problems(store, manifest, prefix)
    return report


def _feed_problems(store: Store, manifest: Manifest, prefix: str) -> list[str]:
    """The change feed against its own manifest entry: its rows are the counts it states, and the
    release it is chained to (``base_root_hash``) is the base snapshot's, when that is still in the store."""
    changes = manifest.changes
    if not isinstance(changes, dict):
        return []
    problems = []
    counts = [changes.get(k) for k in ("inserted", "updated", "deleted")]
    rows = sum(f.get("rows", 0) for f in changes.get("files") or [] if isinstance(f, dict))
    if not all(isinstance(c, int) for c in counts) or sum(counts) != rows:
        problems.append(f"{prefix}/{MANIFEST}: the change feed holds {rows} rows, but states {counts[0]} inserted, "
                        f"{counts[1]} updated and {counts[2]} deleted")
    base = changes.get("base_snapshot")
    if isinstance(base, str) and base < manifest.snapshot and store.exists(f"{table_prefix(base, manifest.table)}/{MANIFEST}"):
        try:
            previous = load_manifest(store, table_prefix(base, manifest.table), manifest.table, base)
        except UserError:
            return problems  # that snapshot's own verify says what is wrong with it
        if previous.root_hash != changes.get("base_root_hash"):
            problems.append(f"{prefix}/{MANIFEST}: the change feed is chained to root hash "
                            f"{changes.get('base_root_hash')} of {base}, but {base} in the store has {previous.root_hash}")
    return problems


def verify_snapshot(store: Store, snapshot: str, tables: list[str] | None = None) -> list[VerifyReport]:
    found = date_tables(store, snapshot)
    if not found:
        raise UserError(f"There is no snapshot {snapshot} in {store.url}; list the dates under snapshots/ or export one first.")
    for t in tables or []:
        if t not in found:
            raise UserError(f"Snapshot {snapshot} in {store.url} has no table {t!r}; it has: {', '.join(found)}.")
    return [verify_table(store, snapshot, t) for t in (tables or found)]
