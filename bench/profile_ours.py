"""Where does the time of our export go? Runs ``ours`` once and breaks its time down.

    python bench/profile_ours.py [--rows N] [--workers N] [--source URI]
    python bench/run.py --profile [--rows N] ...      (the same)

(Not named profile.py: that would shadow the standard library's ``profile``
module, which cProfile imports, because bench/ is first on sys.path.)

Uses the same cached ``image`` table as ``bench/run.py`` (same --rows / --source
rules). If ``py-spy`` is on PATH the run happens under ``py-spy record`` and a
flame graph is written next to the report; otherwise the run is profiled with
cProfile, one profiler per thread, merged. Either way it prints:

* client threads by role (reader = ADBC binary COPY decode + conform, writer =
  parquet encode + hashing, count check, main), with wall and CPU seconds per
  role, measured exactly per thread (``time.thread_time``);
* key functions summed over threads (wall seconds, from cProfile): batch decode
  in the driver including waiting for the server, conform, the writer's waiting
  for batches, the reader's waiting for the writer, parquet encode, sha256;
* server side: CPU seconds of each Postgres backend of the export (from
  ``/proc/<pid>/stat``, found through ``pg_stat_activity``) and what the COPY
  backends were doing when sampled (running vs ``ClientWrite`` = waiting for the
  client to read: then the client, not the server, is the bottleneck).

Output goes to ``bench/results/profile-<timestamp>/`` (report.txt, ours.pstats
or flame.svg, profile.json).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: seeding, warm-up, shared helpers)

CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --------------------------------------------------------------------------- client threads

class ThreadAccounting:
    """Wraps threading.Thread.run: exact CPU and wall per thread, and a cProfile per thread."""

    def __init__(self, profile: bool):
        self.profile = profile
        self.lock = threading.Lock()
        self.threads: list[dict] = []
        self.profilers: list[cProfile.Profile] = []
        self._orig = threading.Thread.run

    def __enter__(self):
        acct = self
        orig = self._orig

        def run(thread_self):
            prof = cProfile.Profile() if acct.profile else None
            w0, c0 = time.perf_counter(), time.thread_time()
            if prof:
                prof.enable()
            try:
                orig(thread_self)
            finally:
                if prof:
                    prof.disable()
                rec = {"name": thread_self.name, "wall": time.perf_counter() - w0, "cpu": time.thread_time() - c0}
                with acct.lock:
                    acct.threads.append(rec)
                    if prof:
                        acct.profilers.append(prof)

        threading.Thread.run = run
        return self

    def __exit__(self, *exc):
        threading.Thread.run = self._orig


def role(thread_name: str) -> str:
    if thread_name.startswith("export-"):
        return "writer (worker: parquet encode, hashing, waits for batches)"
    if "(read)" in thread_name:
        return "reader (ADBC COPY decode + conform)"
    if "_count_rows" in thread_name:
        return "count check (count(*) in the snapshot)"
    return "other"


# --------------------------------------------------------------------------- server backends

class BackendSampler(threading.Thread):
    """Samples the export's Postgres backends: CPU from /proc, state from pg_stat_activity."""

    def __init__(self, uri: str, interval: float = 0.05):
        super().__init__(name="backend-sampler", daemon=True)
        self.uri = uri
        self.interval = interval
        self.stop_event = threading.Event()
        self.cpu: dict[int, float] = {}           # pid -> last seen CPU seconds
        self.kind: dict[int, str] = {}            # pid -> what it was used for
        self.states: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.error: str | None = None
        self.server_total: float | None = None
        self.ready = threading.Event()

    @staticmethod
    def _classify(query: str) -> str | None:
        q = (query or "").lower()
        if "ctid" in q and "copy" in q:
            return "COPY range (worker)"
        if "count(" in q:
            return "count check"
        if "pg_export_snapshot" in q or "set transaction snapshot" in q:
            return None  # keep a better label if one comes
        return None

    def _proc_cpu(self, pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
        except (OSError, IndexError, ValueError):
            return None

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None

    def _tree_cpu(self, postmaster: int) -> float | None:
        """CPU of the whole server: postmaster, live children and reaped children (exact, not sampled)."""
        st = self._stat(postmaster)
        if st is None:
            return None
        total = sum(int(x) for x in st[11:15])  # utime stime cutime cstime
        for d in os.listdir("/proc"):
            if d.isdigit():
                c = self._stat(int(d))
                if c is not None and c[1] == str(postmaster):
                    total += sum(int(x) for x in c[11:15])
        return total / CLK

    def run(self) -> None:
        import psycopg

        try:
            conn = psycopg.connect(self.uri, autocommit=True)
            own = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        except Exception as exc:  # noqa: BLE001
            self.error = f"cannot connect for sampling: {exc}"
            self.ready.set()
            return
        own_stat = self._stat(own)
        postmaster = int(own_stat[1]) if own_stat else None
        tree0 = self._tree_cpu(postmaster) if postmaster else None
        own0 = self._proc_cpu(own)
        self.ready.set()
        sql = ("SELECT pid, state, wait_event_type, wait_event, query FROM pg_stat_activity "
               "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        try:
            while not self.stop_event.is_set():
                for pid, state, wtype, wevent, query in conn.execute(sql).fetchall():
                    k = self._classify(query)
                    if k:
                        self.kind[pid] = k
                    else:
                        self.kind.setdefault(pid, "coordinator / other")
                    cpu = self._proc_cpu(pid)
                    if cpu is not None:
                        self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))
                    if k == "COPY range (worker)" and state == "active":
                        self.states[k]["running (on CPU or runnable)" if wevent is None else f"{wtype}:{wevent}"] += 1
                self.stop_event.wait(self.interval)
        except Exception as exc:  # noqa: BLE001
            self.error = str(exc).splitlines()[0]
        finally:
            tree1 = self._tree_cpu(postmaster) if postmaster else None
            own1 = self._proc_cpu(own)
            if tree0 is not None and tree1 is not None:  # minus the sampler's own backend
                self.server_total = (tree1 - tree0) - ((own1 or 0) - (own0 or 0))
            conn.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)

    def summary(self) -> dict:
        by_kind: dict[str, dict] = defaultdict(lambda: {"backends": 0, "cpu_seconds": 0.0})
        for pid, cpu in self.cpu.items():
            k = self.kind.get(pid, "coordinator / other")
            by_kind[k]["backends"] += 1
            by_kind[k]["cpu_seconds"] += cpu
        return {"total_cpu_seconds": self.server_total, "by_kind": dict(by_kind),
                "copy_backend_states": {k: dict(v) for k, v in self.states.items()}, "error": self.error}


