"""In-memory model of Hub repositories for the local test Hub (see ``hub_server.py``).

A repository is a list of commits; every commit holds a *full tree snapshot*
(``path -> Entry``), so any revision (branch, tag or commit sha) can be read
without replaying history. File contents live in a :class:`BlobStore`,
content-addressed by sha256 on disk, or, for files uploaded through Xet, in the
local Xet CAS (:class:`XetCas`), from which they are reconstructed with hf_xet
when a client reads them without Xet. Nothing here speaks HTTP.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
import struct
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
    """One file in a tree. ``oid`` is the git blob id (of the LFS pointer for LFS files); ``xet_hash`` is the
    Xet file hash of an LFS file whose content is in the Xet CAS (uploaded through Xet), else None."""

    size: int
    sha256: str
    lfs: bool
    oid: str
    xet_hash: str | None = None

    @property
    def pointer_size(self) -> int:
        return len(LFS_POINTER.format(oid=self.sha256, size=self.size).encode())

    @classmethod
    def regular(cls, data: bytes) -> Entry:
        return cls(len(data), hashlib.sha256(data).hexdigest(), False, git_blob_oid(data))

    @classmethod
    def lfs_file(cls, sha256: str, size: int, xet_hash: str | None = None) -> Entry:
        pointer = LFS_POINTER.format(oid=sha256, size=size).encode()
        return cls(size, sha256, True, git_blob_oid(pointer), xet_hash)


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
    lfs_objects: set[str] = field(default_factory=set)  # sha256 of large files uploaded to this repo (LFS or Xet)

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


# --- Xet ------------------------------------------------------------------------------------------------
# The shard ("MDB") format of xet-core (spec/shard.md): a 48-byte header, then the file-info section: per file a
# 48-byte FileDataSequenceHeader (file hash, flags, number of entries), that many 48-byte FileDataSequenceEntry
# (xorb hash, flags, unpacked bytes, chunk range), the same number of verification entries if flagged, and one
# FileMetadataExt (sha256 + 16 reserved bytes) if flagged; a header whose hash is all 0xFF ends the section.
# All integers are little-endian. A hash is four u64 stored little-endian; its text form writes each u64 as 16 hex
# digits, i.e. reverses the bytes of every 8-byte group. The sha256 of the metadata extension is stored the same
# way (checked against hf_xet 1.8.0: a plain ``.hex()`` of those 32 bytes is not the file's sha256).
MDB_HEADER_SIZE = 48
MDB_ENTRY_SIZE = 48
MDB_FILE_FLAG_WITH_VERIFICATION = 1 << 31
MDB_FILE_FLAG_WITH_METADATA_EXT = 1 << 30
_BOOKEND = b"\xff" * 32


def xet_hash_hex(raw: bytes) -> str:
    """The text form of a 32-byte Xet (Merkle) hash: each 8-byte group is a little-endian u64 printed as hex."""
    if len(raw) != 32:
        raise ValueError("a Xet hash has 32 bytes")
    return "".join(raw[i:i + 8][::-1].hex() for i in range(0, 32, 8))


@dataclass(frozen=True)
class XetFile:
    xet_hash: str
    sha256: str | None
    size: int


def shard_files(data: bytes) -> list[XetFile]:
    """The files a shard describes (its file-info section), with their sha256 when the shard carries it."""
    out: list[XetFile] = []
    offset = MDB_HEADER_SIZE
    while offset + MDB_ENTRY_SIZE <= len(data):
        file_hash = data[offset:offset + 32]
        flags, n_entries = struct.unpack_from("<II", data, offset + 32)
        offset += MDB_ENTRY_SIZE
        if file_hash == _BOOKEND:
            break
        size = sum(struct.unpack_from("<I", data, offset + i * MDB_ENTRY_SIZE + 36)[0] for i in range(n_entries))
        offset += n_entries * MDB_ENTRY_SIZE
        if flags & MDB_FILE_FLAG_WITH_VERIFICATION:
            offset += n_entries * MDB_ENTRY_SIZE
        sha256 = None
        if flags & MDB_FILE_FLAG_WITH_METADATA_EXT:
            sha256 = xet_hash_hex(data[offset:offset + 32])
            offset += MDB_ENTRY_SIZE
        out.append(XetFile(xet_hash_hex(file_hash), sha256, size))
    return out


class XetCas:
    """The Xet content-addressed store of the local Hub: a folder hf_xet's ``LocalClient`` writes to and reads
    from when the token routes answer ``casUrl = "local://<root>"`` (the hf_xet wheel's own CAS for tests).

    hf_xet 1.8.0 writes xorbs to ``<root>/xet/xorbs/xorbs/default.<hash>`` and shards to
    ``<root>/xet/xorbs/shards/<hash>.mdb``; a stored xorb is byte for byte what the client sent
    (``xorb_bytes_uploaded``), a stored shard is the upload plus its 200-byte footer.
    """

    SHARD_FOOTER_SIZE = 200

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"local://{self.root}"
        self._lock = threading.Lock()
        self._parsed: set[str] = set()
        self._by_sha256: dict[str, XetFile] = {}
        self._by_hash: dict[str, XetFile] = {}
        self._session = None

    @property
    def shard_dir(self) -> Path:
        return self.root / "xet" / "xorbs" / "shards"

    @property
    def xorb_dir(self) -> Path:
        return self.root / "xet" / "xorbs" / "xorbs"

    def refresh(self) -> None:
        """Read the shards written since the last call."""
        with self._lock:
            for path in sorted(glob.glob(str(self.shard_dir / "*.mdb"))):
                if path in self._parsed:
                    continue
                for f in shard_files(Path(path).read_bytes()):
                    self._by_hash[f.xet_hash] = f
                    if f.sha256 is not None:
                        self._by_sha256[f.sha256] = f
                self._parsed.add(path)

    def by_sha256(self, sha256: str) -> XetFile | None:
        found = self._by_sha256.get(sha256)
        if found is None:
            self.refresh()
            found = self._by_sha256.get(sha256)
        return found

    def by_hash(self, xet_hash: str) -> XetFile | None:
        found = self._by_hash.get(xet_hash)
        if found is None:
            self.refresh()
            found = self._by_hash.get(xet_hash)
        return found

    def usage(self) -> dict[str, int]:
        """What the clients uploaded so far: bytes and counts of stored xorbs and shards."""
        xorbs = [p for p in glob.glob(str(self.xorb_dir / "default.*")) if not p.endswith(".tagset")]
        shards = glob.glob(str(self.shard_dir / "*.mdb"))
        return {
            "xorbs": len(xorbs), "xorb_bytes": sum(os.path.getsize(p) for p in xorbs),
            "shards": len(shards),
            "shard_bytes": sum(max(0, os.path.getsize(p) - self.SHARD_FOOTER_SIZE) for p in shards),
        }

    def reconstruct(self, f: XetFile, target: Path) -> None:
        """Write the file's bytes to ``target``, reconstructed from this CAS by hf_xet (as a Xet client would)."""
        import hf_xet

        with self._lock:
            if self._session is None:
                self._session = hf_xet.XetSession()
            session = self._session
        with session.new_file_download_group(endpoint=self.url) as group:
            group.start_download_file(hf_xet.XetFileInfo(f.xet_hash, f.size), str(target))


class HubState:
    """All repositories of the local Hub, guarded by one lock."""

    def __init__(self, storage_dir: Path):
        self.lock = threading.RLock()
        self.blobs = BlobStore(Path(storage_dir) / "blobs")
        self.cas = XetCas(Path(storage_dir) / "cas")
        self.repos: dict[tuple[str, str], Repo] = {}
        self._materialising = threading.Lock()

    def blob_path(self, entry: Entry) -> Path:
        """The file holding ``entry``'s bytes; a file that only the Xet CAS holds is reconstructed first."""
        path = self.blobs.path(entry.sha256)
        if path.is_file() or entry.xet_hash is None:
            return path
        with self._materialising:
            if not path.is_file():
                f = self.cas.by_hash(entry.xet_hash)
                if f is None:
                    raise FileNotFoundError(f"Xet file {entry.xet_hash} is not in the local CAS")
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".xet-")
                os.close(fd)
                try:
                    self.cas.reconstruct(f, Path(tmp))
                    digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
                    if digest != entry.sha256:
                        raise ValueError(f"Xet file {entry.xet_hash} reconstructs to sha256 {digest}, "
                                         f"not {entry.sha256}")
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        return path

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private=private)
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        self.blobs.put_bytes(gitattributes)
        repo.new_commit("main", {".gitattributes": Entry.regular(gitattributes)}, "initial commit")
        self.repos[(repo_type, repo_id)] = repo
        return repo


