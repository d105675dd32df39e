"""Faults: the online store dying under load, the registry pointer going bad under load, batch jobs
killed half-way, a full or read-only disk during a job, bad data batches through the CLI.

Every case uses real mechanisms where the machine allows it: a private ``redis-server`` (stopped
with SIGSTOP = a hung store, SIGKILL = a dead one, then restarted from its RDB file), real HTTP
(uvicorn in a thread), real ``churn`` subprocesses killed with SIGKILL, a tiny tmpfs (only when
this process may mount one; otherwise that case skips and the "file where a directory is
expected" case still runs). The shared Redis at 127.0.0.1:6379 is never touched.

The site (a copy of ``small_store`` with Feast applied, materialized into SQLite, a model trained
and promoted) is the session fixture ``shared_site`` of ``tests/integration/conftest.py``, also used by
``test_hostile_input.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churn.schema import ENTITY_KEY, FEATURE_VIEWS
from churn.settings import Settings
from tests.support.env import REPO, require_tool, skip_or_fail
from tests.support.metrics import metric, metrics_of
from tests.support.servers import RedisProcess, create, live_server
from tests.support.sites import (
    SHARED_SITE_ADMIN_TOKEN,
    SHARED_SITE_MAX_BATCH,
    ServedSite,
    clone_version,
    copy_site,
    set_pointer,
    snapshot,
    tmp_leftovers,
)
from tests.support.tools import CHURN, cli_env, run_cli

Site = ServedSite
ADMIN_TOKEN = SHARED_SITE_ADMIN_TOKEN
MAX_BATCH = SHARED_SITE_MAX_BATCH

LATENCY_BOUND_S = 1.5  # every request while the store is down (online_timeout_ms=300 or 800)


# --- the shared site -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(shared_site: Site) -> Site:
    return shared_site


# --- helpers -----------------------------------------------------------------------------------------
def private_copy(site: Site, dst: Path, **fields: Any) -> Settings:
    """A writable copy of the site's data dir (jobs write into it)."""
    return copy_site(site.root, dst, symlinks=True, **fields)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, out
    for needle in needles:
        assert needle.lower() in errors[0].lower(), out
    return errors[0]


# =====================================================================================================
# 1. Redis hung (SIGSTOP) and dead (SIGKILL) under load, then back: 503 fast, /ready false, recovery.
# =====================================================================================================
@dataclass
class Outcome:
    phase: str  # the phase the request started in
    status: int | str
    seconds: float
    end_phase: str = ""  # the phase it ended in (a request straddling a fault is in neither)


class Load:
    """``threads`` closed-loop clients posting /predict for known users; every outcome is recorded."""

    def __init__(self, base: str, users: list[str], threads: int = 3, pause_s: float = 0.0) -> None:
        self.base, self.users, self.pause_s = base, users, pause_s
        self.phase = "start"
        self.outcomes: list[Outcome] = []
        self.versions: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, k: int) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as http:
            i = k
            while not self._stop.is_set():
                i += 1
                phase, t0 = self.phase, time.perf_counter()
                try:
                    r = http.post("/predict", json={"user_id": self.users[i % len(self.users)]})
                    status: int | str = r.status_code
                    if status == 200:
                        v = r.json()["model_version"]
                        self.versions[v] = self.versions.get(v, 0) + 1
                except httpx.HTTPError as exc:  # a hang past 10 s or a dropped connection
                    status = f"{type(exc).__name__}: {exc}"
                self.outcomes.append(Outcome(phase, status, time.perf_counter() - t0, self.phase))
                if self.pause_s:
                    time.sleep(self.pause_s)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def in_phase(self, phase: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.phase == phase == o.end_phase]

    def wait_for(self, phase: str, n: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.in_phase(phase)) < n:
            assert time.monotonic() < deadline, f"fewer than {n} requests in phase {phase}"
            time.sleep(0.02)


def _wait_status(http: httpx.Client, path: str, status: int, timeout: float = 10) -> float:
    t0 = time.monotonic()
    while http.get(path).status_code != status:
        assert time.monotonic() - t0 < timeout, f"{path} did not turn {status} within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def _wait_predict_ok(http: httpx.Client, user: str, timeout: float = 10, streak: int = 10) -> None:
    """Until ``streak`` predictions in a row succeed: one success can land while Redis is still
    working off the requests it queued while frozen (the bigger the feature service, the longer)."""
    t0, ok = time.monotonic(), 0
    while ok < streak:
        ok = ok + 1 if http.post("/predict", json={"user_id": user}).status_code == 200 else 0
        assert time.monotonic() - t0 < timeout, "/predict did not recover"
        if not ok:
            time.sleep(0.05)


