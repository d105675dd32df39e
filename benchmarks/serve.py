"""Serving benchmark: churn's prediction API vs Feast's own feature server, same Redis store.

Builds (or reuses, ``--data-dir``) a small synthetic site — generate → build features → apply →
materialize into Redis (``127.0.0.1:6379``, db ``--redis-db``, default 11) → train + promote — with the
project's own functions, then starts, each in its own process on a free loopback port:

* the API: ``uvicorn service.app:create_app --factory`` (1 worker, like production pods), and
* ``feast serve`` for the same feature repo/store (1 worker, ``--max-requests 0``).

Each server is driven twice, with user ids drawn round-robin from the materialized users:

* fixed rate (``--rate``, default 200 req/s, open loop): an asyncio HTTP/1.1 client on
  keep-alive connections; latency is measured from each request's *scheduled* send time, so a
  stalled server cannot hide its queueing (no coordinated omission);
* max throughput: ``wrk`` (closed loop, Lua script for POST bodies) at a few concurrencies.
  Without ``wrk`` on PATH the asyncio client runs closed-loop instead (said in the output).

Everything stays on 127.0.0.1, every phase is bounded in time and count, servers are stopped at
the end. The API's own per-request work (read + predict + factors) is also timed in-process.

    .venv/bin/python benchmarks/serve.py [--users 20000] [--duration 10] [--concurrency 4,16,64]

``--shadow``: the API only (no Feast), alternately without and with a shadow model staged (a
copy of the production version under another name, so the shadow costs exactly one more model
call per request), ``--repeat`` times each; reports the production p99 with shadow on vs off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
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

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
READY_MARK = ".bench-serve-ready"


# --- the store ----------------------------------------------------------------------------------
def bench_settings(data_dir: Path, redis_db: int, **extra: Any):
    from churn.settings import Settings

    return Settings.from_env(
        env={},
        data_dir=data_dir,
        online_store="redis",
        redis_url=f"redis://127.0.0.1:6379/{redis_db}",
        freshness_max_hours=0,
        **extra,
    )


REDIS_OWNER_KEY = "churn-bench:store"
"""Which bench store the Redis database was materialized from (not a Feast key)."""


def build_store(data_dir: Path, redis_db: int, users: int, days: int) -> None:
    """generate → features → apply → materialize (Redis) → train + promote, or reuse a built dir."""
    import datetime as dt

    import redis

    mark = data_dir / READY_MARK
    client = redis.Redis(host="127.0.0.1", port=6379, db=redis_db, socket_timeout=5)
    client.ping()
    # The Redis database must hold THIS store's rows: another bench run may have reused the database.
    owner = client.get(REDIS_OWNER_KEY)
    if mark.exists() and json.loads(mark.read_text()).get("users") == users and owner == str(data_dir).encode():
        print(f"reusing store {data_dir} ({users:,} users, redis db {redis_db})", flush=True)
        return
    from feature_repo import store as cfs
    from jobs.aggregate import build_features
    from jobs.ingest import generate_store
    from jobs.materialize import materialize
    from training.train import run_training

    if data_dir.exists():
        shutil.rmtree(data_dir)
    client.flushdb()
    s = bench_settings(data_dir, redis_db)
    t0 = time.perf_counter()
    end = dt.date.today()
    generate_store(s, users=users, days=days, seed=11, end_date=end)
    print(f"  generated {users:,} users × {days} days   {time.perf_counter() - t0:6.1f} s", flush=True)
    build_features(s)
    print(f"  built feature tables              {time.perf_counter() - t0:6.1f} s", flush=True)
    cfs.apply(s)
    res = materialize(s, full=True)
    print(f"  materialized {res.total_rows:,} rows to Redis {time.perf_counter() - t0:6.1f} s", flush=True)
    client.set(REDIS_OWNER_KEY, str(data_dir))
    tr = run_training(s, promote=True, max_rounds=300)
    print(f"  trained {tr.version} ({tr.served}), promoted {time.perf_counter() - t0:6.1f} s", flush=True)
    mark.write_text(json.dumps({"users": users, "version": tr.version}))


def materialized_users(data_dir: Path, n: int) -> list[str]:
    import pyarrow.parquet as pq

    parts = sorted((data_dir / "features" / "profile").glob("date=*"))
    ids = pq.read_table(parts[-1], columns=["user_id"]).column(0).to_pylist()
    step = max(1, len(ids) // n)
    return ids[::step][:n]


# --- servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on :{port} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"server on :{port} not ready after {timeout:.0f} s")


def child_env(settings) -> dict[str, str]:
    """The bench's environment for a server, minus the Prometheus multiprocess directory that
    importing Feast sets in this process (it is removed when this process exits)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    return {**env, **settings.as_env(), "PYTHONPATH": str(ROOT)}


