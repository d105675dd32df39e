"""Benchmark: synthetic generation (rows/s) and DuckDB daily aggregation (events/s).

Usage: python benchmarks/data.py [--users 100000 --days 180] [--also-1m]
Prints one line per stage; the 1M-user run is opt-in because it needs ~10 GB of disk and minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import tempfile
import time
from pathlib import Path

from churn.settings import Settings
from jobs.aggregate import build_features
from jobs.ingest import generate_store


def run(users: int, days: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="churn-bench-data-"))
    try:
        settings = Settings.from_env(env={"CHURN_DATA_DIR": str(root), "CHURN_FRESHNESS_MAX_HOURS": "0"})
        t0 = time.perf_counter()
        res, _ = generate_store(settings, users=users, days=days, seed=1, end_date=dt.date(2026, 11, 1))
        gen_s = time.perf_counter() - t0
        rows = res.users + res.events + res.payments
        t0 = time.perf_counter()
        built = build_features(settings)
        agg_s = time.perf_counter() - t0
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"users={users:,} days={days}: generate+validate {rows:,} rows in {gen_s:.1f}s "
            f"= {rows / gen_s:,.0f} rows/s | aggregate {res.events:,} events -> {built.rows:,} feature rows "
            f"in {agg_s:.1f}s = {res.events / agg_s:,.0f} events/s | peak RSS {peak_gb:.1f} GB"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--also-1m", action="store_true", help="also run 1M users (minutes, ~10 GB disk)")
    a = ap.parse_args()
    run(a.users, a.days)
    if a.also_1m:
        run(1_000_000, a.days)
