"""Realistic, deterministic sample data for the Openverse-style ``image`` / ``audio`` tables.

Everything is generated on the server with ``INSERT ... SELECT ... FROM
generate_series(...)`` in slabs of 200k rows; nothing is sent row by row.

Determinism: no ``random()`` / ``gen_random_uuid()`` is used for values.
Every value is a function of (seed, namespace, row number n), where the
namespace is the table name for the initial seed:

* ``hx = md5('<seed>:<table>:' || n)`` is the row hash; the identifier is that
  hash with the uuid-v4 version/variant bits set, and urls embed it (unique);
* each field draws its own 64-bit pseudo-random number
  ``hashint8extended(n, salt)``, where ``salt`` is the first 8 bytes of
  ``sha256('<seed>:<namespace>:<field>')`` computed here in Python.

So two databases seeded with the same seed hold byte-identical rows, and a
different seed gives different rows. A handful of special values is placed by
row number (not by chance) so that even tiny tables contain them:
``standardized_popularity`` is NaN at n % 1999 == 7, +Infinity at 11,
-Infinity at 13.

Tombstones: about 0.2 % of rows (those whose identifier hashes to 0 mod 512)
are copied into ``deleted_<table>`` with a ``deleted_on`` and
``deleted_reason``, and stay in the main table too (as upstream between a
delete request and its processing).

:func:`change_rows` mutates a fraction of a table (updates, inserts, deletes
with tombstones) deterministically, for tests and benchmarks of incremental
snapshots.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from dataset_assets.errors import SourceError, UserError
from dataset_assets.source.connect import connect, identity, redact, redact_error

SLAB_ROWS = 200_000
DEFAULT_ROWS = 100_000
TOMBSTONE_MOD = 512  # ~0.2 % of rows get a tombstone

# ---------------------------------------------------------------------------
# Schema (column order as in shared/notes/media-tables.md)
# ---------------------------------------------------------------------------

SHARED_COLUMNS: list[tuple[str, str]] = [
    ("identifier", "uuid NOT NULL DEFAULT gen_random_uuid()"),
    ("created_on", "timestamp with time zone NOT NULL"),
    ("updated_on", "timestamp with time zone NOT NULL"),
    ("ingestion_type", "character varying(80)"),
    ("provider", "character varying(80)"),
    ("source", "character varying(80)"),
    ("foreign_identifier", "text"),
    ("foreign_landing_url", "text"),
    ("url", "text NOT NULL"),
    ("thumbnail", "text"),
    ("filesize", "integer"),
    ("license", "character varying(50) NOT NULL"),
    ("license_version", "character varying(25)"),
    ("creator", "text"),
    ("creator_url", "text"),
    ("title", "text"),
    ("meta_data", "jsonb"),
    ("tags", "jsonb"),
    ("watermarked", "boolean"),
    ("last_synced_with_source", "timestamp with time zone"),
    ("removed_from_source", "boolean NOT NULL"),
    ("filetype", "character varying(5)"),
    ("category", "character varying(80)"),
    ("standardized_popularity", "double precision"),
]

TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "image": SHARED_COLUMNS + [("width", "integer"), ("height", "integer")],
    "audio": SHARED_COLUMNS
    + [
        ("duration", "integer"),
        ("bit_rate", "integer"),
        ("sample_rate", "integer"),
        ("genres", "character varying(80)[]"),
        ("audio_set", "jsonb"),
        ("set_position", "integer"),
        ("alt_files", "jsonb"),
        ("audio_set_foreign_identifier", "text"),
    ],
}

TOMBSTONE_PREFIX = "deleted_"

# The seeder's mark on a database whose tables it made: one row per seeded table. The command
# line seeds only the embedded demo database and databases that carry this mark, unless given
# DESTROY_FLAG (seed(only_seeded_database=True) is that rule).
MARKER_TABLE = "dataset_assets_seeded"
DESTROY_FLAG = "--replace-tables-destroying-data"


class ForeignDatabase(UserError):
    """The database was not made by the seeder, and seeding was told to leave such databases alone."""


def column_names(table: str) -> list[str]:
    return [c for c, _ in TABLE_COLUMNS[_check_table(table)]]


def _check_table(table: str) -> str:
    if table not in TABLE_COLUMNS:
        raise UserError(f"No sample-data generator for table {table!r}; the known tables are {', '.join(TABLE_COLUMNS)}.")
    return table


def table_ddl(table: str) -> list[str]:
    """CREATE TABLE statements (main table without indexes, then its tombstone table)."""
    cols = ",\n    ".join(f"{c} {t}" for c, t in TABLE_COLUMNS[_check_table(table)])
    return [
        f"CREATE TABLE {table} (\n    {cols}\n)",
        f"CREATE TABLE {TOMBSTONE_PREFIX}{table} (\n    LIKE {table},\n"
        f"    deleted_on timestamp with time zone NOT NULL,\n    deleted_reason character varying(80),\n"
        f"    CONSTRAINT {TOMBSTONE_PREFIX}{table}_pkey PRIMARY KEY (identifier)\n)",
    ]


def index_ddl(table: str) -> list[str]:
    """Primary key and indexes of the main table (upstream names)."""
    _check_table(table)
    return [
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (identifier)",
        # upstream carries this unique index next to the primary key (redundant, kept for fidelity)
        f"CREATE UNIQUE INDEX {table}_identifier_key ON {table} USING btree (identifier)",
        f"CREATE UNIQUE INDEX {table}_url_key ON {table} USING btree (url)",
        f"CREATE UNIQUE INDEX {table}_provider_fid_idx ON {table} USING btree (provider, md5(foreign_identifier))",
        f"CREATE INDEX {table}_updated_on_idx ON {table} USING btree (updated_on)",
    ]


def _exec(cur, sql: str) -> int:
    cur.execute(sql)
    return cur.rowcount


# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------

# (name, landing host, media host, numeric foreign ids?, category bias)
IMAGE_PROVIDERS = [
    ("flickr", "www.flickr.com", "live.staticflickr.com", True, "photo"),
    ("wikimedia", "commons.wikimedia.org", "upload.wikimedia.org", True, "mixed"),
    ("stocksnap", "stocksnap.io", "cdn.stocksnap.io", False, "photo"),
    ("smithsonian", "collections.si.edu", "ids.si.edu", False, "museum"),
    ("met", "www.metmuseum.org", "images.metmuseum.org", True, "museum"),
    ("rawpixel", "www.rawpixel.com", "images.rawpixel.com", True, "mixed"),
    ("nappy", "nappy.co", "images.nappy.co", False, "photo"),
    ("museumsvictoria", "collections.museumsvictoria.com.au", "collections.museumsvictoria.com.au", False, "museum"),
    ("clevelandmuseum", "clevelandart.org", "openaccess-cdn.clevelandart.org", True, "museum"),
    ("brooklynmuseum", "www.brooklynmuseum.org", "d1lfxha3ugu3d4.cloudfront.net", True, "museum"),
    ("sciencemuseum", "collection.sciencemuseumgroup.org.uk", "coll.sciencemuseumgroup.org.uk", False, "museum"),
    ("nypl", "digitalcollections.nypl.org", "images.nypl.org", False, "museum"),
    ("europeana", "www.europeana.eu", "api.europeana.eu", False, "mixed"),
    ("finnishmuseums", "www.finna.fi", "api.finna.fi", False, "museum"),
    ("inaturalist", "www.inaturalist.org", "inaturalist-open-data.s3.amazonaws.com", True, "photo"),
    ("statensmuseum", "open.smk.dk", "iip.smk.dk", False, "museum"),
    ("digitaltmuseum", "digitaltmuseum.org", "mm.dimu.org", False, "museum"),
    ("thingiverse", "www.thingiverse.com", "cdn.thingiverse.com", True, "illustration"),
    ("phylopic", "www.phylopic.org", "images.phylopic.org", False, "illustration"),
    ("geographorguk", "www.geograph.org.uk", "s0.geograph.org.uk", True, "photo"),
]

AUDIO_PROVIDERS = [
    ("freesound", "freesound.org", "cdn.freesound.org", True, "sfx"),
    ("jamendo", "www.jamendo.com", "prod-1.storage.jamendo.com", True, "music"),
    ("wikimedia_audio", "commons.wikimedia.org", "upload.wikimedia.org", True, "mixed"),
    ("ccmixter", "ccmixter.org", "ccmixter.org", True, "music"),
    ("europeana", "www.europeana.eu", "api.europeana.eu", False, "mixed"),
    ("xenocanto", "xeno-canto.org", "xeno-canto.org", True, "sfx"),
    ("librivox", "librivox.org", "archive.org", True, "audiobook"),
    ("musopen", "musopen.org", "cdn.musopen.org", True, "music"),
    ("internetarchive", "archive.org", "ia800300.us.archive.org", False, "mixed"),
    ("freemusicarchive", "freemusicarchive.org", "files.freemusicarchive.org", True, "music"),
    ("bbcsoundeffects", "sound-effects.bbcrewind.co.uk", "sound-effects-media.bbcrewind.co.uk", False, "sfx"),
    ("sonniss", "sonniss.com", "cdn.sonniss.com", False, "sfx"),
    ("looperman", "www.looperman.com", "www.looperman.com", True, "music"),
    ("openmusicarchive", "www.openmusicarchive.org", "www.openmusicarchive.org", False, "music"),
    ("nasa_audio", "www.nasa.gov", "www.nasa.gov", False, "sfx"),
    ("britishlibrary", "sounds.bl.uk", "sounds.bl.uk", False, "mixed"),
    ("podcastindex", "podcastindex.org", "media.podcastindex.org", True, "podcast"),
    ("incompetech", "incompetech.com", "incompetech.com", False, "music"),
    ("ketsa", "ketsa.uk", "ketsa.uk", False, "music"),
    ("soundbible", "soundbible.com", "soundbible.com", True, "sfx"),
]

SMITHSONIAN_SOURCES = [
    "smithsonian_national_museum_of_natural_history",
    "smithsonian_american_art_museum",
    "smithsonian_national_air_and_space_museum",
    "smithsonian_cooper_hewitt_museum",
    "smithsonian_freer_gallery_of_art",
    "smithsonian_libraries",
    "smithsonian_national_portrait_gallery",
    "smithsonian_anacostia_museum",
]
FLICKR_SUB_SOURCES = ["nasa", "bio_diversity", "spacex", "woc_tech"]

IMAGE_LICENSES = [("by", 22), ("by-sa", 20), ("by-nc", 9), ("by-nc-sa", 17), ("by-nd", 4), ("by-nc-nd", 10), ("cc0", 10), ("pdm", 8)]
AUDIO_LICENSES = [
    ("by", 25), ("by-nc", 20), ("cc0", 18), ("by-sa", 8), ("by-nc-sa", 7), ("by-nd", 3),
    ("by-nc-nd", 6), ("pdm", 5), ("sampling+", 5), ("nc-sampling+", 3),
]
LICENSE_VERSIONS = [("4.0", 45), ("3.0", 25), ("2.0", 22), ("2.5", 5), ("1.0", 3)]

IMAGE_FILETYPES = [(None, 6), ("jpg", 70), ("png", 12), ("gif", 3), ("svg", 5), ("tiff", 4)]
AUDIO_FILETYPES = [(None, 8), ("mp3", 55), ("ogg", 14), ("wav", 12), ("flac", 11)]

IMAGE_CATEGORIES = ["photograph", "digitized_artwork", "illustration"]
AUDIO_CATEGORIES = ["music", "sound_effect", "podcast", "audiobook"]
# bias -> weights over (NULL, *categories)
IMAGE_CATEGORY_BIAS = {
    "photo": [5, 88, 2, 5],
    "museum": [5, 18, 75, 2],
    "mixed": [5, 55, 20, 20],
    "illustration": [5, 5, 10, 80],
}
AUDIO_CATEGORY_BIAS = {
    "music": [5, 93, 2, 0, 0],
    "sfx": [5, 10, 85, 0, 0],
    "podcast": [5, 5, 0, 90, 0],
    "audiobook": [5, 0, 0, 3, 92],
    "mixed": [5, 45, 35, 8, 7],
}

ASCII_WORDS = (
    "sunset river mountain portrait street city forest ocean bridge garden flower bird "
    "cat dog horse tree snow winter summer autumn spring night light shadow window door "
    "market festival harbor boat train station church castle museum statue painting "
    "drawing sketch map letter manuscript coin vase textile jewel armor helmet sword "
    "skull fossil insect butterfly beetle shell mineral crystal rock desert canyon lake "
    "island beach cliff valley field farm barn tractor road car bicycle airplane rocket "
    "moon star planet galaxy nebula comet cloud storm rain fog rainbow smoke fire lamp "
    "candle book library school student teacher worker dancer musician guitar piano drum "
    "violin choir concert stage theatre film camera photo album record radio signal"
).split()

UNICODE_WORDS = [
    "café", "naïve", "Zürich", "São Paulo", "Ελλάδα", "Москва", "東京", "夕焼け", "北京の街",
    "서울", "שלום", "مرحبا", "القاهرة", "🌅", "🐱", "🎵", "👩‍🔬", "👍🏽", "ñandú", "Ångström",
    "Łódź", "İstanbul", "हिन्दी", "ไทย", "Crème brûlée", "e\u0301te\u0301",  # decomposed accents
    "O'Brien", '"Untitled"', "50%", "rock & roll", "a\\b", "multi\nline",
]
TITLE_WORDS = ASCII_WORDS * 2 + UNICODE_WORDS  # ~1 word in 9 is non-ASCII

TAG_WORDS = ASCII_WORDS[:112] + [
    "nature", "landscape", "blackandwhite", "vintage", "abstract", "architecture", "people",
    "animal", "art", "history", "science", "travel", "日本", "paysage", "natur", "🌸",
]  # 128 entries
MACHINE_TAGGERS = ["clarifai", "rekognition"]

CREATORS = [
    "José Álvarez", "Zoë Müller", "山田太郎", "Иван Петров", "محمد علي", "Nguyễn Văn An",
    "O'Brien Photography", "NASA", "The Metropolitan Museum of Art", "Smithsonian Institution",
    "Jane Doe", "john_smith", "Ana María Pérez", "Björk Guðmundsdóttir", "François Dupont",
    "김민준", "Søren Kierkegaard", "Łukasz Nowak", "Unknown", "Anonymous",
    "Ravi Shankar", "Olamide Adeyemi", "Li Wei", "Chloé Martin", "Μαρία Παπαδοπούλου",
    "Tomás Ó Súilleabháin", "Eva Novák", "Mehmet Yılmaz", "דוד כהן", "Kofi Mensah",
    "pixel_wanderer", "📷 lens_life",
]

SENTENCES = [
    "Taken on a cold morning just after sunrise.",
    "Digitized from the original glass plate negative held in the collection.",
    "Part of a series documenting everyday life in the harbor district.",
    "Gift of the artist, accession number recorded in the catalogue.",
    "Photographie prise lors du festival d'été à Montréal.",
    "Aufnahme aus dem Archiv der Stadtbibliothek.",
    "東京の夜景を撮影しました。",
    "Foto tirada durante la expedición al altiplano boliviano.",
    "Specimen collected in 1923; label transcribed by volunteers.",
    "Used with permission. Please credit the photographer when reusing.",
    "High resolution scan, colour corrected, no retouching.",
    "See also the related items in this album for more context 🙂.",
    "Фотография из семейного архива, примерно 1950-е годы.",
    "صورة من الأرشيف الوطني.",
    "This recording was made with a handheld recorder in the field.",
    "Original caption: \"View from the north tower\".",
    "Licensed under Creative Commons; metadata harvested from the provider API.",
    "<p>HTML fragments sometimes survive in descriptions &amp; entities too.</p>",
    "Tags were added automatically and may be inaccurate.",
    "Tab\tseparated\tfragment and a trailing backslash \\",
]

GENRES = [
    "rock", "pop", "electronic", "ambient", "jazz", "classical", "hip-hop", "folk",
    "experimental", "soundtrack", "world", "blues", "metal", "reggae", "lo-fi", "chiptune",
    "field recording", "spoken word", "música popular", "J-pop", "soul", "funk", "country", "house",
]

DELETED_REASONS = ["dead_link", "mature", "duplicate", "takedown_request", "low_quality"]

T0 = "2018-01-01 00:00:00+00"
SPAN_US = 7 * 365 * 86400 * 1_000_000  # created_on spans ~7 years from T0


# ---------------------------------------------------------------------------
# SQL helpers
# ---------------------------------------------------------------------------


def _lit(s: str | None) -> str:
    if s is None:
        return "NULL"
    if "\x00" in s:
        raise ValueError("NUL in literal")
    return "'" + s.replace("'", "''") + "'"


def _json_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _json_inner(s: str) -> str:
    """JSON-escaped content of a string, without the quotes (to concatenate pieces)."""
    return json.dumps(s, ensure_ascii=False)[1:-1]


def _text_array(items: Sequence[str | None]) -> str:
    return "ARRAY[" + ",".join(_lit(x) for x in items) + "]::text[]"


def _int_array(items: Sequence[int]) -> str:
    return "'{" + ",".join(str(int(x)) for x in items) + "}'::int[]"


def _lut(weights: Sequence[float], bits: int = 12) -> list[int]:
    """Lookup table of 2**bits slots holding 1-based indexes in proportion to weights."""
    size = 1 << bits
    total = float(sum(weights))
    raw = [w / total * size for w in weights]
    counts = [max(1, int(r)) if w > 0 else 0 for r, w in zip(raw, weights)]
    # largest remainder to fill up / trim down to exactly `size`
    order = sorted(range(len(weights)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while sum(counts) < size:
        if weights[order[i % len(order)]] > 0:
            counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > size:
        j = max(range(len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    out: list[int] = []
    for idx, c in enumerate(counts, start=1):
        out.extend([idx] * c)
    return out


def _zipf(n: int, s: float) -> list[float]:
    return [1.0 / (k ** s) for k in range(1, n + 1)]


def _salt(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class _Gen:
    """Builds one INSERT ... SELECT for a table / namespace; registers per-field hashes."""

    def __init__(self, table: str, seed: int, namespace: str, *, fid_offset: int = 0, time_base: str | None = None):
        self.table = table
        self.seed = int(seed)
        self.prefix = f"{self.seed}:{namespace}:"
        self.hashes: dict[str, int] = {}
        self.fid_offset = fid_offset
        self.time_base = time_base

    # --- randomness -------------------------------------------------------
    def h(self, field: str) -> str:
        if field not in self.hashes:
            self.hashes[field] = _salt(f"{self.prefix}{field}")
        return f"h_{field}"

    def bits(self, field: str, lo: int, n: int) -> str:
        h = self.h(field)
        mask = (1 << n) - 1
        return f"({h} & {mask})" if lo == 0 else f"(({h} >> {lo}) & {mask})"

    def u(self, field: str, half: int = 0) -> str:
        """Uniform float8 in [0, 1) from 32 bits of the field's hash."""
        return f"({self.bits(field, 32 * half, 32)}::float8 / 4294967296.0)"

    def pct(self, field: str, lo: int, permille: int) -> str:
        """True with probability permille/1000 (10 bits)."""
        return f"({self.bits(field, lo, 10)} < {round(permille * 1024 / 1000)})"

    def pick(self, items: Sequence[str], field: str, lo: int, n: int = 16) -> str:
        return f"({_text_array(items)})[1 + ({self.bits(field, lo, n)} % {len(items)})]"

    # --- building blocks --------------------------------------------------
    def words(self, vocab: Sequence[str], field: str, count_expr: str, k_max: int, sep: str = " ") -> str:
        picks = ",".join(self.pick(vocab, f"{field}_{i}", 0, 16) for i in range(k_max))
        return f"array_to_string((ARRAY[{picks}])[1:{count_expr}], {_lit(sep)})"

    def log_uniform(self, field: str, lo: float, hi: float, half: int = 0) -> str:
        return f"floor(exp({math.log(lo)!r} + {math.log(hi / lo)!r} * {self.u(field, half)}))::int"


