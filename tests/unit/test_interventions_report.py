"""The intervention report: its statistics on known counts, and units, maturity, labels and revenue on a
hand-made data dir."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from churn.interventions import (
    CONTROL,
    DEAD_LETTER,
    EXPORTED,
    HELD_OUT,
    PLAN_SCHEMA,
    PLANNED,
    TREATMENT,
    idempotency_key,
)
from churn.layout import PART_FILE, PREDICTIONS_PARQUET
from churn.policies import LabelPolicy
from churn.schema import EVENTS_SCHEMA, PAYMENTS_SCHEMA
from jobs.interventions import uplift as st
from jobs.interventions.outbox import append_outbox, outbox_rows
from jobs.interventions.report import (
    CONTACTED_ARM,
    CONTROL_ARM,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_METRICS,
    _site_churn,
    experiment_units,
    report,
)
from tests.support.settings import make_settings

# --- statistics --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [  # Newcombe (1998), "Interval estimation for the difference between independent proportions", method 10
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
    ],
)
def test_newcombe_interval_matches_the_published_examples(x1, n1, x2, n2, low, high):
    lo, hi = st.newcombe(x1, n1, x2, n2)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_matches_the_published_example():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", 15/148
    lo, hi = st.wilson(15, 148)
    assert (round(lo, 4), round(hi, 4)) == (0.0624, 0.1605)
    assert st.wilson(0, 0) == (0.0, 1.0)


def test_pooled_z_test_p_value():
    pooled = (56 + 48) / 150
    z = (56 / 70 - 48 / 80) / math.sqrt(pooled * (1 - pooled) * (1 / 70 + 1 / 80))
    assert st.two_proportion_p_value(56, 70, 48, 80) == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert st.two_proportion_p_value(0, 10, 0, 20) is None  # no churn anywhere: no test to run


def test_uplift_is_control_minus_contacted_with_a_verdict_from_its_interval():
    helps = st.uplift(treated_churned=48, treated=80, control_churned=56, control=70, min_per_group=30)
    assert helps.uplift == pytest.approx(0.2)
    assert (round(helps.ci_low, 4), round(helps.ci_high, 4)) == (0.0524, 0.3339)
    assert helps.verdict == st.HELPS
    assert helps.users_saved == pytest.approx(0.2 * 80)
    assert helps.users_saved_ci == pytest.approx((helps.ci_low * 80, helps.ci_high * 80))

    harms = st.uplift(treated_churned=56, treated=70, control_churned=48, control=80, min_per_group=30)
    assert harms.uplift == pytest.approx(-0.2) and harms.verdict == st.HARMS

    unclear = st.uplift(treated_churned=40, treated=80, control_churned=37, control=70, min_per_group=30)
    assert unclear.ci_low < 0 < unclear.ci_high and unclear.verdict == st.NO_EFFECT

    young = st.uplift(treated_churned=0, treated=29, control_churned=29, control=29, min_per_group=30)
    assert young.ci_low > 0 and young.verdict == st.NOT_ENOUGH  # an interval, but no verdict yet

    empty = st.uplift(treated_churned=0, treated=10, control_churned=0, control=0)
    assert empty.uplift is None and empty.verdict == st.NOT_ENOUGH and empty.treated_rate == 0.0


def test_mean_difference_uses_each_groups_own_variance():
    t, c = np.array([0.0, 19.0, 19.0, 49.0]), np.array([0.0, 0.0, 19.0])
    d = st.mean_difference(t, c)
    half = st._z(0.95) * math.sqrt(t.var(ddof=1) / 4 + c.var(ddof=1) / 3)
    assert d.difference == pytest.approx(t.mean() - c.mean())
    assert (d.ci_low, d.ci_high) == pytest.approx((d.difference - half, d.difference + half))
    assert d.kept == pytest.approx(d.difference * 4)
    assert st.mean_difference(t, c[:1]).difference is None


# --- units --------------------------------------------------------------------------------------------

D0 = dt.date(2026, 1, 10)
ACTION = "support_outreach"


def _rows(day, users, group, status, campaign="c1", action=ACTION):
    return outbox_rows(
        day=day,
        user_id=users,
        action=[action] * len(users),
        group=[group] * len(users),
        campaign=[campaign] * len(users),
        idempotency_key=[idempotency_key(u, action, day) for u in users],
        status=status,
    )


def test_units_are_first_assignments_per_campaign_with_their_delivered_arm():
    later = D0 + dt.timedelta(days=3)
    outbox = pa.concat_tables(
        [
            _rows(D0, ["a", "b", "e"], TREATMENT, PLANNED),
            _rows(D0, ["c"], CONTROL, HELD_OUT),
            _rows(D0, ["a", "b"], TREATMENT, EXPORTED),
            _rows(D0, ["e"], TREATMENT, DEAD_LETTER),
            _rows(later, ["a"], TREATMENT, PLANNED),  # a re-contact in the same campaign: not a new unit
            _rows(later, ["a"], TREATMENT, EXPORTED),
            _rows(later, ["c"], CONTROL, HELD_OUT, campaign="c2"),  # a new campaign: a new unit
            _rows(D0, ["a"], CONTROL, HELD_OUT, action="discount_offer"),  # another action: its own unit
        ]
    )
    units = experiment_units(outbox)
    got = {(r.campaign, r.action, r.user_id): (r.day, r.arm) for r in units.itertuples()}
    assert got == {
        ("c1", ACTION, "a"): (D0, CONTACTED_ARM),
        ("c1", ACTION, "b"): (D0, CONTACTED_ARM),
        ("c1", ACTION, "e"): (D0, None),
        ("c1", ACTION, "c"): (D0, CONTROL_ARM),
        ("c2", ACTION, "c"): (later, CONTROL_ARM),
        ("c1", "discount_offer", "a"): (D0, CONTROL_ARM),
    }
    assert experiment_units(outbox.slice(0, 0)).empty


# --- the report on a hand-made data dir -----------------------------------------------------------------

HORIZON = 5
LAST_EVENT_DAY = D0 + dt.timedelta(days=10)


def _ts(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


@pytest.fixture
def site(tmp_path):
    """Events through LAST_EVENT_DAY (a background user every day), a few payments, a plan, scores and
    the outbox of two days: one whose labels have matured, one whose have not."""
    settings = make_settings(tmp_path, churn_horizon_days=HORIZON)
    layout = settings.layout
    activity = {"a": [D0 + dt.timedelta(days=2)], "b": [D0 + dt.timedelta(days=6)], "c": [D0], "x": [D0]}
    day = D0 - dt.timedelta(days=3)
    while day <= LAST_EVENT_DAY:
        users = ["bg"] + [u for u, days in activity.items() if day in days]
        _write(
            layout.raw_partition("events", day) / PART_FILE,
            pa.table(
                {
                    "user_id": users,
                    "event_ts": [_ts(day)] * len(users),
                    "event_type": ["login"] * len(users),
                    "course_id": [None] * len(users),
                    "minutes": [None] * len(users),
                },
                schema=EVENTS_SCHEMA,
            ),
        )
        day += dt.timedelta(days=1)
    payments = [
        ("a", D0 + dt.timedelta(days=1), 19.0, "succeeded"),
        ("a", D0 + dt.timedelta(days=2), 19.0, "refunded"),
        ("c", D0 + dt.timedelta(days=4), 49.0, "succeeded"),
        ("d", D0 + dt.timedelta(days=HORIZON), 19.0, "succeeded"),  # the day after d's label window
    ]
    for user, day, amount, status in payments:
        _write(
            layout.raw_partition("payments", day) / PART_FILE,
            pa.table(
                {
                    "user_id": [user],
                    "payment_ts": [_ts(day, 0)],
                    "amount": [amount],
                    "status": [status],
                    "plan": ["basic"],
                },
                schema=PAYMENTS_SCHEMA,
            ),
        )
    tiers = {"a": "high", "b": "medium", "c": "high", "d": "medium", "e": "high"}
    groups = {"a": TREATMENT, "b": TREATMENT, "c": CONTROL, "d": CONTROL, "e": TREATMENT}
    _write(
        layout.intervention_plan(D0),
        pa.table(
            {
                "day": [D0] * 5,
                "user_id": list(tiers),
                "action": [ACTION] * 5,
                "tier": list(tiers.values()),
                "churn_probability": [0.7] * 5,
                "group": list(groups.values()),
                "campaign": ["c1"] * 5,
                "idempotency_key": [idempotency_key(u, ACTION, D0) for u in tiers],
            },
            schema=PLAN_SCHEMA,
        ),
    )
    scored = ["a", "b", "c", "d", "x", "y"]
    _write(layout.predictions(D0) / PREDICTIONS_PARQUET, pa.table({"user_id": scored}))
    late = LAST_EVENT_DAY - dt.timedelta(days=2)
    append_outbox(settings, D0, _rows(D0, ["a", "b", "e"], TREATMENT, PLANNED))
    append_outbox(settings, D0, _rows(D0, ["c", "d"], CONTROL, HELD_OUT))
    append_outbox(settings, D0, _rows(D0, ["a", "b"], TREATMENT, EXPORTED))
    append_outbox(settings, D0, _rows(D0, ["e"], TREATMENT, DEAD_LETTER))
    append_outbox(settings, late, _rows(late, ["f"], TREATMENT, PLANNED))
    append_outbox(settings, late, _rows(late, ["f"], TREATMENT, EXPORTED))
    return settings


def test_report_counts_matured_units_with_their_labels_revenue_and_tiers(site):
    result = report(site, D0)
    body = result.report
    a = body["actions"][ACTION]
    o = a["overall"]
    # a came back inside [D0, D0 + 5) and b only after it; c came back, d never did.
    assert (o["treated"], o["treated_churned"], o["control"], o["control_churned"]) == (2, 1, 2, 1)
    assert o["uplift"] == 0.0 and o["verdict"] == st.NOT_ENOUGH
    assert a["pending"] == {"contacted": 1, "control": 0}  # f's window ends after the last event day
    assert a["not_delivered"] == 1  # e was dead-lettered
    assert {t: (u["treated"], u["control"]) for t, u in a["tiers"].items()} == {"high": (1, 1), "medium": (1, 1)}
    # Succeeded payments inside each window: a 19 (its refund is not revenue), b 0; c 49, d 0 (too late).
    r = a["revenue"]
    assert (r["treated_mean"], r["control_mean"]) == (9.5, 24.5)
    assert r["difference"] == -15.0 and r["kept"] == -30.0
    # The cohort scored on D0: a, b, c, d, x, y; b, d and y churned. a and b were contacted in its
    # window (f too late), and the uplift of 0 saved nobody.
    cohort = body["site"]
    assert cohort["cohort_day"] == D0.isoformat()
    assert (cohort["scored_users"], cohort["churned_with_interventions"]) == (6, 3)
    assert cohort["contacts_counted"] == 2 and cohort["users_saved"] == 0.0
    assert cohort["churn_rate_with_interventions"] == cohort["churn_rate_without_interventions"] == 0.5
    assert body["labels_mature_through"] == (LAST_EVENT_DAY - dt.timedelta(days=HORIZON - 1)).isoformat()

    assert [p.name for p in result.paths] == [REPORT_JSON, REPORT_HTML, REPORT_METRICS]
    assert json.loads((result.out_dir / REPORT_JSON).read_text())["actions"][ACTION]["overall"] == o
    assert "support_outreach: not enough data yet" in (result.out_dir / REPORT_HTML).read_text()
    assert ACTION in result.summary()
    latest = json.loads((site.layout.intervention_reports_latest).read_text())
    assert latest["report"] == str(result.out_dir / REPORT_JSON)


def test_metrics_carry_every_verdict_of_every_action(site):
    result = report(site, D0)
    text = (result.out_dir / REPORT_METRICS).read_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    verdicts = {dict(k[1])["verdict"]: v for k, v in samples.items() if k[0] == "churn_intervention_verdict"}
    assert verdicts == {v: (1.0 if v == st.NOT_ENOUGH else 0.0) for v in st.VERDICTS}
    assert samples[("churn_intervention_uplift", (("action", ACTION),))] == 0.0
    assert samples[("churn_intervention_matured_users", (("action", ACTION), ("group", "control")))] == 2.0
    assert samples[("churn_intervention_site_churn_rate", (("case", "with"),))] == 0.5


def test_a_report_before_any_label_matures_counts_everything_as_pending(site):
    late = LAST_EVENT_DAY - dt.timedelta(days=2)
    body = report(site, late).report
    a = body["actions"][ACTION]
    assert a["overall"]["treated"] == 0 and a["overall"]["verdict"] == st.NOT_ENOUGH
    assert a["pending"] == {"contacted": 1, "control": 0}
    assert body["site"] is None


def test_no_outbox_rows_gives_an_empty_report(tmp_path):
    settings = make_settings(tmp_path)
    result = report(settings, D0)
    assert result.report["actions"] == {} and "no interventions recorded" in result.summary()


def test_the_cohort_figure_adds_back_only_contacts_that_could_change_its_label(site):
    figures = {ACTION: st.uplift(treated_churned=10, treated=40, control_churned=20, control=40)}
    contacts = [("a", D0), ("b", D0 + dt.timedelta(days=3)), ("c", D0 + dt.timedelta(days=2)), ("z", D0)]
    units = pd.DataFrame(
        {
            "user_id": [u for u, _ in contacts],
            "day": [d for _, d in contacts],
            "action": [ACTION] * len(contacts),
            "arm": [CONTACTED_ARM] * len(contacts),
        }
    )
    active = {D0: {"bg", "a", "c", "x"}}
    got = _site_churn(site, units, figures, active, LabelPolicy.from_settings(site))
    # a and b had not come back when contacted; c had (on D0), and z is not in the cohort.
    assert got["contacts_counted"] == 2 and got["users_saved"] == pytest.approx(0.5)
    assert got["churn_rate_without_interventions"] == pytest.approx(3.5 / 6)
    assert got["campaign_days_in_window"] == 3
