"""Benchmark: does the intervention report recover a simulated uplift, and find none where none was?

Runs ``jobs.interventions.uplift_sim.simulate`` (the generator with a treatment hook, the real
selection, outbox and export send, the oracle as the scorer) into a temporary data directory for
each scenario, then ``churn interventions report`` over the campaign, and prints, per action, the
true uplift (the generator's oracle: mean of P(churn | not contacted) - P(churn | contacted) over
the analysed users) next to the measured one with its interval.

Scenarios:
* ``effects``: support_outreach wins back ``--outreach`` of the drifting/fading users it reaches,
  on every plan; discount_offer wins back ``--discount`` of them, on paying plans only;
* ``null``: both actions do nothing.

Usage: python benchmarks/uplift.py --users 50000 --campaign-days 28 --seed 42
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from churn.settings import Settings
from jobs.generate import Effect
from jobs.interventions.uplift_sim import cohort_truth, compare, simulate

END = dt.date(2026, 6, 1)
PAID_PLANS = ("basic", "premium")


def _scenarios(outreach: float, discount: float) -> dict[str, dict[str, Effect]]:
    return {
        "effects": {
            "support_outreach": Effect(outreach),
            "discount_offer": Effect(discount, plans=PAID_PLANS),
        },
        "null": {"support_outreach": Effect(0.0), "discount_offer": Effect(0.0)},
    }


def _fmt(x: float | None, spec: str = "+.3f") -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--campaign-days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--outreach", type=float, default=0.3)
    ap.add_argument("--discount", type=float, default=0.3)
    ap.add_argument("--control-share", type=float, default=None, help="default: the settings' default")
    ap.add_argument("--scenario", action="append", choices=["effects", "null"], help="default: both")
    ap.add_argument("--keep", type=Path, default=None, help="keep the data directories under this folder")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="churn-uplift-"))
    lines = [
        "| scenario | action | contacted | control | true uplift | measured uplift [95% CI] | covered | verdict |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    cohorts = [
        "| scenario | cohort (scored on) | users | true churn without contacts (oracle) "
        "| estimated without [95% CI] | observed with |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    try:
        for name, effects in _scenarios(args.outreach, args.discount).items():
            if args.scenario and name not in args.scenario:
                continue
            data_dir = root / name
            shutil.rmtree(data_dir, ignore_errors=True)
            env = {"CHURN_DATA_DIR": str(data_dir), "CHURN_FRESHNESS_MAX_HOURS": "0"}
            if args.control_share is not None:
                env["CHURN_INTERVENTION_CONTROL_SHARE"] = str(args.control_share)
            settings = Settings.from_env(env=env)
            t0 = time.perf_counter()
            sim = simulate(
                settings,
                users=args.users,
                campaign_days=args.campaign_days,
                seed=args.seed,
                end_date=END,
                effects=effects,
            )
            t1 = time.perf_counter()
            result, rows = compare(sim)
            t2 = time.perf_counter()
            print(
                f"{name}: {args.users:,} users, campaign {sim.since}..{sim.until}, "
                f"control share {settings.intervention_control_share}: simulation {t1 - t0:.1f} s, "
                f"report {t2 - t1:.1f} s"
            )
            for r in rows:
                ci = f"{_fmt(r['measured_uplift'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
                covered = "n/a" if r["covered"] is None else ("yes" if r["covered"] else "NO")
                lines.append(
                    f"| {name} | {r['action']} | {r['contacted']:,} | {r['control']:,} | "
                    f"{_fmt(r['true_uplift'])} | {ci} | {covered} | {r['verdict']} |"
                )
            site = result.report["site"]
            if site:
                truth = cohort_truth(sim, dt.date.fromisoformat(site["cohort_day"]))
                lo, hi = site["churn_rate_without_interventions_ci"]
                cohorts.append(
                    f"| {name} | {site['cohort_day']} | {site['scored_users']:,} | {truth:.1%} | "
                    f"{site['churn_rate_without_interventions']:.1%} [{lo:.1%}, {hi:.1%}] | "
                    f"{site['churn_rate_with_interventions']:.1%} |"
                )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("\n".join(lines))
    print()
    print("\n".join(cohorts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
