"""The dataset card (``snapshots/<date>/README.md``) of one snapshot.

:func:`build_card` gathers the facts of each table (:mod:`.card_facts`), renders
the front-matter (:mod:`.card_meta`: one config per table, and one
``<table>_changes`` per table with a change feed) and fills the placeholders of
``dataset_docs/card.md`` with computed sections (:mod:`.card_sections`). It
returns the text, the profile statistics and every problem found (documentation
out of date, files disagreeing with their manifest, unknown placeholders);
problems do not stop the card from being built, an incomplete table does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dataset_assets.tables import in_table_order, load_tables
from dataset_assets.errors import UserError
from dataset_assets.storage.stores import Store
from dataset_assets.release.card import front_matter as card_meta
from dataset_assets.release.card import sections as card_sections
from dataset_assets.release.card.facts import TableFacts, collect_table
from dataset_assets.storage.layout import README, card_key, date_tables, parse_snapshot_date  # noqa: F401  (README, card_key re-exported)
from dataset_assets.release.card.docs import load_card_template, load_dataset_doc
from dataset_assets.release.card.profile import Distribution

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class CardResult:
    """A rendered card: ``text`` (the README.md), ``stats[table][column]`` = [(value, count), ...] and ``problems``."""

    text: str
    stats: dict[str, dict[str, Distribution]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    front_matter: dict = field(default_factory=dict)


def _tables(store: Store, snapshot: str, tables: list[str] | None) -> list[str]:
    """The tables to describe: those asked for, else every table folder, in tables.yaml order."""
    snapshot = parse_snapshot_date(snapshot)
    found = date_tables(store, snapshot)
    if not found:
        raise UserError(f"There is no snapshot {snapshot} in {store.url}; export it first or pick an existing date.")
    missing = [t for t in tables or [] if t not in found]
    if missing:
        raise UserError(f"Snapshot {snapshot} in {store.url} has no table {', '.join(missing)}; it has {', '.join(found)}.")
    if tables:
        return list(dict.fromkeys(tables))
    return in_table_order(found)


def build_card(store: Store, snapshot: str, tables: list[str] | None = None, repo_id: str | None = None, *,
               docs_directory: str | Path | None = None, top: int = card_sections.TOP_VALUES) -> CardResult:
    """Render the card of ``snapshot``; raise :class:`UserError` if a table is incomplete or unknown."""
    names = _tables(store, snapshot, tables)
    config = load_tables()
    facts = [
        collect_table(store, snapshot, t, config[t].profile_columns if t in config else (), docs_directory,
                      config[t].volatile_columns if t in config else ())
        for t in names
    ]
    problems = [p for f in facts for p in f.problems]
    data, meta_problems = card_meta.front_matter(load_dataset_doc(docs_directory), facts)
    problems += meta_problems
    body, body_problems = fill(load_card_template(docs_directory), _sections(facts, snapshot, repo_id, top))
    problems += body_problems
    text = card_meta.dump(data) + "\n" + body.lstrip("\n")
    stats = {f.name: f.distributions for f in facts}
    return CardResult(text=text, stats=stats, problems=problems, front_matter=data)


def _sections(facts: list[TableFacts], snapshot: str, repo_id: str | None, top: int) -> dict[str, Callable[[], str]]:
    return {
        "snapshot": lambda: snapshot,
        "tables_summary": lambda: card_sections.tables_summary(facts),
        "fields": lambda: card_sections.fields(facts),
        "statistics": lambda: card_sections.statistics(facts, top),
        "load_example": lambda: card_sections.load_example(facts, snapshot, repo_id),
        "changes": lambda: card_sections.changes(facts, snapshot, repo_id),
        "verification": lambda: card_sections.verification(facts, snapshot, repo_id),
    }


def fill(template: str, sections: dict[str, Callable[[], str]]) -> tuple[str, list[str]]:
    """Replace ``{{name}}`` in one pass (generated text is not rescanned); unknown names are problems."""
    cache: dict[str, str] = {}
    unknown: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in sections:
            if name not in unknown:
                unknown.append(name)
            return m.group(0)
        if name not in cache:
            cache[name] = sections[name]()
        return cache[name]

    text = _PLACEHOLDER.sub(sub, template)
    problems = [f"dataset_docs/card.md uses the unknown placeholder {{{{{n}}}}}; remove it or teach the card renderer about it." for n in unknown]
    return text, problems


def write_card(store: Store, snapshot: str, tables: list[str] | None = None, repo_id: str | None = None, **kwargs) -> CardResult:
    """Build the card and store it atomically as ``snapshots/<snapshot>/README.md``."""
    result = build_card(store, snapshot, tables, repo_id, **kwargs)
    store.put_bytes(card_key(snapshot), result.text.encode("utf-8"))
    return result
