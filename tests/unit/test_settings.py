"""settings: the mode, and production never falling back to the local demo's defaults."""

from __future__ import annotations

import pytest

from dataset_assets import cli, settings
from dataset_assets.errors import UserError
from dataset_assets.storage.stores import open_store


def test_production_mode_refuses_a_missing_store(monkeypatch):
    monkeypatch.setenv(settings.ENV_MODE, "production")
    with pytest.raises(UserError, match=f"{settings.ENV_STORE} is not set and {settings.ENV_MODE}=production"):
        open_store(None)


def test_production_mode_refuses_a_missing_source_in_the_cli(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(settings.ENV_MODE, "production")
    monkeypatch.delenv(settings.ENV_SOURCE, raising=False)
    code = cli.main(["export", "--table", "image", "--snapshot", "2026-11-21", "--store", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{settings.ENV_SOURCE} is not set and {settings.ENV_MODE}=production" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_local_mode_falls_back_to_the_local_store(monkeypatch, tmp_path):
    monkeypatch.delenv(settings.ENV_MODE, raising=False)
    monkeypatch.setenv(settings.ENV_HOME, str(tmp_path))
    assert open_store(None).url == (tmp_path / "store").as_uri()


def test_an_unknown_mode_is_one_sentence(monkeypatch):
    monkeypatch.setenv(settings.ENV_MODE, "staging")
    with pytest.raises(UserError, match="is not a mode; set it to local or production"):
        settings.mode()
