"""The uplift oracle: a simulated campaign whose true effect is known, measured by the real report.

The generator runs with a treatment hook while the real selection, outbox and export send act on
its oracle scores (``jobs/interventions/uplift_sim.py``); one action wins back a share of the
users it reaches, the other does nothing. The report must find the first within its interval and
say it helps, and find no effect in the second. The hook itself must leave the data untouched when
it treats nobody or its effects are zero.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from churn.interventions import EXPORTED, HELD_OUT
from jobs.generate import Effect, Treatment, generate
from jobs.interventions.outbox import read_outbox
from jobs.interventions.uplift import HELPS, NO_EFFECT
from jobs.interventions.uplift_sim import cohort_truth, compare, simulate
from tests.support.settings import make_settings
from tests.support.sites import snapshot

END = dt.date(2026, 6, 1)
HELPING, INERT = "discount_offer", "support_outreach"
WIN_BACK = 0.3


def _some_users(at_risk):
    """Treat every tenth user of the oracle's list, hold the next one out."""
    ids = at_risk.user_ids.to_pylist()
    picked = ids[::10] + ids[1::10]
    return pa.table(
        {
            "user_id": picked,
            "action": [HELPING] * len(picked),
            "treated": [True] * len(ids[::10]) + [False] * len(ids[1::10]),
        }
    )


def test_a_treatment_without_effect_writes_the_same_bytes(tmp_path):
    kw = {"users": 400, "days": 40, "seed": 5, "end_date": END}
    plain = generate(tmp_path / "plain", **kw)
    inert = generate(tmp_path / "inert", **kw, treatment=Treatment(_some_users, {HELPING: Effect(0.0)}))
    assert snapshot(tmp_path / "plain") == snapshot(tmp_path / "inert")
    assert plain.treatments is None and inert.treatments.num_rows > 0
    t = inert.treatments
    assert pc.all(pc.equal(t["p_treated"], t["p_untreated"])).as_py()

    active = generate(tmp_path / "active", **kw, treatment=Treatment(_some_users, {HELPING: Effect(WIN_BACK)}))
    assert snapshot(tmp_path / "active") != snapshot(tmp_path / "plain")
    gain = active.treatments["p_untreated"].to_numpy() - active.treatments["p_treated"].to_numpy()
    assert gain.min() >= 0.0 and gain.max() > 0.0  # winning a user back never makes churn likelier


def test_an_effect_limited_to_plans_spares_the_others():
    effect = Effect(WIN_BACK, plans=("basic", "premium"))
    assert effect.chance(np.array([0, 1, 2])).tolist() == [0.0, WIN_BACK, WIN_BACK]
    with pytest.raises(ValueError, match="unknown plans"):
        Effect(WIN_BACK, plans=("gold",))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    # Half the users held out: the most power a small site can have.
    settings = make_settings(tmp_path_factory.mktemp("uplift"), intervention_control_share=0.5)
    sim = simulate(
        settings,
        users=10_000,
        campaign_days=28,
        seed=3,
        end_date=END,
        effects={HELPING: Effect(WIN_BACK), INERT: Effect(0.0)},
    )
    result, rows = compare(sim)
    return sim, result, {r["action"]: r for r in rows}


def test_the_report_recovers_the_true_uplift(campaign):
    _, _, rows = campaign
    helping, inert = rows[HELPING], rows[INERT]
    assert helping["true_uplift"] > 0.05
    assert helping["ci_low"] <= helping["true_uplift"] <= helping["ci_high"]
    assert helping["verdict"] == HELPS
    assert inert["true_uplift"] == 0.0
    assert inert["ci_low"] <= 0.0 <= inert["ci_high"]
    assert inert["verdict"] == NO_EFFECT
    assert min(helping["contacted"], helping["control"], inert["contacted"], inert["control"]) >= 100


def test_the_campaign_ran_through_the_real_plan_outbox_and_export(campaign):
    sim, result, _ = campaign
    outbox = read_outbox(sim.settings, sim.since, sim.until)
    statuses = set(outbox["status"].to_pylist())
    assert {EXPORTED, HELD_OUT} <= statuses
    exports = sorted(sim.settings.layout.exports_dir.glob("date=*/*"))
    assert exports, "send wrote no CRM export"
    body = json.loads((result.out_dir / "report.json").read_text())
    assert body["actions"][HELPING]["overall"]["verdict"] == HELPS


def test_the_cohort_churn_rate_without_contacts_is_estimated_within_its_interval(campaign):
    sim, result, _ = campaign
    site = result.report["site"]
    assert site["cohort_day"] == sim.since.isoformat()
    truth = cohort_truth(sim, sim.since)
    lo, hi = site["churn_rate_without_interventions_ci"]
    assert lo <= truth <= hi
    assert site["churn_rate_with_interventions"] < site["churn_rate_without_interventions"]
