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
    if getattr(exc, "report", None) is not None:
        console.print(exc.report.render(), markup=False, soft_wrap=True)
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
    users: Annotated[
        Path | None,
        typer.Option(help="Users file (CSV or Parquet); optional: unknown users are inferred from their activity."),
    ] = None,
    payments: Annotated[Path | None, typer.Option(help="Payments file (CSV or Parquet).")] = None,
    quarantine: Annotated[
        bool, typer.Option(help="Keep good rows, set bad rows aside with their reason.")
    ] = False,
    as_of: Annotated[
        str | None, typer.Option(help="Reference time for future/freshness checks (ISO); default now.")
    ] = None,
    event_map: Annotated[
        str | None,
        typer.Option(
            "--event-map",
            metavar="SPEC",
            help="Your event names → canonical types: 'source=canonical[,source=canonical...]' or a "
            ".yaml/.csv file. Canonical names need no entry.",
        ),
    ] = None,
    unmapped: Annotated[
        str,
        typer.Option(
            metavar="refuse|activity",
            help="Event types neither mapped nor canonical: 'refuse' them (listed with their counts), "
            "or keep them as generic 'activity' (counts as activity, in no typed count).",
        ),
    ] = "refuse",
    infer_users: Annotated[
        bool,
        typer.Option(
            help="Create users known neither from --users nor the store from their first event or "
            "payment (profile 'unknown'); --no-infer-users rejects their rows (unknown_user).",
        ),
    ] = True,
) -> None:
    """Import your own event log (see README for the schema); rejected batches change nothing."""
    from churn.errors import IngestError
    from jobs.ingest import import_batch

    settings = get_settings()
    ref = dt.datetime.fromisoformat(as_of).astimezone(dt.UTC) if as_of else None
    with user_errors(), step("data import") as r:
        try:
            res = import_batch(
                settings,
                events=events,
                users=users,
                payments=payments,
                quarantine=quarantine,
                as_of=ref,
                event_map=event_map,
                unmapped=unmapped,
                infer_users=infer_users,
            )
        except IngestError as exc:
            raise _reject(exc) from exc
        r.extra.update(accepted=res.accepted, inferred_users=res.inferred_users)
        if res.quarantine_dir:
            console.print(res.report.render(), markup=False, soft_wrap=True)
            r.extra.update(quarantined=res.quarantined)
        console.print(res.render(), markup=False, soft_wrap=True)
        if res.quarantine_dir:
            r.wrote.append(str(res.quarantine_dir))
        r.wrote.append(str(settings.raw_dir))


@app.command("ingest-landing")
def ingest_landing_cmd(
    date: Annotated[
        str | None,
        typer.Option(help="Delivery day: imports landing/<table>/date=D/ (YYYY-MM-DD, today, yesterday)."),
    ] = None,
    quarantine: Annotated[
        bool | None,
        typer.Option(
            "--quarantine/--no-quarantine",
            help="Keep good rows, set bad rows aside with their reason (default: CHURN_LANDING_QUARANTINE).",
        ),
    ] = None,
    event_map: Annotated[
        str | None,
        typer.Option(
            "--event-map",
            metavar="SPEC",
            help="As for `data import` (default: CHURN_LANDING_EVENT_MAP).",
        ),
    ] = None,
    unmapped: Annotated[
        str | None,
        typer.Option(metavar="refuse|activity", help="As for `data import` (default: CHURN_LANDING_UNMAPPED)."),
    ] = None,
    infer_users: Annotated[
        bool,
        typer.Option(help="As for `data import`: create unknown users from their first event or payment."),
    ] = True,
) -> None:
    """Import the day's landing files not imported yet (events required; payments, users optional)."""
    from churn.errors import IngestError
    from jobs.landing import ingest_landing

    settings = get_settings()
    day = parse_date(date)
    with user_errors(), step("data ingest-landing") as r:
        try:
            res = ingest_landing(
                settings,
                day,
                quarantine=quarantine,
                event_map=event_map,
                unmapped=unmapped,
                infer_users=infer_users,
            )
        except IngestError as exc:
            raise _reject(exc) from exc
        for report in res.reports:
            console.print(report, markup=False, soft_wrap=True)
        r.extra["result"] = res.summary()
        r.wrote += res.quarantine_dirs
        if res.imported:
            r.wrote += [str(settings.raw_dir), str(settings.layout.landing_manifest(day))]


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
