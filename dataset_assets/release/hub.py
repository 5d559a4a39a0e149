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

Upload cost: the result says what the push sent. Files added (their sizes: what an LFS upload sends whole)
and files skipped because the Hub already holds them (same path and sha256). huggingface_hub uploads through
Xet whenever ``hf_xet`` imports (unless ``HF_HUB_DISABLE_XET=1``): files are cut into content-defined chunks
and only chunks the Hub's CAS lacks are sent. huggingface_hub does not return hf_xet's deduplication report,
so :class:`_XetMeter` wraps the Xet session huggingface_hub takes (``huggingface_hub.utils._xet.get_xet_session``,
only in the pushing thread) and keeps the report of each upload commit: new bytes after chunk dedup and the
xorb and shard bytes actually sent. If a huggingface_hub upgrade stops calling that function, the Xet numbers
are reported as not measured (None), never guessed.

A Hub that refuses the Xet token route (a Hub without Xet answers 404; hf_xet then raises a plain
``ConnectionError``) is told apart from a network failure by asking that route once: the push stops with one
sentence instead of retrying.

Releases move forward: ``main`` always holds the newest release. A date older than the newest
``snapshot-*`` tag is never committed to ``main``: if its own tag exists it is verified against the
manifests and left as it is (a retry, a backfill); if not, the push refuses in one sentence.

The token never appears in log lines, exception messages or the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, get_session
from huggingface_hub.utils.sha import git_hash

from dataset_assets import __version__
from dataset_assets.errors import UserError, VerificationError
from dataset_assets.storage.layout import MANIFEST, is_snapshot_date
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
    """What a push did and what it cost. ``added_*``: files sent (sizes as in the store); ``kept_*``: files
    skipped because the Hub already held them; ``sent_bytes``: file content the push sent (see
    :meth:`upload_summary`); ``xet_*``: hf_xet's report when the shards went through Xet (None: not Xet,
    or not measured)."""

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
    protocol: str = ""  # how the shards were sent: "xet", "lfs", or "" (no shard sent)
    sent_bytes: int = 0  # LFS: added_bytes; Xet: xet_sent_bytes + the small files sent inside the commit
    xet_new_bytes: int | None = None  # bytes of chunks the Hub's CAS did not hold (after chunk dedup)
    xet_deduped_bytes: int | None = None  # bytes of chunks the Hub already held (not sent)
    xet_sent_bytes: int | None = None  # xorb + shard bytes hf_xet uploaded (compressed, with metadata)

    def upload_summary(self) -> str:
        """One line: what was sent, what was skipped, and with Xet what chunk dedup saved."""
        if self.dry_run:
            return (f"would add {_count(self.added_files, self.added_bytes)}, skip "
                    f"{_count(self.kept_files, self.kept_bytes)} already on the Hub")
        text = (f"added {_count(self.added_files, self.added_bytes)}, skipped "
                f"{_count(self.kept_files, self.kept_bytes)} already on the Hub; sent {human_size(self.sent_bytes)}")
        if self.protocol == "xet":
            if self.xet_new_bytes is None:
                text += " through Xet (chunk dedup not measured)"
            else:
                text += (f" through Xet ({human_size(self.xet_new_bytes)} of new chunks after dedup, "
                         f"{human_size(self.xet_deduped_bytes or 0)} deduplicated)")
        elif self.protocol == "lfs":
            text += " through LFS (whole files)"
        return text


def _count(files: int, size: int) -> str:
    return f"{files} file{'s' if files != 1 else ''} ({human_size(size)})"


def xet_enabled() -> bool:
    """Whether huggingface_hub uploads large files through Xet in this process (as its ``is_xet_available``)."""
    return not constants.HF_HUB_DISABLE_XET and importlib.util.find_spec("hf_xet") is not None


