"""Does the operator console slow /predict? p99 at a fixed rate with and without console traffic.

Reuses ``benchmarks/serve.py``: its store (generate → features → Redis → train + promote, or reuse
``--data-dir``), its API launcher (``uvicorn service.app:create_app``, 1 worker) and its open-loop
load generator (latency from each request's scheduled send time). The newest feature day is batch
scored so the console has a table; ``--console-rows N`` replaces that day's predictions with N
synthetic rows (the console's cost grows with them: 1,000,000 is the production-sized case).

Then, with ``CHURN_CONSOLE=on``, alternating rounds (``--repeat``) of ``--rate`` req/s on
``/predict`` for ``--duration`` seconds:

* **quiet**: /predict alone;
* **console**: the same load while another thread refreshes console pages in a loop on its own
  connection (the at-risk table with rotating pages and sort orders, a filter, a user lookup), one
  request after another: an operator holding F5, and then some.

Prints /predict's p50/p99 (client side) in both, their difference, and the console refreshes made.

    .venv/bin/python benchmarks/console.py [--users 20000] [--console-rows 1000000] [--duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import serve as serve_bench  # benchmarks/serve.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_PATHS = (
    "/console/at-risk?page={page}&size=50&sort=churn_probability&dir=desc",
    "/console/at-risk?page={page}&size=100&sort=user_id&dir=asc",
    "/console/at-risk?page=1&size=50&sort=plan&dir=asc&tier=high",
    "/console/at-risk?page={page}&size=50&sort=risk_tier&dir=desc",
    "/console/users/{user}",
)


def newest_feature_day(data_dir: Path) -> dt.date:
    parts = sorted((data_dir / "features" / "profile").glob("date=*"))
    return dt.date.fromisoformat(parts[-1].name.split("=", 1)[1])


def prepare_scores(settings: Any, rows: int) -> tuple[dt.date, int]:
    """Score the newest feature day (real job); with ``rows`` > 0 replace it with that many synthetic rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn.io import write_parquet_atomic
    from churn.layout import PREDICTIONS_PARQUET
    from churn.policies import TIERS, RiskPolicy
    from jobs.score import score

    day = newest_feature_day(settings.data_dir)
    out = settings.layout.predictions(day) / PREDICTIONS_PARQUET
    if rows <= 0:
        if not out.exists():
            score(settings, day)
        return day, pq.read_metadata(out).num_rows
    if out.exists() and pq.read_metadata(out).num_rows == rows:
        return day, rows
    rng = np.random.default_rng(5)
    proba = np.round(rng.beta(2, 3, rows), 6)
    risk = RiskPolicy.from_settings(settings)
    idx = risk.tier_index(proba)
    features = np.array(["days_since_last_activity", "logins_30d", "minutes_7d", "overdue_ratio"], dtype=object)
    cols: dict[str, Any] = {
        "user_id": pa.array([f"u{i:07d}" for i in range(rows)]),
        "churn_probability": proba,
        "risk_tier": pa.array(np.array(TIERS, dtype=object)[idx], pa.string()),
        "recommended_action": pa.array(risk.action_array(idx), pa.string()),
        "model_version": pa.array(np.repeat("bench", rows), pa.string()),
    }
    for k in (1, 2, 3):
        cols[f"factor_{k}"] = pa.array(features[rng.integers(0, len(features), rows)], pa.string())
        cols[f"factor_{k}_value"] = pa.array(rng.integers(0, 60, rows).astype(str), pa.string())
        cols[f"factor_{k}_contribution"] = np.round(rng.random(rows), 6)
    write_parquet_atomic(out, pa.table(cols))
    return day, rows


class Refresher(threading.Thread):
    """Console pages, one after another on one keep-alive connection, until stopped."""

    def __init__(self, port: int, users: list[str], think_s: float = 0.0) -> None:
        super().__init__(name="console-refresher", daemon=True)
        self.port, self.users, self.think_s = port, users, think_s
        self.stop_event = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0

    def run(self) -> None:
        import httpx

        i = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60) as http:
            while not self.stop_event.is_set():
                path = CONSOLE_PATHS[i % len(CONSOLE_PATHS)].format(
                    page=1 + (i * 37) % 500, user=self.users[i % len(self.users)]
                )
                t = time.perf_counter()
                try:
                    ok = http.get(path).status_code == 200
                except Exception:
                    ok = False
                self.latencies.append(time.perf_counter() - t)
                self.errors += not ok
                i += 1
                if self.think_s:
                    self.stop_event.wait(self.think_s)


