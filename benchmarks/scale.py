"""Where one machine stops: the daily loop's batch steps at growing user counts, with growth exponents.

For each size in ``--users`` a synthetic site of ``--days`` days is generated (never committed),
its newest day held back as the day's delivery, features built, applied and materialized into a
Redis database and a model trained and promoted (set-up, not timed). Then the incremental daily
steps run as the daily job runs them, each as its own ``churn`` process so that its peak memory is
its own (``os.wait4``): import of the held-back day, incremental aggregation of that day,
incremental materialization into Redis, batch scoring, drift. Per step: seconds, peak RSS, the
data directory's size and Redis's memory after it. Across sizes each step's growth exponent is the
slope of log(seconds) over log(users); the projection to ``--project`` users multiplies the
largest measured size by that growth and says which resource a step would run out of first
(projected peak RSS over the machine's memory; with DuckDB capped, the free disk that the data
directory and the spill share), or whether the loop fits ``--budget-min``. A size
whose untimed set-up fails ends the run there: the sizes before it keep their rows and projection,
and the set-up's error says which resource ran out (disk, memory) or that none did.

    .venv/bin/python benchmarks/scale.py [--users 50000,100000,200000] [--days N] [--project 10000000]
        [--setup-chunk-days 3] [--setup-training-rows 200000]   # for sizes whose set-up would not fit
        [--duckdb-memory-limit 8GB]   # DuckDB spills past it instead of growing with the site
        [--with-results earlier.json]   # sizes an earlier run measured, in the table and the fit
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHURN = [sys.executable, "-m", "cli.main"]
SETUP_KEYS = (
    "CHURN_BUILD_CHUNK_DAYS",
    "CHURN_MAX_TRAINING_ROWS",
    "CHURN_N_CUTOFFS",
    "CHURN_MIN_HISTORY_DAYS",
    "CHURN_DUCKDB_MEMORY_LIMIT",
)
STEPS = ("import", "aggregate", "materialize", "score", "drift")
DUCKDB_STEPS = ("import", "aggregate")
"""Steps whose working set DuckDB holds, so that ``CHURN_DUCKDB_MEMORY_LIMIT`` caps it: the others
hold their rows in Python (pandas, LightGBM, the online writer), which no DuckDB setting bounds."""
END = dt.date.today() - dt.timedelta(days=1)


def _env(data_dir: Path, redis_url: str, memory_limit: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env.update(
        CHURN_DATA_DIR=str(data_dir),
        CHURN_ONLINE_STORE="redis",
        CHURN_REDIS_URL=redis_url,
        CHURN_FRESHNESS_MAX_HOURS="0",
        CHURN_DUCKDB_MEMORY_LIMIT=memory_limit,
    )
    return env


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _redis_memory(redis_url: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).info("memory")["used_memory"])


def _training_days() -> int:
    """Days training's three cutoffs span at the least: a label horizon after each, the first one
    a day after the first event (training.labels.choose_cutoffs)."""
    from churn.settings import Settings

    return 3 * Settings().churn_horizon_days + 2


def history_days() -> int:
    """The least history a site needs here: what a daily build reads in full (its longest window
    plus the scope, and the new day), or what training needs, whichever is longer."""
    from churn.settings import Settings
    from jobs.aggregate import MAX_WINDOW

    return max(MAX_WINDOW + Settings().scope_days + 1, _training_days())


def _setup_env(args: argparse.Namespace, days: int) -> dict[str, str]:
    """Knobs for the untimed set-up only: its first build's spans and its training set.

    With ``--setup-training-rows`` the model is there only to be scored: one small cutoff, and as
    little history before it as the short site leaves (training, validation and test cutoffs each
    need a label horizon after them).
    """
    from churn.settings import Settings

    env = dict(os.environ)
    env["CHURN_DUCKDB_MEMORY_LIMIT"] = args.duckdb_memory_limit
    if args.setup_chunk_days is not None:
        env["CHURN_BUILD_CHUNK_DAYS"] = str(args.setup_chunk_days)
    if args.setup_training_rows:
        history = max(0, min(Settings().min_history_days, days - _training_days()))
        env.update(
            CHURN_MAX_TRAINING_ROWS=str(args.setup_training_rows),
            CHURN_N_CUTOFFS="1",
            CHURN_MIN_HISTORY_DAYS=str(history),
        )
    return env


def prepare(data_dir: Path, users: int, days: int, redis_url: str) -> tuple[dt.date, dict[str, Path]]:
    """The site up to the day before its newest, and the newest day's delivery as Parquet files.

    Set-up keys come from this process's environment (see ``_setup_env``); the timed steps get
    the plain defaults.
    """
    import duckdb
    import redis

    from churn.layout import partition_dates, partition_dir
    from churn.settings import Settings
    from feature_repo import store as cfs
    from jobs.aggregate import build_features
    from jobs.ingest import generate_store
    from jobs.materialize import materialize
    from training.train import run_training

    redis.Redis.from_url(redis_url).flushdb()
    setup_env = {k: v for k, v in os.environ.items() if k in SETUP_KEYS}
    settings = Settings.from_env(env=_env(data_dir, redis_url) | setup_env)
    generate_store(settings, users=users, days=days, seed=3, end_date=END)
    day_date = partition_dates(settings.raw_dir / "events")[-1]
    delivery = data_dir.parent / f"delivery-{users}"
    delivery.mkdir(parents=True, exist_ok=True)
    files = {}
    con = duckdb.connect()
    for table in ("events", "payments"):
        part = partition_dir(settings.raw_dir / table, day_date)
        if part.exists():
            files[table] = delivery / f"{table}.parquet"
            con.execute(f"COPY (SELECT * FROM read_parquet('{part}/*.parquet')) TO '{files[table]}' (FORMAT PARQUET)")
            shutil.rmtree(part)
    con.close()
    build_features(settings)
    cfs.apply(settings)
    materialize(settings, full=True)
    run_training(settings, promote=True, max_rounds=200)
    return day_date, files


class SetupFailed(Exception):
    """A size's untimed set-up did not finish: the sizes before it still stand, and what ran out is
    read off the set-up's own error (the set-up is the first thing a size outgrows)."""

    def __init__(self, users: int, returncode: int, stderr: str) -> None:
        self.users, self.returncode, self.stderr = users, returncode, stderr
        super().__init__(f"set-up of {users:,} users failed: {self.resource}")

    @property
    def resource(self) -> str:
        if "No space left on device" in self.stderr:
            return "disk ran out first (the data directory and DuckDB's spill share it)"
        if "OutOfMemoryException" in self.stderr or "MemoryError" in self.stderr:
            return "memory ran out first"
        if self.returncode == -signal.SIGKILL:
            return "memory ran out first, most likely (killed by SIGKILL, as the kernel's OOM killer does)"
        if self.returncode < 0:
            return f"not a resource: stopped by {signal.Signals(-self.returncode).name}"
        return "not a resource: the error follows"


