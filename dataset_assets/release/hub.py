"""Publish one snapshot of a store to a Hugging Face dataset repo (engine side, no Dagster).

:func:`publish_snapshot` makes the repo's default branch hold exactly the snapshot, in one atomic commit:

1. check the snapshot (README.md, ``_SUCCESS`` and ``_manifest.json`` in every table folder);
2. create the repo if missing; an existing repo whose visibility or gating differs from the configured
   ``private``/``gated`` is brought in line when ``apply_settings`` is set, else the push refuses in one
   sentence (unless the Hub already holds this release, then it only says so): never published silently
   under other terms;
3. plan against the head of ``main``: a shard (or a file of a table's change feed, ``<table>/changes/``; the
   row index ``_index.parquet`` never leaves the store) is uploaded unless the Hub already has that path with the same
   sha256 (from the tree API's LFS info); remote files under the table folders (and any other ``.parquet``
   or ``.arrow`` file) that are not part of the snapshot are deleted; ``README.md`` and every
   ``<table>/_manifest.json`` are always written (unchanged ones are dropped by the client);
4. check the plan against the Hub's limits (:class:`~dataset_assets.release.snapshot.HubLimits`: files per
   commit, per folder and per repo, file size, and the row groups of the shards to upload, read from their
   parquet footers) and refuse in one sentence if it breaks one;
5. one ``create_commit`` with ``parent_commit`` = the planned head. If another commit landed meanwhile the
   Hub answers 412 and publishing stops with a :class:`UserError`. Transient failures (429, 5xx, network)
   re-read the head, re-plan and retry with backoff (at least the ``Retry-After`` the Hub asks for): the
   commit is atomic on the Hub, so this is safe;
6. verify the tree of the new commit against the manifests (size and sha256 of every shard and change feed file);
7. tag the commit ``snapshot-YYYY-MM-DD``. An existing tag is accepted only if it points at identical
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

Every failure a user can act on is one :class:`UserError` sentence saying what to do: no token, a token
the Hub rejects (HTTP 401) or one without write access (HTTP 403, told apart with ``whoami``: read-only, or a
namespace the token's user cannot write to), rate limiting (429, with when to retry), card metadata the Hub
rejects (naming the field), a commit too large (413), a Hub that cannot be reached (a refused connection is
retried once, briefly), a concurrent writer (412). The token never appears in log lines, exception messages
or the result.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import importlib.util
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import BadRequestError, HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, get_session
from huggingface_hub.utils.sha import git_hash

from dataset_assets import __version__
from dataset_assets.errors import UserError, VerificationError
from dataset_assets.storage.layout import MANIFEST, is_snapshot_date
from dataset_assets.storage.manifest import FileEntry
from dataset_assets.storage.stores.base import Store
from dataset_assets.storage.verify import Found, file_problems
from dataset_assets.release.card.docs import GENERATED_KEYS as GENERATED_CARD_KEYS
from dataset_assets.release.snapshot import (
    DEFAULT_LIMITS, HubLimits, Shard, Snapshot, commit_limit_problem, file_limit_problem, load_snapshot,
    row_group_problem,
)

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After ends the push at once with when to retry
CONNECT_ATTEMPTS = 2  # a refused connection (or an unknown host) is tried this often, 1 s apart at most
TOKEN_PAGE = "https://huggingface.co/settings/tokens"
APPLY_SETTINGS = "--apply-settings (apply_settings: true on the Dagster hub resource)"
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
    remote: set[str] = field(default_factory=set)  # every file at ``head``

    @property
    def added(self) -> list[PlannedFile]:
        return [PlannedFile(s.repo_path, s.size) for s in self.add] + [
            PlannedFile(p, len(b)) for p, b in self.write.items() if p not in self.unchanged]

    def tree_after(self) -> set[str]:
        """Every file path the repo holds once this plan is committed."""
        return (self.remote - {f.path for f in self.delete}) | set(self.write) | {s.repo_path for s in self.add}

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
    private: bool | None = None,
    gated: bool | str | None = None,
    apply_settings: bool = False,
    dry_run: bool = False,
    log: Callable[[str], object] = print,
    before_commit: Callable[[PublishPlan], object] | None = None,
    max_attempts: int = 4,
    retry_wait: float = 2.0,
    limits: HubLimits = DEFAULT_LIMITS,
) -> PublishResult:
    """Publish ``snapshots/<snapshot>`` of ``store`` to the dataset repo ``repo_id`` (see the module docstring).

    ``private`` and ``gated`` (True = "auto", "manual", False) are the configured terms: a new repo is created
    with them and an existing one must have them (``apply_settings=True`` changes its settings to them, else
    a difference is refused); None leaves that setting out of the configuration (a new repo is then private,
    not gated, and an existing one keeps its own). ``limits`` are the Hub's (lowered by tests).
    ``before_commit`` is called with the plan right before each commit attempt (a test hook).
    Failures a user can act on raise :class:`UserError`; rerunning after any failure is safe.
    """
    secret = token or get_token()

    def scrub(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    if not secret:
        raise UserError(f"No Hugging Face token was found, so snapshot {snapshot} cannot be published to {repo_id}; "
                        f"set HF_TOKEN to a token with write access ({TOKEN_PAGE}) or run `hf auth login`, "
                        "then rerun publish.")
    try:
        pusher = _Pusher(store, snapshot, repo_id, token, endpoint, lambda msg: log(scrub(msg)), max_attempts,
                         retry_wait, limits)
        return pusher.run(private=private, gated=None if gated is None else _gated_value(gated),
                          apply_settings=apply_settings, dry_run=dry_run, before_commit=before_commit)
    except UserError as err:
        if secret and secret in str(err):
            raise type(err)(scrub(str(err))) from None
        raise
    except Exception as err:
        if secret and secret in f"{err!r} {err}":
            raise RuntimeError(scrub(f"{type(err).__name__}: {err}")) from None
        raise


@dataclass(frozen=True)
class ReleaseFound:
    repo_id: str
    tag: str
    commit: str
    url: str


def verify_release(store: Store, date: str, repo_id: str, *, token: str | None, endpoint: str | None = None,
                   max_attempts: int = 4, retry_wait: float = 2.0) -> ReleaseFound:
    """Check that the tag ``snapshot-<date>`` of ``repo_id`` holds exactly the snapshot in ``store`` (every
    shard's size and sha256, the card and the public manifests), with the push's own Hub calls, retries and
    error sentences; raise :class:`UserError` in one sentence if not."""
    pusher = _Pusher(store, date, repo_id, token, endpoint, lambda msg: None, max_attempts, retry_wait)
    target = pusher._tags().get(pusher.tag)
    if target is None:
        raise UserError(f"Snapshot {date} is marked released to {repo_id} in {store.url}, but the Hub has no tag "
                        f"{pusher.tag}; check the repo, or tag the commit the store recorded for it again.")
    problems = _mismatches(pusher._tree(target), pusher.snap)
    if problems:
        raise UserError(f"The release tag {pusher.tag} of {repo_id} at {target[:12]} does not match snapshot {date} "
                        f"in {store.url}: {problems[0]}; find out what changed the store or the Hub.")
    return ReleaseFound(repo_id, pusher.tag, target, pusher.repo_url)


def _gated_value(gated: bool | str) -> str | bool:
    if gated is True:
        return "auto"
    if gated in (False, None):
        return False
    if gated not in ("auto", "manual"):
        raise UserError(f"gated must be True, False, 'auto' or 'manual', not {gated!r}.")
    return gated


class _Pusher:
    def __init__(self, store, snapshot, repo_id, token, endpoint, say, max_attempts, retry_wait,
                 limits: HubLimits = DEFAULT_LIMITS):
        self.store, self.repo_id, self.say, self.limits = store, repo_id, say, limits
        self.snap: Snapshot = load_snapshot(store, snapshot)
        self.tag = f"snapshot-{snapshot}"
        self.api = HfApi(endpoint=endpoint, token=token, library_name="dataset-assets", library_version=__version__)
        self.repo_url = f"{self.api.endpoint}/datasets/{repo_id}"
        self.max_attempts, self.retry_wait = max(1, max_attempts), retry_wait
        self._checked: set[str] = set()  # store keys whose sha256 was checked against the manifest
        self.xet = xet_enabled()
        self._xet_reports: list = []  # hf_xet dedup metrics of every upload commit of this push (all attempts)
        self._shards_sent = False  # a commit attempt had shards to upload
        self._footers_checked: set[str] = set()  # store keys whose row groups fit the limits

    # --- steps -------------------------------------------------------------------------
    def run(self, *, private: bool | None, gated: str | bool | None, apply_settings: bool, dry_run: bool,
            before_commit) -> PublishResult:
        info = self._ensure_repo(private, gated, dry_run)
        exists = info is not False
        existing_tag = self._check_tag() if exists else None
        newer = self._newer_release() if exists else None
        if not isinstance(info, bool):  # an existing repo: its settings against the configuration
            already = existing_tag is not None and (newer is not None or info.sha == existing_tag)
            self._reconcile(info, private, gated, apply_settings, dry_run, already_published=already)
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
            self._check_limits(plan, None)
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

    def _ensure_repo(self, private: bool | None, gated: str | bool | None, dry_run: bool):
        """The info of the existing repo, True once it was created now, False if it does not exist (dry run)."""
        try:
            info = self._call("read the repository", lambda: self.api.repo_info(self.repo_id, repo_type="dataset"))
        except _NotFound:
            info = None
        if info is not None:
            return info
        private = True if private is None else private
        gated = gated or False
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

    def _reconcile(self, info, private: bool | None, gated: str | bool | None, apply: bool, dry_run: bool,
                   already_published: bool) -> None:
        """Bring an existing repo's visibility and gating in line with the configuration (``apply``), or refuse
        to publish under other terms; a release the Hub already holds only gets a note."""
        have = {"private": bool(info.private), "gated": info.gated or False}
        want = {"private": have["private"] if private is None else private,
                "gated": have["gated"] if gated is None else gated}
        changes = {k: v for k, v in want.items() if v != have[k]}
        if not changes:
            return
        now, asked = _terms(**have), _terms(**want)
        if apply:
            if dry_run:
                self.say(f"{self.repo_id} is {now}; publishing would make it {asked} (apply_settings).")
                return
            self._call("change the repository settings", lambda: self.api.update_repo_settings(
                self.repo_id, repo_type="dataset", **changes))
            self.say(f"Changed the settings of {self.repo_id} from {now} to {asked}, as configured (apply_settings).")
            return
        if already_published:
            self.say(f"Note: {self.repo_id} is {now}, not {asked} as configured; it already holds snapshot "
                     f"{self.snap.date}, so nothing is published, and {APPLY_SETTINGS} would change the repo.")
            return
        raise UserError(
            f"The dataset repo {self.repo_id} is {now} on the Hub but the configuration asks for {asked}, so snapshot "
            f"{self.snap.date} was not published under other terms; rerun with {APPLY_SETTINGS} to change the "
            "repo, or change the configuration to match it.")

    def _check_limits(self, plan: PublishPlan, tmp: Path | None) -> None:
        """Refuse (one sentence) a plan that breaks the Hub's limits: counts first, then the footers of the shards
        to upload (from the file ``_local_file`` gives in ``tmp``, else ``store.open_parquet``)."""
        date = self.snap.date
        problem = (commit_limit_problem(self.repo_id, date, [f.path for f in plan.added], plan.tree_after(),
                                        self.limits)
                   or file_limit_problem(self.repo_id, date, self.snap.shards, self.limits))
        for shard in plan.add:
            if problem is not None:
                break
            if shard.key in self._footers_checked:
                continue
            problem = row_group_problem(shard.repo_path, self._footer(shard, tmp), date, self.limits)
            self._footers_checked.add(shard.key)
        if problem is not None:
            raise UserError(problem)

    def _footer(self, shard: Shard, tmp: Path | None) -> pq.FileMetaData:
        local = self.store.local_path(shard.key)
        if local is None or not local.is_file():
            if tmp is None:
                with self.store.open_parquet(shard.key) as pf:
                    return pf.metadata
            local = Path(self._local_file(shard, tmp))  # the copy the upload sends anyway
        return pq.read_metadata(local)

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
        plan = PublishPlan(self.repo_id, snap.date, head, write=snap.metadata_files(), remote=set(remote))
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
        doing = f"publish snapshot {self.snap.date}"
        for attempt in range(1, self.max_attempts + 1):
            xet_upload = False  # set while create_commit may be uploading shards through Xet
            try:
                plan = self._plan()
                self.say(("Publishing " if attempt == 1 else f"Attempt {attempt}: re-planned ") + plan.summary())
                self._check_limits(plan, tmp)
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
                if status == 400 and _mentions_metadata(err):
                    raise self._metadata_error(_server_messages(err)) from None
                wait = self._wait(attempt, err)
                if wait is None:
                    raise self._http_error(err, doing, attempt) from None
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
                    f"({_describe(cause) if cause else _one_line(str(err))}); nothing was committed and rerunning "
                    "publish is safe.") from None
            except ValueError as err:  # huggingface_hub's own check of README.md (POST /api/validate-yaml)
                if not (str(err).startswith("Invalid metadata in README.md") or isinstance(err.__cause__, BadRequestError)):
                    raise
                cause = err.__cause__
                messages = _server_messages(cause) if isinstance(cause, HfHubHTTPError) else []
                raise self._metadata_error(messages or str(err).splitlines()[1:]) from None
            except Exception as err:
                if xet_upload and isinstance(err, OSError) and (refusal := self._xet_refusal()) is not None:
                    raise refusal from None  # hf_xet reports a refused token route as a ConnectionError
                wait, reason = self._network_retry(err, doing, attempt)
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
        doing = f"get a Xet write token ({route}) for snapshot {self.snap.date}"
        if status == 401:
            return self._token_rejected(doing)
        if status == 403:
            return self._forbidden(doing, route=True)
        return UserError(
            f"The Hub at {self.api.endpoint} refused its Xet write-token route (HTTP {status}, {route}), so it "
            f"cannot take the Xet uploads huggingface_hub makes by default and nothing was committed; for a Hub "
            f"without Xet set HF_HUB_DISABLE_XET=1 (uploads then use LFS), then rerun publish, which is safe.")

    # --- failures as one sentence ----------------------------------------------------
    def _wait(self, attempt: int, err: HfHubHTTPError) -> float | None:
        """Seconds to wait before retrying after ``err``; None: do not retry (not transient, the attempts are
        used up, or the Hub asks to wait longer than :data:`MAX_RETRY_AFTER`)."""
        if _status(err) not in TRANSIENT_STATUS or attempt >= self.max_attempts:
            return None
        wait = min(self.retry_wait * 2 ** (attempt - 1), 60)
        after = _retry_after(err)
        if after is not None:
            if after > MAX_RETRY_AFTER:
                return None
            wait = max(wait, after)
        return wait

    def _network_wait(self, attempt: int, err: Exception) -> float | None:
        """Like :meth:`_wait` for a network error: a refused connection or an unknown host is tried
        :data:`CONNECT_ATTEMPTS` times, at most 1 s apart (the Hub is not there: waiting longer does not help)."""
        if _is_connect_error(err):
            return None if attempt >= min(CONNECT_ATTEMPTS, self.max_attempts) else min(self.retry_wait, 1.0)
        return None if attempt >= self.max_attempts else min(self.retry_wait * 2 ** (attempt - 1), 60)

    def _http_error(self, err: HfHubHTTPError, doing: str, attempts: int) -> UserError:
        """The sentence for an HTTP error answer the push stops at."""
        status = _status(err)
        if status == 401:
            return self._token_rejected(doing)
        if status == 403:
            return self._forbidden(doing)
        if status == 413 or (status in (400, 422) and _too_large(err)):
            return UserError(
                f"The Hub refused to {doing} to {self.repo_id} as too large (HTTP {status}: "
                f"{_one_line(err.server_message or 'no details')}), so nothing was published; export the date "
                "again with fewer, larger shards (--shard-mib) or publish fewer tables at once, then rerun publish.")
        if status == 429:
            after = _retry_after(err)
            when = ("a few minutes" if after is None else
                    f"{(datetime.now(timezone.utc) + timedelta(seconds=after)):%H:%M:%S} UTC (in {after:g} s)")
            return UserError(
                f"The Hub rate-limited the requests to {doing} on {self.repo_id} (HTTP 429, {attempts} "
                f"attempt{'s' if attempts != 1 else ''}); rerun publish after {when}, which is safe.")
        return UserError(f"The Hub failed to {doing} ({self.repo_id}): {_describe(err)}; rerunning publish is safe.")

    def _token_rejected(self, doing: str) -> UserError:
        return UserError(
            f"The Hub rejected the token as invalid or expired (HTTP 401) when trying to {doing} ({self.repo_id}); "
            f"set HF_TOKEN to a valid token with write access ({TOKEN_PAGE}), then rerun publish.")

    def _forbidden(self, doing: str, route: bool = False) -> UserError:
        """A 403: the token is read-only, or its user cannot write to the repo's namespace, or it has no write
        access to this repo (a fine-grained token); told apart by asking ``whoami`` once."""
        namespace = self.repo_id.split("/")[0]
        try:
            who = self.api.whoami()
        except Exception:  # noqa: BLE001 - only a better sentence is lost
            who = {}
        name = who.get("name")
        role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
        orgs = {o.get("name") for o in who.get("orgs") or [] if isinstance(o, dict)}
        what = "(HTTP 403 on the Xet write-token route)" if route else "(HTTP 403)"
        if role == "read":
            return UserError(
                f"The token of {name} is read-only, so the Hub refused to {doing} on {self.repo_id} {what}; set "
                f"HF_TOKEN to a token with write access ({TOKEN_PAGE}), then rerun publish.")
        if name and namespace != name and namespace not in orgs:
            return UserError(
                f"The dataset repo {self.repo_id} is in the namespace {namespace}, where the token's user {name} "
                f"cannot write, so the Hub refused to {doing} {what}; publish to a repo under {name} or an "
                f"organization {name} belongs to, or use a write token of a member of {namespace}.")
        return UserError(
            f"The token has no write access to {self.repo_id}, so the Hub refused to {doing} {what}; use a token "
            f"with write access to that repository (a fine-grained token needs write permission on it, {TOKEN_PAGE}), "
            "then rerun publish.")

    def _unreachable(self, err: Exception, doing: str, attempts: int) -> UserError:
        reason = _network_reason(err)
        return UserError(
            f"Could not reach the Hub at {self.api.endpoint} to {doing} ({reason}, {attempts} "
            f"attempt{'s' if attempts != 1 else ''}); check the network or HF_ENDPOINT, then rerun publish, which "
            "is safe.")

    def _metadata_error(self, messages: list[str]) -> UserError:
        """The Hub rejected the card's front matter: name the field (with the config a ``configs[i]`` is)."""
        messages = [m.strip().lstrip("-").strip() for m in messages if m.strip()] or ["no details"]
        first = messages[0]
        match = re.match(r'^"([^"]+)"', first)
        field_path = match.group(1) if match else None
        where = "dataset_docs/dataset.yaml"
        if field_path:
            key = re.split(r"[.\[]", field_path, maxsplit=1)[0]
            label = f"field {field_path}"
            index = re.match(r"^(configs|dataset_info)\[(\d+)\]", field_path)
            if index:
                name = self._card_config_name(index.group(1), int(index.group(2)))
                if name:
                    label += f" (config {name})"
            if key in GENERATED_CARD_KEYS:
                where = "tables.yaml or dataset_docs/ (the card step generates that field)"
        else:
            label = "its front matter"
        more = f" and {len(messages) - 1} more" if len(messages) > 1 else ""
        return UserError(
            f"The Hub rejected the metadata of the dataset card (README.md) of snapshot {self.snap.date}, {label}: "
            f"{_one_line(first, 160)}{more}, so nothing was published; fix it in {where}, rebuild the card, then "
            "rerun publish.")

    def _card_config_name(self, key: str, index: int) -> str | None:
        try:
            text = self.snap.readme.decode("utf-8")
            match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
            data = yaml.safe_load(match.group(1)) if match else None
            entries = data.get(key) if isinstance(data, dict) else None
            entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
            name = entry.get("config_name") if isinstance(entry, dict) else None
            return name if isinstance(name, str) else None
        except Exception:  # noqa: BLE001 - the sentence only loses the config's name
            return None

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

    def _network_retry(self, err: Exception, doing: str, attempt: int) -> tuple[float, str]:
        """(seconds to wait, reason) before retrying after ``err``; re-raises what is not a network
        failure, and the one sentence when the network failure is final."""
        if not _is_network_error(err):
            raise err
        wait = self._network_wait(attempt, err)
        if wait is None:
            raise self._unreachable(err, doing, attempt) from None
        return wait, type(err).__name__

    def _call(self, doing: str, fn):
        """Run a Hub call, retrying transient failures; other failures become a UserError."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except RepositoryNotFoundError:
                raise _NotFound(f"The dataset repo {self.repo_id} does not exist on the Hub or the token cannot "
                                "see it; check the repo id and the token.") from None
            except HfHubHTTPError as err:
                wait = self._wait(attempt, err)
                if wait is None:
                    raise self._http_error(err, doing, attempt) from None
                reason = f"HTTP {_status(err)}"
            except Exception as err:
                wait, reason = self._network_retry(err, doing, attempt)
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
    Shards and change feed files go through the one files-vs-manifest check (sizes, and the sha256 the Hub
    keeps for LFS/Xet files; any other file in a table folder, such as a row index, is a problem); the card
    and manifests are compared byte for byte by their hashes."""
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
        return f"HTTP {_status(err)}: {_one_line(err.server_message or 'no details')}"
    return f"{type(err).__name__}: {_one_line(str(err))}"


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, without sentence breaks, at most ``limit`` characters."""
    text = " ".join(str(text).split()).rstrip(".")
    text = re.sub(r"\.\s+", "; ", text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _server_messages(err: HfHubHTTPError) -> list[str]:
    """The messages of an error answer: ``errors[].message`` (as ``validate-yaml`` answers), else ``error``."""
    try:
        data = err.response.json()
    except Exception:  # noqa: BLE001
        data = None
    if isinstance(data, dict):
        errors = [e.get("message") for e in data.get("errors") or [] if isinstance(e, dict) and e.get("message")]
        if errors:
            return [str(e) for e in errors]
        if data.get("error"):
            return [str(data["error"])]
    return [err.server_message] if err.server_message else []


def _mentions_metadata(err: HfHubHTTPError) -> bool:
    text = " ".join(_server_messages(err)).lower()
    return "metadata" in text or "yaml" in text


def _too_large(err: HfHubHTTPError) -> bool:
    text = " ".join(_server_messages(err)).lower()
    return bool(re.search(r"too (large|big|many)|payload|exceeds? the (maximum|limit)", text))


def _retry_after(err: HfHubHTTPError) -> float | None:
    """Seconds the Hub asks to wait: ``Retry-After`` (seconds or an HTTP date), else the ``RateLimit`` header's
    reset when no requests remain."""
    response = getattr(err, "response", None)
    if response is None:
        return None
    value = (response.headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return float(value)
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    try:
        from huggingface_hub.utils import parse_ratelimit_headers

        info = parse_ratelimit_headers(response.headers)
    except Exception:  # noqa: BLE001 - another huggingface_hub
        return None
    return float(info.reset_in_seconds) if info is not None and info.remaining == 0 else None


def _is_network_error(err: Exception) -> bool:
    try:
        import httpx2
    except ImportError:  # pragma: no cover
        return isinstance(err, (ConnectionError, TimeoutError))
    return isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError))


def _is_connect_error(err: BaseException) -> bool:
    """A refused connection or a host name that does not resolve (nothing answers at that address)."""
    try:
        import httpx2

        if isinstance(err, httpx2.ConnectError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(err, (ConnectionRefusedError, socket.gaierror))


def _network_reason(err: BaseException) -> str:
    text = str(err).lower()
    if "refused" in text or isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror) or any(s in text for s in (
            "name or service not known", "nodename nor servname", "name resolution", "getaddrinfo")):
        return "host name not found"
    if "timed out" in text or isinstance(err, TimeoutError) or "timeout" in type(err).__name__.lower():
        return "timed out"
    return type(err).__name__


def _terms(private: bool, gated: str | bool) -> str:
    return f"{'private' if private else 'public'} and " + (f"gated ({gated})" if gated else "not gated")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