def one_round(
    port: int, raw: list[bytes], users: list[str], rate: float, duration: float, console: bool, think_s: float = 0.0
) -> dict:
    refresher = Refresher(port, users, think_s) if console else None
    if refresher is not None:
        refresher.start()
        time.sleep(0.5)  # the refresher is mid-page when the load starts
    try:
        result = serve_bench.run_load(serve_bench.fixed_rate(port, raw, rate, duration))
    finally:
        if refresher is not None:
            refresher.stop_event.set()
            refresher.join(120)
    if refresher is not None and refresher.latencies:
        lat = sorted(refresher.latencies)
        result["console_pages"] = len(lat)
        result["console_errors"] = refresher.errors
        result["console_page_p50_ms"] = statistics.median(lat) * 1000
        result["console_page_max_ms"] = lat[-1] * 1000
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    serve_bench.add_store_arguments(ap)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per round")
    ap.add_argument("--repeat", type=int, default=2, help="quiet/console rounds (alternating)")
    ap.add_argument("--console-rows", type=int, default=0, help="synthetic scored rows (0: the real scoring)")
    ap.add_argument(
        "--think-ms", type=float, default=0.0, help="pause between two console pages (0: back to back, the worst case)"
    )
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "console.json")
    args = ap.parse_args()

    print(f"== store: {args.users:,} users, Redis 127.0.0.1:6379/{args.redis_db}", flush=True)
    serve_bench.build_store(args.data_dir, args.redis_db, args.users, args.days)
    settings = serve_bench.bench_settings(args.data_dir, args.redis_db, console="on")
    day, rows = prepare_scores(settings, args.console_rows)
    print(f"== console table: {rows:,} scored users on {day}", flush=True)
    users = serve_bench.materialized_users(args.data_dir, args.sample_users)
    bodies = [json.dumps({"user_id": u}).encode() for u in users]

    tmp = Path(tempfile.mkdtemp(prefix="churn-bench-console-"))
    port = serve_bench.free_port()
    proc = serve_bench.start_api(settings, port, tmp / "api.log")
    results: dict[str, list[dict]] = {"quiet": [], "console": []}
    try:
        serve_bench.wait_http(port, "/ready", proc)
        raw = [serve_bench.raw_post(port, "/predict", b) for b in bodies]
        asyncio.run(serve_bench.closed_loop(port, raw, 4, 2.0))  # warm-up: /predict
        one_round(port, raw, users, args.rate, 3.0, console=True)  # warm-up: console caches, DuckDB
        for i in range(args.repeat):
            for mode in ("quiet", "console"):
                print(f"== round {i + 1}/{args.repeat}, {mode}: /predict at {args.rate:.0f} req/s "
                      f"for {args.duration:.0f} s", flush=True)  # fmt: skip
                r = one_round(
                    port, raw, users, args.rate, args.duration, console=mode == "console", think_s=args.think_ms / 1000
                )
                results[mode].append(r)
                print("  " + json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    finally:
        serve_bench.stop(proc)

    def worst(mode: str, key: str) -> float:
        return max(r[key] for r in results[mode])

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print()
    print(f"Console vs /predict — {rows:,} scored users, Redis, 1 API worker, load generator on the same "
          f"{os.cpu_count()}-core machine; /predict at {args.rate:.0f} req/s, {args.repeat} × {args.duration:.0f} s "
          "per mode; latency in ms, client side")  # fmt: skip
    print("| /predict                         |   p50 |   p99 | p99 worst round | errors |")
    print("|----------------------------------|-------|-------|-----------------|--------|")
    refreshed = "console refreshed back to back" if not args.think_ms else f"console every {args.think_ms:.0f} ms"
    for mode, label in (("quiet", "alone"), ("console", refreshed)):
        errors = sum(r["errors"] for r in results[mode])
        print(f"| {label:<32} | {median(mode, 'p50'):5.2f} | {median(mode, 'p99'):5.2f} | "
              f"{worst(mode, 'p99'):15.2f} | {errors:6d} |")  # fmt: skip
    pages = sum(r.get("console_pages", 0) for r in results["console"])
    page_p50 = statistics.median(r["console_page_p50_ms"] for r in results["console"] if "console_page_p50_ms" in r)
    alone, busy = median("quiet", "p99"), median("console", "p99")
    print(f"/predict p99 alone {alone:.2f} ms, with the console refreshed {busy:.2f} ms "
          f"(difference {busy - alone:+.2f} ms); {pages} console pages served meanwhile, "
          f"median {page_p50:.0f} ms each")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {"rows": rows, "rate": args.rate, "think_ms": args.think_ms, "results": results}
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
