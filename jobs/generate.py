"""Synthetic TechITFactory data: users, learning events and payments, with a known true churn risk.

A churn model is only worth comparing against a world it cannot trivially solve, so churn here comes
from per-user, non-linear mechanisms rather than one log-linear hazard:

* every user has their own rhythm (a typical gap between active days: daily versus weekly learners);
  the chance of coming back rises with the time since the last visit, relative to that rhythm;
* a latent phase per user: ``NORMAL`` → ``DRIFTING`` (visits thin out relative to the user's own
  rhythm) → ``FADING`` (rare visits, rarer the longer the silence), with comebacks along the way.
  Starting to drift depends on plan × engagement (paying users who barely use the product cancel;
  free users who use it a lot hit the paywall and leave) and tenure × completions (completions
  bind established users, not newcomers);
* phases change at visits, and the visit shows it: NORMAL sessions always hold a video, DRIFTING
  sessions only browse, a FADING visit is a single glance (login, logout). So the hidden state at T
  is what the last visit showed; what stays uncertain is the future (will they come back?);
* finishing a course usually starts a ``BREAK`` (quiet for weeks, then back; newcomers who came for
  one course take much longer), so few recent completions is not simply bad news;
* weekly seasonality and fixed holiday periods lower everybody's activity without meaning churn;
* a renewal that fails right after another failed one often ends the subscription (``GONE``); a
  single failure barely matters;
* a small daily hazard of leaving for good (``GONE``), which nothing observable predicts.

Alongside the raw tables the generator writes the oracle: for every day T, each recently active
user's true probability of no event in ``[T, T + 30 days)`` given the latent state at the start of T.
It is computed in closed form (a forward pass over the latent phases along the "no event" path), so
it uses no random numbers and only information from before T. Random draws come from one stream
for the static user parameters and one stream per day, so a day's draws never depend on other days'
output. Generation is vectorised over users and streamed day by day, so memory stays flat at 1M
users and the output is identical for a given seed.

Interventions can be simulated too (``treatment=``, see :class:`Treatment`): each day, after the
oracle and before anything happens, a callback names the users acted on (treated) or held out
(control); an action wins a drifting or fading user back to their normal rhythm with a chance set
per action (and per plan), drawn from a stream of its own, so a run without treatment, or with
effects of zero, writes the very same bytes. The oracle then also gives each of those users'
churn probability with and without the action, the truth a measured uplift is compared with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from churn.layout import ORACLE_TABLE, PART_FILE, partition_dir
from churn.schema import EVENT_TYPES, EVENTS_SCHEMA, PAYMENTS_SCHEMA, PLANS, USERS_SCHEMA

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000

"""Folder under the output directory holding ``date=YYYY-MM-DD/part-0.parquet`` (user_id, p_churn)."""
ORACLE_HORIZON_DAYS = 30
"""The label horizon the oracle answers for: no event in ``[T, T + horizon)``."""
ORACLE_SCOPE_DAYS = 60
"""Oracle rows cover users active within this many days before T (wider than eligibility)."""
ORACLE_SCHEMA = pa.schema([("user_id", pa.string()), ("p_churn", pa.float32())])

BURN_IN_DAYS = 120
"""Days simulated before the window without writing output, so early users have a real past."""

# --- static user attributes ------------------------------------------------------------------
PLAN_P = (0.5, 0.35, 0.15)
PLAN_PRICE = np.array([0.0, 19.0, 49.0])
COUNTRIES = ("IN", "US", "GB", "DE", "BR", "NG", "CA", "AU")
COUNTRY_P = (0.35, 0.2, 0.1, 0.08, 0.08, 0.07, 0.06, 0.06)
CHANNELS = ("organic", "paid_ads", "referral", "social", "email")
CHANNEL_P = (0.35, 0.25, 0.15, 0.15, 0.10)
CHANNEL_HAZARD = np.array([0.9, 1.3, 0.75, 1.15, 1.0])
DEVICES = ("desktop", "mobile", "tablet")
DEVICE_P = (0.45, 0.45, 0.10)
DEVICE_HAZARD = np.array([0.95, 1.1, 1.0])
N_COURSES = 250

# --- rhythm: the gap between active days follows a discrete Weibull with a per-user scale ----------
RHYTHM_MEDIAN_DAYS = 3.0
RHYTHM_SIGMA = 0.8
RHYTHM_MIN_DAYS, RHYTHM_MAX_DAYS = 1.1, 20.0
RHYTHM_SHAPE = 2.0
"""Shape above 1: the return hazard rises with the gap, so regular users are overdue, not random."""
MAX_DAILY_ACTIVITY = 0.95

# --- calendar: weekly seasonality and fixed holiday periods (month, day) ranges -----------------
WEEKDAY_FACTOR = (1.0, 1.0, 0.97, 0.95, 0.85, 0.62, 0.72)
HOLIDAYS = (
    ((12, 21), (12, 31), 0.35),
    ((1, 1), (1, 3), 0.35),
    ((7, 27), (8, 9), 0.7),
    ((11, 26), (11, 29), 0.6),
)

# --- latent phases ----------------------------------------------------------------------------------
NORMAL, DRIFTING, FADING, BREAK, GONE = 0, 1, 2, 3, 4
FADE_BASE_HAZARD = 0.05
"""Daily NORMAL → DRIFTING hazard for a reference user; sets the overall churn rate."""
PLAN_ENGAGEMENT_SLOPE = np.array([-0.6, 1.2, 1.5])
"""Engagement's pull on the drift hazard per plan: paying users who barely use the product cancel,
while free users who use it a lot hit the paywall and leave."""
PLAN_HAZARD = np.array([1.25, 0.8, 0.65])
NEWCOMER_BOOST, NEWCOMER_DAYS = 2.0, 20.0
MAX_FADE_HAZARD = 0.5
COMPLETION_LOYALTY = 0.7
"""Per completion (up to LOYALTY_CAP), scaled by tenure: completions bind established users only."""
LOYALTY_CAP, LOYALTY_TENURE_DAYS = 3, 90.0
DRIFT_ACTIVITY = 0.33
"""DRIFTING users visit this fraction as often as their rhythm says: the visible first step out."""
LAST_LOOK_P = 0.35
"""Chance that a DRIFTING user's visit is their last look before FADING."""
DRIFT_RECOVERY = 0.15
"""Chance that a DRIFTING user's visit is a normal one again (back to NORMAL)."""
FADE_VISIT = 0.05
FADE_TAU_DAYS = 40.0
"""FADING users visit with a chance that dies away with the time since their last visit, so a long
silence means a user who is as good as gone, without a hidden "gone" switch."""
FADE_COMEBACK = 0.25
"""Chance that a FADING user's visit is a real comeback (a normal session, back to NORMAL)."""
SUDDEN_EXIT = 0.0005
"""Daily chance that a user leaves for good without any warning."""
BREAK_PROB = 0.8
BREAK_END = 1.0 / 20.0
"""Daily chance that a break ends with a visit; memoryless, so nobody knows when a user will be back."""
GRADUATE_SHARE = 0.75
"""How much slower newcomers come back from a break: many came for one course (a "graduation")."""
GRADUATE_TENURE_DAYS = 60.0

