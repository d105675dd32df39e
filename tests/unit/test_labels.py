"""Labels and the time split: window boundaries, scope, the cutoff rule (whole history, weekly, row budget,
no label window of one split overlapping another's), ordering of splits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from churn.schema import EVENTS_SCHEMA
from tests.support.settings import make_settings
from training.dataset import budgeted_labels, time_split
from training.labels import (
    CutoffPlan,
    NotEnoughDataError,
    apply_row_budget,
    build_labels,
    choose_cutoffs,
    plan_cutoffs,
)

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


SMALL_TEST = dt.date(2026, 10, 2)  # small store: events end 2026-10-31, so 2026-11-01 - 30 days
SMALL_FIRST_EVENT = dt.date(2026, 7, 4)


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def test_cutoffs_cover_the_whole_history_weekly(small_store) -> None:  # noqa: ANN001
    settings = make_settings(small_store.data_dir, min_history_days=7)
    plan = choose_cutoffs(settings)
    assert plan.test == SMALL_TEST  # the last fully observed cutoff
    assert plan.valid == SMALL_TEST - dt.timedelta(days=30)  # its labels end where the test window starts
    assert plan.train[-1] == plan.valid - dt.timedelta(days=30)
    assert {(b - a).days for a, b in zip(plan.train, plan.train[1:], strict=False)} == {7}
    # back to the first date with a week of events before it: the whole history
    assert plan.train[0] - dt.timedelta(days=7) < SMALL_FIRST_EVENT + dt.timedelta(days=7) <= plan.train[0]
    assert len(plan.train) == 4
    assert choose_cutoffs(make_settings(small_store.data_dir, min_history_days=7, n_cutoffs=2)).train == plan.train[-2:]


def test_row_budget_keeps_the_newest_training_cutoffs(small_store) -> None:  # noqa: ANN001
    settings = make_settings(small_store.data_dir, min_history_days=7)
    plan = choose_cutoffs(settings)
    rows = {c: len(build_labels(settings, [c])) for c in plan.train}
    budget = rows[plan.train[-1]] + rows[plan.train[-2]]
    labels, kept = budgeted_labels(
        make_settings(small_store.data_dir, min_history_days=7, max_training_rows=budget), plan
    )
    assert kept.train == plan.train[-2:] and kept.dropped == plan.train[:-2]
    assert set(labels["cutoff"]) == {*plan.train[-2:], plan.valid, plan.test}
    assert (labels["cutoff"].isin(kept.train)).sum() == budget
    # a budget below the newest cutoff's rows keeps that cutoff, sampled down to the budget
    small = make_settings(small_store.data_dir, min_history_days=7, max_training_rows=50)
    labels, kept = budgeted_labels(small, plan)
    assert kept.train == (plan.train[-1],) and kept.sampled_rows == 50
    assert (labels["cutoff"] == plan.train[-1]).sum() == 50
    assert (labels["cutoff"] == plan.test).sum() == len(build_labels(settings, [plan.test]))


def test_apply_row_budget() -> None:
    train = tuple(T + dt.timedelta(days=7 * i) for i in range(4))
    plan = CutoffPlan(train=train, valid=T + dt.timedelta(days=60), test=T + dt.timedelta(days=90))
    rows = dict.fromkeys(train, 100)
    assert apply_row_budget(plan, rows, 0) == plan
    assert apply_row_budget(plan, rows, 250).train == train[-2:]
    assert apply_row_budget(plan, rows, 400).train == train
    assert apply_row_budget(plan, rows, 40).sampled_rows == 40


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    horizon=st.integers(1, 45),
    step=st.integers(1, 21),
    span=st.integers(1, 400),
    holes=st.sets(st.integers(0, 400), max_size=60),
    cap=st.integers(0, 10),
)
def test_no_label_window_overlaps_another_split(horizon: int, step: int, span: int, holes: set[int], cap: int) -> None:
    """Whatever the horizon, step, history and missing partitions: train windows end by validation,
    validation's by test, test's by the last event day, and cutoffs stay on the weekly grid."""
    usable = [T + dt.timedelta(days=i) for i in range(span) if i not in holes]
    last_event = T + dt.timedelta(days=span + 10)
    plan = plan_cutoffs(usable, last_event, horizon_days=horizon, step_days=step, max_train_cutoffs=cap)
    if plan is None:
        return
    h = dt.timedelta(days=horizon)
    assert plan.test + h <= last_event + dt.timedelta(days=1)  # fully observed
    assert plan.valid + h <= plan.test
    assert plan.train and all(c + h <= plan.valid for c in plan.train)
    assert all((plan.train[-1] - c).days % step == 0 for c in plan.train)
    assert set(plan.all) <= set(usable) and plan.all == sorted(plan.all)
    assert cap == 0 or len(plan.train) <= cap
    # newest possible choices: nothing usable lies between the bound and the chosen date
    assert not [d for d in usable if plan.test < d <= last_event + dt.timedelta(days=1) - h]
    assert not [d for d in usable if plan.valid < d <= plan.test - h]


def test_validation_and_test_rule_on_a_gappy_history() -> None:
    usable = [d for d in _days(T, T + dt.timedelta(days=200)) if d.day != 15]
    last = T + dt.timedelta(days=200)
    plan = plan_cutoffs(usable, last, horizon_days=30, step_days=7)
    assert plan is not None
    assert plan.test == last + dt.timedelta(days=1 - 30)
    assert plan.valid == plan.test - dt.timedelta(days=30)
    # validation is the newest usable date at least a horizon before test, even with a hole there
    holey = [d for d in usable if d != plan.valid]
    moved = plan_cutoffs(holey, last, horizon_days=30, step_days=7)
    assert moved is not None and moved.valid == plan.valid - dt.timedelta(days=1)
    assert plan_cutoffs(usable[:60], usable[59], horizon_days=30, step_days=7) is None


def test_not_enough_history_is_a_clear_error(small_store, tmp_path: Path) -> None:  # noqa: ANN001
    too_short = make_settings(small_store.data_dir, min_history_days=60)
    with pytest.raises(NotEnoughDataError, match="not enough history"):
        choose_cutoffs(too_short)
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
    # explicit validation/test cutoffs: training is everything before validation
    train, valid, test = time_split(frame, cutoffs, valid=cutoffs[2], test=cutoffs[4])
    assert set(train["cutoff"]) == set(cutoffs[:2]) and set(valid["cutoff"]) == {cutoffs[2]}
