"""Synthetic TechITFactory data: users, learning events and payments with a learnable churn signal.

Every user gets a latent daily activity rate and a churn day drawn from a hazard that depends on
plan, acquisition channel, device, engagement and payment trouble. Engagement ramps down over the
weeks before the churn day, payments fail more often just before it, and nothing happens after it,
so "no activity in the next 30 days" is predictable from the recent past, as on a real site.
Generation is vectorised over users and streamed day by day, so memory stays flat at 1M users and
the output is identical for a given seed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from churn.schema import EVENTS_SCHEMA, PAYMENTS_SCHEMA, PLANS, USERS_SCHEMA

DAY_US = 86_400_000_000
PLAN_P = (0.5, 0.35, 0.15)
PLAN_PRICE = {"free": 0.0, "basic": 19.0, "premium": 49.0}
PLAN_HAZARD = np.array([1.35, 1.0, 0.7])
COUNTRIES = ("IN", "US", "GB", "DE", "BR", "NG", "CA", "AU")
COUNTRY_P = (0.35, 0.2, 0.1, 0.08, 0.08, 0.07, 0.06, 0.06)
CHANNELS = ("organic", "paid_ads", "referral", "social", "email")
CHANNEL_P = (0.35, 0.25, 0.15, 0.15, 0.10)
CHANNEL_HAZARD = np.array([0.9, 1.35, 0.75, 1.15, 1.0])
DEVICES = ("desktop", "mobile", "tablet")
DEVICE_P = (0.45, 0.45, 0.10)
DEVICE_HAZARD = np.array([0.9, 1.1, 1.0])
N_COURSES = 250
# Base daily hazard, tuned so that about 25% of the users active at a cutoff go quiet for 30 days.
BASE_HAZARD = 0.0065


@dataclass(frozen=True)
class GenerateResult:
    users: int
    events: int
    payments: int
    start: dt.date
    end: dt.date


def _utc_us(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000


def _ts_array(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("int64"), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def generate(
    out_dir: Path, *, users: int, days: int, seed: int, end_date: dt.date, on_day=None
) -> GenerateResult:
    """Write ``users/``, ``events/date=*/`` and ``payments/date=*/`` Parquet under ``out_dir``.

    Events cover the ``days`` days before ``end_date`` (exclusive), so features as of
    ``end_date`` see the whole history.
    """
    rng = np.random.default_rng(seed)
    start = end_date - dt.timedelta(days=days)
    start_us = _utc_us(start)

    # --- users ------------------------------------------------------------------------------
    ids = np.char.add("u", np.char.zfill(np.arange(users).astype(str), 7))
    user_ids = pa.array(ids, type=pa.string())
    # A quarter of the users predate the window (a living site), the rest sign up during it,
    # up to its last day, so every daily population has its share of newcomers.
    signup_day = rng.integers(-60, days, size=users)
    signup_us = start_us + signup_day * DAY_US + rng.integers(0, 18 * 3_600_000_000, size=users)
    plan = rng.choice(3, size=users, p=PLAN_P)
    country = rng.choice(len(COUNTRIES), size=users, p=COUNTRY_P)
    channel = rng.choice(len(CHANNELS), size=users, p=CHANNEL_P)
    device = rng.choice(len(DEVICES), size=users, p=DEVICE_P)

    # Latent engagement: sessions per day (lognormal, premium learners more active).
    rate = rng.lognormal(mean=-1.0, sigma=0.6, size=users) * np.array([0.85, 1.05, 1.25])[plan]
    fail_propensity = rng.beta(1.2, 14.0, size=users)  # chance a renewal fails
    hazard = (
        BASE_HAZARD
        * PLAN_HAZARD[plan]
        * CHANNEL_HAZARD[channel]
        * DEVICE_HAZARD[device]
        * np.clip((0.45 / rate) ** 0.5, 0.5, 2.5)
        * (1.0 + 4.0 * fail_propensity)
    )
    churn_day = signup_day + rng.exponential(1.0 / hazard)  # may lie beyond the window
    decay_len = rng.uniform(7, 28, size=users)
    billing_offset = rng.integers(0, 30, size=users)

    users_tbl = pa.table(
        {
            "user_id": user_ids,
            "signup_ts": _ts_array(signup_us),
            "plan": pa.array(np.array(PLANS)[plan]),
            "country": pa.array(np.array(COUNTRIES)[country]),
            "acquisition_channel": pa.array(np.array(CHANNELS)[channel]),
            "device": pa.array(np.array(DEVICES)[device]),
        },
        schema=USERS_SCHEMA,
    )
    (out_dir / "users").mkdir(parents=True, exist_ok=True)
    pq.write_table(users_tbl, out_dir / "users" / "users.parquet", compression="zstd")

    n_events = n_payments = 0
    types = np.array(["login", "course_view", "video_watch", "quiz_attempt", "course_complete", "logout"])
    paid = plan > 0
    price = np.array([PLAN_PRICE[p] for p in PLANS])[plan]
    for d in range(days):
        day = start + dt.timedelta(days=d)
        day_us = start_us + d * DAY_US
        alive = (signup_day <= d) & (d < churn_day)
        # Engagement ramps down to 15% over the weeks before a user's churn day.
        to_churn = churn_day - d
        decay = np.where(to_churn < decay_len, 0.15 + 0.85 * np.clip(to_churn / decay_len, 0, 1), 1.0)
        season = (0.8 if day.weekday() >= 5 else 1.0) * (1.0 + 0.1 * np.sin(2 * np.pi * d / 91.0))
        lam = np.where(alive, rate * decay * season * rng.gamma(4.0, 0.25, size=users), 0.0)
        sessions = rng.poisson(lam)
        sessions[(signup_day == d) & (sessions == 0)] = 1  # everyone logs in on signup day
        sess_user = np.repeat(np.arange(users), sessions)
        n_s = sess_user.size
        if n_s:
            # Sessions start by 20:00 so that even long ones end the same day, after signup.
            sess_start = np.maximum(
                day_us + rng.integers(0, 20 * 3_600_000_000, size=n_s),
                signup_us[sess_user] + rng.integers(1_000_000, 3_600_000_000, size=n_s),
            )
            k_view = 1 + rng.poisson(1.0, size=n_s)
            k_video = rng.poisson(1.4, size=n_s)
            k_quiz = rng.binomial(1, 0.3, size=n_s)
            k_done = rng.binomial(1, 0.04, size=n_s)
            counts = np.stack([np.ones(n_s, int), k_view, k_video, k_quiz, k_done, np.ones(n_s, int)], axis=1)
            per_sess = counts.sum(axis=1)
            ev_sess = np.repeat(np.arange(n_s), per_sess)
            # Event types in session order: login, views, videos, quizzes, completions, logout.
            ev_type = np.repeat(np.tile(np.arange(6), n_s), counts.ravel())
            pos = np.arange(ev_sess.size) - np.repeat(np.cumsum(per_sess) - per_sess, per_sess)
            ev_ts = sess_start[ev_sess] + pos * rng.integers(30_000_000, 480_000_000, size=ev_sess.size)
            ev_user = sess_user[ev_sess]
            course = rng.integers(0, N_COURSES, size=ev_sess.size)
            has_course = (ev_type >= 1) & (ev_type <= 4)
            minutes = np.where(ev_type == 2, np.round(rng.gamma(2.0, 6.0, size=ev_sess.size), 1), np.nan)
            course_ids = np.char.add("c", np.char.zfill(course.astype(str), 4))
            events = pa.table(
                {
                    "user_id": user_ids.take(pa.array(ev_user)),
                    "event_ts": _ts_array(ev_ts),
                    "event_type": pa.array(types[ev_type]),
                    "course_id": pa.array(np.where(has_course, course_ids, None)),
                    "minutes": pa.array(minutes, from_pandas=True),
                },
                schema=EVENTS_SCHEMA,
            )
            _write_partition(out_dir / "events", day, events)
            n_events += events.num_rows

        # Monthly renewals for paid users still subscribed; failures cluster before churn.
        due = paid & (signup_day <= d) & (d < churn_day + 3) & ((d - signup_day - billing_offset) % 30 == 0)
        due &= d > signup_day
        pay_user = np.flatnonzero(due)
        if pay_user.size:
            near_churn = (churn_day[pay_user] - d) < 30
            p_fail = np.where(
                near_churn, np.maximum(fail_propensity[pay_user], 0.45), fail_propensity[pay_user]
            )
            u = rng.random(pay_user.size)
            status = np.where(u < p_fail, "failed", np.where(u > 0.985, "refunded", "succeeded"))
            pay_ts = day_us + rng.integers(0, DAY_US, size=pay_user.size)
            payments = pa.table(
                {
                    "user_id": user_ids.take(pa.array(pay_user)),
                    "payment_ts": _ts_array(np.maximum(pay_ts, signup_us[pay_user] + 1_000_000)),
                    "amount": pa.array(price[pay_user]),
                    "status": pa.array(status),
                    "plan": pa.array(np.array(PLANS)[plan[pay_user]]),
                },
                schema=PAYMENTS_SCHEMA,
            )
            _write_partition(out_dir / "payments", day, payments)
            n_payments += payments.num_rows
        if on_day is not None:
            on_day(d + 1)
    return GenerateResult(users, n_events, n_payments, start, end_date)


def _write_partition(root: Path, day: dt.date, table: pa.Table) -> None:
    path = root / f"date={day.isoformat()}"
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-0.parquet", compression="zstd")
