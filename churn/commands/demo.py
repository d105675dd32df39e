"""``churn demo``: the README's main command, the whole loop end to end on the embedded default."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from churn.commands._common import ChurnError, user_errors
from churn.console import console, step
from churn.settings import get_settings

app = typer.Typer()


@app.command("demo")
def demo_cmd(
    users: Annotated[int, typer.Option(help="Synthetic users to generate.")] = 20_000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 180,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Generate a site, validate it, build features, train, promote, score and check drift."""
    from jobs.aggregate import build_features
    from jobs.ingest import IngestError, generate_store, validate_store

    settings = get_settings()
    end = dt.datetime.now(dt.UTC).date()
    with user_errors(), step("demo") as r:
        console.rule("1/3 generate + validate")
        try:
            res, report = generate_store(settings, users=users, days=days, seed=seed, end_date=end)
        except IngestError as exc:
            if exc.report is not None:
                console.print(exc.report.render())
            raise ChurnError(str(exc)) from exc
        console.print(f"generated {res.users:,} users, {res.events:,} events, {res.payments:,} payments")
        report = validate_store(settings)
        if not report.passed:
            console.print(report.render())
            raise ChurnError("stored data failed validation")
        console.rule("2/3 daily feature tables (DuckDB)")
        built = build_features(settings)
        console.print(built.summary())
        r.extra.update(users=f"{res.users:,}", feature_rows=f"{built.rows:,}")
        r.wrote.append(str(settings.data_dir))
