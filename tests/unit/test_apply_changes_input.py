"""apply-changes on bad input: one sentence and a non-zero exit, no traceback."""

from dataset_assets.cli import main
from dataset_assets.storage.manifest import Manifest


def _manifest(date: str, **extra) -> Manifest:
    return Manifest(table="image", snapshot=date, row_count=0, files=[], schema=[], arrow_schema="", source={},
                    source_snapshot={}, created_at="2026-01-01T00:00:00+00:00", **extra)


def test_a_malformed_feed_entry_is_one_sentence(tmp_path, capsys):
    old = _manifest("2026-01-01")
    new = _manifest("2026-01-02", changes={"base_root_hash": old.root_hash, "files": [{"bogus": 1}]})
    for name, m in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "_manifest.json").write_text(m.to_json())
    rc = main(["apply-changes", "--previous", str(tmp_path / "old"), "--new", str(tmp_path / "new"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc != 0
    assert "malformed change feed file entry" in err and "Traceback" not in err


def test_a_missing_previous_release_is_one_sentence(tmp_path, capsys):
    rc = main(["apply-changes", "--previous", str(tmp_path / "nowhere"), "--new", str(tmp_path), "--out", str(tmp_path / "out")])
    assert rc != 0 and "give the previous release's table folder" in capsys.readouterr().err
