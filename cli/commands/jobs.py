"""Scheduled batch jobs: ``churn score | drift | monitor | retrain | housekeeping | daily`` (top-level commands).

Thin wrappers: the logic lives in ``jobs/``. Each prints one summary line and exits non-zero on
failure (``ChurnError`` → one clear line), so cron/Kubernetes CronJobs can alert on the status.
"""

from __future__ import annotations

from typing import Annotated

import typer

from churn.console import step
from churn.settings import get_settings
from cli.options import parse_date, user_errors

app = typer.Typer()

DateOption = Annotated[
    str | None,
    typer.Option("--date", help="Day to process: YYYY-MM-DD, today or yesterday (UTC); default today."),
]


@app.command("score")
def score_cmd(date: DateOption = None) -> None:
    """Score every active user with the production model; writes predictions/date=D/ atomically."""
    from jobs.score import score

    settings = get_settings()
    day = parse_date(date)
    with user_errors(), step("score") as r:
        res = score(settings, day)
        r.extra.update(
            date=day,
            users=f"{res.users:,}",
            model=res.model_version,
            tiers="/".join(f"{k}:{v:,}" for k, v in res.tiers.items()),
        )
        r.wrote.append(str(res.out_dir))


@app.command("drift")
def drift_cmd(
    date: DateOption = None,
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 even when drift is detected.")] = False,
) -> None:
    """Compare the day's scored features with the model's reference (isolated drift env); exit 3 on drift."""
    from jobs.drift.launch import run_drift

    settings = get_settings()
    day = parse_date(date)
    with user_errors():
        code = run_drift(settings, day, exit_zero=exit_zero)
    raise typer.Exit(code)


@app.command("monitor")
def monitor_cmd(date: DateOption = None) -> None:
    """Live ROC-AUC/precision/recall of the predictions of D once their labels have matured."""
    from jobs.monitor import monitor

    settings = get_settings()
    day = parse_date(date)
    with user_errors(), step("monitor") as r:
        res = monitor(settings, day)
        r.extra["result"] = res.summary()
        if res.out_dir is not None:
            r.wrote.append(str(res.out_dir))


@app.command("housekeeping")
def housekeeping_cmd(date: DateOption = None) -> None:
    """Prune prediction-log days past retention and stale .tmp-* leftovers of killed writers."""
    from jobs.housekeeping import housekeeping

    settings = get_settings()
    day = parse_date(date)
    with user_errors(), step("housekeeping") as r:
        r.extra["result"] = housekeeping(settings, day).summary()


@app.command("retrain")
def retrain_cmd(
    force: Annotated[bool, typer.Option("--force", help="Retrain even if no trigger holds.")] = False,
) -> None:
    """Retrain when drift, a stale model, a performance drop or --force says so; promote through the gate."""
    from jobs.retrain import retrain

    settings = get_settings()
    with user_errors(), step("retrain") as r:
        res = retrain(settings, force=force)
        r.extra["result"] = res.summary()
        if res.ran:
            r.wrote.append(str(settings.registry_root / "retrain.log"))


@app.command("daily")
def daily_cmd(
    date: DateOption = None,
    first: Annotated[
        str | None,
        typer.Option("--from", metavar="STEP", help="Start at this step (default: ingest, the first)."),
    ] = None,
    last: Annotated[
        str | None,
        typer.Option("--to", metavar="STEP", help="Stop after this step (default: housekeeping, the last)."),
    ] = None,
) -> None:
    """The daily loop: ingest → build → apply → materialize → score → interventions → drift → retrain
    → compare → housekeeping."""
    from jobs.daily import daily

    settings = get_settings()
    day = parse_date(date)
    with user_errors(), step("daily") as r:
        res = daily(settings, day, first=first, last=last)
        r.extra["result"] = res.summary()
