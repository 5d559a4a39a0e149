"""A parquet file made of column chunks of other parquet files, byte for byte.

A refresh that updates rows in place rewrites a shard whose rows mostly keep their values: an
update of a title changes 3 of ``image``'s 26 columns (with the volatile ones), a popularity
recompute 2. Decoding every column and encoding it again gave the same bytes for the columns
that did not change, at the price of the whole encoding (zstd, content-defined chunking,
dictionaries, statistics: 2.3 CPU-s per 1M rows of ``image``, twice their decoding). Here a new
file takes those column chunks (their pages, and their column and offset index entries) as
they are from the previous file, and only the changed columns are encoded (by the same writer,
with the same settings, as a file of their own whose chunks are taken the same way). The file is
laid out as Arrow's writer lays out its own: ``PAR1``, each row group's column chunks in order,
every column index, every offset index, the footer; so a file spliced from chunks that Arrow
wrote is the file Arrow would have written (a test checks it byte for byte).

The footer is Thrift's compact protocol (``parquet.thrift``): :class:`_Reader` parses only the
structs that hold what moves (a column chunk's page offsets, its row group's offset and sizes,
the page locations of its offset index) and keeps everything else as the bytes it read, which
:class:`_Writer` writes again as they are; so fields this module does not know (statistics,
size statistics, encodings, the schema) pass through untouched.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

MAGIC = b"PAR1"

# compact protocol types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)


class _Reader:
    """Reads a struct, parsing only the fields of ``want`` (field id -> what to parse inside it;
    inside a list, of its elements): a nested struct or list that is not wanted is skipped and
    kept as its bytes (:class:`_Raw`), as are the statistics, encodings and schema a splice never
    changes. Parsing every field of a shard's footer, in Python, cost 1 ms."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def varint(self) -> int:
        data, pos = self.data, self.pos
        b = data[pos]
        pos += 1
        out = b & 0x7F
        shift = 7
        while b & 0x80:
            b = data[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            shift += 7
        self.pos = pos
        return out

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, t: int) -> None:
        if t in (_TRUE, _FALSE, _BYTE):
            self.pos += 1
        elif t in (_I16, _I32, _I64):
            self.varint()
        elif t == _DOUBLE:
            self.pos += 8
        elif t == _BINARY:
            n = self.varint()
            self.pos += n
        elif t in (_LIST, _SET):
            h = self.data[self.pos]
            self.pos += 1
            n, et = h >> 4, h & 0x0F
            if n == 15:
                n = self.varint()
            for _ in range(n):
                self.skip(et)
        elif t == _MAP:
            n = self.varint()
            if n:
                kv = self.data[self.pos]
                self.pos += 1
                for _ in range(n):
                    self.skip(kv >> 4)
                    self.skip(kv & 0x0F)
        elif t == _STRUCT:
            while True:
                h = self.data[self.pos]
                self.pos += 1
                if h == 0:
                    return
                if not h >> 4:
                    self.zigzag()
                if h & 0x0F not in (_TRUE, _FALSE):
                    self.skip(h & 0x0F)
        else:
            raise ValueError(f"unknown thrift compact type {t}")

    def value(self, t: int, want: dict | None):
        if t in (_TRUE, _FALSE, _BYTE):  # _TRUE/_FALSE: a boolean inside a list, one byte
            b = self.data[self.pos]
            self.pos += 1
            return b == 1 if t != _BYTE else b
        if t in (_I16, _I32, _I64):
            return self.zigzag()
        if want is None or t not in (_LIST, _SET, _STRUCT):
            start = self.pos
            self.skip(t)
            return _Raw(self.data[start:self.pos])
        if t == _STRUCT:
            return self.struct(want)
        h = self.data[self.pos]
        self.pos += 1
        n, et = h >> 4, h & 0x0F
        if n == 15:
            n = self.varint()
        return _List(et, [self.value(et, want) for _ in range(n)])

    def struct(self, want: dict) -> "_Struct":
        fields = []
        last = 0
        data = self.data
        while True:
            h = data[self.pos]
            self.pos += 1
            if h == 0:
                return _Struct(fields)
            delta, t = h >> 4, h & 0x0F
            fid = last + delta if delta else self.zigzag()
            if t in (_TRUE, _FALSE):
                v = t == _TRUE
            else:
                v = self.value(t, want.get(fid))
            fields.append([fid, t, v])
            last = fid


@dataclass
class _Raw:
    """A value as read, not parsed (written again as it is)."""

    data: bytes


@dataclass
class _List:
    etype: int
    items: list



class _Struct:
    """A Thrift struct as read: its fields in order, ``[id, type, value]``."""

    def __init__(self, fields: list):
        self.fields = fields

    def get(self, fid: int, default=None):
        for f in self.fields:
            if f[0] == fid:
                return f[2]
        return default

    def set(self, fid: int, value) -> None:
        """Changes a field that is there (offsets and sizes: never added, never another type)."""
        for f in self.fields:
            if f[0] == fid:
                f[2] = value
                return
        raise KeyError(fid)

    def shallow(self) -> "_Struct":
        """A copy whose fields can be set without touching this one's (their values are shared:
        a deep copy of every footer cost a refresh 3 ms per file)."""
        return _Struct([list(f) for f in self.fields])


