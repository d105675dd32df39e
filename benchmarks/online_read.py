"""Online read latency: churn's online store (feature_repo.online) vs Feast's get_online_features.

Builds a store with N synthetic users (benchmarks/materialize.py's generator + the fast path),
then times single-user reads (p50/p99) and 100-user batches (p99) from SQLite and Redis.

    .venv/bin/python benchmarks/online_read.py --users 100000
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


def main() -> None:
    from materialize import END, _settings, write_tables

    from feature_repo import store as cfs
    from feature_repo.online import online_store
    from jobs.materialize import materialize

    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="churn-bench-read-"))
    write_tables(work / "features", args.users)
    ids = [f"u{i:07d}" for i in range(args.users)]
    rnd = random.Random(1)
    print(f"{'store':<8}{'reader':<22}{'1-user p50 ms':>15}{'1-user p99 ms':>15}{'100-user p99 ms':>17}")
    for kind in ("sqlite", "redis"):
        if kind == "redis":
            import redis

            redis.Redis.from_url(args.redis_url).flushdb()
        s = _settings(work, kind, args.redis_url)
        shutil.rmtree(s.feast_dir, ignore_errors=True)
        store = cfs.get_store(s)
        cfs.apply(s, store)
        materialize(s, END, store=store, full=True)
        reader = online_store(s).connect()
        service = store.get_feature_service(s.feature_service)
        paths = {
            "churn OnlineStore.read": lambda us, reader=reader: reader.read(us),
            "feast get_online_features": lambda us, store=store, service=service: store.get_online_features(
                service, [{"user_id": u} for u in us]
            ).to_dict(),
        }
        for name, fn in paths.items():
            fn([ids[0]])  # warm up
            single = []
            for _ in range(args.reads):
                u = [rnd.choice(ids)]
                t0 = time.perf_counter()
                fn(u)
                single.append(time.perf_counter() - t0)
            batch = []
            for _ in range(max(50, args.reads // 10)):
                us = rnd.sample(ids, 100)
                t0 = time.perf_counter()
                fn(us)
                batch.append(time.perf_counter() - t0)
            print(
                f"{kind:<8}{name:<27}{pct(single, 50):>10.2f}{pct(single, 99):>15.2f}{pct(batch, 99):>17.2f}"
                f"  (100-user p50 {pct(batch, 50):.2f})",
                flush=True,
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
