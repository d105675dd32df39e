"""``churn data``: bring data into the raw store (synthetic or your own) and check it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from churn.console import console, progress, step
from churn.settings import get_settings
from cli.options import ChurnError, parse_date, user_errors

app = typer.Typer(help="Generate, import and validate raw users/events/payments.", no_args_is_help=True)


def _reject(exc) -> ChurnError:
    if exc.report is not None:
        console.print(exc.report.render())
    return ChurnError(str(exc))


@app.command("generate")
def generate_cmd(
    users: Annotated[int, typer.Option(help="Number of users.")] = 10_000,
    days: Annotated[int, typer.Option(help="Days of history before the end date.")] = 180,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 42,
    end_date: Annotated[
        str | None, typer.Option(help="Exclusive end of the history (YYYY-MM-DD); default today.")
    ] = None,
) -> None:
    """Generate a synthetic TechITFactory site (replaces the raw store after validation)."""
    from jobs.ingest import IngestError, generate_store

    settings = get_settings()
    end = parse_date(end_date)
    with user_errors(), step("data generate") as r, progress() as bar:
        task = bar.add_task("generating days", total=days)
        try:
            res, _ = generate_store(
                settings,
                users=users,
                days=days,
                seed=seed,
                end_date=end,
                on_day=lambda n: bar.update(task, completed=n),
            )
        except IngestError as exc:
            raise _reject(exc) from exc
        r.extra.update(
            users=f"{res.users:,}",
            events=f"{res.events:,}",
            payments=f"{res.payments:,}",
            window=f"{res.start}..{res.end}",
        )
        r.wrote.append(str(settings.raw_dir))


@app.command("import")
def import_cmd(
    events: Annotated[Path, typer.Option(help="Events file (CSV or Parquet).")],
    users: Annotated[Path | None, typer.Option(help="Users file (CSV or Parquet).")] = None,
    payments: Annotated[Path | None, typer.Option(help="Payments file (CSV or Parquet).")] = None,
    quarantine: Annotated[
        bool, typer.Option(help="Keep good rows, set bad rows aside with their reason.")
    ] = False,
    as_of: Annotated[
        str | None, typer.Option(help="Reference time for future/freshness checks (ISO); default now.")
    ] = None,
) -> None:
    """Import your own event log (see README for the schema); rejected batches change nothing."""
    from jobs.ingest import IngestError, import_batch

    settings = get_settings()
    ref = dt.datetime.fromisoformat(as_of).astimezone(dt.UTC) if as_of else None
    with user_errors(), step("data import") as r:
        try:
            res = import_batch(
                settings, events=events, users=users, payments=payments, quarantine=quarantine, as_of=ref
            )
        except IngestError as exc:
            raise _reject(exc) from exc
        r.extra.update(accepted=res.accepted)
        if res.quarantine_dir:
            console.print(res.report.render())
            r.extra.update(quarantined=res.quarantined)
            r.wrote.append(str(res.quarantine_dir))
        r.wrote.append(str(settings.raw_dir))


@app.command("validate")
def validate_cmd() -> None:
    """Re-run every validation gate over the stored raw data; non-zero exit if any fails."""
    from jobs.ingest import IngestError, validate_store

    settings = get_settings()
    with user_errors(), step("data validate") as r:
        try:
            report = validate_store(settings)
        except IngestError as exc:
            raise ChurnError(str(exc)) from exc
        console.print(report.render())
        r.extra.update(passed=report.passed, rows=report.rows)
        if not report.passed:
            raise ChurnError(f"{len(report.failures)} checks failed")
