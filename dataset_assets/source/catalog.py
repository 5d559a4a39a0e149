"""What the catalog says about a table: columns, types, keys, size."""

from __future__ import annotations

from dataclasses import dataclass

from dataset_assets.errors import UserError


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str          # as format_type() prints it, e.g. "character varying(80)[]"
    typname: str          # base type name, e.g. "varchar" (element type for arrays; domains resolved)
    is_array: bool
    typmod: int           # of the base type (element type for arrays; a domain's own typmod)
    nullable: bool
    type_kind: str        # pg_type.typtype of the base type: b(ase), e(num), c(omposite), r(ange), ...
    attnum: int = 0       # pg_attribute.attnum: a column dropped and added again gets a new one
    type_oid: int = 0     # pg_attribute.atttypid (the declared type, a domain's own oid)


@dataclass(frozen=True)
class TableInfo:
    name: str
    oid: int
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    block_size: int

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


# Domains are resolved to their base type (through domains over domains, as
# getBaseTypeAndTypmod() does: each domain's typmod replaces the one before), then an array
# to its element, and a domain element to its base type again; format_type() keeps the
# declared type's name for messages and the documentation check.
_COLUMNS_SQL = """
SELECT a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       coalesce(et.typname, t.typname)::text,
       (et.oid IS NOT NULL),
       coalesce(eb.typmod, b.typmod),
       NOT a.attnotnull,
       coalesce(et.typtype, t.typtype)::text,
       a.attnum::int8,
       a.atttypid::int8
FROM pg_attribute a
CROSS JOIN LATERAL (
    WITH RECURSIVE d(oid, typmod, depth) AS (
        SELECT a.atttypid, a.atttypmod, 0
        UNION ALL
        SELECT dt.typbasetype, dt.typtypmod, d.depth + 1 FROM d JOIN pg_type dt ON dt.oid = d.oid AND dt.typtype = 'd'
    ) SELECT oid, typmod FROM d ORDER BY depth DESC LIMIT 1
) b
JOIN pg_type t ON t.oid = b.oid
LEFT JOIN LATERAL (
    WITH RECURSIVE d(oid, typmod, depth) AS (
        SELECT t.typelem, b.typmod, 0 WHERE t.typcategory = 'A' AND t.typelem <> 0
        UNION ALL
        SELECT dt.typbasetype, dt.typtypmod, d.depth + 1 FROM d JOIN pg_type dt ON dt.oid = d.oid AND dt.typtype = 'd'
    ) SELECT oid, typmod FROM d ORDER BY depth DESC LIMIT 1
) eb ON true
LEFT JOIN pg_type et ON et.oid = eb.oid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_PK_SQL = """
SELECT a.attname::text
FROM pg_index i
JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisprimary
ORDER BY k.ord
"""


def list_tables(cur) -> list[str]:
    cur.execute(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY (current_schemas(false)) ORDER BY 1"
    )
    return [r[0] for r in cur.fetchall()]


def find_table(cur, name: str) -> int | None:
    cur.execute(
        "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = $1 AND c.relkind IN ('r', 'p') AND n.nspname = ANY (current_schemas(false)) "
        "ORDER BY array_position(current_schemas(false), n.nspname::name) LIMIT 1",
        parameters=(name,),
    )
    row = cur.fetchone()
    return int(row[0]) if row else None


def describe(cur, name: str) -> TableInfo:
    oid = find_table(cur, name)
    if oid is None:
        existing = list_tables(cur)
        listed = ", ".join(existing) if existing else "none"
        raise UserError(f"Table {name!r} does not exist in the source database; the tables there are: {listed}.")
    cur.execute(_COLUMNS_SQL, parameters=(oid,))
    columns = tuple(
        Column(name=r[0], pg_type=r[1], typname=r[2], is_array=bool(r[3]), typmod=int(r[4]), nullable=bool(r[5]), type_kind=r[6],
               attnum=int(r[7]), type_oid=int(r[8]))
        for r in cur.fetchall()
    )
    cur.execute(_PK_SQL, parameters=(oid,))
    pk = tuple(r[0] for r in cur.fetchall())
    cur.execute("SELECT current_setting('block_size')::int")
    block_size = int(cur.fetchone()[0])
    return TableInfo(name=name, oid=oid, columns=columns, primary_key=pk, block_size=block_size)


def relation_pages(cur, oid: int, block_size: int) -> int:
    """Current number of heap pages (exact, unlike pg_class.relpages)."""
    cur.execute("SELECT pg_relation_size($1::oid)", parameters=(oid,))
    return int(cur.fetchone()[0]) // block_size


def estimated_rows(cur, oid: int) -> int | None:
    cur.execute("SELECT reltuples::int8, relpages::int8, pg_relation_size($1::oid) / current_setting('block_size')::int8 FROM pg_class WHERE oid = $1::oid", parameters=(oid,))
    reltuples, relpages, pages = cur.fetchone()
    if reltuples is None or reltuples < 0 or not relpages:
        return None
    # scale the planner's estimate to the current size, as the planner itself does
    return int(reltuples / relpages * pages)


def resolve_tables(cur, names: list[str]) -> dict[str, str]:
    """The schema-qualified, quoted name (``format('%I.%I')``, spelled by Postgres) of each of
    ``names`` that exists, found as :func:`find_table` finds it; missing ones are left out."""
    if not names:
        return {}
    cur.execute(
        "SELECT w.name, format('%I.%I', r.nspname, r.relname) "
        "FROM unnest($1::text[]) WITH ORDINALITY AS w(name, ord) "
        "CROSS JOIN LATERAL (SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "  WHERE c.relname = w.name AND c.relkind IN ('r', 'p') AND n.nspname = ANY (current_schemas(false)) "
        "  ORDER BY array_position(current_schemas(false), n.nspname::name) LIMIT 1) r "
        "ORDER BY w.ord",
        parameters=(list(names),),
    )
    return {name: qualified for name, qualified in cur.fetchall()}


def cluster_identity(cur) -> dict:
    """The cluster's system identifier and timeline (``pg_control_system()``,
    ``pg_control_checkpoint()``; None where the user may not call them) and the database's
    name and oid. Run outside a transaction: a refused call must not abort one."""
    out: dict = {"system_identifier": None, "timeline": None}
    try:
        cur.execute("SELECT (SELECT system_identifier::text FROM pg_control_system()), "
                    "(SELECT timeline_id::int8 FROM pg_control_checkpoint())")
        sysid, timeline = cur.fetchone()
        out.update(system_identifier=sysid, timeline=None if timeline is None else int(timeline))
    except Exception:  # noqa: BLE001 - needs superuser or pg_monitor on some servers: unknown
        pass
    cur.execute("SELECT current_database()::text, (SELECT oid::int8 FROM pg_database WHERE datname = current_database())")
    database, oid = cur.fetchone()
    out.update(database=database, database_oid=int(oid))
    return out


def relation_identity(cur, oid: int) -> str:
    """``oid:relfilenode`` of the table, or of each leaf partition of a partitioned one: a new
    table (same name), TRUNCATE and every rewrite change it."""
    cur.execute(
        "SELECT coalesce(string_agg(x.relid::int8::text || ':' || coalesce(pg_relation_filenode(x.relid), 0)::text, ',' "
        "ORDER BY x.relid::int8), '') "
        "FROM (SELECT $1::oid AS relid UNION SELECT p.relid::oid FROM pg_partition_tree($1::oid) p WHERE p.isleaf) x "
        "WHERE (SELECT relkind FROM pg_class WHERE oid = x.relid) = 'r'",
        parameters=(oid,),
    )
    return f"{oid}/{cur.fetchone()[0]}"


def unique_not_null(cur, info: TableInfo, column: str) -> tuple[bool, bool]:
    """(unique, not null) of ``column`` as the catalog proves them: the table's one-column
    primary key, or a valid, non-partial unique index on that column alone (NOT NULL from the
    column)."""
    col = info.column(column)
    if col is None:
        return False, False
    if info.primary_key == (column,):
        return True, True
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1::oid AND i.indisunique AND i.indisvalid "
        "AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 1 AND i.indkey[0] = $2::int2)",
        parameters=(info.oid, col.attnum),
    )
    return bool(cur.fetchone()[0]), not col.nullable