class _Writer:
    def __init__(self):
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                self.out.append(b | 0x80)
            else:
                self.out.append(b)
                return

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, t: int, v) -> None:
        if isinstance(v, _Raw):
            self.out += v.data
            return
        if t in (_TRUE, _FALSE):
            self.out.append(1 if v else 2)
        elif t == _BYTE:
            self.out.append(v & 0xFF)
        elif t in (_I16, _I32, _I64):
            self.zigzag(v)
        elif t == _DOUBLE:
            self.out += v
        elif t == _BINARY:
            self.varint(len(v))
            self.out += v
        elif t in (_LIST, _SET):
            n = len(v.items)
            if n < 15:
                self.out.append((n << 4) | v.etype)
            else:
                self.out.append(0xF0 | v.etype)
                self.varint(n)
            for x in v.items:
                self.value(v.etype, x)
        elif t == _STRUCT:
            self.struct(v)
        else:
            raise ValueError(f"unknown thrift compact type {t}")

    def struct(self, s: _Struct) -> None:
        last = 0
        for fid, t, v in s.fields:
            if t in (_TRUE, _FALSE):
                t = _TRUE if v else _FALSE
            delta = fid - last
            if 0 < delta <= 15:
                self.out.append((delta << 4) | t)
            else:
                self.out.append(t)
                self.zigzag(fid)
            if t not in (_TRUE, _FALSE):
                self.value(t, v)
            last = fid
        self.out.append(0)


def encode(s: _Struct) -> bytes:
    w = _Writer()
    w.struct(s)
    return bytes(w.out)


def decode(data: bytes, want: dict) -> _Struct:
    """A struct read from ``data``, the fields of ``want`` parsed (:class:`_Reader`)."""
    return _Reader(data).struct(want)


# parquet.thrift field ids
# FileMetaData
_FM_NUM_ROWS, _FM_ROW_GROUPS = 3, 4
# RowGroup
_RG_COLUMNS, _RG_TOTAL_BYTE_SIZE, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_TOTAL_COMPRESSED, _RG_ORDINAL = 1, 2, 3, 5, 6, 7
# ColumnChunk
_CC_FILE_OFFSET, _CC_META, _CC_OI_OFFSET, _CC_OI_LENGTH, _CC_CI_OFFSET, _CC_CI_LENGTH = 2, 3, 4, 5, 6, 7
_CC_CRYPTO, _CC_ENCRYPTED_META = 8, 9
# ColumnMetaData
_CM_UNCOMPRESSED, _CM_COMPRESSED, _CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICT_PAGE, _CM_BLOOM = 6, 7, 9, 10, 11, 14
# OffsetIndex / PageLocation
_OI_PAGES, _PL_OFFSET = 1, 1
# what is parsed (the rest is kept as read): each row group's column chunks' metadata; an offset index's pages
_FOOTER = {_FM_ROW_GROUPS: {_RG_COLUMNS: {_CC_META: {}}}}
_OFFSET_INDEX = {_OI_PAGES: {}}


class Source:
    """A parquet file opened for its chunks: the bytes (or a file to read ranges of) and its footer."""

    def __init__(self, f):
        self.f = f
        f.seek(0, io.SEEK_END)
        size = f.tell()
        f.seek(size - 8)
        tail = f.read(8)
        if tail[4:] != MAGIC:
            raise ValueError("not a parquet file")
        n = struct.unpack("<i", tail[:4])[0]
        if not 0 < n <= size - 12:
            raise ValueError("its footer's length is out of range")
        f.seek(size - 8 - n)
        try:
            self.meta = decode(f.read(n), _FOOTER)
            self.row_groups = self.meta.get(_FM_ROW_GROUPS).items
        except (IndexError, AttributeError, ValueError):
            raise ValueError("its footer cannot be read") from None

    def rows(self, rg: int) -> int:
        """The rows of row group ``rg``."""
        return self.row_groups[rg].get(_RG_NUM_ROWS)

    def chunks(self, rg: int) -> list["_Chunk"]:
        """Every column chunk of row group ``rg``, in the schema's order."""
        return [self.chunk(rg, c) for c in range(len(self.row_groups[rg].get(_RG_COLUMNS).items))]

    def read(self, offset: int, length: int) -> bytes:
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise ValueError("a parquet file is shorter than its footer says")
        return data

    def chunk(self, rg: int, col: int) -> "_Chunk":
        """Column ``col`` of row group ``rg``: where its pages are, its page index entries (ValueError
        when the footer does not hold them as Arrow's writer writes them)."""
        try:
            cc = self.row_groups[rg].get(_RG_COLUMNS).items[col]
            md = cc.get(_CC_META)
            if md is None or cc.get(_CC_CRYPTO) is not None or cc.get(_CC_ENCRYPTED_META) is not None \
                    or md.get(_CM_BLOOM) is not None:
                raise ValueError("column chunks that are encrypted or have bloom filters are not spliced")
            dict_at = md.get(_CM_DICT_PAGE)
            start = dict_at if dict_at is not None and dict_at > 0 else md.get(_CM_DATA_PAGE)
            length = md.get(_CM_COMPRESSED)
            if not isinstance(start, int) or not isinstance(length, int) or not isinstance(md.get(_CM_UNCOMPRESSED), int):
                raise ValueError("a column chunk's footer entry has no offset or size")
            ci = None
            if cc.get(_CC_CI_OFFSET) is not None:
                ci = self.read(cc.get(_CC_CI_OFFSET), cc.get(_CC_CI_LENGTH))
            oi = None
            if cc.get(_CC_OI_OFFSET) is not None:
                oi = decode(self.read(cc.get(_CC_OI_OFFSET), cc.get(_CC_OI_LENGTH)), _OFFSET_INDEX)
                if not isinstance(oi.get(_OI_PAGES), _List):
                    raise ValueError("an offset index holds no page locations")
        except (IndexError, AttributeError, TypeError):
            raise ValueError("its footer does not describe its column chunks") from None
        return _Chunk(self, cc, start, length, ci, oi)