def start_api(settings, port: int, log: Path, workers: int = 1, score_in_thread: str = "auto") -> subprocess.Popen:
    env = {**child_env(settings), "CHURN_SCORE_IN_THREAD": score_in_thread}
    cmd = [
        PY, "-m", "uvicorn", "service.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def start_feast(settings, port: int, log: Path, workdir: Path) -> subprocess.Popen:
    from feature_repo.store import write_feature_store_yaml

    yaml = write_feature_store_yaml(settings, workdir / "feature_store.yaml")
    env = {**child_env(settings), "FEAST_USAGE": "False"}
    feast = str(Path(PY).with_name("feast"))
    cmd = [
        feast, "-c", str(settings.feature_repo), "-f", str(yaml), "serve", "-h", "127.0.0.1", "-p", str(port),
        "--workers", "1", "--max-requests", "0", "--no-access-log",
    ]  # fmt: skip
    # Its own session: `feast serve` forks its worker, which outlives a signal to the parent alone.
    return subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and every process of its session (workers included)."""
    pgid = proc.pid  # start_new_session=True: the group id is the leader's pid
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            continue
        break
    proc.poll()


# --- load: asyncio HTTP/1.1 client --------------------------------------------------------------
class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    async def request(self, raw: bytes) -> int:
        self.w.write(raw)
        status_line = await self.r.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.r.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.r.readexactly(length)
        return status


def raw_post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _open(port: int) -> Conn:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    return Conn(r, w)


def run_load(coro: Any) -> Any:
    """Run a load generator on a loop whose timers wake on time.

    asyncio's default selector (epoll) sleeps in whole milliseconds, rounded up, so an open-loop
    client would send each request up to a millisecond after it is due and count that delay as the
    server's: ``select(2)`` takes microseconds, and the client never has more than a few dozen
    sockets. ``fixed_rate`` reports the remaining send lag (``lag_p50``/``lag_p99``) beside the latency.
    """
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())) as runner:
        return runner.run(coro)


async def fixed_rate(port: int, requests: list[bytes], rate: float, duration: float, max_conns: int = 64) -> dict:
    """Open loop: request i is due at t0 + i/rate; latency = done - due."""
    n = int(rate * duration)
    idle: list[Conn] = [await _open(port) for _ in range(8)]
    lat: list[float] = []
    lag: list[float] = []
    served: list[float] = []
    errors = reconnects = 0
    opened = len(idle)
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        nonlocal errors, opened, reconnects
        if idle:
            c = idle.pop()
        elif opened < max_conns:
            opened += 1
            c = await _open(port)
        else:  # bounded: wait for a connection to come back
            while not idle:
                await asyncio.sleep(0.0005)
            c = idle.pop()
        raw = requests[i % len(requests)]
        sent = loop.time()
        try:
            status = await c.request(raw)
        except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
            # The server closed this idle keep-alive connection (uvicorn: after 5 s): reconnect
            # and resend once, as HTTP clients do; the latency still counts from the due time.
            c.w.close()
            c = await _open(port)
            reconnects += 1
            try:
                status = await c.request(raw)
            except Exception:
                status = 0
                c = await _open(port)
        if status != 200:
            errors += 1
        done = loop.time()
        lat.append(done - due)
        lag.append(sent - due)
        served.append(done - sent)
        idle.append(c)

    tasks = []
    t0 = loop.time() + 0.05
    for i in range(n):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 30)
    elapsed = loop.time() - t0
    for c in idle:
        c.w.close()
    out = {**summarize(lat, len(tasks) / elapsed, errors), "reconnects": reconnects}
    lag_s, served_s = summarize(lag, 0, 0), summarize(served, 0, 0)
    out.update(lag_p50=lag_s["p50"], lag_p99=lag_s["p99"], sent_p50=served_s["p50"], sent_p99=served_s["p99"])
    return out


async def closed_loop(port: int, requests: list[bytes], concurrency: int, duration: float) -> dict:
    conns = [await _open(port) for _ in range(concurrency)]
    lat: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    counter = 0

    async def worker(c: Conn) -> None:
        nonlocal errors, counter
        while loop.time() < end:
            i = counter
            counter += 1
            t = loop.time()
            if await c.request(requests[i % len(requests)]) != 200:
                errors += 1
            lat.append(loop.time() - t)

    t0 = loop.time()
    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        c.w.close()
    return summarize(lat, len(lat) / (loop.time() - t0), errors)


def summarize(lat: list[float], rps: float, errors: int) -> dict:
    s = sorted(lat)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))] * 1000 if s else float("nan")

    return {"n": len(s), "rps": rps, "p50": q(0.50), "p99": q(0.99), "p999": q(0.999), "errors": errors,
            "mean": statistics.fmean(s) * 1000 if s else float("nan")}  # fmt: skip


# --- load: wrk ------------------------------------------------------------------------------------
WRK_LUA = """
local bodies = {}
local i = 0
local f = io.open("%(bodies)s", "r")
for line in f:lines() do bodies[#bodies + 1] = line end
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, "%(path)s", nil, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"n": %%d, "seconds": %%f, "p50": %%f, "p99": %%f, "p999": %%f, "mean": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.mean / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_wrk(port: int, path: str, bodies: list[bytes], concurrency: int, duration: float, tmp: Path) -> dict:
    bfile = tmp / f"bodies-{port}.txt"
    bfile.write_bytes(b"\n".join(bodies) + b"\n")
    script = tmp / f"wrk-{port}.lua"
    script.write_text(WRK_LUA % {"bodies": bfile, "path": path})
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--timeout", "5s", "-s", str(script),
           f"http://127.0.0.1:{port}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON ") :])
    r["rps"] = r["n"] / r["seconds"]
    return r