# --------------------------------------------------------------------------- cProfile digest

# (label, predicate on (file, line, funcname)) -> wall seconds summed over threads (cumulative time)
KEY_FUNCS = [
    ("reader: driver batch decode incl. waiting for the server (self time of export.read)",
     lambda f, fn: fn == "read" and f.endswith("engine/export.py"), "tottime"),
    ("reader: conform to the table schema", lambda f, fn: fn == "conform" and f.endswith("engine/schema.py"), "cumtime"),
    ("reader: blocked on a full queue (writer behind)", lambda f, fn: fn == "put" and f.endswith("queue.py"), "cumtime"),
    ("writer: waiting for batches (reader behind)", lambda f, fn: fn == "get" and f.endswith("queue.py"), "cumtime"),
    ("writer: Table.from_batches", lambda f, fn: "from_batches" in fn, "cumtime"),
    ("writer: parquet encode + compress + write (ParquetWriter.write_table)",
     lambda f, fn: fn == "write_table" and "parquet" in f, "cumtime"),
    ("writer: open a shard (ParquetWriter.__init__)", lambda f, fn: fn == "_open" and f.endswith("engine/writer.py"), "cumtime"),
    ("writer: close a shard (footer)", lambda f, fn: fn == "close" and "parquet" in f and "core" in f, "cumtime"),
    ("hashing: sha256 of shards", lambda f, fn: fn == "sha256_file", "cumtime"),
    ("checks: parquet footers re-read", lambda f, fn: fn == "read_metadata", "cumtime"),
    ("planning (catalog, ranges)", lambda f, fn: fn == "plan_table", "cumtime"),
    ("publish (manifest, move into the store)", lambda f, fn: fn == "commit_dir", "cumtime"),
    ("connect + join the shared snapshot", lambda f, fn: fn == "join" and f.endswith("pgsnapshot.py"), "cumtime"),
]