class _XetMeter:
    """Keeps hf_xet's deduplication report of every Xet upload huggingface_hub makes inside :meth:`measure`.

    huggingface_hub (2.4) uploads with ``with get_xet_session().new_upload_commit(...) as commit:`` and drops
    the :class:`hf_xet.XetCommitReport` that ``commit.wait_to_finish()`` returns. The wrapper below is installed
    once on ``huggingface_hub.utils._xet.get_xet_session`` (looked up by huggingface_hub at each upload); in a
    thread that is not measuring it returns the session untouched.
    """

    _local = threading.local()
    _lock = threading.Lock()

    @classmethod
    def _install(cls) -> bool:
        try:
            from huggingface_hub.utils import _xet
        except ImportError:  # pragma: no cover - another huggingface_hub
            return False
        original = getattr(_xet, "get_xet_session", None)
        if original is None:  # pragma: no cover
            return False
        with cls._lock:
            if getattr(_xet.get_xet_session, "_dataset_assets_meter", False):
                return True

            def get_xet_session():
                session = original()
                reports = getattr(cls._local, "reports", None)
                return session if reports is None else _MeteredSession(session, reports)

            get_xet_session._dataset_assets_meter = True
            _xet.get_xet_session = get_xet_session
        return True

    @classmethod
    @contextlib.contextmanager
    def measure(cls, reports: list) -> Iterator[None]:
        """Append the dedup metrics of the Xet upload commits made in this thread to ``reports``."""
        if not cls._install():
            yield
            return
        cls._local.reports = reports
        try:
            yield
        finally:
            cls._local.reports = None


class _MeteredSession:
    def __init__(self, session, reports: list):
        self._session, self._reports = session, reports

    def new_upload_commit(self, *args, **kwargs):
        return _MeteredCommit(self._session.new_upload_commit(*args, **kwargs), self._reports)

    def __getattr__(self, name):
        return getattr(self._session, name)


