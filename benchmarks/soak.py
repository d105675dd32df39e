"""Soak test: the prediction API under steady load with hot reloads, watching errors, latency and memory.

Builds (or reuses, ``--data-dir``) a synthetic site — generate → features → apply → materialize into
the SQLite online store (``--store redis`` uses a private ``redis-server`` on a free loopback port
instead) → train + promote — plus a second registry version (a copy of the first under a new name,
serving the other model kind), then starts the API as production does
(``uvicorn service.app:create_app --factory``, one worker) in a subprocess on 127.0.0.1.

Load: an open-loop asyncio client at ``--rate`` req/s for ``--duration`` s (95% ``/predict`` of a
known user, 5% ``/predict/batch`` of 20), latency measured from each request's *scheduled* send
time (no coordinated omission). Every ``--reload-every`` s the other version is promoted in the
registry and ``POST /admin/reload`` is called (the pointer watcher is on too), so the model is
swapped under load. Reported: requests, errors, p50/p90/p99/max latency, versions served, reloads,
server RSS after warm-up and at the end and the drift between them.

Exit status: 0 when errors == 0, every reload succeeded, both versions served and the RSS drift is
within ``--rss-margin`` (default 20%); 1 otherwise. Everything is bounded: a fixed duration and
request count, loopback only, the server (and Redis) stopped at the end.

    .venv/bin/python benchmarks/soak.py [--duration 60] [--rate 150] [--reload-every 10] [--store sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEEP_UP = 0.95
"""Share of the asked rate the server must sustain: below it, requests queue without bound."""

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
READY_MARK = ".soak-ready"
TOKEN = "soak-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:  # pragma: no cover
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS") from None


def settings_for(data_dir: Path, **extra: Any):
    from churn.settings import Settings

    return Settings.from_env(env={}, data_dir=data_dir, freshness_max_hours=0, **extra)


# --- the site ------------------------------------------------------------------------------------------
def build_site(data_dir: Path, users: int) -> tuple[str, str, list[str]]:
    """(version A, version B, known users); reuses a built ``data_dir``."""
    import datetime as dt

    import pandas as pd

    mark = data_dir / READY_MARK
    if mark.exists() and json.loads(mark.read_text()).get("users") == users:
        info = json.loads(mark.read_text())
        print(f"reusing site {data_dir} ({users:,} users)", flush=True)
        return info["a"], info["b"], info["known"]
    from feature_repo import store as cfs
    from jobs.aggregate import build_features
    from jobs.ingest import generate_store
    from jobs.materialize import materialize
    from training.train import run_training

    if data_dir.exists():
        shutil.rmtree(data_dir)
    s = settings_for(data_dir)
    t0 = time.perf_counter()
    generate_store(s, users=users, days=120, seed=3, end_date=dt.date(2026, 11, 1))
    build_features(s)
    store = cfs.get_store(s)
    cfs.apply(s, store)
    materialize(s, store=store)
    result = run_training(s, promote=True, max_rounds=60, early_stopping=20)
    assert result.promotion is not None, result.promotion_error
    a = result.version
    b = a[:-6] + "b0b0b0"  # the same run serving its other model: different predictions
    shutil.copytree(s.models_dir / a, s.models_dir / b)
    meta = json.loads((s.models_dir / b / "metadata.json").read_text())
    meta["version"] = b
    meta["kind"] = "logreg" if meta["kind"] == "lightgbm" else "lightgbm"
    (s.models_dir / b / "metadata.json").write_text(json.dumps(meta))
    newest = sorted((s.features_dir / "profile").glob("date=*"))[-1]
    known = sorted(pd.read_parquet(newest, columns=["user_id"])["user_id"])
    mark.write_text(json.dumps({"users": users, "a": a, "b": b, "known": known}))
    print(f"built site {data_dir} in {time.perf_counter() - t0:.0f} s: {len(known):,} served users", flush=True)
    return a, b, known


# --- processes -------------------------------------------------------------------------------------------
def start_redis(workdir: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("redis-server")
    if not exe:
        sys.exit("--store redis needs redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc, 10)
    return proc, port


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"process {proc.args[0]} did not listen on {port}")
        time.sleep(0.05)


def start_api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    cmd = [
        PY, "-m", "uvicorn", "service.app:create_app", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- load ------------------------------------------------------------------------------------------------
async def soak(
    base: str, args: argparse.Namespace, known: list[str], versions: tuple[str, str], s, pid: int
) -> dict:
    import httpx

    rss_series: list[tuple[float, float]] = []

    latencies: list[float] = []
    errors: list[str] = []
    served: dict[str, int] = {}
    reloads: list[dict] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:

        async def one(i: int, scheduled: float) -> None:
            try:
                if i % 20 == 19:
                    ids = [known[(i + k * 7) % len(known)] for k in range(20)]
                    r = await http.post("/predict/batch", json={"user_ids": ids})
                    ok = r.status_code == 200 and r.json()["errors"] == 0
                    version = r.json().get("model_version") if r.status_code == 200 else None
                else:
                    r = await http.post("/predict", json={"user_id": known[i % len(known)]})
                    ok = r.status_code == 200
                    version = r.json().get("model_version") if ok else None
                if not ok:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                if version:
                    served[version] = served.get(version, 0) + 1
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - scheduled)

        async def reloader(stop_at: float) -> None:
            cli_env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
            cli_env.update(CHURN_DATA_DIR=str(s.data_dir), CHURN_FRESHNESS_MAX_HOURS="0")
            k = 0
            while True:
                await asyncio.sleep(args.reload_every)
                if time.perf_counter() >= stop_at:
                    return
                k += 1
                target = versions[k % 2]
                # as an operator would: the CLI in its own process (no GIL shared with this client)
                proc = await asyncio.create_subprocess_exec(
                    str(Path(PY).parent / "churn"), "models", "promote", target, "--force",
                    env=cli_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                if await proc.wait() != 0:
                    reloads.append({"to": target, "status": None, "result": "promote failed"})
                    continue
                r = await http.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
                body = r.json()
                reloads.append({"to": target, "status": r.status_code, "result": body.get("result")})

        async def sampler() -> None:  # the RSS trend: does it flatten, or keep climbing?
            every = max(args.duration / 20, 2.0)
            while True:
                rss_series.append((round(time.perf_counter() - start, 1), round(rss_bytes(pid) / 2**20, 1)))
                await asyncio.sleep(every)

        n = int(args.duration * args.rate)
        start = time.perf_counter()
        reload_task = asyncio.create_task(reloader(start + args.duration))
        sample_task = asyncio.create_task(sampler())
        tasks = []
        for i in range(n):
            scheduled = start + i / args.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        for task in (reload_task, sample_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server = await http.get("/metrics")
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:5],
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 2),
        "p90_ms": round(pct(0.90), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "server_p99_ms_le": server_p99(server.text),
        "served_versions": served,
        "reloads": reloads,
        "rss_series_mib": rss_series,
        "rss_second_half_growth_pct": second_half_growth(rss_series),
    }


def second_half_growth(series: list[tuple[float, float]]) -> float | None:
    """RSS growth over the second half of the run: near 0 when memory has flattened."""
    if len(series) < 4:
        return None
    mid = series[len(series) // 2][1]
    return round((series[-1][1] - mid) / mid * 100, 2)


def server_p99(text: str) -> float | None:
    """Upper bucket bound holding the 99th percentile of the server-side /predict latency histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets = []
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == "churn_http_request_duration_seconds_bucket" and smp.labels.get("route") == "/predict":
                buckets.append((float(smp.labels["le"]), smp.value))
    if not buckets:
        return None
    buckets.sort()
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= 0.99 * total:
            return le * 1000
    return None


