"""Selection of whom to contact (capacity, cooldown, suppression, control group), the plan/outbox
bookkeeping with the export sink, and the intervention settings refused at start-up. No servers:
the webhook is tested against a real receiver in tests/integration/test_interventions.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from churn.errors import SettingsError
from churn.interventions import (
    CONTROL,
    DEAD_LETTER,
    EXPORTED,
    HELD_OUT,
    OUTBOX_SCHEMA,
    PLAN_SCHEMA,
    PLANNED,
    SENT,
    SUPPRESSED,
    TREATMENT,
    campaign_bounds,
    campaign_of,
    idempotency_key,
    in_control,
)
from churn.settings import Settings
from tests.support.settings import make_settings
from tests.support.sites import synthetic_scores

DAY = dt.date(2026, 3, 2)


def _predictions(settings: Settings, n: int, seed: int = 0) -> pa.Table:
    """Scores as ``jobs/score.py`` writes them (the columns the plan reads), kept in memory."""
    path = synthetic_scores(settings, DAY, n, seed)
    return pq.read_table(path)


def _history(rows: list[tuple[str, str, dt.date, str]]) -> pa.Table:
    """Outbox rows (user, action, day, status)."""
    n = len(rows)
    return pa.table(
        {
            "day": pa.array([r[2] for r in rows], pa.date32()),
            "user_id": [r[0] for r in rows],
            "action": [r[1] for r in rows],
            "group": [TREATMENT] * n,
            "campaign": ["c0"] * n,
            "idempotency_key": [idempotency_key(r[0], r[1], r[2]) for r in rows],
            "status": [r[3] for r in rows],
            "sink": ["export"] * n,
            "attempt": pa.array([1] * n, pa.int32()),
            "at": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
            "detail": [""] * n,
        },
        schema=OUTBOX_SCHEMA,
    )


def _select(settings: Settings, predictions: pa.Table, day: dt.date = DAY, history=None, suppressed=None):  # noqa: ANN001, ANN202
    from jobs.interventions.plan import select

    history = OUTBOX_SCHEMA.empty_table() if history is None else history
    return select(settings, day, predictions, history, suppressed or set())


def _group(plan: pa.Table, action: str, group: str) -> pa.Table:
    return plan.filter(pc.and_(pc.equal(plan["action"], action), pc.equal(plan["group"], group)))


# --- the stable hashes ---------------------------------------------------------------------------


def test_campaign_periods_are_stable_within_and_change_between() -> None:
    start, end = campaign_bounds(campaign_of(DAY, 28), 28)
    assert start <= DAY <= end and (end - start).days == 27
    assert {campaign_of(start + dt.timedelta(days=i), 28) for i in range(28)} == {campaign_of(DAY, 28)}
    assert campaign_of(end + dt.timedelta(days=1), 28) != campaign_of(end, 28)
    assert campaign_of(dt.date(1970, 1, 1), 28) == "c0"


def test_control_membership_is_a_stable_share() -> None:
    users = [f"u{i}" for i in range(20_000)]
    picked = [in_control(u, "support_outreach", "c740", 0.1) for u in users]
    assert abs(sum(picked) / len(users) - 0.1) < 0.01
    assert picked == [in_control(u, "support_outreach", "c740", 0.1) for u in users]  # same every call
    other = [in_control(u, "support_outreach", "c741", 0.1) for u in users]
    assert picked != other  # a new campaign period draws a new control group
    assert not any(in_control(u, "support_outreach", "c740", 0.0) for u in users)
    assert (
        idempotency_key("u1", "a", DAY)
        == idempotency_key("u1", "a", DAY)
        != idempotency_key("u1", "a", DAY + dt.timedelta(1))
    )


# --- select() ------------------------------------------------------------------------------------


def test_capacity_takes_the_riskiest_and_control_spends_none_of_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, intervention_capacity="support_outreach:40,discount_offer:100")
    preds = _predictions(settings, 3000)
    plan = _select(settings, preds)
    assert plan.schema == PLAN_SCHEMA
    for action, cap in (("support_outreach", 40), ("discount_offer", 100)):
        treated = _group(plan, action, TREATMENT)
        held = _group(plan, action, CONTROL)
        assert treated.num_rows == cap
        planned = set(plan.filter(pc.equal(plan["action"], action))["user_id"].to_pylist())
        eligible = preds.filter(pc.equal(preds["recommended_action"], action))
        left = eligible.filter(pc.invert(pc.is_in(eligible["user_id"], pa.array(sorted(planned)))))
        # Riskiest first: everyone planned (treated or held out) outranks everyone left out.
        floor = pc.min(treated["churn_probability"]).as_py()
        assert floor >= pc.max(left["churn_probability"]).as_py()
        assert pc.min(held["churn_probability"]).as_py() >= floor  # control comes from the same risk range
        assert all(in_control(u, action, campaign_of(DAY, 28), 0.1) for u in held["user_id"].to_pylist())
        assert not any(in_control(u, action, campaign_of(DAY, 28), 0.1) for u in treated["user_id"].to_pylist())
    assert set(plan["action"].to_pylist()) == {"support_outreach", "discount_offer"}  # never "none"


def test_control_share_of_the_eligible_is_the_configured_one(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, intervention_capacity="", intervention_control_share=0.2)
    plan = _select(settings, _predictions(settings, 6000))
    for action in ("support_outreach", "discount_offer"):
        rows = plan.filter(pc.equal(plan["action"], action))
        share = _group(plan, action, CONTROL).num_rows / rows.num_rows
        assert abs(share - 0.2) < 0.035, (action, share)


def test_zero_share_holds_nobody_out(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, intervention_capacity="", intervention_control_share=0)
    plan = _select(settings, _predictions(settings, 500))
    assert plan.num_rows and set(plan["group"].to_pylist()) == {TREATMENT}


def test_control_group_is_stable_across_the_days_of_a_campaign(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, intervention_capacity="", intervention_cooldown_days=0)
    start, end = campaign_bounds(campaign_of(DAY, 28), 28)
    groups: dict[str, set[str]] = {}
    for offset, seed in ((0, 1), (9, 2), (27, 3)):  # scores change every day
        plan = _select(settings, _predictions(settings, 2000, seed), day=start + dt.timedelta(days=offset))
        for user, action, group in zip(*(plan[c].to_pylist() for c in ("user_id", "action", "group")), strict=True):
            groups.setdefault(f"{user}|{action}", set()).add(group)
    assert all(len(g) == 1 for g in groups.values())  # held out every day of the period, or never
    nxt = _select(settings, _predictions(settings, 2000, 1), day=end + dt.timedelta(days=1))
    moved = [
        (u, a)
        for u, a, g in zip(*(nxt[c].to_pylist() for c in ("user_id", "action", "group")), strict=True)
        if f"{u}|{a}" in groups and {g} != groups[f"{u}|{a}"]
    ]
    assert moved  # the next period draws afresh


def test_cooldown_skips_recent_contacts_and_hold_outs_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, intervention_capacity="", intervention_cooldown_days=14)
    preds = _predictions(settings, 400)
    high = preds.filter(pc.equal(preds["recommended_action"], "support_outreach"))["user_id"].to_pylist()
    a, b, c, d, e, f = high[:6]
    history = _history(
        [
            (a, "support_outreach", DAY - dt.timedelta(days=1), SENT),
            (b, "support_outreach", DAY - dt.timedelta(days=13), EXPORTED),
            (c, "support_outreach", DAY - dt.timedelta(days=14), SENT),  # cooled down again
            (d, "support_outreach", DAY - dt.timedelta(days=3), HELD_OUT),
            (e, "support_outreach", DAY - dt.timedelta(days=2), DEAD_LETTER),  # never reached them
            (f, "discount_offer", DAY - dt.timedelta(days=1), SENT),  # another action's cooldown
        ]
    )
    planned = set(_select(settings, preds, history=history)["user_id"].to_pylist())
    assert not {a, b, d} & planned
    assert {c, e, f} <= planned


def test_suppressed_users_are_never_planned(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, intervention_capacity="support_outreach:10,discount_offer:10")
    preds = _predictions(settings, 1000)
    first = _select(settings, preds)
    optouts = set(first["user_id"].to_pylist())
    again = _select(settings, preds, suppressed=optouts)
    assert not optouts & set(again["user_id"].to_pylist())
    assert _group(again, "support_outreach", TREATMENT).num_rows == 10  # the next riskiest take their place


# --- plan() and send() with the export sink ------------------------------------------------------


def _site(tmp_path: Path, n: int = 600, **fields: object) -> Settings:
    settings = make_settings(tmp_path / "data", **fields)
    synthetic_scores(settings, DAY, n)
    return settings


def test_plan_then_send_exports_the_treated_and_never_the_control(tmp_path: Path) -> None:
    from jobs.interventions.outbox import read_outbox
    from jobs.interventions.plan import plan
    from jobs.interventions.send import send

    settings = _site(tmp_path, intervention_capacity="support_outreach:30,discount_offer:60")
    res = plan(settings, DAY)
    assert res.treatment == {"discount_offer": 60, "support_outreach": 30} and not res.kept
    table = pq.read_table(settings.layout.intervention_plan(DAY))
    sent = send(settings, DAY)
    assert sent.exported == 90 and len(sent.exports) == 2
    exported = set()
    for action in ("support_outreach", "discount_offer"):
        csv = pacsv.read_csv(settings.layout.export_file(DAY, action, "csv"))
        assert csv.num_rows == res.treatment[action]
        exported |= set(csv["idempotency_key"].to_pylist())
    control = set(table.filter(pc.equal(table["group"], CONTROL))["idempotency_key"].to_pylist())
    assert control and not control & exported
    outbox = read_outbox(settings, DAY, DAY)
    by_status = {
        s: set(outbox.filter(pc.equal(outbox["status"], s))["idempotency_key"].to_pylist())
        for s in (PLANNED, HELD_OUT, EXPORTED)
    }
    assert by_status[EXPORTED] == exported and by_status[HELD_OUT] == control
    assert by_status[PLANNED] == exported

    # Rerunning the day changes nothing: the plan is kept, nobody is exported twice.
    assert plan(settings, DAY).kept
    again = send(settings, DAY)
    assert again.exported == 0 and again.already == 90
    outbox2 = read_outbox(settings, DAY, DAY)
    assert pc.sum(pc.equal(outbox2["status"], EXPORTED)).as_py() == 90
    assert pc.sum(pc.equal(outbox2["status"], PLANNED)).as_py() == 90


def test_replanning_is_refused_once_anything_was_sent(tmp_path: Path) -> None:
    from jobs.interventions.outbox import read_outbox
    from jobs.interventions.plan import InterventionError, plan
    from jobs.interventions.send import send

    settings = _site(tmp_path, intervention_capacity="support_outreach:5,discount_offer:5")
    plan(settings, DAY)
    again = plan(settings, DAY, replace=True)  # nothing sent yet: allowed, and recorded once
    outbox = read_outbox(settings, DAY, DAY)
    assert pc.sum(pc.equal(outbox["status"], PLANNED)).as_py() == sum(again.treatment.values()) == 10
    send(settings, DAY)
    with pytest.raises(InterventionError, match="replaced only before anything of it was sent"):
        plan(settings, DAY, replace=True)


def test_users_suppressed_after_planning_are_not_delivered(tmp_path: Path) -> None:
    from jobs.interventions.outbox import read_outbox
    from jobs.interventions.plan import plan, read_plan
    from jobs.interventions.send import send
    from jobs.interventions.suppression import suppress, suppressed_users

    settings = _site(tmp_path, intervention_capacity="support_outreach:20,discount_offer:20")
    plan(settings, DAY)
    treated = read_plan(settings, DAY).filter(pc.equal(read_plan(settings, DAY)["group"], TREATMENT))
    victims = treated["user_id"].to_pylist()[:3]
    assert suppress(settings, [*victims, victims[0]], reason="opted out").added == 3
    assert suppress(settings, victims[:1]).already == 1
    assert suppressed_users(settings) == set(victims)
    res = send(settings, DAY)
    assert res.suppressed == 3 and res.exported == 37
    outbox = read_outbox(settings, DAY, DAY)
    contacted = outbox.filter(pc.equal(outbox["status"], EXPORTED))["user_id"].to_pylist()
    assert not set(victims) & set(contacted)
    assert set(outbox.filter(pc.equal(outbox["status"], SUPPRESSED))["user_id"].to_pylist()) == set(victims)
    # and the next day's plan leaves them out from the start
    later = DAY + dt.timedelta(days=1)
    synthetic_scores(settings, later, 600, 5)
    plan(settings, later)
    assert not set(victims) & set(read_plan(settings, later)["user_id"].to_pylist())


def test_parquet_exports(tmp_path: Path) -> None:
    from jobs.interventions.plan import plan
    from jobs.interventions.send import send

    settings = _site(tmp_path, intervention_export_format="parquet")
    plan(settings, DAY)
    send(settings, DAY)
    path = settings.layout.export_file(DAY, "support_outreach", "parquet")
    assert pq.read_table(path).column_names[:3] == ["day", "action", "user_id"]


def test_plan_without_scores_says_what_to_run(tmp_path: Path) -> None:
    from jobs.interventions.plan import InterventionError, plan
    from jobs.interventions.send import send

    settings = make_settings(tmp_path / "data")
    with pytest.raises(InterventionError, match=f"run `churn score --date {DAY}` first"):
        plan(settings, DAY)
    with pytest.raises(InterventionError, match=f"run `churn interventions plan --date {DAY}` first"):
        send(settings, DAY)


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"intervention_capacity": "support_outreach:200,callback:50"}, "unknown action 'callback'"),
        ({"intervention_capacity": "support_outreach:lots"}, "'support_outreach:lots' is not action:N"),
        ({"intervention_control_share": "0.6"}, "CHURN_INTERVENTION_CONTROL_SHARE 0.6 is outside [0, 0.5]"),
        ({"intervention_control_share": "-0.1"}, "outside [0, 0.5]"),
        (
            {"intervention_sinks": "webhook", "intervention_webhook_url": "https://crm.example.com/hook"},
            "CHURN_INTERVENTION_WEBHOOK_SECRET is missing",
        ),
        ({"intervention_sinks": "webhook", "intervention_webhook_secret": "s"}, "WEBHOOK_URL must be an http(s)://"),
        ({"intervention_sinks": "email"}, "expected a comma list of webhook, export"),
        ({"intervention_webhook_batch": "0"}, "CHURN_INTERVENTION_WEBHOOK_BATCH must be >= 1"),
    ],
)
def test_bad_intervention_settings_are_refused(tmp_path: Path, fields: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        make_settings(tmp_path, **fields)
    assert message in str(info.value)
    assert str(info.value).startswith("intervention settings refused:")


def test_every_problem_is_listed_at_once_and_the_secret_never(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        make_settings(
            tmp_path,
            intervention_capacity="fax:1",
            intervention_control_share="0.9",
            intervention_sinks="webhook",
            intervention_webhook_url="ftp://x",
            intervention_webhook_secret="hunter2",
        )
    text = str(info.value)
    assert "'fax'" in text and "0.9" in text and "WEBHOOK_URL" in text and "hunter2" not in text
    ok = make_settings(
        tmp_path,
        intervention_sinks="webhook,export",
        intervention_webhook_url="https://crm.example.com/hook",
        intervention_webhook_secret="hunter2",
    )
    assert ok.intervention_sink_list == ["webhook", "export"] and "hunter2" not in repr(ok)
    assert ok.intervention_capacities == {"support_outreach": 200, "discount_offer": 1000}


def test_readme_receiver_snippet_verifies_what_the_platform_signs() -> None:
    """The signature check README gives receivers accepts the platform's signature, and nothing else."""
    import re
    import time

    from churn.interventions import sign
    from tests.support.env import REPO

    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", readme, re.S)
    assert snippet, "README lost the receiver's signature check"
    scope: dict = {}
    exec(snippet.group(1), scope)  # noqa: S102 - our own README's sample, run as a receiver would
    verified = scope["verified"]
    body, now = b'{"day":"2026-12-01","users":[]}', str(int(time.time()))
    good = sign("s3cret", now, body)
    assert verified("s3cret", body, good, now)
    assert not verified("other", body, good, now)
    assert not verified("s3cret", body + b" ", good, now)
    old = str(int(time.time()) - 3600)
    assert not verified("s3cret", body, sign("s3cret", old, body), old)  # a replay, an hour late
    assert not verified("s3cret", body, good, str(int(now) + 1))  # the timestamp is part of the signature
