"""The manifest of one table's snapshot: every file with rows, bytes and sha256,
the schema, the source, the timings and one root hash over the files.

The root hash is sha256 over the lines ``<path>\\t<bytes>\\t<sha256>\\n`` of all
files sorted by path, so anyone can recompute it from the manifest alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import pyarrow as pa

FORMAT = "dataset-assets/manifest/1"


@dataclass
class FileEntry:
    path: str          # relative to the table folder
    rows: int
    bytes: int
    sha256: str
    chunk: int | None = None
    reused_from: str | None = None   # snapshot date whose identical file this is


@dataclass
class Manifest:
    table: str
    snapshot: str
    row_count: int
    files: list[FileEntry]
    schema: list[dict]
    arrow_schema: str                  # base64 of the IPC-serialised Arrow schema
    source: dict
    source_snapshot: dict              # pg snapshot id and txid snapshot at export time
    created_at: str
    timings: dict = field(default_factory=dict)
    parquet: dict = field(default_factory=dict)
    filters: dict = field(default_factory=dict)
    chunking: dict | None = None
    primary_key: str | None = None     # the key column the export resolved (tables.yaml or the table's own)
    root_hash: str = ""
    format: str = FORMAT

    def __post_init__(self) -> None:
        if not self.root_hash:
            self.root_hash = root_hash(self.files)

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: asdict deep-copies every entry
        d["files"] = [{f.name: getattr(e, f.name) for f in fields(e)} for e in self.files]
        return json.dumps(d, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        d = json.loads(text)
        files = [FileEntry(**f) for f in d.pop("files")]
        return cls(files=files, **d)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def arrow(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.arrow_schema)))


def encode_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def root_hash(files: list[FileEntry]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\t{f.bytes}\t{f.sha256}\n".encode())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            h.update(block)
    return h.hexdigest()