def _providers(table: str):
    return IMAGE_PROVIDERS if table == "image" else AUDIO_PROVIDERS


def _row_sql(g: _Gen, source_sql: str) -> tuple[str, list[str]]:
    """SELECT producing the table's columns (in order) from ``source_sql`` (columns n bigint, given_id uuid)."""
    table = g.table
    provs = _providers(table)
    names = [p[0] for p in provs]
    n_prov = len(provs)
    prov_lut = _int_array(_lut(_zipf(n_prov, 1.25 if table == "image" else 1.1)))
    lic_items = IMAGE_LICENSES if table == "image" else AUDIO_LICENSES
    lic_names = [x for x, _ in lic_items]
    lic_lut = _int_array(_lut([w for _, w in lic_items]))
    ft_items = IMAGE_FILETYPES if table == "image" else AUDIO_FILETYPES
    ft_lut = _int_array(_lut([w for _, w in ft_items]))
    ft_names = [x for x, _ in ft_items]
    cats = IMAGE_CATEGORIES if table == "image" else AUDIO_CATEGORIES
    bias_map = IMAGE_CATEGORY_BIAS if table == "image" else AUDIO_CATEGORY_BIAS
    bias_keys = list(bias_map)
    prov_bias = _int_array([bias_keys.index(p[4]) + 1 for p in provs])

    # ---- level 1: indexes and times, computed once per row ------------
    pidx = f"({prov_lut})[1 + {g.bits('provider', 0, 12)}]"
    cat_cases = " ".join(
        f"WHEN {i + 1} THEN ({_int_array(_lut(w, 10))})[1 + {g.bits('category', 0, 10)}]" for i, w in enumerate(bias_map.values())
    )
    if g.time_base is None:
        cu = f"floor({SPAN_US}::float8 * sqrt({g.u('created')}))"
        uu = f"(CASE WHEN {g.pct('updated', 40, 350)} THEN {cu} ELSE {cu} + floor(({SPAN_US}::float8 - {cu}) * power({g.u('updated')}, 2)) END)"
        t0 = f"timestamptz {_lit(T0)}"
    else:  # rows inserted by change_rows: created just after the table's newest change
        cu = f"(1000000 + floor(86400e6 * {g.u('created')}))"
        uu = cu
        t0 = f"timestamptz {_lit(g.time_base)}"
    level1 = {
        "pidx": pidx,
        "lidx": f"({lic_lut})[1 + {g.bits('license', 0, 12)}]",
        "ftidx": f"({ft_lut})[1 + {g.bits('filetype', 0, 12)}]",
        "catidx": f"(CASE ({prov_bias})[{pidx}] {cat_cases} END)",
        "cu": cu,
        "uu": uu,
    }

    # ---- level 2: the columns ------------------------------------------
    prov_names = _text_array(names)
    landing_hosts = _text_array([p[1] for p in provs])
    media_hosts = _text_array([p[2] for p in provs])
    numeric_fid = _int_array([1 if p[3] else 0 for p in provs])
    provider = f"(CASE WHEN {g.pct('provider', 40, 3)} THEN NULL ELSE ({prov_names})[pidx] END)"
    pname = f"({prov_names})[pidx]"
    if table == "image":
        source = (
            f"(CASE WHEN {g.pct('provider', 40, 3)} THEN NULL "
            f"WHEN {pname} = 'smithsonian' THEN {g.pick(SMITHSONIAN_SOURCES, 'source', 0)} "
            f"WHEN {pname} = 'flickr' AND {g.pct('source', 20, 50)} THEN {g.pick(FLICKR_SUB_SOURCES, 'source', 30)} "
            f"WHEN {g.pct('source', 50, 3)} THEN NULL ELSE {pname} END)"
        )
    else:
        source = f"(CASE WHEN {g.pct('provider', 40, 3)} OR {g.pct('source', 50, 3)} THEN NULL ELSE {pname} END)"
    created_on = f"({t0} + interval '1 microsecond' * cu)"
    updated_on = f"({t0} + interval '1 microsecond' * uu)"
    fid_num = f"({1_000_000_000 + g.fid_offset}::bigint + n * 97 + ({g.h('fid')} & 4611686018427387903) % 97)::text"
    fid_str = (
        "(CASE pidx % 4 WHEN 0 THEN 'edanmdm:' || substr(hx, 1, 20) "
        "WHEN 1 THEN 'ark:/65665/' || substr(hx, 3, 30) WHEN 2 THEN upper(hx) "
        "ELSE 'item/' || substr(hx, 1, 8) || '-' || substr(hx, 9, 24) END)"
    )
    fid = f"(CASE WHEN {g.pct('fid', 40, 5)} THEN NULL WHEN ({numeric_fid})[pidx] = 1 THEN {fid_num} ELSE {fid_str} END)"
    fid_nn = f"(CASE WHEN ({numeric_fid})[pidx] = 1 THEN {fid_num} ELSE {fid_str} END)"
    landing = (
        f"(CASE WHEN {g.pct('landing', 0, 10)} THEN NULL ELSE 'https://' || ({landing_hosts})[pidx] || "
        f"(CASE pidx % 4 WHEN 0 THEN '/photos/' WHEN 1 THEN '/object/' WHEN 2 THEN '/detail/' ELSE '/item/' END) "
        f"|| replace({fid_nn}, '/', '%2F') || '/' END)"
    )
    ext = f"coalesce(({_text_array(ft_names)})[ftidx], '{'jpg' if table == 'image' else 'mp3'}')"
    slug = g.words(ASCII_WORDS, "slug", "4", 4, sep="_")
    url_prefix = f"'https://' || ({media_hosts})[pidx] || '/media/' || substr(hx, 1, 2) || '/' || hx || '/'"
    url_len = f"(60 + {g.bits('url', 0, 16)} % 241)::int"
    url = f"(left({url_prefix} || repeat({slug} || '_', 10), greatest({url_len} - 1 - length({ext}), length({url_prefix}) + 4)) || '.' || {ext})"
    thumbnail = f"(CASE WHEN {g.pct('thumb', 0, 450)} THEN NULL ELSE 'https://' || ({media_hosts})[pidx] || '/thumbs/' || hx || '_m.jpg' END)"
    if table == "image":
        filesize = f"(CASE WHEN {g.pct('filesize', 40, 350)} THEN NULL ELSE {g.log_uniform('filesize', 10_000, 25_000_000)} END)"
    else:
        filesize = f"(CASE WHEN {g.pct('filesize', 40, 350)} THEN NULL ELSE {g.log_uniform('filesize', 50_000, 200_000_000)} END)"
    license_ = f"({_text_array(lic_names)})[lidx]"
    ver = (
        f"(CASE WHEN {g.pct('licver', 40, 5)} THEN NULL "
        f"WHEN {license_} IN ('cc0', 'pdm', 'sampling+', 'nc-sampling+') THEN '1.0' "
        f"WHEN {pname} = 'flickr' AND {g.pct('licver', 20, 850)} THEN '2.0' "
        f"ELSE ({_text_array([v for v, _ in LICENSE_VERSIONS])})[({_int_array(_lut([w for _, w in LICENSE_VERSIONS], 10))})[1 + {g.bits('licver', 0, 10)}]] END)"
    )
    license_url = (
        f"(CASE {license_} WHEN 'cc0' THEN 'https://creativecommons.org/publicdomain/zero/1.0/' "
        f"WHEN 'pdm' THEN 'https://creativecommons.org/publicdomain/mark/1.0/' "
        f"ELSE 'https://creativecommons.org/licenses/' || {license_} || '/' || "
        f"coalesce({ver}, '4.0') || '/' END)"
    )
    creator_kind = g.bits("creator", 0, 10)
    creator = (
        f"(CASE WHEN {creator_kind} < 82 THEN NULL "
        f"WHEN {creator_kind} < 600 THEN {g.pick(CREATORS, 'creator', 16)} "
        f"ELSE {g.pick(ASCII_WORDS, 'creator', 16)} || '_' || ({g.bits('creator', 32, 20)})::text END)"
    )
    creator_url = (
        f"(CASE WHEN {creator_kind} < 82 OR {g.pct('creator_url', 0, 200)} THEN NULL "
        f"ELSE 'https://' || ({landing_hosts})[pidx] || '/people/' || ({g.bits('creator', 32, 20)})::text END)"
    )
    title_kind = g.bits("title", 0, 10)
    title_count = f"(1 + {g.bits('title', 10, 8)} % 6)"
    title_words = g.words(TITLE_WORDS, "tw", title_count, 6)
    title = (
        f"(CASE WHEN {title_kind} < 31 THEN NULL WHEN {title_kind} < 46 THEN '' "
        f"WHEN {title_kind} < 140 THEN '{'IMG_' if table == 'image' else 'track_'}' || lpad(({g.bits('title', 10, 20)} % 10000)::text, 4, '0') "
        f"ELSE {title_words} END)"
    )
    # jsonb values are assembled as JSON text from pre-escaped pieces and cast once:
    # measurably cheaper than nested jsonb_build_object + jsonb_strip_nulls calls.
    description = g.words([_json_inner(x) for x in SENTENCES], "desc", f"(1 + {g.bits('meta', 10, 8)} % 6)", 6)
    meta_kind = g.bits("meta", 0, 10)
    cams = ["Canon", "NIKON CORPORATION", "SONY", "FUJIFILM", "Apple"]
    nested = (
        f"(CASE {g.bits('meta', 20, 2)} "
        f"WHEN 0 THEN ', \"geo\": {{\"lat\": ' || round((({g.u('geo')} * 180) - 90)::numeric, 6)::text "
        f"|| ', \"lon\": ' || round((({g.u('geo', 1)} * 360) - 180)::numeric, 6)::text "
        f"|| ', \"accuracy\": ' || (1 + {g.bits('meta', 24, 4)})::text || '}}' "
        f"WHEN 1 THEN ', \"camera\": {{\"make\": \"' || {g.pick(cams, 'cam', 0)} "
        f"|| '\", \"model\": \"Model ' || ({g.bits('cam', 16, 8)})::text "
        f"|| '\", \"exif\": {{\"iso\": ' || (100 * (1 + {g.bits('cam', 24, 5)}))::text "
        f"|| ', \"exposure\": \"1/' || (30 * (1 + {g.bits('cam', 30, 6)}))::text "
        f"|| '\", \"flash\": ' || (CASE {g.bits('cam', 36, 1)} WHEN 1 THEN 'true' ELSE 'false' END) || '}}}}' "
        f"ELSE '' END)"
    )
    meta = (
        f"(CASE WHEN {meta_kind} < 31 THEN NULL WHEN {meta_kind} < 72 THEN '{{}}'::jsonb ELSE ("
        f"'{{\"license_url\": \"' || {license_url} || '\"' "
        f"|| (CASE WHEN {g.pct('meta', 30, 600)} THEN ', \"description\": \"' || {description} || '\"' ELSE '' END) "
        f"|| (CASE WHEN {g.pct('meta2', 0, 500)} THEN ', \"views\": \"' || ({g.bits('meta2', 10, 24)} % 250000)::text || '\"' ELSE '' END) "
        f"|| (CASE WHEN {g.pct('meta2', 34, 400)} THEN ', \"pub_date\": \"' || (1100000000 + {g.bits('meta2', 44, 19)} * 1000)::text || '\"' ELSE '' END) "
        f"|| (CASE WHEN {g.pct('meta3', 0, 300)} THEN ', \"date_taken\": \"' || to_char({created_on} - interval '1 day' * {g.bits('meta3', 10, 14)}, 'YYYY-MM-DD HH24:MI:SS') || '\"' ELSE '' END) "
        f"|| {nested} "
        f"|| (CASE WHEN {g.pct('meta3', 30, 100)} THEN ', \"raw_license_url\": null' ELSE '' END) "
        f"|| '}}')::jsonb END)"
    )
    tag_names = [_json_str(x) for x in TAG_WORDS]
    tag_objs = []
    for i in range(8):
        f = f"tag{i}"
        machine = f"({g.bits(f, 7, 2)} = 0)"
        tag_objs.append(
            f"'{{\"name\": ' || {g.pick(tag_names, f, 0, 7)} || ', \"provider\": ' "
            f"|| (CASE WHEN {machine} THEN {g.pick([_json_str(x) for x in MACHINE_TAGGERS], f, 9, 1)} "
            f"ELSE coalesce('\"' || {pname} || '\"', '\"unknown\"') END) "
            f"|| (CASE WHEN {machine} THEN ', \"accuracy\": ' || round((0.5 + 0.5 * {g.u(f, 1)})::numeric, 5)::text ELSE '' END) || '}}'"
        )
    tag_kind = g.bits("tags", 0, 10)
    joiner = " || ', ' || "
    tag_cases = " ".join(f"WHEN {k} THEN {joiner.join(tag_objs[:k])}" for k in range(1, 9))
    tags = (
        f"(CASE WHEN {tag_kind} < 82 THEN NULL WHEN {tag_kind} < 154 THEN '[]'::jsonb "
        f"ELSE ('[' || (CASE 1 + {g.bits('tags', 10, 8)} % 8 {tag_cases} END) || ']')::jsonb END)"
    )
    wm_kind = g.bits("watermarked", 0, 10)
    watermarked = f"(CASE WHEN {wm_kind} < 205 THEN NULL WHEN {wm_kind} < 225 THEN true ELSE false END)"
    sync_kind = g.bits("synced", 0, 10)
    last_synced = f"(CASE WHEN {sync_kind} < 102 THEN NULL WHEN {sync_kind} < 205 THEN {created_on} ELSE {updated_on} END)"
    removed = g.pct("removed", 0, 10)
    category = f"({_text_array([None] + cats)})[catidx]"
    filetype = f"({_text_array(ft_names)})[ftidx]"
    pop_kind = g.bits("popularity", 0, 10)
    popularity = (
        f"(CASE n % 1999 WHEN 7 THEN 'NaN'::float8 WHEN 11 THEN 'Infinity'::float8 WHEN 13 THEN '-Infinity'::float8 ELSE "
        f"(CASE WHEN {pop_kind} < 410 THEN NULL ELSE power({g.u('popularity', 1)}, 3) END) END)"
    )
    identifier = (
        "coalesce(given_id, (substr(hx, 1, 12) || '4' || substr(hx, 14, 3) || "
        "substr('89ab', (('x' || substr(hx, 17, 1))::bit(4)::int & 3) + 1, 1) || substr(hx, 18))::uuid)"
    )
    ingestion = (
        f"({_text_array([None, 'provider_api', 'commoncrawl', 'sql_dump'])})"
        f"[({_int_array(_lut([2, 80, 15, 3], 10))})[1 + {g.bits('ingestion', 0, 10)}]]"
    )
    cols: dict[str, str] = {
        "identifier": identifier,
        "created_on": created_on,
        "updated_on": updated_on,
        "ingestion_type": ingestion,
        "provider": provider,
        "source": source,
        "foreign_identifier": fid,
        "foreign_landing_url": landing,
        "url": url,
        "thumbnail": thumbnail,
        "filesize": filesize,
        "license": license_,
        "license_version": ver,
        "creator": creator,
        "creator_url": creator_url,
        "title": title,
        "meta_data": meta,
        "tags": tags,
        "watermarked": watermarked,
        "last_synced_with_source": last_synced,
        "removed_from_source": removed,
        "filetype": filetype,
        "category": category,
        "standardized_popularity": popularity,
    }
    if table == "image":
        dims = [(640, 480), (800, 600), (1024, 768), (1280, 720), (1920, 1080), (2048, 1536), (3000, 2000), (4000, 3000),
                (6000, 4000), (1080, 1080), (500, 375), (240, 180), (2400, 3000), (3264, 2448), (4608, 3456), (1600, 1200)]
        w_arr = _int_array([d[0] for d in dims])
        h_arr = _int_array([d[1] for d in dims])
        dim_kind = g.bits("dims", 0, 10)
        free_w = f"(200 + {g.bits('dims', 20, 16)} % 7800)"
        portrait = f"({g.bits('dims', 40, 2)} = 0)"
        w_common = f"({w_arr})[1 + {g.bits('dims', 10, 4)}]"
        h_common = f"({h_arr})[1 + {g.bits('dims', 10, 4)}]"
        ratio = f"(0.5 + 1.5 * {g.u('dims2')})"
        cols["width"] = (
            f"(CASE WHEN {dim_kind} < 82 THEN NULL WHEN {dim_kind} < 680 THEN (CASE WHEN {portrait} THEN {h_common} ELSE {w_common} END) "
            f"ELSE {free_w} END)"
        )
        cols["height"] = (
            f"(CASE WHEN {dim_kind} < 82 THEN NULL WHEN {dim_kind} < 680 THEN (CASE WHEN {portrait} THEN {w_common} ELSE {h_common} END) "
            f"ELSE greatest(1, floor({free_w} * {ratio}))::int END)"
        )
    else:
        cat_name = category
        dur = (
            f"(CASE {cat_name} WHEN 'sound_effect' THEN {g.log_uniform('duration', 200, 30_000)} "
            f"WHEN 'podcast' THEN {g.log_uniform('duration', 600_000, 5_400_000)} "
            f"WHEN 'audiobook' THEN {g.log_uniform('duration', 300_000, 3_600_000)} "
            f"ELSE {g.log_uniform('duration', 30_000, 480_000)} END)"
        )
        cols["duration"] = f"(CASE WHEN {g.pct('duration', 40, 40)} THEN NULL ELSE {dur} END)"
        cols["bit_rate"] = (
            f"(CASE WHEN {g.pct('bitrate', 0, 200)} THEN NULL WHEN {filetype} = 'wav' THEN 1411200 "
            f"WHEN {filetype} = 'flac' THEN 700000 + ({g.bits('bitrate', 10, 20)} % 400000)::int "
            f"ELSE ({_int_array([64000, 96000, 128000, 128000, 160000, 192000, 256000, 320000])})[1 + {g.bits('bitrate', 10, 3)}] END)"
        )
        cols["sample_rate"] = (
            f"(CASE WHEN {g.pct('samplerate', 0, 150)} THEN NULL "
            f"ELSE ({_int_array([22050, 44100, 44100, 44100, 48000, 48000, 96000, 16000])})[1 + {g.bits('samplerate', 10, 3)}] END)"
        )
        g1 = f"{g.bits('genres', 20, 16)} % {len(GENRES)}"
        genre_arr = _text_array(GENRES)
        picks = (
            f"ARRAY[({genre_arr})[1 + ({g1})], "
            f"({genre_arr})[1 + (({g1}) + 1 + {g.bits('genres', 40, 3)}) % {len(GENRES)}], "
            f"({genre_arr})[1 + (({g1}) + 9 + {g.bits('genres', 44, 3)}) % {len(GENRES)}]]"
        )
        gk = g.bits("genres", 0, 10)
        cols["genres"] = (
            f"(CASE WHEN {gk} < 307 THEN NULL WHEN {gk} < 410 THEN '{{}}'::varchar(80)[] "
            f"ELSE (({picks})[1:(1 + {g.bits('genres', 10, 8)} % 3)])::varchar(80)[] END)"
        )
        set_kind = g.bits("audioset", 0, 10)
        in_set = f"({set_kind} >= 748)"
        set_no = f"({g.bits('audioset', 10, 30)} % 50000)"
        cols["audio_set"] = (
            f"(CASE WHEN {set_kind} < 717 THEN NULL WHEN {set_kind} < 748 THEN '{{}}'::jsonb ELSE jsonb_strip_nulls(jsonb_build_object("
            f"'title', 'Album ' || {set_no}::text || ' – ' || {g.pick(TITLE_WORDS, 'audioset', 40, 7)}, "
            f"'foreign_landing_url', 'https://' || ({landing_hosts})[pidx] || '/album/' || {set_no}::text, "
            f"'creator', {creator}, "
            f"'url', 'https://' || ({media_hosts})[pidx] || '/covers/' || {set_no}::text || '.jpg', "
            f"'filetype', 'jpg', 'filesize', CASE WHEN {g.pct('audioset', 50, 500)} THEN 20000 + {set_no} END)) END)"
        )
        cols["set_position"] = f"(CASE WHEN {in_set} AND NOT {g.pct('audioset', 60, 50)} THEN 1 + {g.bits('setpos', 0, 8)} % 20 END)"
        alt_obj = (
            "jsonb_build_object('url', 'https://' || ({mh})[pidx] || '/alt/' || hx || '{sfx}', 'filesize', {fs}, "
            "'filetype', '{ft}', 'bit_rate', {br}, 'sample_rate', 44100)"
        )
        alt1 = alt_obj.format(mh=media_hosts, sfx=".ogg", fs=g.log_uniform("alt", 50_000, 50_000_000), ft="ogg", br=192000)
        alt2 = alt_obj.format(mh=media_hosts, sfx=".flac", fs=g.log_uniform("alt", 500_000, 200_000_000, 1), ft="flac", br=900000)
        alt_kind = g.bits("altfiles", 0, 10)
        cols["alt_files"] = (
            f"(CASE WHEN {alt_kind} < 614 THEN NULL WHEN {alt_kind} < 717 THEN '[]'::jsonb "
            f"WHEN {alt_kind} < 900 THEN jsonb_build_array({alt1}) ELSE jsonb_build_array({alt1}, {alt2}) END)"
        )
        cols["audio_set_foreign_identifier"] = f"(CASE WHEN {in_set} THEN 'set-' || {set_no}::text END)"

    assert list(cols) == column_names(table)
    level2 = ",\n  ".join(f"{expr} AS {name}" for name, expr in cols.items())
    level1_sql = ", ".join(f"{expr} AS {name}" for name, expr in level1.items())
    # hashes are registered while building the expressions above, so level 0 comes last
    hash_cols = ", ".join(f"hashint8extended(s.n, {salt}) AS h_{field}" for field, salt in g.hashes.items())
    level0 = f"SELECT s.n, s.given_id, md5({_lit(g.prefix)} || s.n) AS hx, {hash_cols} FROM ({source_sql}) s OFFSET 0"
    sql = f"SELECT\n  {level2}\nFROM (SELECT b.*, {level1_sql} FROM ({level0}) b OFFSET 0) r"
    return sql, list(cols)


