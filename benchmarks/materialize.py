"""Materialization throughput: churn's fast path vs Feast's own ``store.materialize``.

Generates one day of synthetic feature rows for N users (every view of the feature service,
the real column contracts), then materializes them into SQLite and Redis, each run in its own
subprocess so peak RSS (``ru_maxrss``) is that run's alone. Feast's path is slow and memory
hungry, so by default it runs on a subset (``--feast-users``) and its time is extrapolated
linearly to N (said so in the output).

    .venv/bin/python benchmarks/materialize.py --users 1000000 --feast-users 100000 [--feast-spark]

rows/s counts feature-view rows (one user in one view = one row, as Feast reports them);
"users/s" counts users with the whole feature service written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from churn.schema import FEATURE_VIEWS

ROOT = Path(__file__).resolve().parents[1]

END = dt.date(2024, 6, 1)


def write_tables(features_dir: Path, users: int, day: dt.date = END, seed: int = 7) -> None:
    """One partition per view with ``users`` rows of plausible synthetic values."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn.schema import CREATED_FIELD, ENTITY_KEY, TIMESTAMP_FIELD, feature_table_schema

    rng = np.random.default_rng(seed)
    ids = pa.array(np.char.add("u", np.char.zfill(np.arange(users).astype(str), 7)), pa.string())
    ts = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    cats = {
        "plan": ["free", "basic", "premium"],
        "country": ["IN", "US", "GB", "DE", "BR"],
        "acquisition_channel": ["organic", "paid_ads", "referral"],
        "device": ["desktop", "mobile"],
    }
    for view, cols in FEATURE_VIEWS.items():
        data = {
            ENTITY_KEY: ids,
            TIMESTAMP_FIELD: pa.array(np.full(users, ts), pa.timestamp("us", tz="UTC")),
            CREATED_FIELD: pa.array(np.full(users, ts + dt.timedelta(hours=2)), pa.timestamp("us", tz="UTC")),
        }
        for c, t in cols.items():
            if t == pa.string():
                choices = np.array(cats.get(c, ["a", "b"]))
                data[c] = pa.array(choices[rng.integers(0, len(choices), users)], pa.string())
            elif t == pa.int64():
                data[c] = pa.array(rng.poisson(5, users).astype("int64"))
            else:
                v = rng.gamma(2.0, 30.0, users)
                data[c] = pa.array(v, mask=rng.random(users) < 0.05)  # some nulls
        table = pa.table(data, schema=feature_table_schema(view))
        out = features_dir / view / f"date={day.isoformat()}"
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out / "part-0.parquet", row_group_size=128 * 1024)


def _settings(data_dir: Path, store: str, redis_url: str, engine: str = "duckdb"):
    from churn.settings import Settings

    return Settings.from_env(env={}, data_dir=data_dir, online_store=store, redis_url=redis_url, engine=engine)


def run_one(args: argparse.Namespace) -> dict:
    """Child process: apply, then materialize with one path; report time and peak RSS."""
    from feature_repo import store as cfs

    # feast-spark: Feast's own materialize on its Spark compute engine (CHURN_ENGINE=spark)
    s = _settings(Path(args.data_dir), args.store, args.redis_url, "spark" if args.path == "feast-spark" else "duckdb")
    if args.store == "redis":
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
    shutil.rmtree(s.feast_dir, ignore_errors=True)
    store = cfs.get_store(s)
    cfs.apply(s, store)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    rss_before = ru0.ru_maxrss
    t0 = time.perf_counter()
    if args.path == "ours":
        from jobs.materialize import materialize

        res = materialize(s, END, full=True, store=store)
        rows = res.total_rows
    else:
        end = dt.datetime(END.year, END.month, END.day, tzinfo=dt.UTC)
        store.materialize(end - dt.timedelta(days=1), end)
        rows = args.users * len(FEATURE_VIEWS)  # Feast writes one row per user and view, as ours
    seconds = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    peak_kb = ru1.ru_maxrss
    return {
        "rows": rows,
        "seconds": seconds,
        # CPU seconds (all threads): comparable across runs on a shared, busy machine
        "cpu_seconds": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "peak_rss_mb": peak_kb / 1024,
        "rss_before_mb": rss_before / 1024,
    }


def spawn(path: str, store: str, users: int, data_dir: Path, redis_url: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--path",
        path,
        "--store",
        store,
        "--users",
        str(users),
        "--data-dir",
        str(data_dir),
        "--redis-url",
        redis_url,
    ]
    # Feast's Spark engine writes from Python workers, which run PYSPARK_PYTHON (else `python3` on
    # PATH): this interpreter, as in an activated environment or the ml image
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{path}/{store} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--feast-users", type=int, default=100_000, help="subset for Feast's own path (0 = skip)")
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", choices=["ours", "feast", "feast-spark"], help=argparse.SUPPRESS)
    ap.add_argument(
        "--feast-spark", action="store_true", help="also Feast's materialize on its Spark engine (--feast-users)"
    )
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="churn-bench-mat-"))
    sizes = {"ours": args.users}
    if args.feast_users:
        sizes["feast"] = min(args.feast_users, args.users)
        if args.feast_spark:
            sizes["feast-spark"] = sizes["feast"]
    data_dirs = {}
    for n in sorted(set(sizes.values())):
        d = work / f"users-{n}"
        if not (d / "features").exists():
            t0 = time.perf_counter()
            write_tables(d / "features", n)
            took = time.perf_counter() - t0
            print(f"generated {n:,} users x {len(FEATURE_VIEWS)} views in {took:.1f}s", flush=True)
        data_dirs[n] = d

    print(
        f"\n{'path':<12}{'store':<8}{'users':>10}{'rows':>11}{'seconds':>10}{'rows/s':>11}{'users/s':>10}"
        f"{'CPU s':>8}{'peak RSS MB':>13}  note"
    )
    results = []
    for store in args.stores.split(","):
        for path, n in sizes.items():
            r = spawn(path, store, n, data_dirs[n], args.redis_url)
            rate = r["rows"] / r["seconds"]
            note = ""
            if n < args.users:
                est = r["seconds"] * args.users / n
                note = f"measured on {n:,} users; {args.users:,}-user time extrapolated ≈ {est:,.0f}s"
            print(
                f"{path:<12}{store:<8}{n:>10,}{r['rows']:>11,}{r['seconds']:>10.1f}{rate:>11,.0f}"
                f"{rate / len(FEATURE_VIEWS):>10,.0f}{r['cpu_seconds']:>8.1f}{r['peak_rss_mb']:>13,.0f}  {note}",
                flush=True,
            )
            results.append({"path": path, "store": store, "users": n, **r, "rows_per_s": rate})
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "materialize.json").write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
