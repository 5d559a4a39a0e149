"""In-memory model of Hub repositories for the local test Hub (see ``hub_server.py``).

A repository is a list of commits; every commit holds a *full tree snapshot*
(``path -> Entry``), so any revision (branch, tag or commit sha) can be read
without replaying history. File contents live in a :class:`BlobStore`,
content-addressed by sha256 on disk. Nothing here speaks HTTP.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import yaml

DEFAULT_USER = "test-user"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB with LFS
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"

# A subset of the .gitattributes the Hub writes into every new dataset repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.lz4", "*.mds",
        "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.parquet", "*.pb", "*.pickle", "*.pkl",
        "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tar.*", "*.tgz", "*.xz", "*.zip", "*.zst",
        "*.mp3", "*.wav", "*.flac", "*.jpg", "*.jpeg", "*.png", "*.webp", "*.mp4",
    )
)


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now_iso() -> str:
    """Current UTC time in the Hub's format: ``2026-01-01T00:00:00.000Z``."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Entry:
    """One file in a tree. ``oid`` is the git blob id (of the LFS pointer for LFS files)."""

    size: int
    sha256: str
    lfs: bool
    oid: str

    @property
    def pointer_size(self) -> int:
        return len(LFS_POINTER.format(oid=self.sha256, size=self.size).encode())

    @classmethod
    def regular(cls, data: bytes) -> Entry:
        return cls(len(data), hashlib.sha256(data).hexdigest(), False, git_blob_oid(data))

    @classmethod
    def lfs_file(cls, sha256: str, size: int) -> Entry:
        pointer = LFS_POINTER.format(oid=sha256, size=size).encode()
        return cls(size, sha256, True, git_blob_oid(pointer))


@dataclass
class Commit:
    oid: str
    parent: str | None
    tree: dict[str, Entry]
    title: str
    message: str
    date: str
    author: str = DEFAULT_USER


@dataclass
class Repo:
    repo_type: str  # "dataset", "model" or "space"
    repo_id: str
    private: bool = False
    gated: str | bool = False
    created_at: str = field(default_factory=now_iso)
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)  # sha256 of LFS objects uploaded to this repo

    # --- revisions -----------------------------------------------------------
    def resolve(self, revision: str) -> Commit | None:
        """A branch name, a tag name, a full commit sha or an unambiguous prefix (>= 7 chars)."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            found = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(found) == 1:
                return found[0]
        return None

    def history(self, commit: Commit) -> list[Commit]:
        """``commit`` and its ancestors, newest first."""
        out = [commit]
        while out[-1].parent is not None:
            out.append(self.commits[out[-1].parent])
        return out

    def last_commit_touching(self, commit: Commit, path: str, is_dir: bool) -> Commit:
        """The newest ancestor of ``commit`` that changed ``path`` (a file or a folder)."""

        def view(c: Commit) -> object:
            if not is_dir:
                return c.tree.get(path)
            prefix = path + "/"
            return sorted((p, e) for p, e in c.tree.items() if p.startswith(prefix))

        chain = self.history(commit)
        for current, older in zip(chain, chain[1:]):
            if view(current) != view(older):
                return current
        return chain[-1]

    def new_commit(self, branch: str, tree: dict[str, Entry], title: str, message: str = "") -> Commit:
        parent = self.branches.get(branch)
        date = now_iso()
        seed = f"{self.repo_id}\n{parent}\n{sorted((p, e.oid) for p, e in tree.items())}\n{title}\n{date}\n{len(self.commits)}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, dict(tree), title, message, date)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit

    # --- trees ---------------------------------------------------------------
    @staticmethod
    def folders(tree: dict[str, Entry]) -> set[str]:
        out: set[str] = set()
        for path in tree:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out

    @staticmethod
    def folder_oid(tree: dict[str, Entry], folder: str) -> str:
        prefix = folder + "/"
        listing = "".join(f"{p}\0{e.oid}\n" for p, e in sorted(tree.items()) if p.startswith(prefix))
        return hashlib.sha1(listing.encode()).hexdigest()

    def lfs_patterns(self, tree: dict[str, Entry], blobs: BlobStore) -> list[str]:
        entry = tree.get(".gitattributes")
        if entry is None:
            return []
        text = blobs.read(entry.sha256).decode("utf-8", "replace")
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()]

    def card_data(self, commit: Commit, blobs: BlobStore) -> dict | None:
        """The YAML front-matter of README.md at ``commit``, if any."""
        entry = commit.tree.get("README.md")
        if entry is None:
            return None
        try:
            return front_matter(blobs.read(entry.sha256).decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            return None


def matches_gitattributes(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatch(path, pattern.replace("**/", "*")):
                return True
        elif fnmatch.fnmatch(name, pattern):
            return True
    return False


def front_matter(text: str) -> dict | None:
    """Parse ``---\\n<yaml>\\n---`` at the top of a markdown file (raises yaml.YAMLError)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    data = yaml.safe_load(match.group(1))
    return data if isinstance(data, dict) else None


class BlobStore:
    """File contents on disk, content-addressed by sha256 (``<root>/ab/cdef...``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:]

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.exists(sha256):
            self._install(sha256, lambda fh: fh.write(data))
        return sha256

    def put_stream(self, stream: BinaryIO, length: int | None, chunked: bool) -> tuple[str, int]:
        """Store a request body (``length`` bytes, or HTTP/1.1 chunked); returns (sha256, size)."""
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for block in iter_body(stream, length, chunked):
                    h.update(block)
                    size += len(block)
                    out.write(block)
            sha256 = h.hexdigest()
            target = self.path(sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            return sha256, size
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _install(self, sha256: str, write) -> None:
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)


def iter_body(stream: BinaryIO, length: int | None, chunked: bool, block: int = 1 << 20):
    """Yield an HTTP request body, plain (``length`` bytes) or with chunked transfer encoding."""
    if chunked:
        while True:
            size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining:
                data = stream.read(min(block, remaining))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                remaining -= len(data)
                yield data
            stream.readline()  # CRLF after each chunk
    else:
        remaining = length or 0
        while remaining:
            data = stream.read(min(block, remaining))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(data)
            yield data


class HubState:
    """All repositories of the local Hub, guarded by one lock."""

    def __init__(self, storage_dir: Path):
        self.lock = threading.RLock()
        self.blobs = BlobStore(Path(storage_dir) / "blobs")
        self.repos: dict[tuple[str, str], Repo] = {}

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private=private)
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        self.blobs.put_bytes(gitattributes)
        repo.new_commit("main", {".gitattributes": Entry.regular(gitattributes)}, "initial commit")
        self.repos[(repo_type, repo_id)] = repo
        return repo