class SpillWatch(threading.Thread):
    """The largest size DuckDB's spill folders reach while a step runs (DuckDB deletes them after,
    so only sampling sees them): the disk a step needs beyond the data directory."""

    def __init__(self, root: Path, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s, self.peak = root, every_s, 0
        self.done = threading.Event()

    def run(self) -> None:
        from churn.storage import spill_folders

        while not self.done.wait(self.every_s):
            with contextlib.suppress(OSError):  # files come and go while we sum them
                self.peak = max(self.peak, sum(_du(f) for f in spill_folders(self.root)))


def run_step(name: str, args: list[str], env: dict[str, str], spill_root: Path) -> dict[str, Any]:
    watch = SpillWatch(spill_root)
    watch.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(CHURN + args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    watch.done.set()
    watch.join()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):  # drift exits 3 on detected drift
        raise SystemExit(f"step {name} failed ({code}):\n{out[-3000:]}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "spill_mb": watch.peak / 2**20}


def measure(
    users: int, days: int, work: Path, redis_url: str, setup_env: dict[str, str], memory_limit: str
) -> dict[str, Any]:
    import redis

    from churn.layout import DataLayout

    data_dir = work / f"users-{users}" / "data"
    redis.Redis.from_url(redis_url).flushdb()
    redis_base = _redis_memory(redis_url)  # the server's other databases are not this site's
    t0 = time.perf_counter()
    # Set-up in a child too: a child's peak RSS counts the parent's pages at fork, so the parent
    # stays small for every step's figure to be the step's own.
    made = subprocess.run(
        [sys.executable, __file__, "--prepare", str(data_dir), "--users", str(users), "--days", str(days),
         "--redis-url", redis_url],
        cwd=ROOT, capture_output=True, text=True, check=False, env=setup_env,
    )  # fmt: skip
    if made.returncode:
        raise SetupFailed(users, made.returncode, made.stderr)
    spec = json.loads(made.stdout.strip().splitlines()[-1])
    day, files = dt.date.fromisoformat(spec["day"]), {t: Path(f) for t, f in spec["files"].items()}
    setup_s = time.perf_counter() - t0
    print(f"  {users:>10,} set-up       {setup_s:8.1f} s (untimed in the table)", flush=True)
    env = _env(data_dir, redis_url, memory_limit)
    next_day = (day + dt.timedelta(days=1)).isoformat()
    commands = {
        "import": ["data", "import", *(a for t, f in files.items() for a in (f"--{t}", str(f)))],
        "aggregate": ["features", "build", "--end-date", next_day],
        "materialize": ["features", "materialize", "--end-date", next_day],
        "score": ["score", "--date", next_day],
        "drift": ["drift", "--date", next_day, "--exit-zero"],
    }
    steps = {}
    for name in STEPS:
        steps[name] = run_step(name, commands[name], env, DataLayout(data_dir).duckdb_spill_root)
        steps[name].update(data_mb=_du(data_dir) / 2**20, redis_mb=(_redis_memory(redis_url) - redis_base) / 2**20)
        s = steps[name]
        print(f"  {users:>10,} {name:<12} {s['seconds']:8.1f} s {s['peak_rss_mb']:9,.0f} MB "
              f"(spill {s['spill_mb']:,.0f} MB)", flush=True)  # fmt: skip
    return {"users": users, "days": days, "setup_s": setup_s, "duckdb_memory_limit": memory_limit, "steps": steps}


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_mb(text: str) -> float | None:
    """MiB in a size as ``CHURN_DUCKDB_MEMORY_LIMIT`` takes it (DuckDB's units: KB = 1000 bytes,
    KiB = 1024); ``None`` for no limit."""
    if not text.strip():
        return None
    number = text.strip().rstrip("bBiIkKmMgGtT ")
    return float(number) * _UNITS[text.strip()[len(number):].strip().upper()] / 2**20


def project(
    results: list[dict[str, Any]],
    target: int,
    memory_mb: float,
    disk_mb: float,
    budget_min: float,
    duckdb_limit_mb: float | None = None,
) -> list[str]:
    """Each step at ``target`` users from the largest size, and what it runs out of first.

    ``disk_mb`` is the disk free with no site on it: the data directory (linear in users) and the
    spill come out of it. With DuckDB capped (``duckdb_limit_mb``) what a step would need beyond
    the cap spills instead of running out of memory; only in the steps DuckDB holds
    (``DUCKDB_STEPS``).
    """
    sizes = np.array([r["users"] for r in results], dtype=float)
    lines, total = [], 0.0
    for name in STEPS:
        secs = np.array([r["steps"][name]["seconds"] for r in results])
        rss = np.array([r["steps"][name]["peak_rss_mb"] for r in results])
        k = float(np.polyfit(np.log(sizes), np.log(secs), 1)[0]) if len(sizes) > 1 else float("nan")
        k_rss = float(np.polyfit(np.log(sizes), np.log(rss), 1)[0]) if len(sizes) > 1 else float("nan")
        growth = target / sizes[-1]
        # Every step touches every user, so time grows at least linearly: below that, the measured
        # sizes are still dominated by fixed costs (start-up, imports) and would under-project.
        t, m = secs[-1] * growth ** max(k, 1.0), rss[-1] * growth ** max(k_rss, 0.0)
        # What spills is what exceeds a fixed memory limit, so it grows faster than the users:
        # linear growth from the largest size is the least it will need.
        largest = results[-1]["steps"][name]
        spill = largest.get("spill_mb", 0.0) * growth
        cap = duckdb_limit_mb if name in DUCKDB_STEPS else None
        if cap is not None and m > cap:
            spill = max(spill, m - cap)
        disk = largest["data_mb"] * growth + spill
        total += t
        if m > memory_mb and (cap is None or cap > memory_mb):
            limit = "memory runs out first"
        elif disk > disk_mb:
            limit = "disk runs out first (data directory + DuckDB's spill)"
        elif m > memory_mb:
            limit = "fits, spilling past DuckDB's limit"
        else:
            limit = "fits in memory and disk"
        lines.append(
            f"| {name} | {k:.2f} | {k_rss:.2f} | {t:,.0f} s | {m:,.0f} MB | ≥ {spill:,.0f} MB "
            f"| {disk:,.0f} MB | {limit} |"
        )
    verdict = "fits" if total <= budget_min * 60 else "does not fit"
    lines.append(f"| daily loop | | | {total / 60:,.1f} min | | | | {verdict} in {budget_min:g} min |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="50000,100000,200000")
    ap.add_argument(
        "--days",
        type=int,
        default=None,
        help="history per site (default: what a daily build reads, longest window + scope + 1)",
    )
    ap.add_argument(
        "--setup-chunk-days",
        type=int,
        default=None,
        help="CHURN_BUILD_CHUNK_DAYS of the set-up's first build (smaller spans, less memory)",
    )
    ap.add_argument(
        "--setup-training-rows",
        type=int,
        default=0,
        help="train the set-up's model on one cutoff of at most this many rows (0: the defaults)",
    )
    ap.add_argument(
        "--duckdb-memory-limit",
        default="",
        help="CHURN_DUCKDB_MEMORY_LIMIT of set-up and steps (DuckDB spills past it; empty: DuckDB's default)",
    )
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    ap.add_argument("--project", type=int, default=10_000_000, help="users to project the measured growth to")
    ap.add_argument("--budget-min", type=float, default=15.0)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "scale.json")
    ap.add_argument(
        "--with-results",
        type=Path,
        action="append",
        default=[],
        help="also tabulate and fit the sizes of an earlier run's --json (same machine and code: the set-up of "
        "a large size can take longer than one sitting)",
    )
    ap.add_argument("--prepare", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    days = args.days or history_days()
    if args.prepare is not None:  # the set-up child (see measure)
        day, files = prepare(args.prepare, int(args.users), days, args.redis_url)
        print(json.dumps({"day": day.isoformat(), "files": {t: str(f) for t, f in files.items()}}))
        return
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    work = Path(tempfile.mkdtemp(prefix="churn-bench-scale-"))
    results, stopped = [], None
    try:
        for n in (int(u) for u in args.users.split(",")):
            try:
                results.append(
                    measure(n, days, work, args.redis_url, _setup_env(args, days), args.duckdb_memory_limit)
                )
            except SetupFailed as failed:
                stopped = failed
                print(f"  {n:>10,} set-up stopped: {failed.resource}\n{failed.stderr[-3000:]}", flush=True)
                break
            finally:
                shutil.rmtree(work / f"users-{n}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    measured = {r["users"] for r in results}
    for earlier in args.with_results:
        results += [r for r in json.loads(earlier.read_text()) if r["users"] not in measured]
    results.sort(key=lambda r: r["users"])  # the projection starts from the largest size
    print("\n| users | step | seconds | peak RSS MB | peak DuckDB spill MB | data dir MB | Redis MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for name, s in r["steps"].items():
            print(f"| {r['users']:,} | {name} | {s['seconds']:.1f} | {s['peak_rss_mb']:,.0f} | {s['spill_mb']:,.0f} | "
                  f"{s['data_mb']:,.0f} | {s['redis_mb']:,.0f} |")  # fmt: skip
    if len(results) < 2:
        print("\nno projection: growth exponents need two sizes or more")
    else:
        disk_mb = shutil.disk_usage(work.parent).free / 2**20
        print(
            f"\nprojected to {args.project:,} users ({memory_mb / 1024:.0f} GB memory, "
            f"{disk_mb / 1024:.0f} GB free disk here), from the largest size:"
        )
        print(
            "| step | time exponent | RSS exponent | time (exponent ≥ 1) | peak RSS (uncapped) | spill "
            "| disk (data dir + spill) | |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        limit_mb = size_mb(args.duckdb_memory_limit)
        print("\n".join(project(results, args.project, memory_mb, disk_mb, args.budget_min, limit_mb)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))  # earlier runs' sizes included
    if stopped is not None:
        raise SystemExit(f"\nstopped at {stopped.users:,} users: {stopped.resource}")


if __name__ == "__main__":
    main()
