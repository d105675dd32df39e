"""Benchmark: synthetic generation (rows/s), import of a site's log (events/s) and DuckDB daily
aggregation (events/s).

Import is measured as a new site meets it: the generated store exported as one Parquet file per
table (the site's whole history: ``--days`` of events in one batch), imported into an empty store
with every gate on, with and without ``--quarantine``; then one day's events (the daily case) into
a store that already holds the days before it.

Usage: python benchmarks/data.py [--users 100000 --days 180] [--also-1m] [--skip-aggregate] [--chunk-days 0,31]
       [--engines duckdb,spark,spark-aqe]
Prints one line per stage; the 1M-user run is opt-in because it needs ~10 GB of disk and minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from churn.layout import partition_dates, partition_dir
from churn.settings import Settings
from jobs.ingest import generate_store, import_batch

END = dt.date(2026, 11, 1)
ROOT = Path(__file__).resolve().parents[1]


def _settings(root: Path) -> Settings:
    return Settings.from_env(env={"CHURN_DATA_DIR": str(root), "CHURN_FRESHNESS_MAX_HOURS": "0"})


def _export(settings: Settings, out: Path, last_day_only: bool) -> dict[str, Path]:
    """The store's tables as one file each (a site's export); optionally only the newest day."""
    import duckdb

    newest = partition_dates(settings.raw_dir / "events")[-1]
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = {}
    for table, ts in (("events", "event_ts"), ("payments", "payment_ts")):
        where = f"WHERE CAST({ts} AS DATE) = DATE '{newest}'" if last_day_only else ""
        files[table] = out / f"{table}.parquet"
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{settings.raw_dir / table}/date=*/*.parquet') {where})"
            f" TO '{files[table]}' (FORMAT PARQUET)"
        )
    files["users"] = settings.layout.users_file
    con.close()
    return files


def _import(root: Path, files: dict[str, Path], quarantine: bool) -> tuple[float, int]:
    as_of = dt.datetime.combine(END + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    t0 = time.perf_counter()
    res = import_batch(_settings(root), quarantine=quarantine, as_of=as_of, **files)
    return time.perf_counter() - t0, res.accepted["events"]


def run_import(settings: Settings, root: Path, days: int) -> None:
    history = _export(settings, root / "export-history", last_day_only=False)
    for quarantine in (False, True):
        target = root / f"import-{quarantine}"
        secs, n = _import(target, history, quarantine)
        shutil.rmtree(target, ignore_errors=True)
        flag = " --quarantine" if quarantine else ""
        print(f"import{flag}: {n:,} events spanning {days} days in {secs:.1f}s = {n / secs:,.0f} events/s")
    # the daily case: yesterday's delivery into a store holding every day before it
    daily = root / "import-daily"
    shutil.copytree(settings.raw_dir, daily / "raw")
    for table in ("events", "payments"):
        shutil.rmtree(partition_dir(daily / "raw" / table, partition_dates(settings.raw_dir / "events")[-1]), True)
    secs, n = _import(daily, _export(settings, root / "export-day", last_day_only=True), False)
    print(f"import, one day into a {days - 1}-day store: {n:,} events in {secs:.2f}s = {n / secs:,.0f} events/s")


def run(
    users: int, days: int, aggregate: bool = True, chunk_days: tuple[int, ...] = (31,), engines: tuple[str, ...] = ()
) -> None:
    root = Path(tempfile.mkdtemp(prefix="churn-bench-data-"))
    try:
        settings = _settings(root / "store")
        t0 = time.perf_counter()
        res, _ = generate_store(settings, users=users, days=days, seed=1, end_date=END)
        gen_s = time.perf_counter() - t0
        rows = res.users + res.events + res.payments
        print(f"users={users:,} days={days}: generate+validate {rows:,} rows in {gen_s:.1f}s", end=" ")
        print(f"= {rows / gen_s:,.0f} rows/s")
        run_import(settings, root, days)
        if not aggregate:
            return
        for chunk in chunk_days:
            agg_s, peak_gb = build_in_child(settings, root / f"build-{chunk}", chunk)
            how = "one pass" if chunk <= 0 else f"spans of {chunk} days"
            print(
                f"aggregate, full build ({how}): {res.events:,} events in {agg_s:.1f}s "
                f"= {res.events / agg_s:,.0f} events/s | peak RSS {peak_gb:.1f} GB"
            )
        if engines:
            run_daily_engines(settings, root, engines)
    finally:
        shutil.rmtree(root, ignore_errors=True)


CHILD_BUILD = """
import time
from churn.settings import get_settings
from jobs.aggregate import build_features
t0 = time.perf_counter()
build_features(get_settings())
print(time.perf_counter() - t0)
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
"""


class BuildFailed(SystemExit):
    """A child build exited non-zero (its error output attached)."""


ENGINES = {
    "duckdb": {},
    "spark": {"CHURN_ENGINE": "spark"},
    "spark-6g": {"CHURN_ENGINE": "spark", "CHURN_SPARK_CONF": "spark.driver.memory=6g"},
    "spark-aqe": {"CHURN_ENGINE": "spark", "CHURN_SPARK_CONF": "spark.sql.adaptive.enabled=true"},
    "spark-aqe-6g": {
        "CHURN_ENGINE": "spark",
        "CHURN_SPARK_CONF": "spark.sql.adaptive.enabled=true,spark.driver.memory=6g",
    },
}
"""The daily build's engines to compare (``--engines``): Spark as configured by default (local mode
gives its driver 1 GB), with a 6 GB driver, and with adaptive execution kept on."""


def build_in_child(
    settings: Settings, work: Path, chunk_days: int, env_extra: dict[str, str] | None = None, keep: bool = False
) -> tuple[float, float]:
    """A feature build (on the raw data of ``settings``, into ``work``) in a process of its own, which
    reports its own peak RSS (``VmHWM``: a fresh address space since exec; ``wait4``'s figure would
    also count this process's pages at the fork, and Spark's JVM is another process); (seconds of the
    build itself, without interpreter start-up, peak GB)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "raw").symlink_to(settings.raw_dir, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env.update(CHURN_DATA_DIR=str(work), CHURN_FRESHNESS_MAX_HOURS="0", CHURN_BUILD_CHUNK_DAYS=str(chunk_days))
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", CHILD_BUILD], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildFailed(f"features build (chunk {chunk_days}, {env_extra}) failed:\n{done.stderr[-3000:]}")
    seconds, peak_kb = done.stdout.strip().splitlines()[-2:]
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return float(seconds), int(peak_kb) / 1e6


def run_daily_engines(settings: Settings, root: Path, engines: tuple[str, ...]) -> None:
    """The daily case on each engine: the store's newest date built from the totals stored before it.

    The store is built once (DuckDB); each engine gets a copy without the newest date and builds it;
    its rows must equal the reference's (``created`` aside).
    """
    import pandas as pd

    from churn.schema import FEATURE_VIEWS

    base = root / "daily-base"
    build_in_child(settings, base, 31, keep=True)
    newest = partition_dates(base / "features" / "engagement")[-1]

    def rows(features: Path) -> dict[str, pd.DataFrame]:
        out = {}
        for view in FEATURE_VIEWS:
            frame = pd.read_parquet(partition_dir(features / view, newest)).drop(columns=["created"])
            out[view] = frame.sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
        return out

    want = rows(base / "features")
    for engine in engines:
        work = root / f"daily-{engine}"
        shutil.copytree(base / "features", work / "features")
        for view in FEATURE_VIEWS:
            shutil.rmtree(partition_dir(work / "features" / view, newest))
        try:
            seconds, peak_gb = build_in_child(settings, work, 31, ENGINES[engine], keep=True)
        except BuildFailed as e:  # e.g. the JVM out of heap: a result, and the next engine still runs
            cause = [line for line in str(e).splitlines() if "Error" in line or "error" in line][-1:]
            print(f"aggregate, one day ({newest}) from stored totals, {engine}: FAILED {cause}")
            shutil.rmtree(work, ignore_errors=True)
            continue
        got = rows(work / "features")
        same = all(got[v].equals(want[v]) for v in FEATURE_VIEWS)
        print(
            f"aggregate, one day ({newest}) from stored totals, {engine}: {seconds:.1f}s | "
            f"{len(want['engagement']):,} rows | equal to the reference: {same} | python peak RSS {peak_gb:.1f} GB"
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--also-1m", action="store_true", help="also run 1M users (minutes, ~10 GB disk)")
    ap.add_argument("--skip-aggregate", action="store_true", help="generation and import only")
    ap.add_argument(
        "--chunk-days", default="31", help="full builds to time, by CHURN_BUILD_CHUNK_DAYS (0 = one pass), e.g. 0,31"
    )
    ap.add_argument(
        "--engines", default="", help=f"daily build to time per engine, of {','.join(ENGINES)} (e.g. duckdb,spark)"
    )
    a = ap.parse_args()
    chunks = tuple(int(c) for c in a.chunk_days.split(",") if c.strip())
    engines = tuple(e for e in a.engines.split(",") if e.strip())
    if unknown := set(engines) - set(ENGINES):
        ap.error(f"unknown engines {sorted(unknown)}: choose from {sorted(ENGINES)}")
    run(a.users, a.days, not a.skip_aggregate, chunks, engines)
    if a.also_1m:
        run(1_000_000, a.days, not a.skip_aggregate, chunks, engines)