# --- payments ---------------------------------------------------------------------------------------
BILLING_DAYS = 30
FADE_FAIL_FLOOR = 0.25
STREAK_SHOCK = np.array([0.0, 0.02, 0.5, 0.8])
"""Chance that a visiting user cancels for good after the n-th consecutive failed renewal (capped):
a single failure is a card that expired, a second one in a row is a decision."""
REFUND_P = 0.015

# --- session content ----------------------------------------------------------------------------------
EXTRA_SESSIONS = 0.35
VIEWS_PER_SESSION = 0.9
VIDEOS_PER_SESSION = 1.2
QUIZ_P = 0.3
COMPLETE_P = 0.02


TREATMENT_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("user_id", pa.string()),
        ("action", pa.string()),
        ("treated", pa.bool_()),
        ("p_untreated", pa.float64()),
        ("p_treated", pa.float64()),
    ]
)
"""What the oracle knows about each simulated assignment: its churn probability (no event in
``[day, day + horizon)``) without the action and with it, whichever group the user was in."""


@dataclass(frozen=True)
class GenerateResult:
    users: int
    events: int
    payments: int
    start: dt.date
    end: dt.date
    treatments: pa.Table | None = None
    """With ``treatment=``: one row per assignment (:data:`TREATMENT_SCHEMA`)."""


