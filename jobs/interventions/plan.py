"""Selection: whom to contact for each action on a day (``churn interventions plan --date D``).

From the day's batch scores (``predictions/date=D/predictions.parquet``, the tier → action map
applied by scoring), for each action:

1. users on the suppression list are dropped, always;
2. users contacted (or held out) for the same action within ``intervention_cooldown_days`` are
   dropped, so no one gets the same offer every day;
3. the rest are ranked riskiest first, and each one's control membership is decided by
   :func:`churn.interventions.in_control` (a stable hash of user, action and campaign period);
4. the ranking is cut right after the ``capacity``-th treated user: the control group is the
   hashed share of exactly the users the campaign reached, so it is comparable with the treated
   (same risk range), and control users never use up capacity.

The plan is written to ``interventions/plan/date=D/plan.parquet`` and recorded in the outbox
(PLANNED for treatment, HELD_OUT for control). Planning a day that has a plan keeps it: the
same users are promised the same contact however often the chain is rerun.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from churn.errors import JobError
from churn.interventions import (
    CONTROL,
    HELD_OUT,
    OUTBOX_SCHEMA,
    PLAN_SCHEMA,
    PLANNED,
    RECORDED,
    TREATMENT,
    InterventionPolicy,
    idempotency_key,
    in_control,
)
from churn.io import exclusive_lock, remove_tree, write_parquet_atomic
from churn.layout import PREDICTIONS_PARQUET
from churn.policies import NO_ACTION
from churn.settings import Settings
from churn.storage import read_table
from jobs.interventions.outbox import append_outbox, outbox_rows, read_outbox
from jobs.interventions.suppression import suppressed_users

PREDICTION_COLUMNS = ["user_id", "churn_probability", "risk_tier", "recommended_action"]


class InterventionError(JobError):
    """Planning or sending cannot run (no scores, no plan, a plan already acted on): one line, exit 1."""


@dataclass(frozen=True)
class PlanResult:
    day: dt.date
    path: Path
    campaign: str
    treatment: dict[str, int] = field(default_factory=dict)
    control: dict[str, int] = field(default_factory=dict)
    kept: bool = False
    """The day already had a plan, which was kept."""

    def summary(self) -> str:
        actions = sorted(set(self.treatment) | set(self.control))
        per = ", ".join(f"{a} {self.treatment.get(a, 0):,} + {self.control.get(a, 0):,} control" for a in actions)
        head = f"plan {self.day} ({self.campaign})" + (": kept the existing plan" if self.kept else "")
        return f"{head}: {per or 'nobody to contact'}"


def _tally(plan: pa.Table, group: str) -> dict[str, int]:
    actions = plan.filter(pc.equal(plan["group"], group))["action"].to_pylist()
    return {a: actions.count(a) for a in sorted(set(actions))}


def _cooling(history: pa.Table, day: dt.date, cooldown_days: int) -> set[tuple[str, str]]:
    """(user, action) pairs contacted or held out within the cooldown before ``day``."""
    if cooldown_days <= 0 or history.num_rows == 0:
        return set()
    start = day - dt.timedelta(days=cooldown_days)
    h = history.filter(
        pc.and_(
            pc.is_in(history["status"], pa.array(RECORDED, pa.string())),
            pc.and_(pc.greater(history["day"], pa.scalar(start)), pc.less(history["day"], pa.scalar(day))),
        )
    )
    return set(zip(h["user_id"].to_pylist(), h["action"].to_pylist(), strict=True))


def select(
    settings: Settings, day: dt.date, predictions: pa.Table, history: pa.Table, suppressed: set[str]
) -> pa.Table:
    """The plan of ``day`` (PLAN_SCHEMA, treatment and control rows): pure, no I/O.

    ``predictions`` holds user_id, churn_probability, risk_tier, recommended_action (what
    ``jobs/score.py`` writes); ``history`` the outbox rows before ``day`` (for the cooldown).
    """
    policy = InterventionPolicy.from_settings(settings)
    campaign = policy.campaign(day)
    users = np.asarray(predictions["user_id"].to_pylist(), dtype=object)
    proba = np.asarray(predictions["churn_probability"].to_numpy(zero_copy_only=False), dtype=np.float64)
    tiers = np.asarray(predictions["risk_tier"].to_pylist(), dtype=object)
    actions = np.asarray(predictions["recommended_action"].to_pylist(), dtype=object)
    cooling = _cooling(history, day, policy.cooldown_days)
    keep = np.array(
        [a is not None and a != NO_ACTION and u not in suppressed for u, a in zip(users, actions, strict=True)],
        dtype=bool,
    )
    keep &= ~np.isnan(proba)
    chosen: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    for action in sorted({a for a in actions[keep]}):
        idx = np.flatnonzero(keep & (actions == action))
        if cooling:
            idx = idx[[(u, action) not in cooling for u in users[idx]]]
        # Riskiest first; user_id breaks ties so a rerun ranks identically.
        idx = idx[np.lexsort((users[idx].astype(str), -proba[idx]))]
        control = np.array([in_control(u, action, campaign, policy.control_share) for u in users[idx]], dtype=bool)
        cap = policy.cap(action)
        treated_so_far = np.cumsum(~control)
        if cap is not None and treated_so_far.size and treated_so_far[-1] >= cap:
            stop = int(np.searchsorted(treated_so_far, cap, side="left")) + 1 if cap > 0 else 0
            idx, control = idx[:stop], control[:stop]
        chosen.append(idx)
        groups.append(np.where(control, CONTROL, TREATMENT))
    if not chosen:
        return PLAN_SCHEMA.empty_table()
    rows = np.concatenate(chosen)
    group = np.concatenate(groups)
    user_list = users[rows].tolist()
    action_list = actions[rows].tolist()
    return pa.table(
        {
            "day": pa.array([day] * len(rows), pa.date32()),
            "user_id": pa.array(user_list, pa.string()),
            "action": pa.array(action_list, pa.string()),
            "tier": pa.array(tiers[rows].tolist(), pa.string()),
            "churn_probability": pa.array(proba[rows], pa.float64()),
            "group": pa.array(group.tolist(), pa.string()),
            "campaign": pa.array([campaign] * len(rows), pa.string()),
            "idempotency_key": pa.array(
                [idempotency_key(u, a, day) for u, a in zip(user_list, action_list, strict=True)], pa.string()
            ),
        },
        schema=PLAN_SCHEMA,
    )


def read_predictions(settings: Settings, day: dt.date) -> pa.Table:
    path = settings.layout.predictions(day) / PREDICTIONS_PARQUET
    if not path.exists():
        raise InterventionError(f"no scores for {day} ({path}): run `churn score --date {day}` first")
    return read_table(path, columns=PREDICTION_COLUMNS)


def read_plan(settings: Settings, day: dt.date) -> pa.Table:
    path = settings.layout.intervention_plan(day)
    if not path.exists():
        raise InterventionError(f"no plan for {day} ({path}): run `churn interventions plan --date {day}` first")
    return read_table(path).select(PLAN_SCHEMA.names).cast(PLAN_SCHEMA)


def cooldown_history(settings: Settings, day: dt.date) -> pa.Table:
    """The outbox rows of the cooldown window before ``day``: what ``select`` needs to honour it."""
    cooldown = int(settings.intervention_cooldown_days)
    if cooldown <= 0:
        return OUTBOX_SCHEMA.empty_table()
    return read_outbox(settings, since=day - dt.timedelta(days=cooldown), until=day - dt.timedelta(days=1))


def publish(settings: Settings, day: dt.date, plan: pa.Table) -> None:
    """Write the day's plan, then record its PLANNED and HELD_OUT rows in the outbox."""
    write_parquet_atomic(settings.layout.intervention_plan(day), plan)
    _record(settings, day, plan)


