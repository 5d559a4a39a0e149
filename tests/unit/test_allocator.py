"""Importing dataset_assets makes jemalloc Arrow's pool unless the user chose one
(dataset_assets/allocator.py). Each case is a process of its own: Arrow reads the setting once."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = "import dataset_assets, pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def pool(env_pool: str | None, code: str = CODE) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env_pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = env_pool
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_package_first_gives_jemalloc():
    assert pool(None) == "jemalloc"


def test_a_pool_the_user_chose_is_kept():
    assert pool("system") == "system"
    assert pool("mimalloc") == "mimalloc"


def test_pyarrow_imported_first_keeps_its_default():
    assert pool(None, "import pyarrow as pa, dataset_assets; print(pa.default_memory_pool().backend_name)") == "mimalloc"


BLAS = "import dataset_assets, os, numpy; print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))"


def blas(env_threads: str | None, code: str = BLAS) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = env_threads
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()


def test_numpys_openblas_starts_no_thread_of_its_own_unless_the_user_asks():
    assert blas(None) == ["1", "1"], "one thread: the interpreter's (OpenBLAS's pool spins ~0.1 CPU-s per process)"
    env, threads = blas("2")
    assert env == "2" and int(threads) <= 2, "the user's setting is kept (OpenBLAS caps it at the cores)"