async def warm_up(base: str, known: list[str], seconds: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            await asyncio.gather(
                *(http.post("/predict", json={"user_id": known[(i + k) % len(known)]}) for k in range(8))
            )
            i += 8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of measured load (default 60)")
    ap.add_argument("--rate", type=float, default=150.0, help="requests per second, open loop (default 150)")
    ap.add_argument("--reload-every", type=float, default=10.0, help="seconds between promotions + reloads")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up before the RSS baseline")
    ap.add_argument("--users", type=int, default=2000, help="synthetic users of the site (default 2000)")
    ap.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse/build the site here (default: a temp dir)")
    ap.add_argument("--rss-margin", type=float, default=0.20, help="allowed RSS growth after warm-up (0.20 = 20%%)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    if args.duration <= 0 or args.duration > 3600 or args.rate <= 0 or args.rate > 2000:
        ap.error("--duration must be in (0, 3600] and --rate in (0, 2000]")

    tmp = Path(tempfile.mkdtemp(prefix="churn-soak-"))
    data_dir = args.data_dir or tmp / "data"
    redis_proc = api = None
    try:
        a, b, known = build_site(data_dir, args.users)
        extra: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
        env.update(
            CHURN_DATA_DIR=str(data_dir),
            CHURN_ADMIN_TOKEN=TOKEN,
            CHURN_RELOAD_INTERVAL_S="2",
            CHURN_FRESHNESS_MAX_HOURS="0",
            PYTHONPATH=str(ROOT),
        )
        if args.store == "redis":
            from jobs.materialize import materialize

            redis_proc, rport = start_redis(tmp)
            url = f"redis://127.0.0.1:{rport}/0"
            extra = {"online_store": "redis", "redis_url": url}
            materialize(settings_for(data_dir, **extra), full=True)
            env.update(CHURN_ONLINE_STORE="redis", CHURN_REDIS_URL=url)
        s = settings_for(data_dir, **extra)
        from training.registry import ModelRegistry

        registry = ModelRegistry(s)
        if registry.production_version() != a:
            registry.promote(a, force=True, reason="soak start")
        port = free_port()
        log = tmp / "api.log"
        api = start_api(env, port, log)
        base = f"http://127.0.0.1:{port}"
        wait_port(port, api, 120)
        rss_started = rss_bytes(api.pid)
        asyncio.run(warm_up(base, known, args.warmup))
        rss_start = rss_bytes(api.pid)
        print(
            f"soak: {args.duration:.0f} s at {args.rate:.0f} req/s ({args.store}), reload every "
            f"{args.reload_every:.0f} s, server pid {api.pid}",
            flush=True,
        )
        report = asyncio.run(soak(base, args, known, (a, b), s, api.pid))
        rss_end = rss_bytes(api.pid)
        drift = (rss_end - rss_start) / rss_start
        report.update(
            rss_after_startup_mib=round(rss_started / 2**20, 1),
            rss_start_mib=round(rss_start / 2**20, 1),
            rss_end_mib=round(rss_end / 2**20, 1),
            rss_drift_pct=round(drift * 100, 2),
            rss_margin_pct=args.rss_margin * 100,
            server_alive=api.poll() is None,
        )
    finally:
        stop(api)
        stop(redis_proc)
    reload_failures = [r for r in report["reloads"] if r["status"] != 200 or r["result"] != "success"]
    problems = []
    if report["errors"]:
        problems.append(f"{report['errors']} errors")
    if reload_failures:
        problems.append(f"{len(reload_failures)} failed reloads")
    if drift > args.rss_margin:
        problems.append(f"RSS grew {drift:.1%} (> {args.rss_margin:.0%})")
    if args.duration >= 2 * args.reload_every and len(report["served_versions"]) < 2:
        problems.append("the reloads never changed the served version")
    if not report["server_alive"]:
        problems.append("the server died")
    if report["achieved_rps"] < KEEP_UP * args.rate:  # an open loop that falls behind only queues
        problems.append(f"fell behind: {report['achieved_rps']} of {args.rate:g} req/s (p50 {report['p50_ms']} ms)")
    report["verdict"] = "ok" if not problems else "FAILED: " + "; ".join(problems)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if not args.data_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