def test_redis_hung_or_dead_under_load_fails_fast_and_recovers_by_itself(site: Site, tmp_path: Path) -> None:
    require_tool("redis-server", "cannot stop/start a private Redis")
    import redis

    from jobs.materialize import materialize

    rs = RedisProcess(workdir=tmp_path)
    rs.start()
    try:
        settings = private_copy(
            site,
            tmp_path / "data",
            online_store="redis",
            redis_url=f"{rs.url}/0",
            # well under the latency bound, yet with room for a resumed Redis working off its backlog
            # on a loaded 2-core CI machine (300 ms made the "resumed" phase flaky there)
            online_timeout_ms=800,
        )
        materialize(settings, full=True)
        redis.Redis(port=rs.port, socket_timeout=5).save()  # the RDB the restarted server loads
        users = site.users[:40]
        with (
            live_server(create(settings, watch=False)) as base,
            httpx.Client(base_url=base, timeout=10) as http,
            Load(base, users) as load,
        ):
            load.phase = "up"
            load.wait_for("up", 30)
            # -- hung store: the process is there, accepts TCP, never answers --------------------
            # each phase is named before the fault that starts it: a request that began in the
            # previous phase and ended after the fault must not count as that phase's
            load.phase = "hung"
            rs.signal(signal.SIGSTOP)
            load.wait_for("hung", 30)
            t0 = time.perf_counter()
            r = http.get("/ready")
            assert r.status_code == 503 and "online store unreachable" in " ".join(r.json()["reasons"])
            assert time.perf_counter() - t0 < LATENCY_BOUND_S
            assert http.get("/live").status_code == 200
            rs.signal(signal.SIGCONT)
            load.phase = "recovering"
            _wait_status(http, "/ready", 200)
            # recovered = ready again and serving: from a run of good predictions on, every request
            # must succeed (the moments while Redis works off the backlog it queued while frozen
            # belong to the recovery, not to the recovered state)
            _wait_predict_ok(http, users[0])
            load.phase = "resumed"
            load.wait_for("resumed", 30)
            # -- dead store: connection refused ------------------------------------------------------
            load.phase = "dead"
            rs.signal(signal.SIGKILL)
            load.wait_for("dead", 30)
            r = http.get("/ready")
            assert r.status_code == 503
            assert http.get("/health").json()["online_store"]["status"] == "down"
            assert http.get("/live").status_code == 200
            # -- back, same port, data from the RDB file; the API is not restarted -------------------
            rs.start()
            load.phase = "recovering"
            recovered_in = _wait_status(http, "/ready", 200)
            load.phase = "restarted"
            load.wait_for("restarted", 30)
            m = metrics_of(http.get("/metrics").text)
    finally:
        rs.stop()

    statuses = {o.status for o in load.outcomes}
    assert statuses <= {200, 503}, [o for o in load.outcomes if o.status not in (200, 503)][:5]
    slowest = max(o.seconds for o in load.outcomes)
    assert slowest < LATENCY_BOUND_S, f"a request took {slowest:.2f} s"
    for phase in ("up", "resumed"):
        assert all(o.status == 200 for o in load.in_phase(phase)), phase
    for phase in ("hung", "dead"):
        got = [o.status for o in load.in_phase(phase)]
        assert got.count(503) >= 10, (phase, got[:20])
    restarted = load.in_phase("restarted")
    assert restarted and all(o.status == 200 for o in restarted), restarted[:5]  # serving again, same data
    assert recovered_in < 10
    assert metric(m, "churn_online_read_errors_total") >= 20


