"""Churn labels from raw events, and which cutoffs train, validate and test.

A user eligible at cutoff T (midnight UTC) is *churned* if they have no event in
``[T, T + horizon)``. Eligible means active within ``settings.active_days`` before T (read from
``features/recency/date=T``): exactly the population batch scoring scores every day, so the model
is trained on the users it will be asked about. Users idle longer than that are left out: they
have, in effect, already churned, and would make the task look easier than it is.

The cutoff rule (H = ``churn_horizon_days``, S = ``cutoff_step_days``). A date is *usable* as a
cutoff if every needed feature view has a partition for it and raw events cover at least
``min_history_days`` days before it (so rolling windows are filled, as they are when serving).

* **test** = the newest usable date whose label window is fully observed:
  ``≤ last_event_day + 1 − H``.
* **validation** = the newest usable date ``≤ test − H``: its label window ``[V, V + H)`` ends
  before the test window starts. Validation chooses things (early stopping, the LightGBM
  configuration, calibration, the threshold, the served model); if its labels overlapped the
  test window, those choices would already know the test period and the test score would flatter.
* **train** = usable dates ``A, A − S, A − 2S, …`` back to the oldest usable one, where A is the
  newest usable date ``≤ V − H``. So no training label window overlaps the validation window
  (every train cutoff ``c`` has ``c + H ≤ V``), and none overlaps the test window either.
* Then the caps, newest cutoffs kept: ``n_cutoffs`` (if > 0) on the number of training cutoffs,
  and ``max_training_rows`` (if > 0) on their rows (see :func:`apply_row_budget`).

With the defaults (H = 30, S = 7) the training set covers the whole history at weekly steps, and
the newest 2H days before the test cutoff feed only validation and test: the price of honest
model selection. The newest H days never produce labels (their outcome is still unknown).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pandas as pd
import pyarrow as pa

from churn.errors import DataError, NotEnoughDataError
from churn.layout import partition_dates, partition_files
from churn.policies import LabelPolicy
from churn.schema import ENTITY_KEY, FEATURE_VIEWS
from churn.settings import Settings
from churn.storage import duckdb_connect

SCOPE_VIEW = "recency"
"""The view whose partition at T lists the eligible users (``days_since_last_activity``)."""


def event_days(settings: Settings) -> list[dt.date]:
    return partition_dates(settings.layout.raw_table("events"))


def labels_mature(settings: Settings, date: dt.date) -> tuple[bool, str]:
    """Whether raw events cover the whole label window of ``date`` (and why not)."""
    days = event_days(settings)
    if not days:
        return False, f"no raw events under {settings.layout.raw_table('events')}"
    return LabelPolicy.from_settings(settings).mature(date, days[-1])


def active_users(settings: Settings, start: dt.date, end: dt.date) -> pa.Table:
    """Distinct ``user_id`` with any event in ``[start, end)``: the users who did NOT churn."""
    days = {d for d in event_days(settings) if start <= d < end}
    files = [str(f) for f in partition_files(settings.layout.raw_table("events"), days)]
    if not files:
        return pa.table({ENTITY_KEY: pa.array([], pa.string())})
    con = duckdb_connect(settings.data_dir, config=settings.duckdb_config)
    try:
        con.execute("SET enable_progress_bar = false")
        return con.execute(
            f"SELECT DISTINCT {ENTITY_KEY} FROM read_parquet($files, hive_partitioning=false)", {"files": files}
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise DataError(f"cannot read raw events: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


@dataclass(frozen=True)
class CutoffPlan:
    """The cutoffs of one training run, each list oldest first; see the module docstring."""

    train: tuple[dt.date, ...]
    valid: dt.date
    test: dt.date
    sampled_rows: int | None = None
    """Set when the newest training cutoff alone exceeded the row budget and was sampled down."""
    dropped: tuple[dt.date, ...] = ()
    """Training cutoffs the history allowed but the caps (n_cutoffs, row budget) left out."""

    @property
    def all(self) -> list[dt.date]:
        return [*self.train, self.valid, self.test]


def _newest_at_or_before(days: list[dt.date], bound: dt.date) -> dt.date | None:
    older = [d for d in days if d <= bound]
    return older[-1] if older else None


def plan_cutoffs(
    usable: Iterable[dt.date],
    last_event_day: dt.date,
    *,
    horizon_days: int,
    step_days: int,
    max_train_cutoffs: int = 0,
) -> CutoffPlan | None:
    """The split rule on the usable dates alone (pure, so it can be property-tested).

    ``None`` when the dates cannot give one training cutoff, a validation and a test cutoff.
    """
    if step_days < 1:
        raise ValueError("cutoff_step_days must be at least 1")
    days = sorted(set(usable))
    horizon = dt.timedelta(days=horizon_days)
    test = _newest_at_or_before(days, last_event_day + dt.timedelta(days=1) - horizon)
    valid = _newest_at_or_before(days, test - horizon) if test else None
    anchor = _newest_at_or_before(days, valid - horizon) if valid else None
    if test is None or valid is None or anchor is None:
        return None
    available = set(days)
    grid = [anchor - dt.timedelta(days=k * step_days) for k in range((anchor - days[0]).days // step_days + 1)]
    train = sorted(c for c in grid if c in available)
    kept = train[-max_train_cutoffs:] if max_train_cutoffs > 0 else train
    return CutoffPlan(train=tuple(kept), valid=valid, test=test, dropped=tuple(train[: len(train) - len(kept)]))


def apply_row_budget(plan: CutoffPlan, rows: dict[dt.date, int], max_rows: int) -> CutoffPlan:
    """Keep the newest training cutoffs whose rows fit in ``max_rows`` (0 = no budget).

    Recent behaviour is the most like tomorrow's, so the oldest cutoffs go first. Whole cutoffs
    are kept; only if the newest alone exceeds the budget is it kept sampled down to the budget.
    """
    if max_rows <= 0:
        return plan
    kept: list[dt.date] = []
    total = 0
    for c in sorted(plan.train, reverse=True):
        if total + rows.get(c, 0) > max_rows:
            break
        kept.append(c)
        total += rows.get(c, 0)
    sampled = None
    if not kept and plan.train:
        kept, sampled = [max(plan.train)], max_rows
    dropped = sorted({*plan.dropped, *(set(plan.train) - set(kept))})
    return CutoffPlan(
        train=tuple(sorted(kept)), valid=plan.valid, test=plan.test, sampled_rows=sampled, dropped=tuple(dropped)
    )


def usable_cutoffs(settings: Settings, views: Iterable[str] | None = None) -> list[dt.date]:
    """Dates with a partition in every needed view and ``min_history_days`` of events before them."""
    days = event_days(settings)
    if not days:
        return []
    needed = {SCOPE_VIEW, *(FEATURE_VIEWS if views is None else views)}
    built = set.intersection(*(set(partition_dates(settings.layout.feature_view_dir(v))) for v in sorted(needed)))
    earliest = days[0] + dt.timedelta(days=max(int(settings.min_history_days), 1))
    return sorted(d for d in built if d >= earliest)


def choose_cutoffs(settings: Settings, views: Iterable[str] | None = None) -> CutoffPlan:
    """The train/validation/test cutoffs for ``settings`` (before the row budget).

    ``views`` are the feature views the feature service reads (default: every view in
    ``churn.schema``); a cutoff needs a partition in each, plus the scope view.
    """
    days = event_days(settings)
    if not days:
        raise NotEnoughDataError(f"no events under {settings.layout.raw_table('events')}: run `churn data generate`")
    policy = LabelPolicy.from_settings(settings)
    usable = usable_cutoffs(settings, views)
    plan = plan_cutoffs(
        usable,
        days[-1],
        horizon_days=policy.horizon_days,
        step_days=int(settings.cutoff_step_days),
        max_train_cutoffs=int(settings.n_cutoffs),
    )
    if plan is None:
        span = f"{days[0]}..{days[-1]}"
        have = f"{usable[0]}..{usable[-1]}" if usable else "none"
        raise NotEnoughDataError(
            f"not enough history for training: events {span}, usable cutoffs {have} (a feature "
            f"partition and CHURN_MIN_HISTORY_DAYS={settings.min_history_days} days of events before "
            f"them); need a test cutoff <= {policy.latest_cutoff(days[-1])}, a validation cutoff "
            f"{policy.horizon_days} days before it and a training cutoff {policy.horizon_days} days "
            "before that: generate more days, lower CHURN_MIN_HISTORY_DAYS, or run `churn features build`"
        )
    return plan


def build_labels(settings: Settings, cutoffs: list[dt.date]) -> pd.DataFrame:
    """One row per (in-scope user, cutoff): ``user_id``, ``cutoff`` (date), ``churned`` (0/1)."""
    policy = LabelPolicy.from_settings(settings)
    horizon = dt.timedelta(days=policy.horizon_days)
    event_root = settings.layout.raw_table("events")
    available = set(event_days(settings))
    con = duckdb_connect(settings.data_dir, config=settings.duckdb_config)
    con.execute("SET TimeZone = 'UTC'")
    frames = []
    try:
        for cutoff in cutoffs:
            scope = settings.layout.feature_partition("recency", cutoff)
            files = [str(p) for p in partition_files(event_root, set(policy.window_days(cutoff)) & available)]
            start = dt.datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=dt.UTC)
            active_sql = (
                f"SELECT DISTINCT {ENTITY_KEY} FROM read_parquet($files) WHERE event_ts >= $start AND event_ts < $end"
                if files
                else f"SELECT NULL::VARCHAR AS {ENTITY_KEY} WHERE false"
            )
            params = {
                "scope": f"{scope}/*.parquet",
                "start": start,
                "end": start + horizon,
            }
            if files:
                params["files"] = files
            df = con.execute(
                f"""
                WITH scope AS (SELECT DISTINCT {ENTITY_KEY} FROM read_parquet($scope)
                               WHERE {policy.eligible_sql()}),
                     active AS ({active_sql})
                SELECT s.{ENTITY_KEY}, CAST(a.{ENTITY_KEY} IS NULL AS INTEGER) AS churned
                FROM scope s LEFT JOIN active a USING ({ENTITY_KEY})
                ORDER BY s.{ENTITY_KEY}
                """,
                params,
            ).df()
            df.insert(1, "cutoff", cutoff)
            frames.append(df)
    finally:
        con.close()
    out = pd.concat(frames, ignore_index=True)
    out["churned"] = out["churned"].astype("int8")
    return out
