"""The change sensor's rules: which change signals count as a change."""

from __future__ import annotations

import json

import pytest


def _sig(counters=(10, 2, 1, 3, 0, 0), maxima=(("updated_on", "t1"),), relations="r", stats_reset=None, started="s"):
    from dataset_assets.source.signals import ChangeSignal

    return ChangeSignal(started=started, stats_reset=stats_reset, relations=relations, counters=tuple(counters),
                        maxima=tuple(maxima))


@pytest.mark.parametrize("new, changed", [
    (_sig(), False),
    (_sig(started="restarted"), False),                              # a clean restart keeps the counters
    (_sig(stats_reset="other table reset"), False),                  # the db reset time alone is no change
    (_sig(counters=(0, 0, 0, 0, 0, 0), stats_reset="reset"), False),  # pg_stat_reset(), nothing written since
    (_sig(counters=(0, 0, 0, 3, 0, 0)), False),                      # only the table's counters reset
    (_sig(counters=(0, 1, 0, 3, 0, 0)), True),                       # ... and one update since
    (_sig(counters=(10, 2, 2, 3, 0, 0)), True),                      # a delete
    (_sig(counters=(10, 2, 1, 4, 0, 0)), True),                      # a tombstone
    (_sig(maxima=(("updated_on", "t2"),)), True),
    (_sig(maxima=()), False),                                        # an index dropped: nothing to compare
    (_sig(relations="rewritten"), True),
])
def test_change_rules(new, changed):
    old = _sig()
    assert (new.changed_since(old) is not None) is changed, new.changed_since(old)
    assert _sig().changed_since(None) == "no committed snapshot yet"
    from dataset_assets.source.signals import ChangeSignal

    assert ChangeSignal.from_dict(json.loads(json.dumps(new.as_dict()))) == new
