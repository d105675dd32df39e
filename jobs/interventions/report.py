"""Did the interventions work? ``churn interventions report --since D [--until D]``.

The plan holds a random share of each action's eligible users out as a control group (a stable
hash of user, action and campaign period, ``churn.interventions.in_control``), so contacted and
control users differ only by chance and by the contact. The report compares them once their labels
mature:

* **Units.** A user's first assignment to an action within a campaign period: the hash randomises
  per (user, action, campaign), so that is the unit that was randomised. A later contact of the same
  user in the same period (after the cooldown) belongs to the policy being measured, not to a new
  experiment. Contacted = a ``sent`` or ``exported`` row for the assignment's idempotency key;
  control = ``held_out``. A treatment assignment never delivered (dead letter, suppressed, still
  planned) is left out and counted.
* **Label.** The same rule as training (``churn.policies.LabelPolicy``, ``training.labels``): a unit
  assigned on day D churned if the user has no event in ``[D, D + horizon)``. A unit counts only
  once raw events cover that whole window; younger ones are reported as pending.
* **Statistics** (``jobs/interventions/uplift.py``): churn rate per group, uplift = control rate
  minus contacted rate with Newcombe's interval, a verdict per action (helps, no detectable effect,
  harms, not enough data yet), the same per risk tier for reading, users saved = uplift × contacted.
* **Revenue kept.** Succeeded payments in each unit's label window, mean per contacted user minus
  mean per control user, times the contacted users.
* **Churn rate without and with the interventions**, for the business's success table: over the
  users batch scoring scored on the matured days (their predictions), the observed churn rate, and
  the rate had nobody been contacted, which adds back each day's users saved.

Outputs, written together (temp folder, checked, renamed): ``report.json``, ``report.html`` and
``metrics.prom`` (Prometheus textfile) under ``interventions/reports/since=D/``; then
``interventions/reports/latest.json`` points at the newest report.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from churn.errors import DataError, JobError
from churn.interventions import CONTACTED, CONTROL, HELD_OUT, TREATMENT
from churn.io import atomic_dir, write_json_atomic
from churn.layout import PREDICTIONS_PARQUET, partition_dates, partition_files
from churn.policies import LabelPolicy
from churn.schema import ENTITY_KEY
from churn.settings import Settings
from churn.storage import duckdb_connect, read_table
from jobs.interventions.outbox import read_outbox
from jobs.interventions.uplift import (
    CONFIDENCE,
    MIN_PER_GROUP,
    NOT_ENOUGH,
    VERDICTS,
    MeanDifference,
    Uplift,
    mean_difference,
    uplift,
)
from training.labels import active_users, event_days

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
REPORT_METRICS = "metrics.prom"
CONTACTED_ARM = "contacted"
CONTROL_ARM = "control"
UNKNOWN_TIER = "unknown"

METHOD = (
    "Units: a user's first assignment to an action in a campaign period. Churned: no event in "
    "[day, day + horizon). Uplift: control churn rate minus contacted churn rate, with Newcombe's "
    "hybrid score interval (Wilson per group). Verdict: interval above 0 helps, below 0 harms, else "
    "no detectable effect; fewer than the minimum matured users in a group: not enough data yet. "
    "Revenue kept: (mean succeeded payments per contacted user minus per control user in the label "
    "window) x contacted users, Welch normal interval."
)


class InterventionReportError(JobError):
    """The report cannot be built (unreadable outbox, plans or raw data)."""


def report_dir(settings: Settings, since: dt.date) -> Path:
    return settings.layout.intervention_report(since)


@dataclass(frozen=True)
class InterventionReport:
    since: dt.date
    until: dt.date | None
    report: dict[str, Any]
    out_dir: Path
    seconds: float

    @property
    def paths(self) -> list[Path]:
        return [self.out_dir / REPORT_JSON, self.out_dir / REPORT_HTML, self.out_dir / REPORT_METRICS]

    def summary(self) -> str:
        actions = self.report["actions"]
        if not actions:
            return f"no interventions recorded since {self.since}; wrote {self.out_dir}"
        parts = []
        for name, a in actions.items():
            o = a["overall"]
            if o["uplift"] is None or o["verdict"] == NOT_ENOUGH:
                parts.append(f"{name}: {o['verdict']} ({o['treated']}+{o['control']} matured)")
            else:
                parts.append(
                    f"{name}: {o['verdict']}, uplift {o['uplift']:+.3f} [{o['ci_low']:+.3f}, {o['ci_high']:+.3f}]"
                )
        return f"interventions since {self.since}: " + "; ".join(parts) + f"; wrote {self.out_dir}"


# --- units ----------------------------------------------------------------------------------------


def experiment_units(outbox: pa.Table) -> pd.DataFrame:
    """First assignment per (campaign, action, user), with its arm (contacted, control, or None).

    Columns: ``campaign, action, user_id, day, idempotency_key, arm``; ``arm`` is None for a
    treatment assignment that was never delivered.
    """
    cols = ["campaign", "action", ENTITY_KEY, "day", "idempotency_key", "arm"]
    if outbox.num_rows == 0:
        return pd.DataFrame(columns=cols)
    df = outbox.select(["day", ENTITY_KEY, "action", "group", "campaign", "idempotency_key", "status"]).to_pandas()
    contacted = set(df.loc[df["status"].isin(CONTACTED), "idempotency_key"])
    held = set(df.loc[(df["group"] == CONTROL) & (df["status"] == HELD_OUT), "idempotency_key"])
    assigned = df[df["group"].isin([TREATMENT, CONTROL])].drop_duplicates("idempotency_key")
    first = assigned.sort_values(["day", "idempotency_key"]).drop_duplicates(["campaign", "action", ENTITY_KEY])
    key = first["idempotency_key"]
    arm = np.where(
        (first["group"] == TREATMENT) & key.isin(contacted),
        CONTACTED_ARM,
        np.where((first["group"] == CONTROL) & key.isin(held), CONTROL_ARM, None),
    )
    out = first.assign(arm=arm)[cols].reset_index(drop=True)
    out["day"] = pd.to_datetime(out["day"]).dt.date
    return out


def _tiers(settings: Settings, days: list[dt.date]) -> dict[str, str]:
    """Idempotency key → risk tier, from the plans of ``days`` (the outbox does not carry tiers)."""
    out: dict[str, str] = {}
    for day in days:
        path = settings.layout.intervention_plan(day)
        if not path.exists():
            continue
        try:
            plan = read_table(path, columns=["idempotency_key", "tier"])
        except (OSError, pa.ArrowException) as exc:
            raise InterventionReportError(f"cannot read {path}: {exc}") from None
        out.update(zip(plan["idempotency_key"].to_pylist(), plan["tier"].to_pylist(), strict=True))
    return out


def _churned(settings: Settings, policy: LabelPolicy, days: list[dt.date]) -> dict[dt.date, set[str]]:
    """Day → users active in that day's label window (everyone else churned)."""
    out = {}
    for day in days:
        start, end = policy.window(day)
        try:
            out[day] = set(active_users(settings, start, end)[ENTITY_KEY].to_pylist())
        except DataError as exc:
            raise InterventionReportError(str(exc)) from None
    return out


