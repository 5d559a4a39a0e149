"""The computed markdown sections that fill the ``{{placeholders}}`` of ``card.md``."""

from __future__ import annotations

import json
from typing import Any

from dataset_assets.release.card.facts import TableFacts
from dataset_assets.release.card.front_matter import SPLIT
from dataset_assets.release.card.profile import Distribution

TOP_VALUES = 20


# --- small markdown helpers --------------------------------------------------

def _cell(text: str) -> str:
    """Text safe inside a GFM table cell (also inside code spans)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    text = " ".join(str(text).split())
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return _cell(f"{fence}{pad}{text}{pad}{fence}")


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _share(count: int, total: int) -> str:
    if not total:
        return "-"
    pct = 100.0 * count / total
    return "<0.1 %" if 0 < pct < 0.1 else f"{pct:.1f} %"


def _example(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, str):
        return _code(value)
    return _code(json.dumps(value, ensure_ascii=False, default=str))


# --- sections ------------------------------------------------------------------

def tables_summary(tables: list[TableFacts]) -> str:
    rows = [
        [f"`{t.name}`", f"{t.rows:,}", f"{len(t.manifest.files):,}", f"{t.bytes:,} ({_human(t.bytes)})", f"`{t.manifest.root_hash}`"]
        for t in tables
    ]
    return _table(["table", "rows", "files", "bytes", "root hash (sha256)"], rows, ["---", "---:", "---:", "---:", "---"])


def fields(tables: list[TableFacts]) -> str:
    return "\n\n".join(_fields_of(t) for t in tables)


def _fields_of(t: TableFacts) -> str:
    doc = t.doc
    title = f"### `{t.name}`" + (f" ({doc.pretty_name})" if doc and doc.pretty_name != t.name else "")
    parts = [title]
    if doc and doc.summary:
        parts.append(doc.summary)
    rows, notes = [], []
    for col in t.columns:
        cdoc = doc.columns.get(col["name"]) if doc else None
        description = _cell(cdoc.description) if cdoc and cdoc.description else "*(not documented)*"
        example = _example(cdoc.example) if cdoc and cdoc.has_example else ""
        rows.append([f"`{col['name']}`", _code(col["arrow_type"]), "yes" if col["nullable"] else "no", description, example])
        if cdoc and cdoc.caveats:
            notes.append(f"- **`{col['name']}`**: {' '.join(cdoc.caveats.split())}")
    parts.append(_table(["column", "type in parquet", "nullable", "description", "example"], rows))
    if notes:
        parts.append("Notes:\n\n" + "\n".join(notes))
    return "\n\n".join(parts)


def statistics(tables: list[TableFacts], top: int = TOP_VALUES) -> str:
    out = []
    for t in tables:
        parts = [f"### `{t.name}`", f"{t.rows:,} rows."]
        if not t.distributions:
            parts.append("No columns are profiled for this table.")
        for column, dist in t.distributions.items():
            parts.append(f"#### `{t.name}.{column}`\n\n{_distribution(dist, top)}")
        out.append("\n\n".join(parts))
    return "\n\n".join(out)


def _distribution(dist: Distribution, top: int) -> str:
    total = sum(c for _, c in dist)
    shown, rest = dist[:top], dist[top:]
    rows = [["*(null)*" if v is None else _code(v), f"{c:,}", _share(c, total)] for v, c in shown]
    if rest:
        n = sum(c for _, c in rest)
        rows.append([f"*({len(rest):,} other values)*", f"{n:,}", _share(n, total)])
    if not rows:
        return "No values."
    return _table(["value", "count", "share"], rows, ["---", "---:", "---:"])


def load_example(tables: list[TableFacts], snapshot: str, repo_id: str | None) -> str:
    repo = repo_id or "<owner>/<dataset>"
    names = [t.name for t in tables]
    first = names[0]
    others = "".join(
        f'{n} = load_dataset("{repo}", "{n}", split="{SPLIT}", revision="snapshot-{snapshot}")\n' for n in names[1:]
    )
    hub = (
        "```python\nfrom datasets import load_dataset\n\n"
        f"# this snapshot, from the Hub (one subset per table: {', '.join(names)})\n"
        f'ds = load_dataset("{repo}", "{first}", split="{SPLIT}", revision="snapshot-{snapshot}")\n'
        f"{others}"
        "```"
    )
    local = (
        "```python\nfrom datasets import load_dataset\nfrom huggingface_hub import snapshot_download\n\n"
        f'folder = snapshot_download("{repo}", repo_type="dataset", revision="snapshot-{snapshot}")\n'
        f'ds = load_dataset(folder, "{first}", split="{SPLIT}")  # any folder holding this README.md and the table folders\n'
        "```"
    )
    return (
        f"Each snapshot is tagged `snapshot-<date>`; pass the tag as `revision` to get exactly the data this card "
        f"describes, or leave it out for the newest snapshot.\n\n{hub}\n\n"
        f"From a local copy of the repository (downloaded once, or copied elsewhere), load the folder itself:\n\n{local}"
    )


def verification(tables: list[TableFacts], snapshot: str, repo_id: str | None) -> str:
    repo = repo_id or "<owner>/<dataset>"
    names = ", ".join(f'"{t.name}"' for t in tables)
    code = f'''```python
import hashlib
import json
from pathlib import Path

from huggingface_hub import snapshot_download

folder = Path(snapshot_download("{repo}", repo_type="dataset", revision="snapshot-{snapshot}"))
for table in [{names}]:
    manifest = json.loads((folder / table / "_manifest.json").read_text())
    lines = []
    for f in sorted(manifest["files"], key=lambda f: f["path"]):
        digest = hashlib.sha256()
        with open(folder / table / f["path"], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        assert digest.hexdigest() == f["sha256"], f"{{table}}/{{f['path']}} differs from the manifest"
        lines.append(f"{{f['path']}}\\t{{f['bytes']}}\\t{{f['sha256']}}\\n")
    root = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert root == manifest["root_hash"], f"{{table}}: root hash differs"
    print(table, "ok", root)
```'''
    return (
        "Every table folder holds `<table>/_manifest.json`, which lists each parquet file with its size in bytes, "
        "its row count and its SHA-256 digest, plus a root hash: the SHA-256 of the lines "
        "`<path>\\t<bytes>\\t<sha256>\\n` of all files sorted by path. The root hashes of this snapshot are in the "
        "table at the top of this card. To check a copy, hash every file and compare (on the command line, "
        "`sha256sum <table>/*.parquet` gives the same digests):\n\n" + code
    )
