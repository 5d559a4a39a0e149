"""The ``hub_server`` pytest fixture: a local Hub (``hub_server.py``) with both Hub clients pointed at it.

Import it from ``tests/conftest.py`` (``from conftest_hub import hub_server  # noqa: F401``) or from a test
module. ``huggingface_hub.constants`` and ``datasets.config`` read ``HF_ENDPOINT``, the cache folders and
``HF_HUB_DISABLE_XET`` once, at import time, so setting the environment is not enough in a running process:
:func:`point_clients_at` also monkeypatches those module constants (``ENDPOINT``, the ``resolve`` URL
templates, cache paths, ``HF_HUB_DISABLE_XET``, ...), and everything is restored when the test ends.

The clients upload and download through Xet, as in production (huggingface_hub uses Xet whenever ``hf_xet``
imports). To run a test once with Xet and once with the LFS protocol (``HF_HUB_DISABLE_XET=1``, the bridge
the real Hub keeps for clients without Xet), parametrize the fixture indirectly::

    @pytest.mark.parametrize("hub_server", ["xet", "lfs"], indirect=True)
    def test_something(hub_server): ...

``"xet-off-hub"`` runs the clients with Xet against a Hub without Xet (its token routes answer 404).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hub_server import HubServer, start_hub_server

__all__ = ["hub_server", "point_clients_at"]

MODES = ("xet", "lfs", "xet-off-hub")


def point_clients_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, home: Path, *,
                     xet: bool = True) -> None:
    """Make ``huggingface_hub`` and ``datasets`` use ``endpoint`` with ``token``, caching under ``home``;
    ``xet=False`` turns the clients' Xet off (``HF_HUB_DISABLE_XET=1``: the LFS protocol)."""
    # Import first, so that import-time constants come from the real environment and are restored to it.
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    try:
        import datasets.config as dconfig
    except ImportError:  # datasets is a test extra
        dconfig = None

    hf_home = home / "hf-home"
    hub_cache = hf_home / "hub"
    datasets_cache = hf_home / "datasets"
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_XET": "0" if xet else "1",  # also for the CLI's subprocesses
        "HF_TOKEN": token,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_DATASETS_CACHE": str(datasets_cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)

    # huggingface_hub: values computed at import time.
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname},
        "HF_HUB_DISABLE_XET": not xet,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
    }.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})
    huggingface_hub.HfFileSystem.clear_instance_cache()

    # datasets: same story.
    if dconfig is None:
        return
    for name, value in {
        "HF_ENDPOINT": endpoint,
        "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_CACHE_HOME": str(hf_home),
        "HF_DATASETS_CACHE": datasets_cache,
        "HF_MODULES_CACHE": hf_home / "modules",
        "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
        "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_OFFLINE": False,
        "HF_UPDATE_DOWNLOAD_COUNTS": False,
        # The dataset viewer lives at "datasets-server.<host>", which a local Hub cannot serve.
        "USE_PARQUET_EXPORT": False,
    }.items():
        monkeypatch.setattr(dconfig, name, value, raising=False)


@pytest.fixture
def hub_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch):
    """A running local Hub; ``HF_ENDPOINT``/``HF_TOKEN``/caches point at it for the duration of the test.

    The server only accepts ``hub_server.token`` (a fresh random string per test, also in ``HF_TOKEN``).
    ``hub_server.mode`` is the parameter (``"xet"`` unless parametrized, see the module docstring).
    """
    mode = getattr(request, "param", "xet")
    if mode not in MODES:
        raise ValueError(f"hub_server mode must be one of {MODES}, not {mode!r}")
    root = tmp_path_factory.mktemp("hub")
    token = "hf_local_" + secrets.token_hex(16)
    server: HubServer = start_hub_server(root / "storage", token=token, xet=(mode != "xet-off-hub"))
    server.mode = mode
    try:
        point_clients_at(monkeypatch, server.endpoint, token, root, xet=(mode != "lfs"))
        yield server
        if server.crashes:
            pytest.fail("the local test Hub crashed:\n" + "\n".join(server.crashes), pytrace=False)
    finally:
        server.stop()
        _forget_clients()


def _forget_clients() -> None:
    """Drop cached HTTP connections and filesystem instances that point at the stopped server."""
    if "huggingface_hub" in sys.modules:
        import huggingface_hub
        from huggingface_hub.utils import _http

        _http.close_session()
        huggingface_hub.HfFileSystem.clear_instance_cache()