def scrape(port: int) -> list[Any]:
    """Every sample of the API's /metrics (prometheus_client's parser)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return [smp for fam in text_string_to_metric_families(text) for smp in fam.samples]


def server_histogram(port: int) -> dict[float, float]:
    """Cumulative bucket counts of the API's own /predict latency histogram."""
    return {
        float(smp.labels["le"]): smp.value
        for smp in scrape(port)
        if smp.name == "churn_http_request_duration_seconds_bucket" and smp.labels.get("route") == "/predict"
    }


def server_side(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Server-side p50/p99 upper bounds (bucket edges, ms) over the phase, from the histogram."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    total = counts[-1] if counts else 0.0

    def q(p: float) -> float:
        for e, c in zip(edges, counts, strict=True):
            if total and c >= p * total:
                return e * 1000
        return float("nan")

    return {"server_p50_le": q(0.5), "server_p99_le": q(0.99)}


# --- main ----------------------------------------------------------------------------------------
def in_process_profile(settings, users: list[str], n: int = 2000) -> dict[str, float]:
    """The API's request work without HTTP, on an event loop as in the server: the awaited online
    read, then read + predict + top factors (scoring placed per CHURN_SCORE_IN_THREAD)."""
    from service.app import create_app

    app = create_app(settings, watch=False)
    svc = app.state.services
    svc.features.ping()
    svc.holder.load_production(force=True, trigger="bench")
    out: dict[str, Any] = {}

    async def on_the_loop() -> None:
        for u in users[:200]:  # warm-up
            await svc.predictor.predict_one_async(u)
        t = time.perf_counter()
        for i in range(n):
            await svc.features.read_async([users[i % len(users)]])
        out["online_read_ms"] = (time.perf_counter() - t) / n * 1000
        t = time.perf_counter()
        for i in range(n):
            await svc.predictor.predict_one_async(users[i % len(users)])
        out["predict_one_ms"] = (time.perf_counter() - t) / n * 1000
        await svc.features.reader.aclose()

    asyncio.run(on_the_loop())
    current = svc.holder.current
    out["model_kind"] = current.kind if current else None
    booster = getattr(current.model, "_booster", None) if current else None
    out["trees"] = booster.num_trees() if booster is not None else None
    return out


def clone_version(settings, suffix: str, **meta: Any) -> str:
    """A copy of the production version under a new name (``suffix``: 6 hex digits), with
    ``meta`` overriding its metadata (e.g. ``kind`` to serve the version's other model)."""
    from training.registry import ModelRegistry

    reg = ModelRegistry(settings)
    prod = reg.production_version()
    assert prod is not None, "no production model in the bench store"
    name = prod[:-6] + suffix
    dst = reg.models_dir / name
    if not dst.exists():
        tmp = reg.models_dir / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(reg.models_dir / prod, tmp)
        data = json.loads((tmp / "metadata.json").read_text())
        data.update(meta, version=name)
        (tmp / "metadata.json").write_text(json.dumps(data))
        os.rename(tmp, dst)
    return name


def serve_kind(settings, kind: str) -> str | None:
    """Make production serve ``kind`` (a clone of the version with that model served).
    Returns the version to restore afterwards, or None when nothing changed."""
    from training.registry import ModelRegistry

    reg = ModelRegistry(settings)
    prod = reg.production_version()
    assert prod is not None, "no production model in the bench store"
    if kind == "served" or reg.get(prod).kind == kind:
        return None
    reg.promote(clone_version(settings, {"lightgbm": "1b6b00", "logreg": "10c4e9"}[kind], kind=kind),
                force=True, reason=f"bench: serve {kind}")  # fmt: skip
    return prod


def stage_shadow(settings, on: bool) -> str | None:
    """Stage (or clear) a shadow: a clone of the production version under a new version name."""
    from training.registry import ModelRegistry

    reg = ModelRegistry(settings)
    state = reg.stages()
    if not on:
        if state.shadow:
            reg.clear_stage(state.shadow, reason="bench")
        return None
    name = clone_version(settings, "5ad0e5")
    if state.shadow != name:
        reg.set_stage(name, "shadow", reason="bench")
    return name


def rollout_metrics(port: int) -> dict[str, float]:
    """Shadow counters, server-side /predict statuses and predictions per arm, summed over labels."""
    shadow = {"churn_shadow_dropped_total", "churn_shadow_errors_total", "churn_shadow_prediction_seconds_count"}
    out: dict[str, float] = {}
    for smp in scrape(port):
        if smp.name in shadow:
            key = smp.name
        elif smp.name == "churn_http_requests_total" and smp.labels.get("route") == "/predict":
            key = f"http_{smp.labels['status']}"  # server-side statuses: client 'errors' may be reconnects
        elif smp.name == "churn_predictions_by_arm_total":
            key = f"predictions_{smp.labels['arm']}"
        else:
            continue
        out[key] = out.get(key, 0.0) + smp.value
    return out


def fmt_row(name: str, r: dict) -> str:
    return (f"| {name:<42} | {r['rps']:>9.0f} | {r['p50']:>7.2f} | {r['p99']:>7.2f} | {r['p999']:>8.2f} |"
            f" {r['n']:>7} | {r['errors']:>6} |")  # fmt: skip


def add_store_arguments(ap: argparse.ArgumentParser) -> None:
    """The bench store and the fixed load, shared with ``benchmarks/console.py``."""
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=150)
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "churn-bench-serve")
    ap.add_argument("--redis-db", type=int, default=11)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--sample-users", type=int, default=2000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_arguments(ap)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--concurrency", default="4,16,64")
    ap.add_argument("--skip-feast", action="store_true")
    ap.add_argument("--api-workers", type=int, default=1)
    ap.add_argument(
        "--score-in-thread",
        default="auto",
        help="CHURN_SCORE_IN_THREAD of the API (auto|always|never); a comma list compares them",
    )
    ap.add_argument(
        "--model",
        choices=["served", "lightgbm", "logreg"],
        default="served",
        help="which of the production version's two models the API serves (default: the one training chose)",
    )
    ap.add_argument("--shadow", action="store_true", help="API only: production p99 with a shadow model on vs off")
    ap.add_argument("--repeat", type=int, default=1, help="--shadow: off/on rounds (alternating)")
    ap.add_argument("--json", type=Path, default=None, help="default benchmarks/out/serve[-shadow].json")
    args = ap.parse_args()
    if args.json is None:
        args.json = ROOT / "benchmarks" / "out" / ("serve-shadow.json" if args.shadow else "serve.json")
    if args.shadow:
        args.skip_feast = True
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    modes = [m for m in args.score_in_thread.split(",") if m]
    if not modes or set(modes) - {"auto", "always", "never"}:
        ap.error("--score-in-thread: auto, always or never (comma-separated)")

    print(f"== store: {args.users:,} users, Redis 127.0.0.1:6379/{args.redis_db}", flush=True)
    build_store(args.data_dir, args.redis_db, args.users, args.days)
    settings = bench_settings(args.data_dir, args.redis_db)
    restore = serve_kind(settings, args.model)
    try:
        run(args, settings, concurrencies, modes)
    finally:
        if restore is not None:
            from training.registry import ModelRegistry

            ModelRegistry(settings).promote(restore, force=True, reason="bench: restore")


