"""uuids from either ADBC driver layout become the canonical text."""

from __future__ import annotations

import pyarrow as pa


def test_uuid_formatting_takes_both_driver_layouts():
    """Driver 1.8 hands uuids over as variable binary in an opaque extension, later
    drivers as fixed-size ``arrow.uuid``: both give the canonical text, nulls and slices kept."""
    import uuid as uuidlib

    from dataset_assets.source.types import uuid_to_string

    values = [uuidlib.UUID(int=i * 0x0123456789ABCDEF0123456789ABCDEF % (1 << 128)) for i in range(1, 6)]
    raw = [v.bytes for v in values[:2]] + [None] + [v.bytes for v in values[2:]]
    want = [str(values[0]), str(values[1]), None, str(values[2]), str(values[3]), str(values[4])]
    for typ in (pa.binary(), pa.binary(16)):
        arr = pa.array(raw, typ)
        assert uuid_to_string(arr).to_pylist() == want
        assert uuid_to_string(arr.slice(1, 4)).to_pylist() == want[1:5]
