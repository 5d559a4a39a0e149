"""dataset_assets.startup: hiding a module is narrow (one thread, one block) and says why."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from dataset_assets.startup import hidden, refuse


def test_hidden_only_in_the_block_and_only_for_this_thread():
    name = "json.tool"  # a stdlib submodule nobody imported yet in most runs; forget it if one did
    sys.modules.pop(name, None)
    seen = {}
    with hidden(name, "because the test says so"):
        with pytest.raises(ModuleNotFoundError, match="because the test says so"):
            __import__(name)
        t = threading.Thread(target=lambda: seen.setdefault("other", __import__(name)))
        t.start()
        t.join()
    assert "other" in seen  # another thread imported it during the block
    sys.modules.pop(name, None)
    __import__(name)  # and after the block, this thread can too


def test_hidden_leaves_an_imported_module_alone():
    import json

    with hidden("json", "no effect"):
        import json as again
    assert again is json


def test_refuse_is_for_the_whole_process_and_reads_as_not_installed():
    code = ("from dataset_assets.startup import refuse\n"
            "assert refuse('xml.dom', 'kept out by the test')\n"
            "import importlib.util\n"
            "try:\n    import xml.dom.minidom\nexcept ModuleNotFoundError as e:\n    print('REFUSED', e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "REFUSED" in p.stdout and "kept out by the test" in p.stdout, p.stdout + p.stderr


def test_refuse_does_nothing_once_imported():
    import json  # noqa: F401

    assert refuse("json", "too late") is False
    import json as again  # still importable

    assert again is sys.modules["json"]
