"""Which allocator Arrow's buffers come from in a process that runs our code (and how many
threads numpy's OpenBLAS starts: :func:`single_threaded_blas`).

pyarrow allocates from mimalloc by default. An export allocates and frees buffers of many sizes
all the time (decoded batches conformed, read groups gathered per shard, row groups encoded), and
the clustered layout gives free pages back after each row group it writes (``_Buffered``).
With jemalloc instead, measured on this project's 2-core machine (the CLI, whole process, the
same code with each pool, pairs alternating; bench/README.md, "Latest results at 1M rows"):
the chunk layout peaks at 320-330 MiB against 368-384 MiB and is no slower (five pairs: 9.69,
9.09, 9.48, 9.26, 8.63 s against 10.00, 9.21, 9.51, 9.48, 8.85 s); the first export in the
clustered layout spends 0.5-1.1 s less system CPU (the pages it gives back and faults in again)
and about as much more user CPU, so its time does not change (means of five pairs 12.32 against
12.17 s; at 5M rows 50.50 and 43.72 against 53.84 and 46.09 s), its peak 399-443 against
429-443 MiB (5M: 462-490 against 486-503).

Arrow reads its own setting, ``ARROW_DEFAULT_MEMORY_POOL``, once, when pyarrow is first imported,
so importing ``dataset_assets`` sets it to ``jemalloc`` unless it is set already (a user's choice
of ``mimalloc``, ``jemalloc`` or ``system`` is kept) or pyarrow was imported first (then Arrow's
default stays; nothing breaks). Only on Linux, where pyarrow's wheels ship jemalloc; elsewhere
Arrow would warn that the backend is unsupported. The setting is inherited by the processes this
one starts (Dagster's step processes, the CLI's).
"""

from __future__ import annotations

import os
import sys

ENV = "ARROW_DEFAULT_MEMORY_POOL"


def prefer_jemalloc() -> None:
    if sys.platform.startswith("linux") and "pyarrow" not in sys.modules:
        os.environ.setdefault(ENV, "jemalloc")


BLAS_ENV = "OPENBLAS_NUM_THREADS"


def single_threaded_blas() -> None:
    """numpy's OpenBLAS starts a thread per core when numpy is imported, and those threads spin
    for a while waiting for work; nothing of ours calls BLAS (numpy is used for sorting, searching
    and masks). Measured with ``perf record -a`` on this project's 2-core machine: 0.11 CPU-s in
    ``blas_thread_server`` in every CLI run (a refresh, a first export); the chunk layout's full
    export of 1M rows, three pairs alternating: 5.43-5.53 user+sys CPU-s against 5.26-5.32 with
    one thread, the same wall time. Set to 1 unless the user set it or numpy is imported already."""
    if "numpy" not in sys.modules:
        os.environ.setdefault(BLAS_ENV, "1")
