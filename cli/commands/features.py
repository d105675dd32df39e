"""``churn features build | apply | materialize | config``: the feature-store lifecycle."""

from __future__ import annotations

import datetime as dt

import typer

from cli.options import ChurnError, parse_date, user_errors

app = typer.Typer(help="Feature tables and the Feast feature store.", no_args_is_help=True)


def _date(value: str | None) -> dt.date | None:
    return None if value is None else parse_date(value)


@app.command()
def build(
    start_date: str = typer.Option(None, "--start-date", help="First date to build (YYYY-MM-DD)."),
    end_date: str = typer.Option(None, "--end-date", help="Last date to build (YYYY-MM-DD)."),
) -> None:
    """Aggregate raw data into daily feature tables (incremental by default)."""
    from churn.console import step
    from churn.settings import get_settings

    with user_errors(), step("features build") as r:
        from jobs.aggregate import build_features

        try:
            result = build_features(get_settings(), _date(start_date), _date(end_date))
        except ValueError as exc:  # a malformed date range from the library below
            raise ChurnError(str(exc)) from exc
        r.extra["result"] = result.summary()


@app.command()
def apply() -> None:
    """Register the feature definitions (like `feast apply`) and render feature_store.yaml for `feast -f`."""
    from churn.console import step
    from churn.settings import get_settings
    from feature_repo import store as feature_store

    settings = get_settings()
    with user_errors(), step("features apply") as r:
        try:
            counts = feature_store.apply(settings)
        except Exception as exc:
            raise ChurnError(f"feast apply failed: {exc}") from exc
        r.extra.update(counts)
        r.wrote.append(str(feature_store.write_feature_store_yaml(settings)))


@app.command()
def materialize(
    end_date: str = typer.Option(None, "--end-date", help="Features as of this date (default: newest partition)."),
    full: bool = typer.Option(False, "--full", help="Reload the TTL window instead of only new partitions."),
) -> None:
    """Load the latest feature rows into the online store (fast path; incremental by default)."""
    from churn.console import step
    from churn.settings import get_settings

    with user_errors(), step("features materialize") as r:
        from jobs.materialize import materialize as run

        result = run(get_settings(), _date(end_date), full=full)
        r.extra["result"] = result.summary()


@app.command()
def config(
    write: bool = typer.Option(
        True, "--write/--print", help="Write $CHURN_DATA_DIR/feast/feature_store.yaml (for feast -f)."
    ),
) -> None:
    """Render feature_store.yaml for the `feast` CLI from the CHURN_* settings."""
    from churn.settings import get_settings
    from feature_repo import store as feature_store

    settings = get_settings()
    if write:
        typer.echo(str(feature_store.write_feature_store_yaml(settings)))
    else:
        typer.echo(feature_store.render_feature_store_yaml(settings), nl=False)