class _MeteredCommit:
    def __init__(self, commit, reports: list):
        self._commit, self._reports = commit, reports

    def __enter__(self):
        self._commit.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            return self._commit.__exit__(exc_type, exc, tb)  # aborts the uploads
        self.wait_to_finish()  # what the real __exit__ does, keeping the report
        return False

    def wait_to_finish(self):
        report = self._commit.wait_to_finish()
        self._reports.append(report.dedup_metrics)
        return report

    def __getattr__(self, name):
        return getattr(self._commit, name)


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
        self.xet = xet_enabled()
        self._xet_reports: list = []  # hf_xet dedup metrics of every upload commit of this push (all attempts)
        self._shards_sent = False  # a commit attempt had shards to upload

    # --- steps -------------------------------------------------------------------------
    def run(self, *, private: bool, gated: str | bool, dry_run: bool, before_commit) -> PublishResult:
        exists = self._ensure_repo(private, gated, dry_run)
        existing_tag = self._check_tag() if exists else None
        newer = self._newer_release() if exists else None
        if newer is not None:
            # Releases move forward: main keeps the newest release. An older date that is
            # already tagged (a retry, a backfill) is verified and left where it is.
            if existing_tag is None:
                raise UserError(
                    f"The Hub's {self.repo_id} already holds the newer release {newer}, and main only moves forward, "
                    f"so snapshot {self.snap.date} is not pushed; its data stays in the store (release a new date "
                    f"to publish current data).")
            self._verify(existing_tag)
            self.say(f"Snapshot {self.snap.date} is already released as {self.tag} at {existing_tag[:12]}; "
                     f"main stays at the newer {newer}.")
            return self._result(self._plan_from(existing_tag, self._tree(existing_tag)), existing_tag, dry_run=dry_run)
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
        result = self._result(plan, sha, dry_run=False)
        self.say(f"Published snapshot {self.snap.date} to {self.repo_url} at {sha[:12]}, tagged {self.tag}: "
                 f"{result.upload_summary()}.")
        return result

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
            xet_upload = False  # set while create_commit may be uploading shards through Xet
            try:
                plan = self._plan()
                self.say(("Publishing " if attempt == 1 else f"Attempt {attempt}: re-planned ") + plan.summary())
                operations = self._operations(plan, tmp)
                if before_commit is not None:
                    before_commit(plan)
                self._shards_sent = self._shards_sent or bool(plan.add)
                xet_upload = self.xet and bool(plan.add)
                with _XetMeter.measure(self._xet_reports):
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
                    if xet_upload and (refusal := self._xet_refusal()) is not None:
                        raise refusal from None
                    raise
                cause = err.__cause__
                raise UserError(
                    f"Uploading {match.group('path')} to {self.repo_id} failed "
                    f"({_describe(cause) if cause else err}); nothing was committed and rerunning publish is safe."
                ) from None
            except Exception as err:
                if xet_upload and isinstance(err, OSError) and (refusal := self._xet_refusal()) is not None:
                    raise refusal from None  # hf_xet reports a refused token route as a ConnectionError
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

    def _xet_refusal(self) -> UserError | None:
        """After a failed Xet upload: the one-sentence error if the Hub refuses its Xet write-token route
        (asked once, not retried), None if the route answers (then the failure was something else)."""
        route = f"/api/datasets/{self.repo_id}/xet-write-token/main"
        try:
            response = get_session().get(
                self.api.endpoint + route, timeout=30,
                headers=build_hf_headers(token=self.api.token, library_name="dataset-assets",
                                         library_version=__version__))
        except Exception:  # noqa: BLE001 - the network itself: left to the retries
            return None
        status = response.status_code
        if status < 400 or status >= 500 or status in (408, 429):
            return None
        if status in (401, 403):
            return UserError(
                f"The Hub refused the token on its Xet write-token route (HTTP {status}, {route}), so snapshot "
                f"{self.snap.date} was not uploaded; use a token with write access to {self.repo_id}.")
        return UserError(
            f"The Hub at {self.api.endpoint} refused its Xet write-token route (HTTP {status}, {route}), so it "
            f"cannot take the Xet uploads huggingface_hub makes by default and nothing was committed; for a Hub "
            f"without Xet set HF_HUB_DISABLE_XET=1 (uploads then use LFS), then rerun publish, which is safe.")

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

    def _newer_release(self) -> str | None:
        """The newest ``snapshot-<date>`` tag whose date is after this snapshot's, if any."""
        dates = [t[len("snapshot-"):] for t in self._tags() if t.startswith("snapshot-")]
        newer = sorted(d for d in dates if is_snapshot_date(d) and d > self.snap.date)
        return f"snapshot-{newer[-1]}" if newer else None

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

    def _cost(self, plan: PublishPlan, dry_run: bool) -> dict:
        """``protocol``, ``sent_bytes`` and the ``xet_*`` numbers of the result (see :class:`PublishResult`)."""
        added_bytes = sum(f.size for f in plan.added)
        if dry_run or not self._shards_sent:
            return {"protocol": "", "sent_bytes": 0 if dry_run else added_bytes}
        if not self.xet:
            return {"protocol": "lfs", "sent_bytes": added_bytes}
        inline = sum(len(b) for p, b in plan.write.items() if p not in plan.unchanged)  # sent inside the commit
        if not self._xet_reports:  # not measured (see _XetMeter): report the files' sizes, no Xet numbers
            return {"protocol": "xet", "sent_bytes": added_bytes}
        xet_sent = sum(m.xorb_bytes_uploaded + m.shard_bytes_uploaded for m in self._xet_reports)
        return {"protocol": "xet", "sent_bytes": xet_sent + inline, "xet_sent_bytes": xet_sent,
                "xet_new_bytes": sum(m.new_bytes for m in self._xet_reports),
                "xet_deduped_bytes": sum(m.deduped_bytes for m in self._xet_reports)}

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
            **self._cost(plan, dry_run),
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