def _insert_sql(g: _Gen, source_sql: str, on_conflict: bool = False) -> str:
    select, cols = _row_sql(g, source_sql)
    tail = " ON CONFLICT DO NOTHING" if on_conflict else ""
    return f"INSERT INTO {g.table} ({', '.join(cols)})\n{select}{tail}"


def _tombstone_sql(table: str, seed: int) -> str:
    salt = _salt(f"{seed}:{table}:tombstone")
    salt2 = _salt(f"{seed}:{table}:tombstone2")
    return (
        f"INSERT INTO {TOMBSTONE_PREFIX}{table} SELECT t.*, "
        f"t.updated_on + interval '1 hour' + interval '1 second' * (hashtextextended(t.identifier::text, {salt2}) & 2097151), "
        f"({_text_array(DELETED_REASONS + [None])})[1 + ((hashtextextended(t.identifier::text, {salt2}) >> 24) & 1023) % {len(DELETED_REASONS) + 1}] "
        f"FROM {table} t WHERE (hashtextextended(t.identifier::text, {salt}) & {TOMBSTONE_MOD - 1}) = 0"
    )


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _writing(uri: str, what: str):
    """A connection whose uncommitted work is rolled back on failure; database errors
    become one sentence naming what failed (connection failures already are: ``connect``)."""
    conn = connect(uri, autocommit=False)
    try:
        yield conn
    except UserError:
        conn.rollback()
        raise
    except Exception as err:
        conn.rollback()
        raise SourceError(f"{what} failed on {redact(uri)}: {redact_error(_first_line(err), uri)}") from err
    finally:
        conn.close()