def run(args: argparse.Namespace, settings, concurrencies: list[int], modes: list[str]) -> None:
    users = materialized_users(args.data_dir, args.sample_users)
    have_wrk = shutil.which("wrk") is not None
    results: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="churn-bench-serve-"))

    print("== in-process request work (no HTTP)", flush=True)
    prof = in_process_profile(settings, users)
    print("  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in prof.items()))

    from feature_repo.store import get_store

    feature_refs = None
    targets = []
    api_bodies = [json.dumps({"user_id": u}).encode() for u in users]
    if args.shadow:
        for i in range(args.repeat):
            for mode in ("off", "on"):
                label = f"churn API /predict shadow {mode}" + (f" #{i + 1}" if args.repeat > 1 else "")
                targets.append((label, free_port(), "/predict", api_bodies, f"api-{modes[0]}-shadow-{mode}"))
    else:
        for m in modes:
            label = "churn API /predict" + (f" (score in thread: {m})" if len(modes) > 1 else "")
            targets.append((label, free_port(), "/predict", api_bodies, f"api-{m}"))
    if not args.skip_feast:
        store = get_store(settings)
        service = store.get_feature_service(settings.feature_service)
        feature_refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
        feast_port = free_port()
        feast_bodies = [json.dumps({"features": feature_refs, "entities": {"user_id": [u]}}).encode() for u in users]
        targets.append(("feast serve /get-online-features", feast_port, "/get-online-features", feast_bodies, "feast"))

    for name, port, path, bodies, kind in targets:
        log = tmp / f"{kind}.log"
        is_api = kind.startswith("api")
        if args.shadow:
            stage_shadow(settings, kind.endswith("-on"))
        proc = (
            start_api(settings, port, log, workers=args.api_workers, score_in_thread=kind.split("-")[1])
            if is_api
            else start_feast(settings, port, log, tmp)
        )
        try:
            wait_http(port, "/ready" if is_api else "/health", proc)
            raw = [raw_post(port, path, b) for b in bodies]
            asyncio.run(closed_loop(port, raw, 4, 2.0))  # warm-up
            print(f"== {name}: fixed {args.rate:.0f} req/s for {args.duration:.0f} s", flush=True)
            before = server_histogram(port) if is_api else None
            r = run_load(fixed_rate(port, raw, args.rate, args.duration))
            if before is not None:
                r.update(server_side(before, server_histogram(port)))
            results[f"{name} @ {args.rate:.0f}/s"] = r
            print("  " + json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
            for c in concurrencies:
                print(f"== {name}: max throughput, {c} connections, {args.duration:.0f} s "
                      f"({'wrk' if have_wrk else 'asyncio closed loop'})", flush=True)  # fmt: skip
                if have_wrk:
                    r = run_wrk(port, path, bodies, c, args.duration, tmp)
                else:
                    r = asyncio.run(closed_loop(port, raw, c, args.duration))
                results[f"{name} max c={c}"] = r
                print("  " + json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
            if args.shadow:
                results[f"{name} @ {args.rate:.0f}/s"]["rollout"] = rm = rollout_metrics(port)
                print("  rollout metrics " + json.dumps(rm), flush=True)
        finally:
            stop(proc)
    if args.shadow:
        stage_shadow(settings, False)

    print()
    print(f"Serving benchmark — {args.users:,} users, Redis, 1 worker each, load generator on the same "
          f"{os.cpu_count()}-core machine; latency in ms, client side")  # fmt: skip
    print(f"| {'server / load':<42} |     req/s |     p50 |     p99 |    p99.9 |       n | errors |")
    print(f"|{'-' * 44}|-----------|---------|---------|----------|---------|--------|")
    for name, r in results.items():
        print(fmt_row(name, r))
    for name, r in results.items():
        if "server_p99_le" in r:
            print(f"{name}: server-side /predict latency (histogram bucket bounds) p50 ≤ {r['server_p50_le']:.2f} ms,"
                  f" p99 ≤ {r['server_p99_le']:.2f} ms")  # fmt: skip
    if args.shadow:
        fixed = {m: [r for n, r in results.items() if f"shadow {m}" in n and n.endswith(f"@ {args.rate:.0f}/s")]
                 for m in ("off", "on")}  # fmt: skip
        summary = {}
        for key in ("p50", "p99", "server_p99_le"):
            off = statistics.median(r[key] for r in fixed["off"])
            on = statistics.median(r[key] for r in fixed["on"])
            summary[key] = {"off": off, "on": on, "ratio": on / off if off else float("nan")}
        print(
            f"\nshadow on vs off at {args.rate:.0f} req/s (median of {args.repeat} round(s)): "
            + ", ".join(f"{k} {v['off']:.2f} → {v['on']:.2f} ms (×{v['ratio']:.2f})" for k, v in summary.items())
        )
        results["shadow_summary"] = summary  # type: ignore[assignment]
    if not args.skip_feast:
        best = {k: max(r["rps"] for n, r in results.items() if n.startswith(k) and " max " in n)
                for k in ("churn API", "feast serve")}  # fmt: skip
        print(f"\nmax throughput: churn API {best['churn API']:.0f} req/s vs feast serve {best['feast serve']:.0f} "
              f"req/s → {best['churn API'] / best['feast serve']:.2f}×")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"in_process": prof, "results": results, "users": args.users,
                                     "wrk": have_wrk}, indent=2))  # fmt: skip
    print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