def digest(stats: pstats.Stats) -> list[tuple[str, float]]:
    out = []
    for label, pred, field in KEY_FUNCS:
        total = 0.0
        for (f, _line, fn), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
            if pred(f, fn):
                total += tt if field == "tottime" else ct
        out.append((label, total))
    return out


# --------------------------------------------------------------------------- main

def run_profile(args, outdir: Path) -> dict:
    uri, owned = bench.resolve_source(args.source, "bench")
    bench.ensure_seeded(uri, args.rows, args.reseed, owned)
    bench.warm_up(uri)
    bench.WORK_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-ours-", dir=bench.WORK_DIR))
    tables_file = bench.ours_tables_file(work, bench.TABLE, args.ours_filters)
    if tables_file is not None:
        os.environ["DATASET_ASSETS_TABLES"] = str(tables_file)
    from dataset_assets.export.run import export_snapshot
    from dataset_assets.storage.stores.local import LocalStore

    store = LocalStore(work / "store")
    sampler = BackendSampler(uri)
    main_prof = cProfile.Profile() if not args.no_cprofile else None
    try:
        with ThreadAccounting(profile=not args.no_cprofile) as acct:
            sampler.start()
            sampler.ready.wait(10)
            w0, c0, p0 = time.perf_counter(), time.thread_time(), os.times()
            if main_prof:
                main_prof.enable()
            (res,) = export_snapshot(uri, [bench.TABLE], dt.date.today().isoformat(), store,
                                     bench_options(args))
            if main_prof:
                main_prof.disable()
            wall = time.perf_counter() - w0
            main_cpu = time.thread_time() - c0
            p1 = os.times()
            time.sleep(0.1)
            sampler.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    threads = [t for t in acct.threads if t["name"] != "backend-sampler"]
    roles: dict[str, dict] = defaultdict(lambda: {"threads": 0, "wall": 0.0, "cpu": 0.0})
    for t in threads:
        r = roles[role(t["name"])]
        r["threads"] += 1
        r["wall"] += t["wall"]
        r["cpu"] += t["cpu"]
    roles["main (plan, checks, manifest, publish)"] = {"threads": 1, "wall": wall, "cpu": main_cpu}
    process_cpu = (p1.user - p0.user) + (p1.system - p0.system)
    sampler_cpu = sum(t["cpu"] for t in acct.threads if t["name"] == "backend-sampler")
    process_cpu = max(0.0, process_cpu - sampler_cpu)  # the sampler is not part of the export
    known = sum(r["cpu"] for r in roles.values())
    roles["native pools / unaccounted (arrow, libpq)"] = {"threads": None, "wall": None, "cpu": max(0.0, process_cpu - known)}

    key = []
    top = ""
    if main_prof:
        stats = pstats.Stats(main_prof)
        for p in acct.profilers:
            stats.add(p)
        stats.dump_stats(str(outdir / "ours.pstats"))
        key = digest(stats)
        buf = io.StringIO()
        pstats.Stats(str(outdir / "ours.pstats"), stream=buf).sort_stats("tottime").print_stats(25)
        top = buf.getvalue()

    server = sampler.summary()
    return {"rows": res.rows, "wall": wall, "process_cpu": process_cpu, "workers": args.workers,
            "ranges": res.manifest.timings.get("ranges"), "engine_timings": res.manifest.timings,
            "roles": dict(roles), "key_functions": key, "server": server, "top_tottime": top, "uri": bench.redact(uri)}


def bench_options(args):
    from dataset_assets.export.run import ExportOptions

    return ExportOptions(workers=args.workers, force=True, incremental=False)


