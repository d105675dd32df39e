"""A simulated campaign with a known true uplift, to check that the report recovers it.

The synthetic generator runs with a treatment hook (``jobs.generate.Treatment``). Each day of the
campaign, right after the generator's oracle and before the day happens:

1. the day's scores are the oracle's churn probabilities of the users batch scoring would score
   (active within ``active_days``), tiered and mapped to actions by ``churn.policies.RiskPolicy``
   and written where batch scoring writes them. The oracle stands in for a trained model: it is
   exact and free, and the report measures the action, not the model (a model only changes who
   is selected);
2. the real selection (``jobs.interventions.plan.select``: capacity, cooldown, control hash)
   makes the plan, recorded in the outbox like ``churn interventions plan`` does, and the real
   ``send`` exports it (export sink, no network);
3. the day's contacted and held-out users go back to the generator, which applies each action's
   effect to the contacted ones and reports, from its oracle, everyone's churn probability with
   and without the action.

One simulation choice keeps the truth exact: a user assigned to any action is not assigned again
until their label window has passed (they are passed to ``select`` as suppressed). Then each
unit's outcome depends on its own assignment only, and the true uplift of an action, the mean of
``p_untreated - p_treated`` over the units the report analyses, is the very quantity the report's
difference of churn rates estimates. (In production, re-contacts after the cooldown and a second
action are part of the policy whose effect is measured; see docs/interventions.md.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from churn.io import write_parquet_atomic
from churn.layout import PREDICTIONS_PARQUET
from churn.policies import LabelPolicy, RiskPolicy
from churn.settings import Settings
from churn.storage import read_table
from jobs.generate import AtRisk, Effect, GenerateResult, Treatment, generate
from jobs.interventions.outbox import read_outbox
from jobs.interventions.plan import cooldown_history, publish, select
from jobs.interventions.report import (
    CONTACTED_ARM,
    CONTROL_ARM,
    InterventionReport,
    experiment_units,
    label_units,
    report,
)
from jobs.interventions.send import send

ORACLE_MODEL = "oracle"


@dataclass(frozen=True)
class Simulation:
    settings: Settings
    since: dt.date
    until: dt.date
    generated: GenerateResult

    @property
    def truth(self) -> pa.Table:
        assert self.generated.treatments is not None
        return self.generated.treatments


class _Campaign:
    """The treatment hook: scores, plans, sends and hands the day's assignments to the generator."""

    def __init__(self, settings: Settings, since: dt.date, until: dt.date) -> None:
        self.settings = settings
        self.since, self.until = since, until
        self.risk = RiskPolicy.from_settings(settings)
        self.label = LabelPolicy.from_settings(settings)
        self.last_assigned: dict[str, dt.date] = {}

    def scores(self, at_risk: AtRisk) -> pa.Table:
        eligible = self.label.eligible(at_risk.days_since_active)
        proba = np.asarray(at_risk.p_churn, dtype=np.float64)[eligible]
        tier_index = self.risk.tier_index(proba)
        return pa.table(
            {
                "user_id": at_risk.user_ids.filter(pa.array(eligible)),
                "churn_probability": pa.array(proba, pa.float64()),
                "risk_tier": pa.array(self.risk.tiers(proba).tolist(), pa.string()),
                "recommended_action": pa.array(self.risk.action_array(tier_index).tolist(), pa.string()),
                "will_churn": pa.array(proba >= self.risk.high),
                "model_version": pa.array([ORACLE_MODEL] * len(proba), pa.string()),
            }
        )

    def __call__(self, at_risk: AtRisk) -> pa.Table | None:
        day = at_risk.day
        if not self.since <= day <= self.until:
            return None
        settings = self.settings
        predictions = self.scores(at_risk)
        write_parquet_atomic(settings.layout.predictions(day) / PREDICTIONS_PARQUET, predictions)
        horizon = self.label.horizon_days
        busy = {u for u, d in self.last_assigned.items() if (day - d).days < horizon}
        publish(settings, day, select(settings, day, predictions, cooldown_history(settings, day), busy))
        send(settings, day)
        units = experiment_units(read_outbox(settings, since=day, until=day))
        units = units[units["arm"].notna()]
        for user in units["user_id"]:
            self.last_assigned[user] = day
        return pa.table(
            {
                "user_id": pa.array(units["user_id"].tolist(), pa.string()),
                "action": pa.array(units["action"].tolist(), pa.string()),
                "treated": pa.array((units["arm"] == CONTACTED_ARM).tolist(), pa.bool_()),
            }
        )