def _record(settings: Settings, day: dt.date, plan: pa.Table) -> None:
    """The plan's PLANNED and HELD_OUT outbox rows, in one append."""
    parts = []
    for group, status in ((TREATMENT, PLANNED), (CONTROL, HELD_OUT)):
        rows = plan.filter(pc.equal(plan["group"], group))
        parts.append(
            outbox_rows(
                day=day,
                user_id=rows["user_id"].to_pylist(),
                action=rows["action"].to_pylist(),
                group=rows["group"].to_pylist(),
                campaign=rows["campaign"].to_pylist(),
                idempotency_key=rows["idempotency_key"].to_pylist(),
                status=status,
            )
        )
    append_outbox(settings, day, pa.concat_tables(parts))


def plan(settings: Settings, day: dt.date, replace: bool = False) -> PlanResult:
    """Write (or keep) the plan of ``day`` and record it in the outbox; see the module docstring.

    ``replace`` plans the day again from its current scores, refused once anything of the day was
    delivered (its PLANNED/HELD_OUT rows are dropped with the old plan: nobody was contacted yet).
    """
    layout = settings.layout
    path = layout.intervention_plan(day)
    campaign = InterventionPolicy.from_settings(settings).campaign(day)
    with exclusive_lock(layout.interventions_lock):
        todays = read_outbox(settings, since=day, until=day)
        if path.exists() and not replace:
            existing = read_plan(settings, day)
            # A plan killed between its two writes is completed, never recorded twice.
            if not pc.any(pc.is_in(todays["status"], pa.array([PLANNED, HELD_OUT]))).as_py():
                _record(settings, day, existing)
            return PlanResult(day, path, campaign, _tally(existing, TREATMENT), _tally(existing, CONTROL), kept=True)
        if path.exists():
            acted = todays.filter(pc.invert(pc.is_in(todays["status"], pa.array([PLANNED, HELD_OUT]))))
            if acted.num_rows:
                raise InterventionError(
                    f"the plan of {day} has {acted.num_rows:,} delivery records in the outbox: "
                    "a plan can be replaced only before anything of it was sent"
                )
            remove_tree(layout.outbox(day))
        predictions = read_predictions(settings, day)
        table = select(settings, day, predictions, cooldown_history(settings, day), suppressed_users(settings))
        publish(settings, day, table)
    return PlanResult(day, path, campaign, _tally(table, TREATMENT), _tally(table, CONTROL))
