"""Rollout behaviour that needs a second Python process: routing hashes that do not depend on the
interpreter, and a prediction-log writer killed with SIGKILL mid-flush."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq

from jobs.compare import read_prediction_log
from service.routing import assign_arm, bucket
from tests.support.env import REPO as ROOT
from tests.support.settings import make_settings


def test_bucket_is_process_independent() -> None:
    # not Python's randomised hash(): a fresh interpreter computes the same value
    code = "from service.routing import bucket; print(repr(bucket('u0000042', 'salt')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout) == bucket("u0000042", "salt")
    assert assign_arm("anyone", 0.0, "s") == "production" and assign_arm("anyone", 1.0, "s") == "challenger"


WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    from service.prediction_log import LogRecord, PredictionLog
    log = PredictionLog(Path(sys.argv[1]), flush_interval_s=3600, max_records=10**9)
    feats = {f"f{i}": float(i) for i in range(10)}
    names = tuple(feats)
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    print("ready", flush=True)
    while True:
        for i in range(5000):
            rec = LogRecord(now, f"r{i}", f"u{i}", "v1", "production", "served", 0.5, "medium", True, feats, names,
                            "predict")
            log.append(rec)
        log.flush()
    """
)


def test_prediction_log_survives_a_writer_killed_mid_flush(tmp_path: Path) -> None:
    """SIGKILL a writer that flushes non-stop, several times at different moments: every file under
    a final name is complete, valid Parquet; leftovers are only hidden temp files."""
    root = tmp_path / "prediction_log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    saw_tmp = False
    for delay in (0.05, 0.13, 0.21, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], cwd=ROOT, env=env, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            before = len(list(root.rglob("part-*.parquet")))
            deadline = time.monotonic() + 20
            while len(list(root.rglob("part-*.parquet"))) == before and time.monotonic() < deadline:
                time.sleep(0.01)  # one flush done: the next one is under way
            time.sleep(delay)
            saw_tmp = saw_tmp or bool(list(root.rglob(".tmp-*")))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        saw_tmp = saw_tmp or bool(list(root.rglob(".tmp-*")))
    finals = sorted(root.rglob("part-*.parquet"))
    assert finals, "the writer never completed a flush"
    for f in finals:
        assert pq.read_table(f).num_rows == 5000  # every final file whole and readable
    for f in root.rglob("*"):
        assert f.is_dir() or f.name.startswith(("part-", ".tmp-part-")), f
    # the compare reader only ever globs final names
    settings = make_settings(tmp_path)
    assert len(read_prediction_log(settings, dt.date(2026, 3, 1))) == 5000 * len(finals)
