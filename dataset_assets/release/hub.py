"""Publish one snapshot of a store to a Hugging Face dataset repo (engine side, no Dagster).

:func:`publish_snapshot` makes the repo's default branch hold exactly the snapshot, in one atomic commit:

1. check the snapshot (README.md, ``_SUCCESS`` and ``_manifest.json`` in every table folder);
2. create the repo if missing (visibility and gating are set only at creation);
3. plan against the head of ``main``: a shard is uploaded unless the Hub already has that path with the same
   sha256 (from the tree API's LFS info); remote files under the table folders (and any other ``.parquet``
   or ``.arrow`` file) that are not part of the snapshot are deleted; ``README.md`` and every
   ``<table>/_manifest.json`` are always written (unchanged ones are dropped by the client);
4. one ``create_commit`` with ``parent_commit`` = the planned head. If another commit landed meanwhile the
   Hub answers 412 and publishing stops with a :class:`UserError`. Transient failures (429, 5xx, network)
   re-read the head, re-plan and retry with backoff: the commit is atomic on the Hub, so this is safe;
5. verify the tree of the new commit against the manifests (size and sha256 of every shard);
6. tag the commit ``snapshot-YYYY-MM-DD``. An existing tag is accepted only if it points at identical
   content (checked before committing anything).

The token never appears in log lines, exception messages or the result.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.sha import git_hash

from dataset_assets import __version__
from dataset_assets.errors import UserError, VerificationError
from dataset_assets.storage.layout import MANIFEST
from dataset_assets.storage.manifest import FileEntry
from dataset_assets.storage.stores.base import Store
from dataset_assets.storage.verify import Found, file_problems
from dataset_assets.release.snapshot import Shard, Snapshot, load_snapshot

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
DATA_SUFFIXES = (".parquet", ".arrow")
_UPLOAD_FAILED = re.compile(r"Error while uploading '(?P<path>.+)' to the Hub")


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int


@dataclass
class PublishPlan:
    """What one commit will do. ``head`` is the commit it is planned against (None: the repo does not exist).

    ``write`` (README.md and the manifests) is always sent; ``unchanged`` names those the Hub already holds
    byte for byte, which are reported as kept (the client drops them from the commit).
    """

    repo_id: str
    snapshot: str
    head: str | None
    add: list[Shard] = field(default_factory=list)
    keep: list[Shard] = field(default_factory=list)
    write: dict[str, bytes] = field(default_factory=dict)
    unchanged: set[str] = field(default_factory=set)
    delete: list[PlannedFile] = field(default_factory=list)

    @property
    def added(self) -> list[PlannedFile]:
        return [PlannedFile(s.repo_path, s.size) for s in self.add] + [
            PlannedFile(p, len(b)) for p, b in self.write.items() if p not in self.unchanged]

    @property
    def kept(self) -> list[PlannedFile]:
        return [PlannedFile(s.repo_path, s.size) for s in self.keep] + [
            PlannedFile(p, len(b)) for p, b in self.write.items() if p in self.unchanged]

    def summary(self) -> str:
        def count(files: list) -> str:
            return f"{len(files)} file{'s' if len(files) != 1 else ''} ({human_size(sum(f.size for f in files))})"

        return (f"snapshot {self.snapshot} -> {self.repo_id} (head {(self.head or 'none')[:12]}): "
                f"add {count(self.added)}, delete {count(self.delete)}, keep {count(self.kept)}")

    def lines(self) -> list[str]:
        """One line per file, for a dry run."""
        rows = [("add", f) for f in self.added] + [("delete", f) for f in self.delete] + [("keep", f) for f in self.kept]
        return [f"  {verb:<6} {f.path}  {human_size(f.size)}" for verb, f in rows]


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    repo_url: str
    snapshot: str
    tag: str
    commit_sha: str | None  # None for a dry run
    dry_run: bool
    committed: bool  # False when the Hub already held the snapshot (no new commit) or for a dry run
    added_files: int
    added_bytes: int
    deleted_files: int
    deleted_bytes: int
    kept_files: int
    kept_bytes: int
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    manifests: tuple[bytes, ...] = ()  # each table's _manifest.json as published, in table-folder order


def publish_snapshot(
    store: Store,
    snapshot: str,
    repo_id: str,
    *,
    token: str | None,
    endpoint: str | None = None,
    private: bool = True,
    gated: bool | str = False,
    dry_run: bool = False,
    log: Callable[[str], object] = print,
    before_commit: Callable[[PublishPlan], object] | None = None,
    max_attempts: int = 4,
    retry_wait: float = 2.0,
) -> PublishResult:
    """Publish ``snapshots/<snapshot>`` of ``store`` to the dataset repo ``repo_id`` (see the module docstring).

    ``before_commit`` is called with the plan right before each commit attempt (a test hook).
    Failures a user can act on raise :class:`UserError`; rerunning after any failure is safe.
    """
    secret = token or get_token()

    def scrub(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    try:
        pusher = _Pusher(store, snapshot, repo_id, token, endpoint, lambda msg: log(scrub(msg)), max_attempts, retry_wait)
        return pusher.run(private=private, gated=_gated_value(gated), dry_run=dry_run, before_commit=before_commit)
    except UserError as err:
        if secret and secret in str(err):
            raise type(err)(scrub(str(err))) from None
        raise
    except Exception as err:
        if secret and secret in f"{err!r} {err}":
            raise RuntimeError(scrub(f"{type(err).__name__}: {err}")) from None
        raise


def _gated_value(gated: bool | str) -> str | bool:
    if gated is True:
        return "auto"
    if gated in (False, None):
        return False
    if gated not in ("auto", "manual"):
        raise UserError(f"gated must be True, False, 'auto' or 'manual', not {gated!r}.")
    return gated


class _Pusher:
    def __init__(self, store, snapshot, repo_id, token, endpoint, say, max_attempts, retry_wait):
        self.store, self.repo_id, self.say = store, repo_id, say
        self.snap: Snapshot = load_snapshot(store, snapshot)
        self.tag = f"snapshot-{snapshot}"
        self.api = HfApi(endpoint=endpoint, token=token, library_name="dataset-assets", library_version=__version__)
        self.repo_url = f"{self.api.endpoint}/datasets/{repo_id}"
        self.max_attempts, self.retry_wait = max(1, max_attempts), retry_wait
        self._checked: set[str] = set()  # store keys whose sha256 was checked against the manifest

    # --- steps -------------------------------------------------------------------------
    def run(self, *, private: bool, gated: str | bool, dry_run: bool, before_commit) -> PublishResult:
        exists = self._ensure_repo(private, gated, dry_run)
        existing_tag = self._check_tag() if exists else None
        if dry_run:
            plan = self._plan() if exists else self._plan_from(None, {})
            self.say(f"Dry run, nothing changed. Would publish {plan.summary()}")
            for line in plan.lines():
                self.say(line)
            return self._result(plan, None, dry_run=True)
        with tempfile.TemporaryDirectory(prefix="hub-publish-") as tmp:
            sha, plan = self._commit(Path(tmp), before_commit)
        self._verify(sha)
        self._tag(sha, existing_tag)
        self.say(f"Published snapshot {self.snap.date} to {self.repo_url} at {sha[:12]}, tagged {self.tag}.")
        return self._result(plan, sha, dry_run=False)

    def _ensure_repo(self, private: bool, gated: str | bool, dry_run: bool) -> bool:
        try:
            info = self._call("read the repository", lambda: self.api.repo_info(self.repo_id, repo_type="dataset"))
        except _NotFound:
            info = None
        if info is not None:
            if bool(info.private) != private or (info.gated or False) != gated:
                self.say(f"Note: {self.repo_id} exists with private={info.private}, gated={info.gated or False}; "
                         "publish leaves the settings of an existing repository unchanged.")
            return True
        if dry_run:
            self.say(f"{self.repo_id} does not exist; it would be created (private={private}, gated={gated}).")
            return False
        self._call("create the repository", lambda: self.api.create_repo(
            self.repo_id, repo_type="dataset", private=private, exist_ok=True))
        if gated:
            self._call("gate the repository", lambda: self.api.update_repo_settings(
                self.repo_id, repo_type="dataset", gated=gated))
        self.say(f"Created {self.repo_url} (private={private}, gated={gated}).")
        return True

    def _check_tag(self) -> str | None:
        """The commit ``snapshot-<date>`` points at; refuse if it holds other content than this snapshot."""
        target = self._tags().get(self.tag)
        if target is not None:
            problems = _mismatches(self._tree(target), self.snap)
            if problems:
                raise UserError(
                    f"Tag {self.tag} already exists on {self.repo_id} at {target[:12]} with different content "
                    f"({problems[0]}); snapshots are immutable, so delete that tag on the Hub only if you really "
                    "mean to republish this date.")
        return target

    def _plan(self) -> PublishPlan:
        head = self._call("read the repository", lambda: self.api.repo_info(self.repo_id, repo_type="dataset")).sha
        return self._plan_from(head, self._tree(head))

    def _plan_from(self, head: str | None, remote: dict[str, RepoFile]) -> PublishPlan:
        snap = self.snap
        plan = PublishPlan(self.repo_id, snap.date, head, write=snap.metadata_files())
        for shard in snap.shards:
            r = remote.get(shard.repo_path)
            same = r is not None and r.lfs is not None and r.lfs.sha256 == shard.sha256 and r.size == shard.size
            (plan.keep if same else plan.add).append(shard)
        for path, data in plan.write.items():
            r = remote.get(path)
            if r is not None and r.lfs is None and r.blob_id == git_hash(data):
                plan.unchanged.add(path)
        wanted = {s.repo_path for s in snap.shards} | set(plan.write)
        managed = {t.name for t in snap.tables} | {p.rsplit("/", 1)[0] for p in remote if p.endswith("/_manifest.json")}
        for path, r in sorted(remote.items()):
            folders = path.split("/")[:-1]
            in_table = any("/".join(folders[: i + 1]) in managed for i in range(len(folders)))
            if path not in wanted and (in_table or path.endswith(DATA_SUFFIXES)):
                plan.delete.append(PlannedFile(path, r.size))
        return plan

    def _commit(self, tmp: Path, before_commit) -> tuple[str, PublishPlan]:
        """Plan and commit, re-planning after transient failures; returns (commit sha, plan)."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                plan = self._plan()
                self.say(("Publishing " if attempt == 1 else f"Attempt {attempt}: re-planned ") + plan.summary())
                operations = self._operations(plan, tmp)
                if before_commit is not None:
                    before_commit(plan)
                info = self.api.create_commit(
                    self.repo_id, operations, repo_type="dataset", parent_commit=plan.head,
                    commit_message=f"Publish snapshot {self.snap.date}",
                    commit_description=plan.summary(),
                )
                return info.oid, plan
            except HfHubHTTPError as err:
                status = _status(err)
                if status in (409, 412):
                    raise UserError(
                        f"Another commit landed on {self.repo_id} while snapshot {self.snap.date} was being "
                        "published, so the Hub refused this commit; rerunning publish "
                        "is safe.") from None
                if status not in TRANSIENT_STATUS or attempt == self.max_attempts:
                    raise _hub_error(err, f"publish snapshot {self.snap.date} to {self.repo_id}") from None
                reason = f"HTTP {status}"
            except RuntimeError as err:
                match = _UPLOAD_FAILED.search(str(err))
                if not match:
                    raise
                cause = err.__cause__
                raise UserError(
                    f"Uploading {match.group('path')} to {self.repo_id} failed "
                    f"({_describe(cause) if cause else err}); nothing was committed and rerunning publish is safe."
                ) from None
            except Exception as err:
                if not _is_network_error(err):
                    raise
                if attempt == self.max_attempts:
                    raise UserError(f"Could not reach the Hub to publish snapshot {self.snap.date} to {self.repo_id} "
                                    f"({type(err).__name__}); check the network, then rerun publish, which is safe.") from None
                reason = type(err).__name__
            wait = min(self.retry_wait * 2 ** (attempt - 1), 60)
            self.say(f"The Hub failed ({reason}); retrying in {wait:g}s (attempt {attempt + 1}/{self.max_attempts}).")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _operations(self, plan: PublishPlan, tmp: Path) -> list:
        ops: list = []
        for shard in plan.add:
            op = CommitOperationAdd(shard.repo_path, self._local_file(shard, tmp))
            if shard.key in self._checked:
                op.upload_info.sha256 = bytes.fromhex(shard.sha256)
            else:
                if op.upload_info.sha256.hex() != shard.sha256:
                    raise VerificationError(
                        f"{shard.key} in {self.store.url} does not match the sha256 in its manifest; "
                        f"rerun the export of table {shard.table} (nothing was published).")
                self._checked.add(shard.key)
            ops.append(op)
        ops += [CommitOperationAdd(path, data) for path, data in plan.write.items()]
        ops += [CommitOperationDelete(f.path) for f in plan.delete]
        return ops

    def _local_file(self, shard: Shard, tmp: Path) -> str:
        local = self.store.local_path(shard.key)
        if local is not None and local.is_file():
            return str(local)
        target = tmp / shard.key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.store.open(shard.key) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return str(target)

    def _verify(self, sha: str) -> None:
        problems = _mismatches(self._tree(sha), self.snap)
        if problems:
            raise VerificationError(
                f"After publishing, {self.repo_id} at {sha[:12]} does not match snapshot {self.snap.date}: "
                f"{'; '.join(problems[:3])}; rerun publish.")

    def _tag(self, sha: str, existing: str | None) -> None:
        if existing is None:
            try:
                self._call("tag the commit", lambda: self.api.create_tag(
                    self.repo_id, tag=self.tag, revision=sha, repo_type="dataset",
                    tag_message=f"Snapshot {self.snap.date}"))
                return
            except UserError:
                existing = self._check_tag()  # created meanwhile? accepted only with identical content
                if existing is None:
                    raise
        if existing != sha:
            self.say(f"Tag {self.tag} already points at {existing[:12]}, which holds identical content; left as is.")

    # --- Hub reads with retries -------------------------------------------------------
    def _tree(self, revision: str) -> dict[str, RepoFile]:
        def read():
            return {f.path: f for f in self.api.list_repo_tree(
                self.repo_id, repo_type="dataset", revision=revision, recursive=True) if isinstance(f, RepoFile)}

        return self._call("list the repository files", read)

    def _tags(self) -> dict[str, str]:
        refs = self._call("list the repository tags", lambda: self.api.list_repo_refs(self.repo_id, repo_type="dataset"))
        return {t.name: t.target_commit for t in refs.tags}

    def _call(self, doing: str, fn):
        """Run a Hub call, retrying transient failures; other failures become a UserError."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except RepositoryNotFoundError:
                raise _NotFound(f"The dataset repo {self.repo_id} does not exist on the Hub or the token cannot "
                                "see it; check the repo id and the token.") from None
            except HfHubHTTPError as err:
                if _status(err) not in TRANSIENT_STATUS or attempt == self.max_attempts:
                    raise _hub_error(err, f"{doing} ({self.repo_id})") from None
                reason = f"HTTP {_status(err)}"
            except Exception as err:
                if not _is_network_error(err):
                    raise
                if attempt == self.max_attempts:
                    raise UserError(f"Could not reach the Hub to {doing} ({type(err).__name__}); "
                                    "check the network and rerun publish, which is safe.") from None
                reason = type(err).__name__
            wait = min(self.retry_wait * 2 ** (attempt - 1), 60)
            self.say(f"The Hub failed to {doing} ({reason}); retrying in {wait:g}s.")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _result(self, plan: PublishPlan, sha: str | None, dry_run: bool) -> PublishResult:
        added, kept = plan.added, plan.kept
        return PublishResult(
            repo_id=self.repo_id, repo_url=self.repo_url, snapshot=self.snap.date, tag=self.tag,
            commit_sha=sha, dry_run=dry_run, committed=sha is not None and sha != plan.head,
            added_files=len(added), added_bytes=sum(f.size for f in added),
            deleted_files=len(plan.delete), deleted_bytes=sum(f.size for f in plan.delete),
            kept_files=len(kept), kept_bytes=sum(f.size for f in kept),
            added=tuple(f.path for f in added), deleted=tuple(f.path for f in plan.delete),
            manifests=tuple(t.manifest for t in self.snap.tables),
        )


class _NotFound(UserError):
    """The repository does not exist (or the token cannot see it)."""


def _mismatches(tree: dict[str, RepoFile], snap: Snapshot) -> list[str]:
    """How the remote files ``tree`` differ from ``snap`` (empty: the tree holds exactly the snapshot).
    Shards go through the one files-vs-manifest check (sizes, and the sha256 the Hub keeps for
    LFS/Xet files); the card and manifests are compared byte for byte by their hashes."""
    problems = []
    for t in snap.tables:
        found = {path.split("/", 1)[1]: Found(r.size, r.lfs.sha256 if r.lfs else "(not stored with LFS)")
                 for path, r in tree.items() if path.split("/", 1)[0] == t.name and "/" in path}
        entries = [FileEntry(path=s.repo_path.split("/", 1)[1], rows=s.rows, bytes=s.size, sha256=s.sha256) for s in t.shards]
        problems += file_problems(entries, found, t.name, allowed_extra=(MANIFEST,))
    for path, data in snap.metadata_files().items():
        r = tree.get(path)
        if r is None:
            problems.append(f"{path} is missing")
        elif (r.lfs.sha256 if r.lfs else r.blob_id) != (_sha256(data) if r.lfs else git_hash(data)):
            problems.append(f"{path} differs from the snapshot's")
    return problems


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _status(err: HfHubHTTPError) -> int | None:
    return err.response.status_code if getattr(err, "response", None) is not None else None


def _describe(err: BaseException) -> str:
    if isinstance(err, HfHubHTTPError):
        return f"HTTP {_status(err)}: {err.server_message or 'no details'}"
    return f"{type(err).__name__}: {err}"


def _hub_error(err: HfHubHTTPError, doing: str) -> UserError:
    status = _status(err)
    if status in (401, 403):
        return UserError(f"The Hub refused the token (HTTP {status}) when trying to {doing}; "
                         "use a token with write access to that repository.")
    return UserError(f"The Hub failed to {doing}: {_describe(err)}; rerunning publish is safe.")


def _is_network_error(err: Exception) -> bool:
    try:
        import httpx2
    except ImportError:  # pragma: no cover
        return isinstance(err, (ConnectionError, TimeoutError))
    return isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