@dataclass(frozen=True)
class Population:
    """Static per-user parameters (arrays indexed by user), drawn once from the seed stream."""

    user_ids: pa.Array
    signup_day: np.ndarray
    signup_us: np.ndarray
    plan: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    device: np.ndarray
    rhythm: np.ndarray
    engagement: np.ndarray
    fail_propensity: np.ndarray
    billing_offset: np.ndarray
    fade_static: np.ndarray

    @property
    def paid(self) -> np.ndarray:
        return self.plan > 0


@dataclass
class LatentState:
    """What the generator knows about each user at the start of a day (before its draws)."""

    phase: np.ndarray
    gap: np.ndarray
    streak: np.ndarray
    completions: np.ndarray


@dataclass(frozen=True)
class Effect:
    """What an action does to a user it reaches.

    With chance ``win_back`` it brings a DRIFTING or FADING user back to NORMAL: their own rhythm
    again, so they come back soon. It cannot help a user whose phase is already NORMAL or BREAK
    (their risk is only their rhythm or a break they will end anyway) nor one who has left for
    good. ``plans`` limits it to users on those plans (a discount means nothing on the free plan);
    ``None`` is every plan.
    """

    win_back: float = 0.0
    plans: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.win_back <= 1.0:
            raise ValueError(f"win_back must be in [0, 1], got {self.win_back}")
        unknown = set(self.plans or ()) - set(PLANS)
        if unknown:
            raise ValueError(f"unknown plans {sorted(unknown)}; known: {list(PLANS)}")

    def chance(self, plan: np.ndarray) -> np.ndarray:
        """The win-back chance of users with these plan indices."""
        if self.plans is None:
            return np.full(plan.size, self.win_back)
        covered = np.isin(plan, [PLANS.index(p) for p in self.plans])
        return np.where(covered, self.win_back, 0.0)


@dataclass(frozen=True)
class AtRisk:
    """What a treatment callback sees at the start of a day: the oracle's users, before any action.

    ``days_since_active`` is 1 for a user active yesterday, as in the ``recency`` features.
    """

    day: dt.date
    user_ids: pa.Array
    p_churn: np.ndarray
    days_since_active: np.ndarray


@dataclass(frozen=True)
class Treatment:
    """Simulated interventions: who is assigned each day, and what each action does.

    ``assign(at_risk)`` returns the day's assignments as a table with ``user_id``, ``action`` and
    ``treated`` (False: held out as control), at most one row per user; an action missing from
    ``effects`` has no effect.
    """

    assign: Callable[[AtRisk], pa.Table]
    effects: Mapping[str, Effect] = field(default_factory=dict)


