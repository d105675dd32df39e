"""Housekeeping: prediction-log retention and stale temp files, without touching anything else."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from jobs.housekeeping import housekeeping, prune_prediction_log
from tests.support.settings import make_settings

TODAY = dt.date(2026, 11, 29)


def _day(root: Path, day: dt.date) -> Path:
    part = root / f"date={day}"
    part.mkdir(parents=True)
    (part / "part-000000-1-0.parquet").write_bytes(b"PAR1")
    return part


def _age(path: Path, hours: float) -> None:
    t = time.time() - hours * 3600
    os.utime(path, (t, t))


def test_prediction_log_keeps_exactly_the_retention_window(tmp_path: Path) -> None:
    root = tmp_path / "prediction_log"
    days = [TODAY - dt.timedelta(days=n) for n in (0, 29, 30, 31, 45)]
    for d in days:
        _day(root, d)
    (root / "date=not-a-date").mkdir()  # not ours: left alone
    removed = prune_prediction_log(root, TODAY, retention_days=30)
    assert removed == [str(TODAY - dt.timedelta(days=45)), str(TODAY - dt.timedelta(days=31))]
    kept = sorted(p.name for p in root.iterdir())
    assert kept == sorted([f"date={d}" for d in days[:3]] + ["date=not-a-date"])
    assert prune_prediction_log(root, TODAY, retention_days=0) == []  # 0 keeps everything


def test_housekeeping_removes_only_old_temp_leftovers(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "data", prediction_log_retention_days=10, tmp_max_age_hours=6)
    preds = s.data_dir / "predictions" / f"date={TODAY}"
    preds.mkdir(parents=True)
    final = preds / "predictions.csv"
    final.write_text("user_id\n")
    old_file = preds / ".tmp-predictions.csv.abc"
    old_file.write_text("partial")
    old_dir = s.data_dir / "features" / ".tmp-engagement-xyz"
    old_dir.mkdir(parents=True)
    (old_dir / "x.parquet").write_bytes(b"x")
    young = preds / ".tmp-predictions.parquet.def"  # a writer still running elsewhere
    young.write_text("in progress")
    _age(old_file, 7)
    _age(old_dir, 8)
    _age(young, 1)
    _day(s.prediction_log_dir, TODAY - dt.timedelta(days=11))
    kept_day = _day(s.prediction_log_dir, TODAY - dt.timedelta(days=10))

    res = housekeeping(s, TODAY)

    assert res.pruned_days == [str(TODAY - dt.timedelta(days=11))] and res.tmp_removed == 2
    assert not old_file.exists() and not old_dir.exists()
    assert young.exists() and final.read_text() == "user_id\n" and kept_day.exists()
    assert not list(s.prediction_log_dir.glob(".tmp-*"))  # the pruned day is gone, not parked
    assert "1 prediction-log day(s) pruned" in res.summary()
