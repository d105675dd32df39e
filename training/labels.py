"""Churn labels from raw events: who was still active after each training cutoff.

A user eligible at cutoff T (midnight UTC) is *churned* if they have no event in
``[T, T + horizon)``. Eligible means active within ``settings.active_days`` before T (read from
``features/recency/date=T``): exactly the population batch scoring scores every day, so the model
is trained on the users it will be asked about. Users idle longer than that are left out: they
have, in effect, already churned, and would make the task look easier than it is. Cutoffs end
at the last date whose whole label window is observed, so the most recent ``horizon`` days never
produce labels (their outcome is still unknown).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pyarrow as pa

from churn.errors import DataError, NotEnoughDataError
from churn.layout import partition_dates, partition_files
from churn.policies import LabelPolicy
from churn.schema import ENTITY_KEY
from churn.settings import Settings

MIN_CUTOFFS = 3
"""Train needs at least one cutoff, plus one for validation and one for test."""


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
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        return con.sql(
            f"SELECT DISTINCT {ENTITY_KEY} FROM read_parquet($files, hive_partitioning=false)", params={"files": files}
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise DataError(f"cannot read raw events: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def choose_cutoffs(settings: Settings) -> list[dt.date]:
    """``n_cutoffs`` dates ``cutoff_step_days`` apart, oldest first, the last fully observed.

    The latest cutoff is ``last_event_day + 1 - horizon``: its label window ``[T, T+horizon)``
    ends exactly with the data. Every cutoff must have a built feature partition.
    """
    if settings.n_cutoffs < MIN_CUTOFFS:
        raise NotEnoughDataError(
            f"n_cutoffs={settings.n_cutoffs}: need at least {MIN_CUTOFFS} (train, validation, test)"
        )
    days = event_days(settings)
    if not days:
        raise NotEnoughDataError(f"no events under {settings.layout.raw_table('events')}: run `churn data generate`")
    latest = LabelPolicy.from_settings(settings).latest_cutoff(days[-1])
    cutoffs = [latest - dt.timedelta(days=k * settings.cutoff_step_days) for k in range(settings.n_cutoffs)][
        ::-1
    ]
    built = set(partition_dates(settings.layout.feature_view_dir("profile")))
    usable = [c for c in cutoffs if c in built and c > days[0]]
    if len(usable) < MIN_CUTOFFS or usable[-1] != latest:
        span = f"{days[0]}..{days[-1]}"
        raise NotEnoughDataError(
            f"not enough history for training: events {span} give cutoffs "
            f"{', '.join(map(str, cutoffs))} but only {len(usable)} have feature partitions "
            f"(need {MIN_CUTOFFS}, latest {latest}); generate more days, lower CHURN_N_CUTOFFS/"
            "CHURN_CUTOFF_STEP_DAYS, or run `churn features build`"
        )
    return usable


def build_labels(settings: Settings, cutoffs: list[dt.date]) -> pd.DataFrame:
    """One row per (in-scope user, cutoff): ``user_id``, ``cutoff`` (date), ``churned`` (0/1)."""
    policy = LabelPolicy.from_settings(settings)
    horizon = dt.timedelta(days=policy.horizon_days)
    event_root = settings.layout.raw_table("events")
    available = set(event_days(settings))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    frames = []
    try:
        for cutoff in cutoffs:
            scope = settings.layout.feature_partition("recency", cutoff)
            files = [str(p) for p in partition_files(event_root, set(policy.window_days(cutoff)) & available)]
            start = dt.datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=dt.UTC)
            active_sql = (
                f"SELECT DISTINCT {ENTITY_KEY} FROM read_parquet($files) "
                "WHERE event_ts >= $start AND event_ts < $end"
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