# =====================================================================================================
# 2. The registry pointer replaced by corrupt / missing models while requests are in flight.
# =====================================================================================================
class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_bad_registry_pointer_under_load_keeps_serving_the_previous_model(site: Site, tmp_path: Path) -> None:
    import json

    from service.logs import SERVICE_LOGGER

    settings = private_copy(
        site, tmp_path / "data", reload_interval_s=0.05, admin_token=ADMIN_TOKEN, max_batch_size=MAX_BATCH
    )
    good = site.version
    model_file = json.loads((settings.models_dir / good / "metadata.json").read_text())
    model_file = model_file["models"][model_file["kind"]]["model_file"]
    truncated = clone_version(settings, good, "bad001")
    d = settings.models_dir / truncated
    data = (d / model_file).read_bytes()
    (d / model_file).write_bytes(data[: len(data) // 2])  # a half-copied model file
    bad_meta = clone_version(settings, good, "bad002")
    d = settings.models_dir / bad_meta
    (d / "metadata.json").write_text('{"version": "trunc')  # corrupt metadata
    empty_dir = clone_version(settings, good, "bad003")
    d = settings.models_dir / empty_dir
    for p in d.iterdir():
        p.unlink()  # an empty version folder
    bad_pointers: list[tuple[str, Any]] = [
        ("truncated model file", lambda: set_pointer(settings, truncated)),
        ("corrupt metadata.json", lambda: set_pointer(settings, bad_meta)),
        ("empty version folder", lambda: set_pointer(settings, empty_dir)),
        ("missing version", lambda: set_pointer(settings, "20990101T000000Z-ffffff")),
        ("path traversal", lambda: set_pointer(settings, "../../../../etc/passwd")),
        ("pointer deleted", lambda: (settings.registry_root / "production").unlink()),
        ("pointer emptied", lambda: set_pointer(settings, "")),
    ]
    capture = _Capture()
    logging.getLogger(SERVICE_LOGGER).addHandler(capture)
    try:
        with (
            live_server(create(settings)) as base,
            httpx.Client(base_url=base, timeout=10) as http,
            Load(base, site.users[:40], threads=3) as load,
        ):
            load.wait_for("start", 20)
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            for i, (what, apply) in enumerate(bad_pointers, start=1):
                apply()
                deadline = time.monotonic() + 10  # the watcher notices the pointer change
                while metric(metrics_of(http.get("/metrics").text), "churn_model_reload_total", result="failed") < i:
                    assert time.monotonic() < deadline, f"no failed reload recorded for: {what}"
                    time.sleep(0.02)
                n = len(load.outcomes)
                load.wait_for("start", n + 15)
                assert http.get("/ready").status_code == 200, what
            r = http.post("/admin/reload", headers=auth)  # admin reload of the emptied pointer: refused
            assert r.status_code == 409 and r.json()["result"] == "failed"
            health = http.get("/health").json()
            set_pointer(settings, good)
            r = http.post("/admin/reload", headers=auth)
            assert r.status_code == 200 and r.json()["version"] == good
            m = metrics_of(http.get("/metrics").text)
    finally:
        logging.getLogger(SERVICE_LOGGER).removeHandler(capture)

    failures = [o for o in load.outcomes if o.status != 200]
    assert not failures, failures[:5]
    assert load.versions == {good: len(load.outcomes)}  # nothing else ever answered
    assert len(load.outcomes) > 100
    assert health["status"] == "degraded" and health["model"]["version"] == good
    assert metric(m, "churn_model_reload_total", result="failed") == len(bad_pointers) + 1
    assert metric(m, "churn_model_reload_total", result="success") == 2  # startup + the final admin reload
    refused = [r for r in capture.records if getattr(r, "event", None) == "model_reload"]
    assert len(refused) == len(bad_pointers) + 1
    assert all(r.getMessage().startswith("model reload refused:") for r in refused)
    assert any(truncated in r.getMessage() for r in refused)


# =====================================================================================================
# 3. Batch jobs SIGKILLed half-way: no partial file under a final path, rerun completes.
# =====================================================================================================
# Runs the real CLI in a child that SIGKILLs itself the moment a chosen function is entered (the
# n-th time): a deterministic kill point inside the job, with the real kill signal.
KILL_AT = """
import os, signal, sys, importlib
mod_name, attr, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
mod = importlib.import_module(mod_name)
orig = getattr(mod, attr)
calls = [0]
def killer(*a, **k):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(*a, **k)
setattr(mod, attr, killer)
from cli.main import app
sys.argv = ["churn", *sys.argv[4:]]
app()
"""


def run_killed_at(settings: Settings, module: str, attr: str, nth: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILL_AT, module, attr, str(nth), *args],
        env=cli_env(settings), capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def _check_predictions(out: Path) -> int:
    files = sorted(p.name for p in out.iterdir())
    assert files == ["predictions.csv", "predictions.parquet", "scored_features.parquet"], files
    n = pq.read_metadata(out / "predictions.parquet").num_rows
    assert pq.read_metadata(out / "scored_features.parquet").num_rows == n
    assert len(pd.read_csv(out / "predictions.csv")) == n
    return n


def test_score_killed_half_way_leaves_previous_outputs_and_rerun_completes(site: Site, tmp_path: Path) -> None:
    import datetime as dt

    from jobs.score import output_dir, score

    settings = private_copy(site, tmp_path / "data")
    day = dt.date.fromisoformat(site.last_date)
    prev = day - dt.timedelta(days=1)
    score(settings, prev)
    score(settings, day)
    before = snapshot(settings.predictions_dir)
    n = _check_predictions(output_dir(settings, day))

    # (a) deterministic: killed after predictions.parquet is in the temp dir, before the swap
    proc = run_killed_at(settings, "churn.io", "_fsync_tree", 1, "score", "--date", str(day))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = tmp_leftovers(settings.predictions_dir)
    assert leftovers, "the kill did not happen inside the atomic write"
    assert all(p.name.startswith(".tmp-") for p in leftovers)
    assert {k: v for k, v in snapshot(settings.predictions_dir).items() if not k.startswith(".tmp-")} == before

    # (b) killed between the two renames of the directory swap: the final path is absent, never partial
    proc = run_killed_at(settings, "os", "rename", 2, "score", "--date", str(day))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not output_dir(settings, day).exists() or _check_predictions(output_dir(settings, day)) == n
    prev_files = {k: v for k, v in before.items() if k.startswith(f"date={prev}/")}
    now = snapshot(settings.predictions_dir)
    assert {k: now[k] for k in prev_files} == prev_files  # the previous day is byte-identical

    # (c) the real CLI, SIGKILLed from outside as soon as its temp dir shows up
    proc2 = subprocess.Popen(
        [str(CHURN), "score", "--date", str(day)], env=cli_env(settings), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seen = set(map(str, tmp_leftovers(settings.predictions_dir)))
    deadline = time.monotonic() + 60
    while proc2.poll() is None and time.monotonic() < deadline:
        if set(map(str, tmp_leftovers(settings.predictions_dir))) - seen:
            proc2.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc2.wait(60)
    out = output_dir(settings, day)
    assert not out.exists() or _check_predictions(out) == n  # whatever the kill point: complete or absent

    # rerun: completes, same predictions as the first run, previous day untouched
    proc = run_cli(settings, "score", "--date", str(day))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _check_predictions(out) == n
    cols = ["user_id", "churn_probability", "risk_tier", "model_version"]
    first = pd.read_csv(io.BytesIO(before[f"date={day}/predictions.csv"]), usecols=cols)  # the first run's
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv", usecols=cols), first)
    now = snapshot(settings.predictions_dir)
    assert {k: now[k] for k in prev_files} == prev_files


def test_features_build_killed_between_views_rerun_completes(site: Site, tmp_path: Path) -> None:
    """Killed after the first view's new partition is swapped in but before the others: the
    incremental rerun must still build the missing views (it used to trust the first view only)."""
    settings = private_copy(site, tmp_path / "data")
    newest = f"date={site.last_date}"
    original: dict[str, pd.DataFrame] = {}
    for view in FEATURE_VIEWS:
        part = settings.features_dir / view / newest
        original[view] = pd.read_parquet(part).drop(columns=["created"])
        shutil.rmtree(part)  # the day to build
    previous = snapshot(settings.features_dir)

    # replace_dirs publishes each view's new partitions in one call: the 2nd call = the 2nd view
    proc = run_killed_at(settings, "jobs.aggregate", "replace_dirs", 2, "features", "build")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    first_view, second_view = list(FEATURE_VIEWS)[:2]
    assert (settings.features_dir / first_view / newest).is_dir()
    assert not (settings.features_dir / second_view / newest).exists()
    for view in FEATURE_VIEWS:  # never a partial partition under a final path
        for part in (settings.features_dir / view).glob("date=*"):
            assert [p.name for p in part.iterdir()] == ["part-0.parquet"], part
            pq.read_metadata(part / "part-0.parquet")

    proc = run_cli(settings, "features", "build")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for view in FEATURE_VIEWS:
        got = pd.read_parquet(settings.features_dir / view / newest).drop(columns=["created"])
        pd.testing.assert_frame_equal(
            got.sort_values(ENTITY_KEY).reset_index(drop=True),
            original[view].sort_values(ENTITY_KEY).reset_index(drop=True),
            check_dtype=False,
        )
    now = snapshot(settings.features_dir)
    assert {k: now[k] for k in previous} == previous  # earlier days byte-identical


# =====================================================================================================
# 4. Disk full / read-only data dir during a job: one clear line, non-zero exit, nothing overwritten.
# =====================================================================================================
@contextlib.contextmanager
def tiny_tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` at ``path``, owned by this user: mounted directly as root, else through
    passwordless ``sudo -n`` (as on CI runners); otherwise skipped here and failed under CI."""
    path.mkdir(parents=True, exist_ok=True)
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if not shutil.which("mount") or (prefix and not shutil.which("sudo")):
        skip_or_fail("mounting a tmpfs needs root or passwordless sudo: disk-full case not runnable here")
    options = f"size={size_kb}k,mode=0755,uid={os.getuid()},gid={os.getgid()}"
    r = subprocess.run(
        [*prefix, "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if r.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here ({r.stderr.strip()}): disk-full case not runnable")
    try:
        yield path
    finally:
        subprocess.run([*prefix, "umount", "-l", str(path)], check=False)


def _fill(path: Path) -> None:
    """Fill the filesystem of ``path`` until ENOSPC."""
    chunk = b"\0" * 4096
    with contextlib.suppress(OSError), open(path / "filler", "wb") as fh:
        while True:
            fh.write(chunk)
            fh.flush()


def test_score_on_a_full_or_read_only_disk_fails_cleanly(site: Site, tmp_path: Path) -> None:
    import datetime as dt

    from jobs.score import score

    settings = private_copy(site, tmp_path / "data")
    day = dt.date.fromisoformat(site.last_date)
    prev = day - dt.timedelta(days=1)
    with tiny_tmpfs(settings.predictions_dir, 2048) as mnt:
        score(settings, prev)
        score(settings, day)
        before = snapshot(mnt)
        _fill(mnt)
        proc = run_cli(settings, "score", "--date", str(day))
        line = assert_one_line_error(proc, "no space left on device")
        after = snapshot(mnt)
        after.pop("filler"), before.pop("filler", None)
        assert after == before, "a failed run changed stored outputs"
        assert not tmp_leftovers(mnt)
        (mnt / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        proc = run_cli(settings, "score", "--date", str(day))
        line_ro = assert_one_line_error(proc, "read-only file system")
        assert snapshot(mnt) == before
    print(line, line_ro, sep="\n")


def test_target_is_a_file_where_a_directory_is_expected(site: Site, tmp_path: Path) -> None:
    """Works without root: predictions/ is a file, so nothing can be written under it."""
    settings = private_copy(site, tmp_path / "data")
    shutil.rmtree(settings.predictions_dir, ignore_errors=True)
    settings.predictions_dir.write_text("not a directory\n")
    proc = run_cli(settings, "score", "--date", site.last_date)
    assert_one_line_error(proc, str(settings.predictions_dir))
    assert settings.predictions_dir.read_text() == "not a directory\n"


# =====================================================================================================
# 5. Bad batches through the CLI (each gate is unit-tested in tests/unit/test_validation.py).
# =====================================================================================================
def test_cli_import_rejects_bad_batches_with_a_report_and_keeps_the_store(site: Site, tmp_path: Path) -> None:
    settings = private_copy(site, tmp_path / "data")
    raw_before = snapshot(settings.raw_dir)
    users = pd.read_parquet(settings.raw_dir / "users" / "users.parquet")
    known = users["user_id"].iloc[0]
    ts = pd.Timestamp(site.last_date, tz="UTC") - pd.Timedelta(hours=3)
    events = pd.DataFrame(
        {
            "user_id": [known, known, "no-such-user"],
            "timestamp": [ts, ts + pd.Timedelta(minutes=1), ts],  # alias of event_ts
            "event_type": ["login", "teleport", "login"],
        }
    )
    bad = tmp_path / "bad.csv"
    events.to_csv(bad, index=False)
    as_of = ["--as-of", f"{site.last_date}T00:00:00+00:00"]
    proc = run_cli(settings, "data", "import", "--events", str(bad), "--no-infer-users", *as_of)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert "batch rejected" in out and "'teleport' (1)" in out, out  # the unmapped type, with its count
    assert "unknown_user" in out and "event_type_values" in out, out  # the report names each failed gate
    assert snapshot(settings.raw_dir) == raw_before

    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"who,when\n\xff\xfe,\x00\n")
    proc = run_cli(settings, "data", "import", "--events", str(garbage), *as_of)
    assert_one_line_error(proc, "batch rejected: cannot read the input")
    assert snapshot(settings.raw_dir) == raw_before
    no_ts = tmp_path / "no_ts.csv"
    no_ts.write_text(f"user_id,event_type\n{known},login\n")
    proc = run_cli(settings, "data", "import", "--events", str(no_ts), *as_of)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "missing required columns ['event_ts']" in proc.stdout + proc.stderr
    assert snapshot(settings.raw_dir) == raw_before
    assert not tmp_leftovers(settings.data_dir)
