"""``churn interventions plan | send | suppress | report``: close the loop from scores to contacts.

Thin wrappers: the logic lives in ``jobs/interventions/``. Each prints one summary line and exits
non-zero on failure (``ChurnError`` → one clear line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churn.console import step
from churn.settings import get_settings
from cli.options import ChurnError, parse_date, user_errors

app = typer.Typer(help="Choose whom to contact, deliver, honour opt-outs, measure the effect.", no_args_is_help=True)

DateOption = Annotated[
    str | None,
    typer.Option("--date", help="Day to process: YYYY-MM-DD, today or yesterday (UTC); default today."),
]


@app.command("plan")
def plan_cmd(
    date: DateOption = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Plan the day again from its scores (only before anything was sent).")
    ] = False,
) -> None:
    """Choose whom to contact for each action on D (capacity, cooldown, suppression, control group)."""
    from jobs.interventions.plan import plan

    settings = get_settings()
    day = parse_date(date)
    with user_errors(), step("interventions plan") as r:
        res = plan(settings, day, replace=replace)
        r.extra["result"] = res.summary()
        r.wrote.append(str(res.path))


@app.command("send")
def send_cmd(date: DateOption = None) -> None:
    """Deliver D's plan to the configured sinks (webhook, export); resumes where a killed send stopped."""
    from jobs.interventions.send import send

    settings = get_settings()
    day = parse_date(date)
    with user_errors(), step("interventions send") as r:
        res = send(settings, day)
        r.extra["result"] = res.summary()
        r.wrote.extend(str(p) for p in res.exports)


@app.command("suppress")
def suppress_cmd(
    user_ids: Annotated[list[str] | None, typer.Argument(metavar="USER_ID", help="Users never to contact.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with each entry).")] = "",
    file: Annotated[
        Path | None,
        typer.Option("--file", help="More users: Parquet or CSV with a user_id column, or one id per line."),
    ] = None,
) -> None:
    """Add users to the suppression list, honoured by every plan and send from now on."""
    from jobs.interventions.suppression import read_user_file, suppress

    settings = get_settings()
    with user_errors(), step("interventions suppress") as r:
        users = list(user_ids or [])
        if file is not None:
            users += read_user_file(file)
        if not users:
            raise ChurnError("no users given: pass USER_ID... and/or --file")
        res = suppress(settings, users, reason)
        r.extra["result"] = res.summary()
        r.wrote.append(str(res.path))


@app.command("report")
def report_cmd(
    since: Annotated[str, typer.Option("--since", help="First plan day: YYYY-MM-DD, today or yesterday.")],
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Last plan day (default: every day since --since; unmatured ones show as pending)."
        ),
    ] = None,
) -> None:
    """Treatment vs control churn per action and campaign, once outcomes have matured."""
    from jobs.interventions.report import report

    settings = get_settings()
    start = parse_date(since)
    end = parse_date(until) if until is not None else None
    with user_errors():
        res = report(settings, start, end)
    print(res.summary(), flush=True)
