"""The computed markdown sections that fill the ``{{placeholders}}`` of ``card.md``."""

from __future__ import annotations

import json
from typing import Any

from dataset_assets.release.card.facts import CHANGE_COLUMN, FILE_COLUMN, TableFacts
from dataset_assets.release.card.front_matter import SPLIT, changes_config, changes_glob
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
    if t.volatile_columns:
        notes.append(f"- {_volatile_note(t)}")
    if notes:
        parts.append("Notes:\n\n" + "\n".join(notes))
    return "\n\n".join(parts)


def _names(columns) -> str:
    return " / ".join(f"`{c}`" for c in columns)


def _volatile_note(t: TableFacts) -> str:
    return (f"**{_names(t.volatile_columns)}**: the value as of the release in which the row's content last "
            f"changed; a change only in {'these columns' if len(t.volatile_columns) > 1 else 'this column'} does "
            f"not make a new row version (the row keeps its previous values, and is not in the change feed).")


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
    for f in (manifest.get("changes") or {{}}).get("files", []):  # the change feed, if the table has one
        digest = hashlib.sha256((folder / table / f["path"]).read_bytes())
        assert digest.hexdigest() == f["sha256"], f"{{table}}/{{f['path']}} differs from the manifest"
    print(table, "ok", root)
```'''
    return (
        "Every table folder holds `<table>/_manifest.json`, which lists each parquet file with its size in bytes, "
        "its row count and its SHA-256 digest, plus a root hash: the SHA-256 of the lines "
        "`<path>\\t<bytes>\\t<sha256>\\n` of all files sorted by path. The root hashes of this snapshot are in the "
        "table at the top of this card. To check a copy, hash every file and compare (on the command line, "
        "`sha256sum <table>/*.parquet` gives the same digests). A change feed's files, `<table>/changes/*.parquet`, "
        "are listed the same way under `changes.files` and checked too; the root hash covers only `files`:\n\n" + code
    )


def _key(t: TableFacts) -> str:
    layout = t.manifest.layout if isinstance(t.manifest.layout, dict) else {}
    return t.manifest.primary_key or str(layout.get("key") or "<key>")


def changes(tables: list[TableFacts], snapshot: str, repo_id: str | None) -> str:
    """The change feeds of this snapshot: what a row is, the release each one follows, how to apply it."""
    with_feed = [t for t in tables if t.changes is not None]
    if not with_feed:
        return ("No table of this snapshot has a change feed: a feed comes with a table that was refreshed from "
                "the previous snapshot, in the folder `<table>/changes/` and the subset `<table>_changes`.")
    repo = repo_id or "<owner>/<dataset>"
    intro = (
        "A table refreshed from the previous release also comes with a *change feed*: the rows that differ "
        "between that release and this one, in `<table>/changes/` (the subset `<table>_changes`, split "
        f"`{SPLIT}`). It lets you update a copy of the previous release without downloading the whole table. "
        "The feed's files are listed with their sizes and SHA-256 digests under `changes.files` in "
        "`<table>/_manifest.json`; the root hash covers only the table's own files (`files`).")
    return "\n\n".join([intro] + [_changes_of(t, snapshot, repo) for t in with_feed])


def _changes_of(t: TableFacts, snapshot: str, repo: str) -> str:
    c = t.changes
    key = _key(t)
    counts = c.counts
    title = (f"`{changes_config(t.name)}`: changes to `{t.name}`" if c.has_subset else f"`{t.name}`: no changes")
    head = (
        f"### {title} since snapshot {c.base_snapshot}\n\n"
        f"`{changes_glob(t.name)}`: {c.rows:,} rows in {len(c.files):,} file{'s' if len(c.files) != 1 else ''} "
        f"({_human(c.bytes)}): {counts['inserted']:,} inserted, {counts['updated']:,} updated and "
        f"{counts['deleted']:,} deleted since the release `snapshot-{c.base_snapshot}`.")
    chain = (
        f"The feed is chained to the previous release: `changes.base_snapshot` (`{c.base_snapshot}`) and "
        f"`changes.base_root_hash` (`{c.base_root_hash}`) in `{t.name}/_manifest.json` name that release and "
        f"the root hash of its `{t.name}` table (the `root_hash` of its `{t.name}/_manifest.json`). Apply it to a "
        f"copy of exactly that release; to catch up over several releases, apply each release's feed in turn, "
        f"oldest first.")
    if not c.has_subset:
        return "\n\n".join([head + (
            f" No row of `{t.name}` changed, so this release holds the same rows as that one; the empty feed is "
            f"not offered as a subset (`datasets` cannot load a split of no rows)."), chain])
    rows = [[f"`{CHANGE_COLUMN}`", "`string`",
             "`insert`: a row new in this release; `update`: a row whose content changed, as it is now; "
             "`delete`: a row no longer in this release (deleted or withdrawn at the source, or now left out)"]]
    if FILE_COLUMN in c.columns[1:2]:
        rows.append([f"`{FILE_COLUMN}`", "`string`",
                     f"the file of `{t.name}/` that holds the row in this release; for a `delete`, the file it left"])
    rows.append([f"every column of `{t.name}`", "as under [Fields](#fields), all nullable",
                 f"the row as it is in this release; a `delete` carries only the key `{key}` (the other columns "
                 "are null)"])
    what = (f"One row per changed row of `{t.name}`, at most one per `{key}`:\n\n"
            + _table(["column", "type in parquet", "meaning"], rows))
    if t.volatile_columns:
        what += (f"\n\nA change only in {_names(t.volatile_columns)} is no change: such a row is not in the feed, "
                 "and keeps in this release the values of the release in which its content last changed.")
    apply_text = (
        f"To apply it, upsert the `insert` and `update` rows by `{key}` into the previous release's rows and drop "
        f"the rows whose `{key}` has a `delete` row; the result holds the rows of this release (the order of rows "
        f"within the files is not part of it). `dataset-assets apply-changes` does the same on the files: it "
        f"rebuilds this release's parquet files from the previous release's and the feed and checks them against "
        f"the root hash in this release's `{t.name}/_manifest.json` (`--previous` the previous release's `{t.name}/` "
        f"folder, `--new` this release's, holding its `_manifest.json` and `changes/`, `--out` a folder for the "
        f"rebuilt files).")
    code = (
        "```python\nimport pyarrow as pa\nimport pyarrow.compute as pc\nfrom datasets import load_dataset\n\n"
        f'old = load_dataset("{repo}", "{t.name}", split="{SPLIT}", revision="snapshot-{c.base_snapshot}")'
        '.with_format("arrow")[:]\n'
        f'feed = load_dataset("{repo}", "{changes_config(t.name)}", split="{SPLIT}", revision="snapshot-{snapshot}")'
        '.with_format("arrow")[:]\n'
        f'kept = old.filter(pc.invert(pc.is_in(old["{key}"], value_set=feed["{key}"])))  # changed and deleted rows go\n'
        f'upserts = feed.filter(pc.not_equal(feed["{CHANGE_COLUMN}"], "delete")).select(old.column_names)\n'
        "new = pa.concat_tables([kept, upserts.cast(kept.schema)])  # the rows of this release\n"
        "```")
    return "\n\n".join([head, what, chain, apply_text, code])