def report(p: dict) -> str:
    L = []
    L.append(f"ours: {p['rows']:,} rows in {p['wall']:.2f}s ({p['rows'] / p['wall']:,.0f} rows/s), "
             f"{p['workers']} workers, {p['ranges']} ranges; client process CPU {p['process_cpu']:.2f}s "
             f"({p['process_cpu'] / p['wall']:.2f} cores)")
    L.append("")
    L.append("client threads by role            threads    wall s (sum)    CPU s (sum)")
    for name, r in p["roles"].items():
        th = "" if r["threads"] is None else str(r["threads"])
        wall = "" if r["wall"] is None else f"{r['wall']:.2f}"
        L.append(f"  {name[:60]:<60} {th:>4} {wall:>10} {r['cpu']:>10.2f}")
    if p["key_functions"]:
        L.append("")
        L.append("key functions, wall seconds summed over threads (cProfile; waits included):")
        for label, sec in p["key_functions"]:
            L.append(f"  {sec:8.2f}  {label}")
    s = p["server"]
    L.append("")
    if s.get("total_cpu_seconds") is not None:
        t = s["total_cpu_seconds"]
        L.append(f"server CPU, whole Postgres process tree during the export (exact): {t:.2f}s ({t / p['wall']:.2f} cores); "
                 f"client + server {t + p['process_cpu']:.2f}s of {p['wall'] * (os.cpu_count() or 1):.2f} core-seconds available")
    if s["by_kind"]:
        total = sum(v["cpu_seconds"] for v in s["by_kind"].values())
        L.append(f"by backend (sampled every 50 ms; the last <50 ms of each backend is missed): {total:.2f}s")
        for k, v in s["by_kind"].items():
            L.append(f"  {v['cpu_seconds']:8.2f}s  {k} ({v['backends']} backend{'s' if v['backends'] != 1 else ''})")
    else:
        L.append("server backends: no CPU figures (the sampler could not read /proc/<pid>/stat of the backends"
                 + (f": {s['error']}" if s.get("error") else "; is Postgres on another machine?") + ")")
    for k, states in s["copy_backend_states"].items():
        n = sum(states.values())
        parts = ", ".join(f"{name} {100 * c / n:.0f}%" for name, c in sorted(states.items(), key=lambda x: -x[1]))
        L.append(f"  {k} when sampled ({n} samples): {parts}")
    L.append("  (ClientWrite = the backend waits for the client to read: the client is the bottleneck)")
    if p["top_tottime"]:
        L.append("")
        L.append("top functions by self time (all threads):")
        L.append(p["top_tottime"])
    return "\n".join(L)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Profile one run of our export (see the module docstring).")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--source")
    ap.add_argument("--reseed", action="store_true")
    ap.add_argument("--ours-filters", action="store_true")
    ap.add_argument("--out", help="output folder (default bench/results/profile-<timestamp>)")
    ap.add_argument("--no-py-spy", action="store_true", help="use cProfile even if py-spy is installed")
    ap.add_argument("--no-cprofile", action="store_true", help=argparse.SUPPRESS)  # set when running under py-spy
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    outdir = Path(args.out) if args.out else bench.HERE / "results" / f"profile-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    outdir.mkdir(parents=True, exist_ok=True)
    pyspy = shutil.which("py-spy")
    if pyspy and not args.no_py_spy and not args.no_cprofile:
        cmd = [pyspy, "record", "--threads", "--rate", "100", "-o", str(outdir / "flame.svg"), "--",
               sys.executable, str(Path(__file__).resolve()), "--no-cprofile", "--out", str(outdir),
               "--rows", str(args.rows), "--workers", str(args.workers)]
        if args.source:
            cmd += ["--source", args.source]
        if args.reseed:
            cmd.append("--reseed")
        if args.ours_filters:
            cmd.append("--ours-filters")
        bench.log(f"running under py-spy: flame graph -> {outdir / 'flame.svg'}")
        if subprocess.run(cmd).returncode == 0:
            return 0
        bench.log("py-spy failed (it may need ptrace permission); profiling with cProfile instead")
    p = run_profile(args, outdir)
    text = report(p)
    print(text)
    (outdir / "report.txt").write_text(text + "\n")
    (outdir / "profile.json").write_text(json.dumps({k: v for k, v in p.items() if k != "top_tottime"}, indent=2, default=str) + "\n")
    print(f"\nsaved {outdir}/report.txt" + (f", {outdir}/ours.pstats" if not args.no_cprofile else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