# --- card metadata, as the Hub's POST /api/validate-yaml checks it -------------------------------------------------
# The license ids the Hub accepts (its answer lists them, then "array": a list of them is accepted too).
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0",
    "odc-by", "odbl", "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib",
    "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3",
    "llama3.1", "llama3.2", "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other",
)
SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")


def card_metadata_errors(data) -> list[str]:
    """What the Hub's ``validate-yaml`` answers about a dataset card's front matter, for the basic fields that
    can be checked here (license ids, size categories, ``configs`` and their ``data_files``, ``dataset_info``
    splits, the string fields), in the Hub's wording (Joi's: ``"configs[0].config_name" is required``)."""
    if data is None:
        return []
    if not isinstance(data, dict):
        return ['"value" must be of type object']
    errors: list[str] = []

    def one_of(value, where: str, allowed: tuple[str, ...]) -> None:
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if v not in allowed:
                at = f"{where}[{i}]" if isinstance(value, list) else where
                errors.append(f'"{at}" must be one of [{", ".join(allowed)}, array]')

    if "license" in data:
        one_of(data["license"], "license", HUB_LICENSES)
    if "size_categories" in data:
        one_of(data["size_categories"], "size_categories", SIZE_CATEGORIES)
    for key in ("pretty_name", "license_name", "license_link", "extra_gated_prompt", "extra_gated_heading"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    if "extra_gated_fields" in data and not isinstance(data["extra_gated_fields"], dict):
        errors.append('"extra_gated_fields" must be of type object')
    if "configs" in data:
        errors += _configs_errors(data["configs"])
    if "dataset_info" in data:
        errors += _dataset_info_errors(data["dataset_info"])
    return errors


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _configs_errors(configs) -> list[str]:
    if not isinstance(configs, list):
        return ['"configs" must be an array']
    errors: list[str] = []
    seen: set[str] = set()
    for i, config in enumerate(configs):
        at = f"configs[{i}]"
        if not isinstance(config, dict):
            errors.append(f'"{at}" must be of type object')
            continue
        name = config.get("config_name")
        if name is None:
            errors.append(f'"{at}.config_name" is required')
        elif not isinstance(name, str):
            errors.append(f'"{at}.config_name" must be a string')
        elif name in seen:
            errors.append(f'"{at}" contains a duplicate value')
        else:
            seen.add(name)
        if "default" in config and not isinstance(config["default"], bool):
            errors.append(f'"{at}.default" must be a boolean')
        if "data_files" not in config:
            continue
        files = config["data_files"]
        if isinstance(files, str):
            continue
        if not isinstance(files, list):
            errors.append(f'"{at}.data_files" must be one of [string, array]')
            continue
        for j, entry in enumerate(files):
            where = f"{at}.data_files[{j}]"
            if isinstance(entry, str):
                continue
            if not isinstance(entry, dict):
                errors.append(f'"{where}" must be one of [string, object]')
                continue
            if "split" not in entry:
                errors.append(f'"{where}.split" is required')
            elif not isinstance(entry["split"], str):
                errors.append(f'"{where}.split" must be a string')
            path = entry.get("path")
            if path is None:
                errors.append(f'"{where}.path" is required')
            elif not (isinstance(path, str) or (isinstance(path, list) and all(isinstance(p, str) for p in path))):
                errors.append(f'"{where}.path" must be one of [string, array]')
    return errors


def _dataset_info_errors(info) -> list[str]:
    entries = info if isinstance(info, list) else [info]
    errors: list[str] = []
    for i, entry in enumerate(entries):
        at = f"dataset_info[{i}]" if isinstance(info, list) else "dataset_info"
        if not isinstance(entry, dict):
            errors.append(f'"{at}" must be of type object')
            continue
        if "config_name" in entry and not isinstance(entry["config_name"], str):
            errors.append(f'"{at}.config_name" must be a string')
        for key in ("download_size", "dataset_size"):
            if key in entry and not _is_number(entry[key]):
                errors.append(f'"{at}.{key}" must be a number')
        splits = entry.get("splits")
        if splits is None:
            continue
        if not isinstance(splits, list):
            errors.append(f'"{at}.splits" must be an array')
            continue
        for j, split in enumerate(splits):
            where = f"{at}.splits[{j}]"
            if not isinstance(split, dict):
                errors.append(f'"{where}" must be of type object')
                continue
            if not isinstance(split.get("name"), str):
                errors.append(f'"{where}.name" is required' if "name" not in split else f'"{where}.name" must be a string')
            for key in ("num_bytes", "num_examples"):
                if key in split and not _is_number(split[key]):
                    errors.append(f'"{where}.{key}" must be a number')
    return errors
