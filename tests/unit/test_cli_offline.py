"""The command line without a database: an unreachable one is one sentence, and every
tables.yaml setting is checked."""

from __future__ import annotations

from platform_helpers import assert_one_sentence_error, run_cli

DATE = "2026-11-21"


def test_unreachable_database(tmp_path):
    p = run_cli("export", "--table", "image", "--snapshot", DATE, "--source", "postgresql://u:pw@127.0.0.1:9/db", "--store", str(tmp_path))
    assert_one_sentence_error(p, "127.0.0.1:9", "running")
    assert "pw" not in p.stderr.replace("postgres", "")


def test_every_table_setting_is_checked():
    """A new TableConfig field must get a check in config._SETTINGS (else its value is unchecked)."""
    from dataclasses import fields

    from dataset_assets.tables import _SETTINGS, TableConfig

    assert set(_SETTINGS) == {f.name for f in fields(TableConfig)} - {"name"}