def _utc_us(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000


def _ts_array(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("int64"), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _daily_rng(seed: int, day_index: int) -> np.random.Generator:
    """An independent stream per simulated day: a day's draws never depend on other days."""
    return np.random.default_rng([seed, 1, day_index + BURN_IN_DAYS])


def _treatment_rng(seed: int, day_index: int) -> np.random.Generator:
    """Win-back draws have their own stream, so treating nobody leaves every other draw as it was."""
    return np.random.default_rng([seed, 2, day_index + BURN_IN_DAYS])


def _draw_population(rng: np.random.Generator, users: int, days: int, start_us: int) -> Population:
    """Signups spread over burn-in and window, so every daily population mixes tenures."""
    ids = np.char.add("u", np.char.zfill(np.arange(users).astype(str), 7))
    signup_day = rng.integers(-BURN_IN_DAYS, days, size=users)
    signup_us = start_us + signup_day * DAY_US + rng.integers(0, 18 * HOUR_US, size=users)
    plan = rng.choice(3, size=users, p=PLAN_P)
    country = rng.choice(len(COUNTRIES), size=users, p=COUNTRY_P)
    channel = rng.choice(len(CHANNELS), size=users, p=CHANNEL_P)
    device = rng.choice(len(DEVICES), size=users, p=DEVICE_P)
    rhythm = np.clip(
        RHYTHM_MEDIAN_DAYS * rng.lognormal(0.0, RHYTHM_SIGMA, size=users), RHYTHM_MIN_DAYS, RHYTHM_MAX_DAYS
    )
    engagement = rng.standard_normal(users)
    fail_propensity = rng.beta(1.2, 9.0, size=users)
    billing_offset = rng.integers(1, BILLING_DAYS + 1, size=users)
    fade_static = (
        FADE_BASE_HAZARD
        * PLAN_HAZARD[plan]
        * np.exp(-PLAN_ENGAGEMENT_SLOPE[plan] * engagement)
        * CHANNEL_HAZARD[channel]
        * DEVICE_HAZARD[device]
    )
    return Population(
        user_ids=pa.array(ids, type=pa.string()),
        signup_day=signup_day,
        signup_us=signup_us,
        plan=plan,
        country=country,
        channel=channel,
        device=device,
        rhythm=rhythm,
        engagement=engagement,
        fail_propensity=fail_propensity,
        billing_offset=billing_offset,
        fade_static=fade_static,
    )


def _initial_state(users: int) -> LatentState:
    return LatentState(
        phase=np.full(users, NORMAL, dtype=np.int8),
        gap=np.zeros(users, dtype=np.int32),
        streak=np.zeros(users, dtype=np.int8),
        completions=np.zeros(users, dtype=np.int16),
    )


def calendar_factor(day: dt.date) -> float:
    """Everyone's activity multiplier on ``day``: weekly seasonality times any holiday dip."""
    factor = WEEKDAY_FACTOR[day.weekday()]
    md = (day.month, day.day)
    for first, last, dip in HOLIDAYS:
        if first <= md <= last:
            factor *= dip
    return factor


def _return_prob(rhythm: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """P(active today | last active ``gap`` days ago), a discrete Weibull hazard in gap / rhythm."""
    g = np.maximum(gap, 1).astype(np.float64)
    cum = (g / rhythm) ** RHYTHM_SHAPE - ((g - 1.0) / rhythm) ** RHYTHM_SHAPE
    return np.minimum(-np.expm1(-cum), MAX_DAILY_ACTIVITY)


def _phase_activity(rhythm: np.ndarray, gap: np.ndarray, calendar: float, tenure: np.ndarray) -> dict[int, np.ndarray]:
    """Daily activity probability per living phase; FADING and BREAK users ignore their rhythm."""
    back = _return_prob(rhythm, gap)
    graduate = 1.0 - GRADUATE_SHARE * np.exp(-tenure / GRADUATE_TENURE_DAYS)
    return {
        NORMAL: back * calendar,
        DRIFTING: back * (DRIFT_ACTIVITY * calendar),
        FADING: FADE_VISIT * calendar * np.exp(-np.maximum(gap, 1) / FADE_TAU_DAYS),
        BREAK: (BREAK_END * calendar) * graduate,
    }


def _activity_prob(
    phase: np.ndarray, rhythm: np.ndarray, gap: np.ndarray, calendar: float, tenure: np.ndarray
) -> np.ndarray:
    by_phase = _phase_activity(rhythm, gap, calendar, tenure)
    return np.select([phase == k for k in by_phase], list(by_phase.values()), 0.0)


def _phase_moves() -> dict[int, list[tuple[int, float]]]:
    """Silent start-of-day moves out of each living phase as (target, probability); one table for the
    simulation and the oracle, so the oracle is exact by construction. Every other phase change
    happens at a visit and shows in that visit's sessions (see ``_visit_moves``)."""
    return {ph: [(GONE, SUDDEN_EXIT)] for ph in (NORMAL, DRIFTING, FADING, BREAK)}


def _fade_hazard(fade_static: np.ndarray, tenure: np.ndarray, completions: np.ndarray) -> np.ndarray:
    """NORMAL → DRIFTING hazard: newcomers are fragile, completions bind only established users."""
    newcomer = 1.0 + NEWCOMER_BOOST * np.exp(-tenure / NEWCOMER_DAYS)
    loyalty = np.exp(
        -COMPLETION_LOYALTY * np.minimum(completions, LOYALTY_CAP) * np.minimum(tenure / LOYALTY_TENURE_DAYS, 1.0)
    )
    return np.minimum(fade_static * newcomer * loyalty, MAX_FADE_HAZARD)


def _billing_due(pop: Population, idx: np.ndarray, d: int | np.ndarray) -> np.ndarray:
    return (
        pop.paid[idx]
        & (d > pop.signup_day[idx])
        & ((d - pop.signup_day[idx] - pop.billing_offset[idx]) % BILLING_DAYS == 0)
    )


def _fail_prob(pop: Population, idx: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Renewals fail more often once a user starts drifting (a symptom, not only a cause)."""
    return np.where(phase == DRIFTING, np.maximum(pop.fail_propensity[idx], FADE_FAIL_FLOOR), pop.fail_propensity[idx])


def _transition(pop: Population, state: LatentState, d: int, rng: np.random.Generator) -> None:
    """Start-of-day phase moves for users who signed up before day ``d``."""
    u = rng.random(state.phase.size)
    before = pop.signup_day < d
    moves = _phase_moves()
    new = state.phase.copy()
    for source, targets in moves.items():
        here = before & (state.phase == source)
        low = np.zeros(u.size)
        for target, p in targets:
            high = low + p
            new[here & (u >= low) & (u < high)] = target
            low = high
    state.phase = new


def _oracle(pop: Population, state: LatentState, d: int, start: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """P(no event in the next horizon days | latent state at the start of day ``d``), in closed form.

    Given no event, the only randomness left is in the phase moves and in the outcome of at most
    one renewal, so a forward pass over phase probabilities, multiplied by each day's chance of
    staying quiet, is exact. It reads the state only; it draws no random numbers.
    """
    idx = np.flatnonzero((pop.signup_day < d) & (state.gap >= 1) & (state.gap <= ORACLE_SCOPE_DAYS))
    return idx, _no_event_prob(pop, state, d, start, idx, state.phase[idx])


def _no_event_prob(
    pop: Population, state: LatentState, d: int, start: dt.date, idx: np.ndarray, phase: np.ndarray
) -> np.ndarray:
    """The oracle's forward pass for users ``idx`` as if their phase were ``phase``."""
    gap0 = state.gap[idx]
    mass = {k: (phase == k).astype(np.float64) for k in (NORMAL, DRIFTING, FADING, BREAK, GONE)}
    rhythm = pop.rhythm[idx]
    tenure0 = (d - pop.signup_day[idx]).astype(np.float64)
    shock = STREAK_SHOCK[np.minimum(state.streak[idx] + 1, STREAK_SHOCK.size - 1)]
    fail = {ph: _fail_prob(pop, idx, np.full(idx.size, ph)) for ph in (NORMAL, DRIFTING)}
    # The one renewal inside the horizon falls ``bill_in`` days ahead (-1: a free user never pays).
    bill_in = np.where(pop.paid[idx], (pop.billing_offset[idx] - tenure0.astype(np.int64)) % BILLING_DAYS, -1)
    moves = _phase_moves()
    for k in range(ORACLE_HORIZON_DAYS):
        new = dict(mass)
        for source, targets in moves.items():
            for target, p in targets:
                flow = mass[source] * p
                new[source] = new[source] - flow
                new[target] = new[target] + flow
        quiet = _phase_activity(rhythm, gap0 + k, calendar_factor(start + dt.timedelta(days=d + k)), tenure0 + k)
        mass = {ph: m * (1.0 - quiet[ph]) if ph in quiet else m for ph, m in new.items()}
        due = bill_in == k
        for ph, p_fail in fail.items():
            cancelled = np.where(due, mass[ph] * p_fail * shock, 0.0)
            mass[ph], mass[GONE] = mass[ph] - cancelled, mass[GONE] + cancelled
    return np.clip(sum(mass.values()), 0.0, 1.0)


def _won_back(phase: np.ndarray) -> np.ndarray:
    return np.where((phase == DRIFTING) | (phase == FADING), NORMAL, phase).astype(phase.dtype)


def _treat(
    pop: Population,
    state: LatentState,
    d: int,
    start: dt.date,
    treatment: Treatment,
    at_risk: AtRisk,
    index: dict[str, int],
    rng: np.random.Generator,
) -> pa.Table | None:
    """Apply the day's assignments and say, from the oracle, what each one was worth.

    A user's churn probability with the action is the mix of staying as they are and being won
    back, ``(1 - w) * p(phase) + w * p(NORMAL)``: exact, because the win-back draw is independent
    of everything else. Control users get the same two numbers, so the true effect is defined on
    everyone assigned, as the measured one is.
    """
    rows = treatment.assign(at_risk)
    if rows is None or rows.num_rows == 0:
        return None
    ids = rows["user_id"].to_pylist()
    actions = rows["action"].to_pylist()
    treated = np.asarray(rows["treated"].to_numpy(zero_copy_only=False), dtype=bool)
    idx = np.fromiter((index[u] for u in ids), dtype=np.int64, count=len(ids))
    if np.unique(idx).size != idx.size:
        raise ValueError("a treatment assigned the same user twice on one day")
    chance = np.zeros(idx.size)
    for action in set(actions):
        rows_of = np.array([a == action for a in actions])
        chance[rows_of] = treatment.effects.get(action, Effect()).chance(pop.plan[idx[rows_of]])
    phase = state.phase[idx]
    p_as_is = _no_event_prob(pop, state, d, start, idx, phase)
    p_won = _no_event_prob(pop, state, d, start, idx, _won_back(phase))
    won = treated & (rng.random(idx.size) < chance)
    state.phase[idx[won]] = _won_back(phase[won])
    return pa.table(
        {
            "day": pa.array([start + dt.timedelta(days=d)] * idx.size, pa.date32()),
            "user_id": pa.array(ids, pa.string()),
            "action": pa.array(actions, pa.string()),
            "treated": pa.array(treated),
            "p_untreated": pa.array(p_as_is),
            "p_treated": pa.array((1.0 - chance) * p_as_is + chance * p_won),
        },
        schema=TREATMENT_SCHEMA,
    )


def generate(
    out_dir: Path,
    *,
    users: int,
    days: int,
    seed: int,
    end_date: dt.date,
    on_day: Callable[[int], None] | None = None,
    treatment: Treatment | None = None,
) -> GenerateResult:
    """Write ``users/``, ``events/date=*/``, ``payments/date=*/`` and ``oracle/date=*/`` under ``out_dir``.

    Events cover the ``days`` days before ``end_date`` (exclusive), so features as of
    ``end_date`` see the whole history. ``on_day(n)`` is called after each of the ``days`` days.
    ``treatment`` is asked each day of the window, right after the oracle, whom to act on (see
    :class:`Treatment`); the assignments and their true effect come back in ``treatments``.
    """
    start = end_date - dt.timedelta(days=days)
    start_us = _utc_us(start)
    pop = _draw_population(np.random.default_rng(seed), users, days, start_us)
    _write_users(out_dir, pop)
    state = _initial_state(users)
    n_events = n_payments = 0
    index = {u: i for i, u in enumerate(pop.user_ids.to_pylist())} if treatment is not None else {}
    assigned: list[pa.Table] = []
    for d in range(-BURN_IN_DAYS, days):
        day = start + dt.timedelta(days=d)
        rng = _daily_rng(seed, d)
        if d >= 0:
            idx, p = _oracle(pop, state, d, start)
            scoped_ids = pop.user_ids.take(pa.array(idx))
            _write_partition(
                out_dir / ORACLE_TABLE,
                day,
                pa.table({"user_id": scoped_ids, "p_churn": pa.array(p.astype(np.float32))}, schema=ORACLE_SCHEMA),
            )
            if treatment is not None:
                at_risk = AtRisk(day, scoped_ids, p, state.gap[idx].copy())
                rows = _treat(pop, state, d, start, treatment, at_risk, index, _treatment_rng(seed, d))
                if rows is not None:
                    assigned.append(rows)
        _transition(pop, state, d, rng)
        active = _draw_activity(pop, state, d, calendar_factor(day), rng)
        events = _sessions(pop, state, active, d, start_us + d * DAY_US, rng)
        if d >= 0 and events is not None:
            _write_partition(out_dir / "events", day, events)
            n_events += events.num_rows
        payments = _renewals(pop, state, d, start_us + d * DAY_US, rng)
        if d >= 0 and payments is not None:
            _write_partition(out_dir / "payments", day, payments)
            n_payments += payments.num_rows
        state.gap = np.where(active, 1, np.where(state.gap > 0, state.gap + 1, 0)).astype(np.int32)
        if d >= 0 and on_day is not None:
            on_day(d + 1)
    treatments = None
    if treatment is not None:
        treatments = pa.concat_tables(assigned) if assigned else TREATMENT_SCHEMA.empty_table()
    return GenerateResult(users, n_events, n_payments, start, end_date, treatments)


def _draw_activity(
    pop: Population, state: LatentState, d: int, calendar: float, rng: np.random.Generator
) -> np.ndarray:
    """Who shows up on day ``d``: everyone on their signup day, others by phase, rhythm and calendar."""
    tenure = (d - pop.signup_day).astype(np.float64)
    p = _activity_prob(state.phase, pop.rhythm, state.gap, calendar, tenure)
    p = np.where(pop.signup_day < d, p, 0.0)
    active = rng.random(p.size) < p
    return active | (pop.signup_day == d)


def _visit_moves(pop: Population, state: LatentState, act: np.ndarray, d: int, rng: np.random.Generator) -> None:
    """Phase changes happen at visits, so the visit that makes one shows it (see ``_sessions``).

    A NORMAL user starts drifting with the drift hazard accumulated over the days since their last
    visit; a DRIFTING visit is a last look (→ FADING) or a normal one again; a FADING visit is now
    and then a real comeback; a visit ends a break.
    """
    u = rng.random(act.size)
    phase, gap = state.phase[act], state.gap[act]
    tenure = (d - pop.signup_day[act]).astype(np.float64)
    h = _fade_hazard(pop.fade_static[act], tenure, state.completions[act])
    p_drift = np.where(gap >= 1, -np.expm1(np.log1p(-h) * np.maximum(gap, 1)), 0.0)
    new = phase.copy()
    new[(phase == NORMAL) & (u < p_drift)] = DRIFTING
    drift = phase == DRIFTING
    new[drift & (u < LAST_LOOK_P)] = FADING
    new[drift & (u >= LAST_LOOK_P) & (u < LAST_LOOK_P + DRIFT_RECOVERY)] = NORMAL
    new[(phase == FADING) & (u < FADE_COMEBACK)] = NORMAL
    new[phase == BREAK] = NORMAL
    state.phase[act] = new


def _sessions(
    pop: Population, state: LatentState, active: np.ndarray, d: int, day_us: int, rng: np.random.Generator
) -> pa.Table | None:
    """Events of the active users, and the phase moves that visits and completing a course trigger.

    A visit shows the phase it leaves the user in: NORMAL sessions always hold a video, DRIFTING
    sessions only browse (course views, no video, no quiz), and a FADING visit is a single glance
    (login and logout, nothing else).
    """
    act = np.flatnonzero(active)
    if act.size == 0:
        return None
    _visit_moves(pop, state, act, d, rng)
    eng = pop.engagement[act]
    look = state.phase[act]
    normal_u, fading_u = look == NORMAL, look == FADING
    sessions = np.where(fading_u, 1, 1 + rng.poisson(EXTRA_SESSIONS * np.exp(0.4 * eng)))
    sess_user = np.repeat(act, sessions)
    n_s = sess_user.size
    # Sessions start by 20:00 so that even long ones end the same day, after signup.
    sess_start = np.maximum(
        day_us + rng.integers(0, 20 * HOUR_US, size=n_s),
        pop.signup_us[sess_user] + rng.integers(1_000_000, HOUR_US, size=n_s),
    )
    eng_s = pop.engagement[sess_user]
    normal = np.repeat(normal_u, sessions)
    browsing = ~np.repeat(fading_u, sessions)
    k_view = (1 + rng.poisson(VIEWS_PER_SESSION, size=n_s)) * browsing
    k_video = (1 + rng.poisson(VIDEOS_PER_SESSION * np.exp(0.3 * eng_s))) * normal
    k_quiz = rng.binomial(1, QUIZ_P, size=n_s) * normal
    k_done = ((rng.random(n_s) < COMPLETE_P * np.exp(0.4 * eng_s)) & normal).astype(np.int64)
    ones = np.ones(n_s, dtype=np.int64)
    counts = np.stack([ones, k_view, k_video, k_quiz, k_done, ones], axis=1)
    per_sess = counts.sum(axis=1)
    ev_sess = np.repeat(np.arange(n_s), per_sess)
    # Event types in session order: login, views, videos, quizzes, completions, logout.
    ev_type = np.repeat(np.tile(np.arange(6), n_s), counts.ravel())
    pos = np.arange(ev_sess.size) - np.repeat(np.cumsum(per_sess) - per_sess, per_sess)
    ev_ts = sess_start[ev_sess] + pos * rng.integers(30_000_000, 480_000_000, size=ev_sess.size)
    ev_user = sess_user[ev_sess]
    course = rng.integers(0, N_COURSES, size=ev_sess.size)
    has_course = (ev_type >= 1) & (ev_type <= 4)
    minute_scale = np.exp(0.3 * pop.engagement[ev_user])
    minutes = np.where(ev_type == 2, np.round(rng.gamma(2.0, 6.0, size=ev_sess.size) * minute_scale, 1), np.nan)
    _after_completion(state, np.unique(sess_user[k_done > 0]), rng)
    course_ids = np.char.add("c", np.char.zfill(course.astype(str), 4))
    return pa.table(
        {
            "user_id": pop.user_ids.take(pa.array(ev_user)),
            "event_ts": _ts_array(ev_ts),
            "event_type": pa.array(np.array(EVENT_TYPES)[ev_type]),
            "course_id": pa.array(np.where(has_course, course_ids, None)),
            "minutes": pa.array(minutes, from_pandas=True),
        },
        schema=EVENTS_SCHEMA,
    )


def _after_completion(state: LatentState, done: np.ndarray, rng: np.random.Generator) -> None:
    """Finishing a course: many take a break (newcomers a long one), the rest carry on."""
    u = rng.random(done.size)
    if done.size == 0:
        return
    state.phase[done[u < BREAK_PROB]] = BREAK
    state.completions[done] += 1


def _renewals(pop: Population, state: LatentState, d: int, day_us: int, rng: np.random.Generator) -> pa.Table | None:
    """Monthly renewals of paying users still around (a FADING user's subscription lapses until they
    come back); consecutive failures often end the subscription."""
    everyone = np.arange(pop.plan.size)
    due = np.flatnonzero(_billing_due(pop, everyone, d) & (state.phase != GONE) & (state.phase != FADING))
    u = rng.random(due.size)
    shock_u = rng.random(due.size)
    pay_ts = day_us + rng.integers(0, DAY_US, size=due.size)
    if due.size == 0:
        return None
    phase = state.phase[due]
    failed = u < _fail_prob(pop, due, phase)
    refunded = ~failed & (u > 1 - REFUND_P)
    streak = np.where(failed, state.streak[due] + 1, 0).astype(np.int8)
    state.streak[due] = streak
    visiting = (phase == NORMAL) | (phase == DRIFTING)
    shock = failed & visiting & (shock_u < STREAK_SHOCK[np.minimum(streak, STREAK_SHOCK.size - 1)])
    state.phase[due[shock]] = GONE
    if d < 0:
        return None
    status = np.where(failed, "failed", np.where(refunded, "refunded", "succeeded"))
    return pa.table(
        {
            "user_id": pop.user_ids.take(pa.array(due)),
            "payment_ts": _ts_array(np.maximum(pay_ts, pop.signup_us[due] + 1_000_000)),
            "amount": pa.array(PLAN_PRICE[pop.plan[due]]),
            "status": pa.array(status),
            "plan": pa.array(np.array(PLANS)[pop.plan[due]]),
        },
        schema=PAYMENTS_SCHEMA,
    )


def _write_users(out_dir: Path, pop: Population) -> None:
    users_tbl = pa.table(
        {
            "user_id": pop.user_ids,
            "signup_ts": _ts_array(pop.signup_us),
            "plan": pa.array(np.array(PLANS)[pop.plan]),
            "country": pa.array(np.array(COUNTRIES)[pop.country]),
            "acquisition_channel": pa.array(np.array(CHANNELS)[pop.channel]),
            "device": pa.array(np.array(DEVICES)[pop.device]),
        },
        schema=USERS_SCHEMA,
    )
    (out_dir / "users").mkdir(parents=True, exist_ok=True)
    pq.write_table(users_tbl, out_dir / "users" / "users.parquet", compression="zstd")


def _write_partition(root: Path, day: dt.date, table: pa.Table) -> None:
    path = partition_dir(root, day)
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / PART_FILE, compression="zstd")