def _first_line(err: BaseException) -> str:
    s = str(err).strip()
    return s.splitlines()[0] if s else type(err).__name__


def _scalar(cur, sql: str):
    cur.execute(sql)
    row = cur.fetchone()
    return None if row is None else row[0]


def _rows_for(rows: int | dict[str, int], table: str) -> int:
    n = rows.get(table, DEFAULT_ROWS) if isinstance(rows, dict) else rows
    if not isinstance(n, int) or n < 0:
        raise UserError(f"The row count for {table} must be a non-negative integer, not {n!r}.")
    return n


def seed(
    uri: str,
    tables: Sequence[str] = ("image", "audio"),
    rows: int | dict[str, int] = DEFAULT_ROWS,
    seed: int = 42,
    replace: bool = False,
    progress: Callable[[str, int, int], Any] | None = None,
    *,
    only_seeded_database: bool = False,
) -> dict[str, int]:
    """Create and fill ``tables`` (and their tombstone tables) with sample rows.

    Returns ``{table: rows, "deleted_<table>": tombstone rows, ...}``. With
    ``replace=False`` an existing non-empty table is an error; an existing
    empty one is filled; ``replace=True`` drops existing tables first.
    ``progress(table, rows_done, rows_total)`` is called after every slab.

    Every seeded database gets the seeder's mark (the table ``dataset_assets_seeded``).
    With ``only_seeded_database=True`` a database without that mark is refused with
    :class:`ForeignDatabase` before anything in it changes: the command line's rule for any
    database but the embedded demo one (``--replace-tables-destroying-data`` lifts it).
    """
    if isinstance(tables, str):
        tables = (tables,)
    for t in tables:
        _check_table(t)
    out: dict[str, int] = {}
    with _writing(uri, "Seeding") as conn:
        with conn.cursor() as cur:
            if only_seeded_database and not _scalar(cur, f"SELECT to_regclass('public.{MARKER_TABLE}') IS NOT NULL"):
                ident = identity(uri)
                where = ident.host + (f":{ident.port}" if ident.port else "")
                raise ForeignDatabase(
                    f"The database {ident.database!r} at {where} was not made by dataset-assets seed (it has no "
                    f"{MARKER_TABLE} table), so seed leaves it alone; to drop and recreate "
                    f"{', '.join(tables)} and {', '.join(TOMBSTONE_PREFIX + t for t in tables)} there with sample rows, "
                    f"pass {DESTROY_FLAG}."
                )
            for table in tables:
                total = _rows_for(rows, table)
                exists = _scalar(cur, f"SELECT to_regclass('public.{table}') IS NOT NULL")
                fresh = True
                if exists and replace:
                    _exec(cur, f"DROP TABLE IF EXISTS {TOMBSTONE_PREFIX}{table}, {table}")
                elif exists:
                    if _scalar(cur, f"SELECT EXISTS (SELECT 1 FROM {table})"):
                        raise UserError(f"Table {table} already has rows; pass replace=True (--replace) to recreate it with sample data.")
                    fresh = False
                if fresh:
                    for stmt in table_ddl(table):
                        _exec(cur, stmt)
                else:
                    _exec(cur, f"CREATE TABLE IF NOT EXISTS {table_ddl(table)[1].removeprefix('CREATE TABLE ')}")
                g = _Gen(table, seed, table)
                done = 0
                if progress:
                    progress(table, 0, total)
                while done < total:
                    hi = min(total, done + SLAB_ROWS)
                    src = f"SELECT n::bigint AS n, NULL::uuid AS given_id FROM generate_series({done + 1}, {hi}) AS n"
                    done += _exec(cur, _insert_sql(g, src))
                    if progress:
                        progress(table, done, total)
                if fresh:
                    for stmt in index_ddl(table):
                        _exec(cur, stmt)
                out[f"{TOMBSTONE_PREFIX}{table}"] = _exec(cur, _tombstone_sql(table, seed))
                out[table] = done
                _mark(cur, table, seed, done)
                conn.commit()
    _analyze(uri, [t for t in tables] + [f"{TOMBSTONE_PREFIX}{t}" for t in tables])
    return out


