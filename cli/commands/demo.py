"""``churn demo``: the README's main command, the whole loop end to end on the embedded default."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from churn.console import console, step
from churn.layout import DRIFT_REPORT_HTML, PREDICTIONS_CSV, PREDICTIONS_PARQUET
from churn.settings import Settings, get_settings
from cli.options import ChurnError, user_errors

app = typer.Typer()


def _generate(settings: Settings, users: int, days: int, seed: int, end: dt.date) -> str:
    from jobs.ingest import IngestError, generate_store, validate_store

    try:
        res, _ = generate_store(settings, users=users, days=days, seed=seed, end_date=end)
    except IngestError as exc:
        if exc.report is not None:
            console.print(exc.report.render())
        raise ChurnError(str(exc)) from exc
    report = validate_store(settings)
    if not report.passed:
        console.print(report.render())
        raise ChurnError("stored data failed validation")
    return f"{res.users:,} users, {res.events:,} events, {res.payments:,} payments; all gates passed"


def _train(settings: Settings) -> str:
    from training.labels import NotEnoughDataError
    from training.registry import RegistryError
    from training.train import train

    try:
        res = train(settings, promote=True)
    except (NotEnoughDataError, RegistryError) as exc:
        raise ChurnError(str(exc)) from exc
    auc = res.test_metrics.get(res.served, {}).get("roc_auc")
    return f"version {res.version}, served {res.served}, test ROC-AUC {auc:.3f}; report {res.report_path}"


def _sample_user(settings: Settings, date: dt.date) -> str | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = settings.layout.predictions(date) / PREDICTIONS_PARQUET
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["user_id", "churn_probability"])
    if table.num_rows == 0:
        return None
    return str(table["user_id"][int(pc.index(table["churn_probability"], pc.max(table["churn_probability"])))])


def _interventions(settings: Settings, date: dt.date) -> str:
    """Where the daily loop's plan and CRM exports of the day are, with their head counts."""
    import pyarrow.compute as pc

    from churn.interventions import CONTROL, TREATMENT
    from churn.storage import read_table

    path = settings.layout.intervention_plan(date)
    if not path.exists():
        return f"no plan for {date}: the daily loop had no scores for it"
    plan = read_table(path, columns=["action", "group"])
    lines = [f"plan: {path}"]
    for action in sorted(set(plan["action"].to_pylist())):
        rows = plan.filter(pc.equal(plan["action"], action))
        treated = pc.sum(pc.equal(rows["group"], TREATMENT)).as_py() or 0
        held = pc.sum(pc.equal(rows["group"], CONTROL)).as_py() or 0
        export = settings.layout.export_file(date, action, settings.intervention_export_format)
        where = f"export {export}" if export.exists() else "no export (sinks: " + settings.intervention_sinks + ")"
        lines.append(f"  {action}: {treated:,} to contact, {held:,} held out as control; {where}")
    return "\n".join(lines)


@app.command("demo")
def demo_cmd(
    users: Annotated[int, typer.Option(help="Synthetic users to generate.")] = 20_000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 270,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Generate a site and run the whole loop: features, training, promotion, scoring, drift."""
    from jobs.daily import apply_step, build_step, daily, materialize_step

    settings = get_settings()
    today = dt.datetime.now(dt.UTC).date()
    stages = [
        ("generate + validate", lambda: _generate(settings, users, days, seed, today)),
        ("features build (DuckDB)", lambda: build_step(settings, today)),
        ("feast apply", lambda: apply_step(settings, today)),
        ("materialize to the online store", lambda: materialize_step(settings, today)),
        ("train + promote", lambda: _train(settings)),
        (
            "daily loop (score → interventions → drift → retrain if needed)",
            lambda: daily(settings, today).summary(),
        ),
    ]
    with user_errors(), step("demo") as r:
        for i, (name, fn) in enumerate(stages, 1):
            console.rule(f"{i}/{len(stages)} {name}")
            console.print(fn())
        user = _sample_user(settings, today) or "u0000001"
        console.rule("the day's interventions")
        console.print(_interventions(settings, today))
        r.wrote.append(str(settings.data_dir))
    print(
        "\nThe platform is ready. Start the API (port 8000) with:\n\n"
        "    .venv/bin/churn serve\n\n"
        "then, from another shell:\n\n"
        f"    curl -s -X POST localhost:8000/predict -H 'content-type: application/json' "
        f'-d \'{{"user_id": "{user}"}}\'\n\n'
        f"Predictions: {settings.layout.predictions(today) / PREDICTIONS_CSV}   "
        f"Drift report: {settings.layout.drift(today) / DRIFT_REPORT_HTML}\n"
        f"Interventions: {settings.layout.intervention_plan(today)} and "
        f"{settings.layout.exports(today)}/ (README, Interventions)\n"
    )