def simulate(
    settings: Settings,
    *,
    users: int,
    campaign_days: int,
    seed: int,
    end_date: dt.date,
    effects: Mapping[str, Effect],
    lead_days: int = 7,
) -> Simulation:
    """Generate a site whose last ``horizon`` days follow a ``campaign_days``-day campaign.

    Raw data lands in ``settings.raw_dir``; scores, plans, outbox and exports where the real jobs
    put them. The campaign's last day is the newest whose label window the data covers.
    """
    horizon = int(settings.churn_horizon_days)
    until = end_date - dt.timedelta(days=horizon)
    since = until - dt.timedelta(days=campaign_days - 1)
    days = lead_days + campaign_days + horizon - 1
    hook = _Campaign(settings, since, until)
    result = generate(
        settings.raw_dir,
        users=users,
        days=days,
        seed=seed,
        end_date=end_date,
        treatment=Treatment(hook, dict(effects)),
    )
    return Simulation(settings, since, until, result)


def true_uplift(sim: Simulation, units: pd.DataFrame) -> dict[str, float]:
    """Per action, the mean true effect ``p_untreated - p_treated`` over ``units`` (contacted and control)."""
    truth = sim.truth.to_pandas()
    truth["day"] = pd.to_datetime(truth["day"]).dt.date
    analysed = units[units["arm"].isin([CONTACTED_ARM, CONTROL_ARM])]
    merged = analysed.merge(truth, on=["day", "user_id", "action"], how="left", validate="one_to_one")
    if merged["p_untreated"].isna().any():
        raise AssertionError("an analysed unit has no simulated truth")
    effect = merged["p_untreated"] - merged["p_treated"]
    return {str(a): float(v) for a, v in effect.groupby(merged["action"]).mean().items()}


def cohort_truth(sim: Simulation, day: dt.date) -> float:
    """The cohort's churn rate had nobody been contacted: its mean oracle probability on ``day``.

    Exact in expectation when no contact preceded ``day`` (the campaign's first day): the oracle
    reads the latent state before that day's contacts.
    """
    scores = read_table(sim.settings.layout.predictions(day) / PREDICTIONS_PARQUET, columns=["churn_probability"])
    return float(np.mean(scores["churn_probability"].to_numpy()))


def compare(sim: Simulation) -> tuple[InterventionReport, list[dict[str, Any]]]:
    """Run the report over the campaign and set each action's measured uplift beside the true one."""
    result = report(sim.settings, sim.since, sim.until)
    units = experiment_units(read_outbox(sim.settings, sim.since, sim.until))
    matured, _, _ = label_units(sim.settings, units)
    truth = true_uplift(sim, matured)
    rows = []
    for action, a in result.report["actions"].items():
        o = a["overall"]
        true = truth.get(action)
        covered = None
        if true is not None and o["ci_low"] is not None:
            covered = bool(o["ci_low"] <= true <= o["ci_high"])
        rows.append(
            {
                "action": action,
                "contacted": o["treated"],
                "control": o["control"],
                "true_uplift": true,
                "measured_uplift": o["uplift"],
                "ci_low": o["ci_low"],
                "ci_high": o["ci_high"],
                "covered": covered,
                "verdict": o["verdict"],
                "revenue_kept": a["revenue"]["kept"],
            }
        )
    return result, rows
