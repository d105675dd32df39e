"""Labels and the time split: window boundaries, scope, cutoff choice, ordering of splits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.schema import EVENTS_SCHEMA
from tests.conftest import make_settings
from training.dataset import time_split
from training.labels import NotEnoughDataError, build_labels, choose_cutoffs

T = dt.date(2026, 3, 1)


def _utc(day: dt.date, hours: float = 0.0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(hours=hours)


def _write_events(root: Path, rows: list[tuple[str, dt.datetime]]) -> None:
    by_day: dict[dt.date, list[tuple[str, dt.datetime]]] = {}
    for uid, ts in rows:
        by_day.setdefault(ts.date(), []).append((uid, ts))
    for day, items in by_day.items():
        table = pa.table(
            {
                "user_id": [u for u, _ in items],
                "event_ts": pa.array([t for _, t in items], pa.timestamp("us", tz="UTC")),
                "event_type": ["login"] * len(items),
                "course_id": [None] * len(items),
                "minutes": [1.0] * len(items),
            },
            schema=EVENTS_SCHEMA,
        )
        out = root / "raw" / "events" / f"date={day}"
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out / "part-0.parquet")


def _write_scope(root: Path, day: dt.date, users: list[str], idle: dict[str, float] | None = None) -> None:
    """Recency rows at ``day``: every user active 1 day ago unless ``idle`` says otherwise."""
    idle = idle or {}
    out = root / "features" / "recency" / f"date={day}"
    out.mkdir(parents=True, exist_ok=True)
    days = [idle.get(u, 1.0) for u in users]
    pq.write_table(pa.table({"user_id": users, "days_since_last_activity": days}), out / "part-0.parquet")


def test_label_window_is_half_open_and_scoped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    _write_scope(
        tmp_path,
        T,
        ["at_start", "last_minute", "after_window", "before_only", "silent", "long_gone"],
        idle={"long_gone": 45.0},  # idle longer than active_days (30): not scored, so not trained on
    )
    _write_events(
        tmp_path,
        [
            ("before_only", _utc(T, -1)),  # activity before T does not count
            ("at_start", _utc(T)),  # an event exactly at T counts
            ("last_minute", _utc(T + dt.timedelta(days=29), 23.99)),
            ("after_window", _utc(T + dt.timedelta(days=30))),  # T + horizon is outside
            ("not_in_scope", _utc(T, 5)),  # active but no feature row at T: not a training row
        ],
    )
    labels = build_labels(settings, [T]).set_index("user_id")["churned"].to_dict()
    assert labels == {"at_start": 0, "last_minute": 0, "after_window": 1, "before_only": 1, "silent": 1}


def test_cutoffs_end_where_labels_are_fully_observed(small_store) -> None:  # noqa: ANN001
    cutoffs = choose_cutoffs(small_store)
    # events end 2026-10-31 (exclusive end 2026-11-01): last cutoff = 2026-11-01 - 30 days
    assert cutoffs[-1] == dt.date(2026, 10, 2)
    assert len(cutoffs) == small_store.n_cutoffs
    steps = {(b - a).days for a, b in zip(cutoffs, cutoffs[1:], strict=False)}
    assert steps == {small_store.cutoff_step_days}


def test_not_enough_cutoffs_is_a_clear_error(small_store, tmp_path: Path) -> None:  # noqa: ANN001
    too_few = make_settings(small_store.data_dir, n_cutoffs=2)
    with pytest.raises(NotEnoughDataError, match="at least 3"):
        choose_cutoffs(too_few)
    too_long = make_settings(small_store.data_dir, cutoff_step_days=60)
    with pytest.raises(NotEnoughDataError, match="not enough history"):
        choose_cutoffs(too_long)
    with pytest.raises(NotEnoughDataError, match="no events"):
        choose_cutoffs(make_settings(tmp_path))


def test_time_split_orders_cutoffs() -> None:
    cutoffs = [T + dt.timedelta(days=14 * i) for i in range(5)]
    frame = pd.DataFrame({"cutoff": [c for c in cutoffs[::-1] for _ in range(3)], "churned": 0})
    train, valid, test = time_split(frame, cutoffs[::-1])  # input order must not matter
    assert set(train["cutoff"]) == set(cutoffs[:3])
    assert set(valid["cutoff"]) == {cutoffs[3]} and set(test["cutoff"]) == {cutoffs[4]}
    assert train["cutoff"].max() < valid["cutoff"].min() < test["cutoff"].min()
    assert len(train) + len(valid) + len(test) == len(frame)
