"""Run one command as a whole process: wall time from spawn to exit, peak RSS, CPU.

    python -I -S bench/launch.py SPEC.json

SPEC: ``{"cmd": [...], "env": {...}, "cwd": DIR, "stdout": FILE, "stderr": FILE, "timeout": S}``
(``cmd[0]`` an absolute path). Prints one JSON line: ``seconds`` (``time.perf_counter()`` just
before ``posix_spawn`` to just after ``wait4`` returned), ``maxrss_kib`` (``ru_maxrss`` of that
child from ``wait4``: its own peak RSS, or that of a descendant it waited for if larger),
``utime``/``stime`` (CPU seconds of the child and its waited-for descendants), ``returncode``
(negative: killed by that signal) and ``timed_out``.

Why a launcher between ``bench/run.py`` and the tool: Linux starts a new process's
``ru_maxrss`` at the high-water mark of the address space it was forked from (``exec``
records the old address space's peak). Spawned from ``bench/run.py``, which has imported
pyarrow and ADBC (over 100 MiB), every tool would report at least that. This launcher
imports nothing but a few built-in modules (``-S``: no site-packages), so the floor it
passes on is its own few MiB, below the interpreter start of any tool; and ``wait4`` on the
one child gives that child's numbers, not a maximum over every child reaped so far
(``RUSAGE_CHILDREN``).
"""

import json
import os
import signal
import sys
import time


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    cmd = spec["cmd"]
    os.chdir(spec.get("cwd") or ".")
    wr = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, spec["stdout"], wr, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, spec["stderr"], wr, 0o644),
    ]
    state = {"pid": None, "timed_out": False}

    def on_alarm(signum, frame):
        state["timed_out"] = True
        if state["pid"]:
            os.kill(state["pid"], signal.SIGKILL)

    signal.signal(signal.SIGALRM, on_alarm)
    t0 = time.perf_counter()
    pid = os.posix_spawn(cmd[0], cmd, spec["env"], file_actions=actions)
    state["pid"] = pid
    signal.setitimer(signal.ITIMER_REAL, float(spec.get("timeout") or 3600))
    _, status, ru = os.wait4(pid, 0)  # retried after the alarm's handler (PEP 475)
    seconds = time.perf_counter() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({"seconds": seconds, "maxrss_kib": ru.ru_maxrss, "utime": ru.ru_utime, "stime": ru.ru_stime,
                      "returncode": os.waitstatus_to_exitcode(status), "timed_out": state["timed_out"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