def _revenue(settings: Settings, units: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Succeeded payments of each unit's user in the unit's label window."""
    if units.empty:
        return np.zeros(0)
    first, last = min(units["day"]), max(units["day"]) + dt.timedelta(days=horizon_days)
    root = settings.layout.raw_table("payments")
    days = {d for d in partition_dates(root) if first <= d < last}
    files = [str(f) for f in partition_files(root, days)]
    if not files:
        return np.zeros(len(units))
    frame = pa.table(
        {
            "row": np.arange(len(units)),
            ENTITY_KEY: pa.array(units[ENTITY_KEY].tolist(), pa.string()),
            "day": pa.array(units["day"].tolist(), pa.date32()),
        }
    )
    con = duckdb_connect(settings.data_dir, config=settings.duckdb_config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("units", frame)
        got = con.execute(
            f"""SELECT u.row, coalesce(sum(p.amount), 0) AS revenue
                FROM units u JOIN read_parquet($files, hive_partitioning=false) p
                  ON p.{ENTITY_KEY} = u.{ENTITY_KEY}
                 AND p.payment_ts >= CAST(u.day AS TIMESTAMPTZ)
                 AND p.payment_ts < CAST(u.day + {int(horizon_days)} AS TIMESTAMPTZ)
                WHERE p.status = 'succeeded'
                GROUP BY u.row""",
            {"files": files},
        ).fetchnumpy()
    except Exception as exc:  # duckdb raises its own hierarchy; any of it means unreadable payments
        raise InterventionReportError(f"cannot read raw payments: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    out = np.zeros(len(units))
    out[np.asarray(got["row"], dtype=np.int64)] = np.asarray(got["revenue"], dtype=np.float64)
    return out


def label_units(settings: Settings, units: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[dt.date, set[str]]]:
    """Matured units (with ``churned`` and ``revenue``) and pending units of the contacted and
    control arms, and the users active in each matured day's label window."""
    policy = LabelPolicy.from_settings(settings)
    days = event_days(settings)
    last = days[-1] if days else None
    units = units[units["arm"].notna()]
    mature = np.fromiter((policy.mature(d, last)[0] for d in units["day"]), dtype=bool, count=len(units))
    matured, pending = units[mature].copy(), units[~mature].copy()
    active = _churned(settings, policy, sorted(set(matured["day"])))
    matured["churned"] = [u not in active[d] for u, d in zip(matured[ENTITY_KEY], matured["day"], strict=True)]
    matured["revenue"] = _revenue(settings, matured, policy.horizon_days)
    return matured.reset_index(drop=True), pending.reset_index(drop=True), active


# --- figures ----------------------------------------------------------------------------------------


def _uplift_of(group: pd.DataFrame, min_per_group: int) -> Uplift:
    t = group[group["arm"] == CONTACTED_ARM]
    c = group[group["arm"] == CONTROL_ARM]
    return uplift(int(t["churned"].sum()), len(t), int(c["churned"].sum()), len(c), min_per_group=min_per_group)


def _revenue_of(group: pd.DataFrame) -> MeanDifference:
    return mean_difference(
        group.loc[group["arm"] == CONTACTED_ARM, "revenue"].to_numpy(),
        group.loc[group["arm"] == CONTROL_ARM, "revenue"].to_numpy(),
    )


def _scored(settings: Settings, day: dt.date) -> list[str] | None:
    path = settings.layout.predictions(day) / PREDICTIONS_PARQUET
    if not path.exists():
        return None
    try:
        return read_table(path, columns=[ENTITY_KEY])[ENTITY_KEY].to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise InterventionReportError(f"cannot read {path}: {exc}") from None


def _site_churn(
    settings: Settings,
    units: pd.DataFrame,
    figures: dict[str, Uplift],
    active: dict[dt.date, set[str]],
    policy: LabelPolicy,
) -> dict[str, Any] | None:
    """The churn rate of one cohort, observed and without the contacts (the success table's figure).

    The cohort is the users batch scoring scored on the first matured day D (active within
    ``active_days``); churned = no event in ``[D, D + horizon)``, the business's monthly churn rate.
    A contact on day t inside that window can only change the cohort's figure for a cohort user who
    had not come back between D and t, and then removes ``uplift`` churners in expectation; the
    rate without the contacts adds those back. Contacts on every day of the window count, matured
    or not (the action's measured uplift stands in for theirs).
    """
    cohort_day, scored = None, None
    for day in sorted(active):
        scored = _scored(settings, day)
        if scored is not None:
            cohort_day = day
            break
    if cohort_day is None or not scored:
        return None
    _, end = policy.window(cohort_day)
    members = set(scored)
    churned = sum(u not in active[cohort_day] for u in scored)
    contacts = units[(units["arm"] == CONTACTED_ARM) & (units["day"] >= cohort_day) & (units["day"] < end)]
    saved = saved_lo = saved_hi = 0.0
    counted = 0
    for day, rows in contacts.groupby("day", sort=True):
        back = set() if day == cohort_day else set(active_users(settings, cohort_day, day)[ENTITY_KEY].to_pylist())
        for user, action in zip(rows[ENTITY_KEY], rows["action"], strict=True):
            f = figures.get(str(action))
            if user not in members or user in back or f is None or f.uplift is None:
                continue
            counted += 1
            saved += f.uplift
            saved_lo += f.ci_low or 0.0
            saved_hi += f.ci_high or 0.0
    n = len(scored)
    covered = len({d for d in units["day"] if cohort_day <= d < end})
    return {
        "cohort_day": cohort_day.isoformat(),
        "label_window": [cohort_day.isoformat(), end.isoformat()],
        "campaign_days_in_window": covered,
        "scored_users": n,
        "churned_with_interventions": churned,
        "contacts_counted": counted,
        "users_saved": saved,
        "churn_rate_with_interventions": churned / n,
        "churn_rate_without_interventions": (churned + saved) / n,
        "churn_rate_without_interventions_ci": [(churned + saved_lo) / n, (churned + saved_hi) / n],
    }


def build_report(
    settings: Settings, since: dt.date, until: dt.date | None = None, *, min_per_group: int = MIN_PER_GROUP
) -> dict[str, Any]:
    policy = LabelPolicy.from_settings(settings)
    try:
        outbox = read_outbox(settings, since, until)
    except (OSError, pa.ArrowException) as exc:
        raise InterventionReportError(f"cannot read the outbox: {exc}") from None
    units = experiment_units(outbox)
    tiers = _tiers(settings, sorted(set(units["day"])))
    units["tier"] = [tiers.get(k, UNKNOWN_TIER) for k in units["idempotency_key"]]
    matured, pending, active = label_units(settings, units)
    actions: dict[str, Any] = {}
    figures: dict[str, Uplift] = {}
    for action in sorted(set(units["action"])):
        mine = matured[matured["action"] == action]
        overall = figures[action] = _uplift_of(mine, min_per_group)
        waiting = pending[pending["action"] == action]
        actions[action] = {
            "overall": overall.as_dict(),
            "revenue": _revenue_of(mine).as_dict(),
            "tiers": {
                str(tier): _uplift_of(rows, min_per_group).as_dict() for tier, rows in mine.groupby("tier", sort=True)
            },
            "pending": {
                "contacted": int((waiting["arm"] == CONTACTED_ARM).sum()),
                "control": int((waiting["arm"] == CONTROL_ARM).sum()),
            },
            "not_delivered": int(((units["action"] == action) & units["arm"].isna()).sum()),
            "first_day": min(units.loc[units["action"] == action, "day"]).isoformat(),
            "last_day": max(units.loc[units["action"] == action, "day"]).isoformat(),
        }
    days = event_days(settings)
    return {
        "since": since.isoformat(),
        "until": until.isoformat() if until else None,
        "last_event_day": days[-1].isoformat() if days else None,
        "labels_mature_through": policy.latest_cutoff(days[-1]).isoformat() if days else None,
        "horizon_days": policy.horizon_days,
        "confidence": CONFIDENCE,
        "min_per_group": min_per_group,
        "method": METHOD,
        "actions": actions,
        "site": _site_churn(settings, units, figures, active, policy),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# --- outputs --------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _num(x: float | None, spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


_COLOURS = {"helps": "#27ae60", "harms": "#c0392b", "no detectable effect": "#7f8c8d", NOT_ENOUGH: "#b9770e"}


def _uplift_row(label: str, u: dict[str, Any]) -> str:
    ci = "" if u["ci_low"] is None else f" [{_pts(u['ci_low'])}, {_pts(u['ci_high'])}]"
    p = "n/a" if u["p_value"] is None else f"{u['p_value']:.3g}"
    colour = _COLOURS.get(u["verdict"], "#222")
    return (
        f"<tr><td>{html.escape(label)}</td><td>{u['treated']:,}</td><td>{_pct(u['treated_rate'])}</td>"
        f"<td>{u['control']:,}</td><td>{_pct(u['control_rate'])}</td><td>{_pts(u['uplift'])}{ci}</td>"
        f"<td>{p}</td><td>{_num(u['users_saved'], ',.1f')}</td>"
        f"<td style='color:{colour};font-weight:bold'>{html.escape(u['verdict'])}</td></tr>"
    )


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    head = (
        "<tr><th></th><th>contacted</th><th>churn</th><th>control</th><th>churn</th>"
        "<th>uplift, points [95% CI]</th><th>p</th><th>users saved</th><th>verdict</th></tr>"
    )
    sections = []
    for action, a in report["actions"].items():
        rows = [_uplift_row("all tiers", a["overall"])]
        rows += [_uplift_row(f"tier {tier}", u) for tier, u in a["tiers"].items()]
        r = a["revenue"]
        kept = "n/a"
        if r["kept"] is not None:
            kept = f"{r['kept']:,.0f} [{r['kept_ci'][0]:,.0f}, {r['kept_ci'][1]:,.0f}]"
        sections.append(
            f"<h2>{esc(action)}: {esc(a['overall']['verdict'])}</h2>"
            f"<p>Assignments {esc(a['first_day'])} to {esc(a['last_day'])}; pending (labels not mature): "
            f"{a['pending']['contacted']:,} contacted, {a['pending']['control']:,} control; "
            f"never delivered: {a['not_delivered']:,}.</p>"
            f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p>Revenue per user in the label window: contacted {_num(r['treated_mean'], ',.2f')}, "
            f"control {_num(r['control_mean'], ',.2f')}; revenue kept {kept}.</p>"
        )
    site = report["site"]
    if site:
        lo, hi = site["churn_rate_without_interventions_ci"]
        start, end = site["label_window"]
        site_html = (
            f"<p>The {site['scored_users']:,} users scored on {esc(site['cohort_day'])}, churned = no event in "
            f"[{esc(start)}, {esc(end)}): churn rate without the interventions (estimated) "
            f"<b>{_pct(site['churn_rate_without_interventions'])}</b> [{_pct(lo)}, {_pct(hi)}], with them "
            f"(observed) <b>{_pct(site['churn_rate_with_interventions'])}</b>; users saved "
            f"{site['users_saved']:,.1f} by {site['contacts_counted']:,} contacts on "
            f"{site['campaign_days_in_window']} campaign days of that window.</p>"
        )
    else:
        site_html = "<p>No matured day with batch-scoring predictions yet.</p>"
    until = report["until"] or "now"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Interventions since {esc(report["since"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: .9em; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h1>Interventions from {esc(report["since"])} to {esc(until)}</h1>
<p>Labels mature through {esc(str(report["labels_mature_through"]))} (last event day
{esc(str(report["last_event_day"]))}, horizon {report["horizon_days"]} days); generated
{esc(report["generated_at"])}.</p>
<h2>Churn rate</h2>
{site_html}
{"".join(sections) or "<p>No interventions recorded.</p>"}
<h2>Method</h2>
<p>{esc(report["method"])} Minimum matured users per group: {report["min_per_group"]}.</p>
</body></html>
"""


def write_metrics(path: Path, report: dict[str, Any], run_ts: float) -> None:
    """Prometheus text exposition of the latest verdicts (textfile collector format)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    nan = float("nan")
    up = Gauge("churn_intervention_uplift", "Control minus contacted churn rate.", ["action"], registry=reg)
    lo = Gauge("churn_intervention_uplift_ci_low", "Lower end of the uplift's interval.", ["action"], registry=reg)
    hi = Gauge("churn_intervention_uplift_ci_high", "Upper end of the uplift's interval.", ["action"], registry=reg)
    verdict = Gauge(
        "churn_intervention_verdict",
        "1 for an action's current verdict (helps, no detectable effect, harms, not enough data yet), else 0.",
        ["action", "verdict"],
        registry=reg,
    )
    users = Gauge(
        "churn_intervention_matured_users", "Matured users per action and group.", ["action", "group"], registry=reg
    )
    saved = Gauge("churn_intervention_users_saved", "Uplift times contacted users.", ["action"], registry=reg)
    kept = Gauge("churn_intervention_revenue_kept", "Revenue kept by an action.", ["action"], registry=reg)
    for action, a in report["actions"].items():
        o = a["overall"]
        up.labels(action=action).set(nan if o["uplift"] is None else o["uplift"])
        lo.labels(action=action).set(nan if o["ci_low"] is None else o["ci_low"])
        hi.labels(action=action).set(nan if o["ci_high"] is None else o["ci_high"])
        for v in VERDICTS:
            verdict.labels(action=action, verdict=v).set(1 if o["verdict"] == v else 0)
        users.labels(action=action, group=CONTACTED_ARM).set(o["treated"])
        users.labels(action=action, group=CONTROL_ARM).set(o["control"])
        saved.labels(action=action).set(nan if o["users_saved"] is None else o["users_saved"])
        kept.labels(action=action).set(nan if a["revenue"]["kept"] is None else a["revenue"]["kept"])
    site = report["site"]
    rate = Gauge(
        "churn_intervention_site_churn_rate",
        "Churn rate of the scored users on matured days, with the interventions (observed) and without (estimated).",
        ["case"],
        registry=reg,
    )
    if site:
        rate.labels(case="with").set(site["churn_rate_with_interventions"])
        rate.labels(case="without").set(site["churn_rate_without_interventions"])
    Gauge(
        "churn_intervention_report_timestamp_seconds", "Unix time of the last intervention report.", registry=reg
    ).set(run_ts)
    write_to_textfile(str(path), reg)


def _validate(tmp: Path) -> None:
    for name in (REPORT_JSON, REPORT_HTML, REPORT_METRICS):
        if not (tmp / name).is_file() or (tmp / name).stat().st_size == 0:
            raise InterventionReportError(f"intervention report output {name} was not written")
    json.loads((tmp / REPORT_JSON).read_text())


def _newest_end(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["labels_mature_through"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def report(settings: Settings, since: dt.date, until: dt.date | None = None) -> InterventionReport:
    """Build and write the report of the interventions assigned in ``[since, until]``."""
    t0 = time.time()
    if until is not None and until < since:
        raise InterventionReportError(f"--until {until} is before --since {since}")
    body = build_report(settings, since, until)
    out = report_dir(settings, since)
    with atomic_dir(out, validate=_validate) as tmp:
        (tmp / REPORT_JSON).write_text(json.dumps(body, indent=2) + "\n")
        (tmp / REPORT_HTML).write_text(render_html(body))
        write_metrics(tmp / REPORT_METRICS, body, t0)
    latest = settings.layout.intervention_reports_latest
    previous = _newest_end(latest)
    mine = body["labels_mature_through"]
    if previous is None or (mine is not None and previous <= mine):
        write_json_atomic(
            latest,
            {
                "since": body["since"],
                "until": body["until"],
                "labels_mature_through": mine,
                "report": str(out / REPORT_JSON),
                "metrics": str(out / REPORT_METRICS),
                "generated_at": body["generated_at"],
            },
        )
    return InterventionReport(since, until, body, out, time.time() - t0)
