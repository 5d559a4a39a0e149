"""Re-hash every file of a stored snapshot against its manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from dataset_assets.errors import UserError
from dataset_assets.storage.stores import MANIFEST, SUCCESS, Store
from dataset_assets.storage.manifest import Manifest, root_hash


@dataclass
class VerifyReport:
    table: str
    prefix: str
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def snapshot_tables(store: Store, snapshot: str) -> list[str]:
    return sorted(p.rsplit("/", 1)[-1] for p in store.iter_prefixes(f"snapshots/{snapshot}"))


def load_manifest(store: Store, prefix: str) -> Manifest:
    try:
        return Manifest.from_json(store.read_bytes(f"{prefix}/{MANIFEST}"))
    except FileNotFoundError:
        raise UserError(f"{prefix} has no {MANIFEST} in {store.url}: it is not a complete snapshot; rerun the export.") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not JSON, or not a manifest's fields
        raise UserError(f"{prefix}/{MANIFEST} in {store.url} is damaged ({type(exc).__name__}: {exc}); "
                        f"rerun the export of this snapshot with --force.") from None


def verify_table(store: Store, snapshot: str, table: str) -> VerifyReport:
    prefix = f"snapshots/{snapshot}/{table}"
    report = VerifyReport(table, prefix)
    if not store.is_complete(prefix):
        report.problems.append(f"{prefix}: no {SUCCESS} marker (incomplete snapshot)")
        if not store.exists(f"{prefix}/{MANIFEST}"):
            return report
    try:
        manifest = load_manifest(store, prefix)
    except UserError as exc:
        report.problems.append(str(exc))
        return report
    if root_hash(manifest.files) != manifest.root_hash:
        report.problems.append(f"{prefix}/{MANIFEST}: root hash does not match its file list")
    present = {o.key: o.size for o in store.list(prefix)}
    for f in manifest.files:
        key = f"{prefix}/{f.path}"
        report.files_checked += 1
        if key not in present:
            report.problems.append(f"{key}: missing")
            continue
        if present[key] != f.bytes:
            report.problems.append(f"{key}: {present[key]} bytes, manifest says {f.bytes}")
            continue
        digest = store.sha256(key)
        if digest != f.sha256:
            report.problems.append(f"{key}: sha256 {digest} differs from the manifest's {f.sha256}")
    listed = {f"{prefix}/{f.path}" for f in manifest.files} | {f"{prefix}/{MANIFEST}", f"{prefix}/{SUCCESS}"}
    for key in sorted(set(present) - listed):
        report.problems.append(f"{key}: not listed in the manifest")
    return report


def verify_snapshot(store: Store, snapshot: str, tables: list[str] | None = None) -> list[VerifyReport]:
    found = snapshot_tables(store, snapshot)
    if not found:
        raise UserError(f"There is no snapshot {snapshot} in {store.url}; list the dates under snapshots/ or export one first.")
    for t in tables or []:
        if t not in found:
            raise UserError(f"Snapshot {snapshot} in {store.url} has no table {t!r}; it has: {', '.join(found)}.")
    return [verify_table(store, snapshot, t) for t in (tables or found)]
