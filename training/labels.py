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

from churn.errors import NotEnoughDataError
from churn.schema import ENTITY_KEY
from churn.settings import Settings
from jobs.aggregate import partition_dates

MIN_CUTOFFS = 3
"""Train needs at least one cutoff, plus one for validation and one for test."""




def choose_cutoffs(settings: Settings) -> list[dt.date]:
    """``n_cutoffs`` dates ``cutoff_step_days`` apart, oldest first, the last fully observed.

    The latest cutoff is ``last_event_day + 1 - horizon``: its label window ``[T, T+horizon)``
    ends exactly with the data. Every cutoff must have a built feature partition.
    """
    if settings.n_cutoffs < MIN_CUTOFFS:
        raise NotEnoughDataError(
            f"n_cutoffs={settings.n_cutoffs}: need at least {MIN_CUTOFFS} (train, validation, test)"
        )
    event_days = partition_dates(settings.raw_dir / "events")
    if not event_days:
        raise NotEnoughDataError(f"no events under {settings.raw_dir / 'events'}: run `churn data generate`")
    latest = event_days[-1] + dt.timedelta(days=1 - settings.churn_horizon_days)
    cutoffs = [latest - dt.timedelta(days=k * settings.cutoff_step_days) for k in range(settings.n_cutoffs)][
        ::-1
    ]
    built = set(partition_dates(settings.features_dir / "profile"))
    usable = [c for c in cutoffs if c in built and c > event_days[0]]
    if len(usable) < MIN_CUTOFFS or usable[-1] != latest:
        span = f"{event_days[0]}..{event_days[-1]}"
        raise NotEnoughDataError(
            f"not enough history for training: events {span} give cutoffs "
            f"{', '.join(map(str, cutoffs))} but only {len(usable)} have feature partitions "
            f"(need {MIN_CUTOFFS}, latest {latest}); generate more days, lower CHURN_N_CUTOFFS/"
            "CHURN_CUTOFF_STEP_DAYS, or run `churn features build`"
        )
    return usable


def build_labels(settings: Settings, cutoffs: list[dt.date]) -> pd.DataFrame:
    """One row per (in-scope user, cutoff): ``user_id``, ``cutoff`` (date), ``churned`` (0/1)."""
    horizon = dt.timedelta(days=settings.churn_horizon_days)
    event_root = settings.raw_dir / "events"
    event_days = set(partition_dates(event_root))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    frames = []
    try:
        for cutoff in cutoffs:
            scope = settings.features_dir / "recency" / f"date={cutoff.isoformat()}"
            days = [cutoff + dt.timedelta(days=i) for i in range(horizon.days)]
            files = [
                str(p)
                for d in days
                if d in event_days
                for p in sorted((event_root / f"date={d}").glob("*.parquet"))
            ]
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
                "active_days": float(settings.active_days),
            }
            if files:
                params["files"] = files
            df = con.execute(
                f"""
                WITH scope AS (SELECT DISTINCT {ENTITY_KEY} FROM read_parquet($scope)
                               WHERE days_since_last_activity <= $active_days),
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