@dataclass
class _Chunk:
    source: Source
    cc: _Struct
    start: int
    length: int
    column_index: bytes | None
    offset_index: _Struct | None


class Writer:
    """A parquet file written a row group at a time from column chunks of other files
    (:meth:`add`), under ``template``'s footer (schema, key-value metadata, writer), laid out as
    Arrow's writer lays out its own. Only the footer's entries are held until :meth:`close`, not
    the chunks."""

    def __init__(self, out, template: Source):
        self.out, self.template = out, template
        out.write(MAGIC)
        self.pos = len(MAGIC)
        self.groups: list[tuple[int, int, int, int, list]] = []
        self.rows = 0

    def add(self, rows: int, chunks: list[_Chunk]) -> None:
        """One row group of ``rows`` rows: ``chunks``, one per column, in the schema's order."""
        ccs = []
        first = self.pos
        unc = comp = 0
        for ch in chunks:
            shift = self.pos - ch.start
            self.out.write(ch.source.read(ch.start, ch.length))
            self.pos += ch.length
            cc = ch.cc.shallow()
            md = cc.get(_CC_META).shallow()
            cc.set(_CC_META, md)
            for fid in (_CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICT_PAGE):
                v = md.get(fid)
                if v is not None and v > 0:
                    md.set(fid, v + shift)
            if cc.get(_CC_FILE_OFFSET):
                cc.set(_CC_FILE_OFFSET, cc.get(_CC_FILE_OFFSET) + shift)
            unc += md.get(_CM_UNCOMPRESSED)
            comp += md.get(_CM_COMPRESSED)
            oi = None
            if ch.offset_index is not None:
                oi = ch.offset_index.shallow()
                pages = []
                for loc in oi.get(_OI_PAGES).items:
                    loc = loc.shallow()
                    loc.set(_PL_OFFSET, loc.get(_PL_OFFSET) + shift)
                    pages.append(loc)
                oi.set(_OI_PAGES, _List(_STRUCT, pages))
            ccs.append((cc, ch.column_index, oi))
        self.groups.append((rows, first, unc, comp, ccs))
        self.rows += rows

    def close(self) -> int:
        """The page index and the footer; the file's size."""
        out = self.out
        # after every row group: every column index, then every offset index
        for *_, ccs in self.groups:
            for cc, ci, _ in ccs:
                if ci is not None:
                    cc.set(_CC_CI_OFFSET, self.pos)
                    out.write(ci)
                    self.pos += len(ci)
        for *_, ccs in self.groups:
            for cc, _, oi in ccs:
                if oi is not None:
                    data = encode(oi)
                    cc.set(_CC_OI_OFFSET, self.pos)
                    cc.set(_CC_OI_LENGTH, len(data))
                    out.write(data)
                    self.pos += len(data)
        meta = self.template.meta.shallow()
        rgs = []
        for ordinal, (rows, first, unc, comp, ccs) in enumerate(self.groups):
            rg = self.template.row_groups[0].shallow()  # (its row groups are what is spliced: it has one)
            rg.set(_RG_COLUMNS, _List(_STRUCT, [cc for cc, _, _ in ccs]))
            rg.set(_RG_TOTAL_BYTE_SIZE, unc)
            rg.set(_RG_NUM_ROWS, rows)
            for fid, v in ((_RG_FILE_OFFSET, first), (_RG_TOTAL_COMPRESSED, comp), (_RG_ORDINAL, ordinal)):
                if rg.get(fid) is not None:
                    rg.set(fid, v)
            rgs.append(rg)
        meta.set(_FM_ROW_GROUPS, _List(_STRUCT, rgs))
        meta.set(_FM_NUM_ROWS, self.rows)
        footer = encode(meta)
        out.write(footer)
        out.write(struct.pack("<i", len(footer)))
        out.write(MAGIC)
        self.pos += len(footer) + 8
        return self.pos