def _mark(cur, table: str, seed: int, rows: int) -> None:
    """Record that ``table`` (and its tombstone table) here are the seeder's."""
    _exec(cur, f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (table_name text PRIMARY KEY, seed bigint NOT NULL, "
               f"rows bigint NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now())")
    _exec(cur, f"COMMENT ON TABLE {MARKER_TABLE} IS 'Tables of this database made by dataset-assets seed, "
               f"which may drop and recreate them; delete this table to protect them.'")
    _exec(cur, f"INSERT INTO {MARKER_TABLE} (table_name, seed, rows) VALUES ({_lit(table)}, {int(seed)}, {int(rows)}) "
               f"ON CONFLICT (table_name) DO UPDATE SET seed = EXCLUDED.seed, rows = EXCLUDED.rows, seeded_at = now()")


def _analyze(uri: str, tables: Sequence[str]) -> None:
    conn = connect(uri, autocommit=True)
    try:
        with conn.cursor() as cur:
            for t in tables:
                cur.execute(f"VACUUM (ANALYZE) {t}")
    finally:
        conn.close()


_KIND_WEIGHTS = {"update": 0.6, "insert": 0.3, "delete": 0.1}


def _split(total: int, kinds: Sequence[str]) -> dict[str, int]:
    w = {k: _KIND_WEIGHTS[k] for k in kinds}
    s = sum(w.values())
    raw = {k: total * v / s for k, v in w.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def _uuid_array(ids: Sequence[str]) -> str:
    return "'{" + ",".join(ids) + "}'::uuid[]"


def change_rows(
    uri: str,
    table: str,
    fraction: float = 0.01,
    seed: int = 7,
    mode: str = "clustered",
    kinds: Sequence[str] = ("update", "insert", "delete"),
    *,
    runs: int = 10,
    tombstone: bool = True,
) -> dict[str, int]:
    """Change about ``fraction`` of the rows of ``table``; return ``{"update": n, "insert": n, "delete": n}``.

    The changes are split 60/30/10 between update/insert/delete (renormalised
    over ``kinds``). ``mode="clustered"`` puts them in ``runs`` contiguous runs
    of primary-key order spread evenly over the key space (inserted rows get
    identifiers inside those runs); ``mode="random"`` spreads them uniformly.
    Updates bump ``updated_on`` / ``last_synced_with_source`` past the table's
    current maximum ``updated_on``, change ``title`` and ``tags``, and mark ~5 %
    of the updated rows ``removed_from_source``. Deletes first copy the rows
    into ``deleted_<table>`` (unless ``tombstone=False``). Deterministic for a
    given table state and seed; everything commits in one transaction.
    """
    _check_table(table)
    if mode not in ("clustered", "random"):
        raise UserError(f"mode must be 'clustered' or 'random', not {mode!r}.")
    bad = [k for k in kinds if k not in _KIND_WEIGHTS]
    if bad or not kinds:
        raise UserError(f"kinds must be a non-empty subset of update, insert, delete (got {list(kinds)!r}).")
    if not 0 <= fraction <= 1:
        raise UserError(f"fraction must be between 0 and 1, not {fraction!r}.")
    with _writing(uri, f"Changing rows of {table}") as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*), max(updated_on)::text, (extract(epoch FROM max(updated_on)) * 1000000)::bigint FROM {table}")
            n_rows, base_ts, base_us = cur.fetchone()
            if not n_rows:
                raise UserError(f"Table {table} is empty; seed it before changing rows.")
            counts = _split(max(1, round(fraction * n_rows)) if fraction > 0 else 0, kinds)
            n_upd, n_ins, n_del = counts.get("update", 0), counts.get("insert", 0), counts.get("delete", 0)
            n_sel = min(n_upd + n_del, n_rows)
            rng = random.Random(f"{seed}:{table}:{base_us}:{mode}")
            selected: list[str] = []
            insert_ids: list[str] | None = None
            if mode == "random":
                if n_sel:
                    salt = _salt(f"{seed}:{table}:{base_us}:pick")
                    cur.execute(f"SELECT identifier::text FROM {table} ORDER BY hashtextextended(identifier::text, {salt}), identifier LIMIT {n_sel}")
                    selected = [r[0] for r in cur.fetchall()]
            else:
                r = max(1, min(runs, max(n_sel, n_ins)))
                sel_len = [n_sel // r + (1 if i < n_sel % r else 0) for i in range(r)]
                ins_len = [n_ins // r + (1 if i < n_ins % r else 0) for i in range(r)]
                insert_ids = []
                key_space = 1 << 128
                for i in range(r):
                    width = max(sel_len[i], ins_len[i], 1) / n_rows  # fraction of the key space this run covers
                    if sel_len[i] and sel_len[i] > n_rows / (2 * r):
                        # runs this long would overlap in key space: place them by rank instead
                        start = min(max(0, int((i + 0.5) * n_rows / r - sel_len[i] / 2)), n_rows - sel_len[i])
                        cur.execute(f"SELECT identifier::text FROM {table} ORDER BY identifier OFFSET {start} LIMIT {sel_len[i]}")
                    else:
                        centre = (i + 0.5) / r
                        lo_key = int(max(0.0, centre - width / 2) * key_space)
                        lo_uuid = _int_to_uuid(lo_key)
                        cur.execute(f"SELECT identifier::text FROM {table} WHERE identifier >= '{lo_uuid}' ORDER BY identifier LIMIT {sel_len[i]}")
                    run_ids = [row[0] for row in cur.fetchall()]
                    selected.extend(run_ids)
                    if ins_len[i]:
                        if run_ids:
                            a, b = _uuid_to_int(run_ids[0]), _uuid_to_int(run_ids[-1])
                        else:
                            a = int(max(0.0, (i + 0.5) / r - width / 2) * key_space)
                            b = a + int(width * key_space)
                        if b - a < 2 * ins_len[i]:
                            b = a + max(int(width * key_space), 2 * ins_len[i] + 2)
                        b = min(b, key_space - 1)
                        insert_ids.extend(_int_to_uuid(rng.randrange(a, b)) for _ in range(ins_len[i]))
                selected = list(dict.fromkeys(selected))
            rng.shuffle(selected)
            upd_ids, del_ids = selected[:n_upd], selected[n_upd:n_upd + n_del]
            offset = lambda salt: f"(interval '1 second' + interval '1 microsecond' * ((hashtextextended(identifier::text, {salt}) & 4294967295) * 20))"  # noqa: E731
            done = {"update": 0, "insert": 0, "delete": 0}
            if upd_ids:
                s1, s2, s3 = (_salt(f"{seed}:{table}:{base_us}:upd{i}") for i in range(3))
                done["update"] = _exec(
                    cur,
                    f"UPDATE {table} SET updated_on = timestamptz {_lit(base_ts)} + {offset(s1)}, "
                    f"last_synced_with_source = timestamptz {_lit(base_ts)} + {offset(s1)}, "
                    f"title = coalesce(nullif(title, ''), 'Untitled') || ' ✎ ' || to_hex(hashtextextended(identifier::text, {s2}) & 65535), "
                    f"tags = coalesce(tags, '[]'::jsonb) || jsonb_build_array(jsonb_build_object('name', 'revised', 'provider', coalesce(provider, 'unknown'))), "
                    f"removed_from_source = removed_from_source OR (hashtextextended(identifier::text, {s3}) & 1023) < 51 "
                    f"WHERE identifier = ANY({_uuid_array(upd_ids)})",
                )
            if del_ids:
                if tombstone:
                    s4 = _salt(f"{seed}:{table}:{base_us}:del")
                    _exec(
                        cur,
                        f"INSERT INTO {TOMBSTONE_PREFIX}{table} SELECT t.*, timestamptz {_lit(base_ts)} + "
                        f"{offset(s4).replace('identifier::text', 't.identifier::text')}, "
                        f"({_text_array(DELETED_REASONS)})[1 + ((hashtextextended(t.identifier::text, {s4}) >> 40) & 1023) % {len(DELETED_REASONS)}] "
                        f"FROM {table} t WHERE t.identifier = ANY({_uuid_array(del_ids)}) ON CONFLICT (identifier) DO NOTHING",
                    )
                done["delete"] = _exec(cur, f"DELETE FROM {table} WHERE identifier = ANY({_uuid_array(del_ids)})")
            if n_ins:
                g = _Gen(table, seed, f"{table}:change:{base_us}", fid_offset=(1 + (_salt(f'{seed}:{table}:{base_us}') % 89_999)) * 10**11, time_base=base_ts)
                if insert_ids is not None:
                    src = f"SELECT u.n AS n, u.given_id FROM unnest({_uuid_array(insert_ids)}) WITH ORDINALITY AS u(given_id, n)"
                else:
                    src = f"SELECT n::bigint AS n, NULL::uuid AS given_id FROM generate_series(1, {n_ins}) AS n"
                done["insert"] = _exec(cur, _insert_sql(g, src, on_conflict=True))
        conn.commit()
    return {k: done[k] for k in ("update", "insert", "delete")}


def _int_to_uuid(v: int) -> str:
    h = f"{v:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _uuid_to_int(u: str) -> int:
    return int(u.replace("-", ""), 16)


if __name__ == "__main__":  # python -m dataset_assets.local.seed [rows]  -> database "sample" on the embedded server
    import sys

    from dataset_assets.local.embedded import embedded_uri, ensure_database

    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROWS
    target = ensure_database(embedded_uri(), "sample")
    t0 = time.perf_counter()
    res = seed(target, rows=n, replace=True, progress=lambda t, d, tot: print(f"{t}: {d}/{tot}", file=sys.stderr))
    print(target, res, f"{time.perf_counter() - t0:.1f}s")
