"""``churn models``: list, inspect, promote (gated), roll back and stage registry versions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from churn.console import console
from churn.settings import get_settings
from cli.options import ChurnError, user_errors

if TYPE_CHECKING:
    from jobs.compare import ComparisonReport

app = typer.Typer(help="Inspect and promote model versions in the registry.", no_args_is_help=True)


def _registry():  # noqa: ANN202
    from training.registry import ModelRegistry

    return ModelRegistry(get_settings())


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


@app.command("list")
def list_cmd() -> None:
    """All versions, oldest first; `*` marks production, `S` the shadow, `C` the challenger."""
    from training.registry import RegistryError

    reg = _registry()
    prod = reg.production_version()
    try:
        rollout = reg.stages()
    except RegistryError:  # a hand-broken stage file must not hide the version list
        rollout = None
    versions = reg.list_versions()
    if not versions:
        console.print(f"no model versions in {reg.models_dir}: run `churn train`")
        return
    print(f"{'':1} {'version':24} {'kind':9} {'test cutoff':11} {'roc_auc':>8} {'pr_auc':>8} {'accuracy':>8}")
    for v in versions:
        m = v.test_metric
        cutoff = (v.metadata.get("training_window") or {}).get("test_cutoff", "-")
        mark = "*" if v.version == prod else " "
        if rollout is not None and v.version == rollout.shadow:
            mark = "S"
        elif rollout is not None and v.version == rollout.challenger:
            mark = "C"
        print(
            f"{mark} {v.version:24} {v.kind:9} {cutoff:11} {_fmt(m.get('roc_auc')):>8} "
            f"{_fmt(m.get('pr_auc')):>8} {_fmt(m.get('accuracy')):>8}"
        )


@app.command("show")
def show_cmd(version: str) -> None:
    """Metadata summary and test metrics of one version."""
    from training.registry import RegistryError

    with user_errors():
        try:
            v = _registry().get(version)
        except RegistryError as exc:
            raise ChurnError(str(exc)) from exc
        meta = {
            k: v.metadata.get(k)
            for k in (
                "version",
                "kind",
                "feature_service",
                "threshold",
                "threshold_rule",
                "training_window",
                "rows",
                "data_hash",
                "git_sha",
                "trained_at",
            )
        }
        print(json.dumps(meta, indent=2, default=str))
        from training.report import metrics_table

        test = v.metrics.get("test") or {}
        if test:
            print("\nTest-cutoff metrics:\n" + metrics_table(test))
        print(f"\nreport: {v.path / 'report.md'}")


@app.command("promote")
def promote_cmd(
    version: str,
    force: Annotated[
        bool, typer.Option(help="Skip the metric gate (a model that fails to load is still refused).")
    ] = False,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "",
) -> None:
    """Make VERSION the production model if it beats production on the same test cutoff."""
    from training.registry import RegistryError

    with user_errors():
        reg = _registry()
        before = reg.production_version()
        try:
            figures = reg.promote(version, force=force, reason=reason or ("manual --force" if force else "manual"))
        except RegistryError as exc:
            raise ChurnError(str(exc)) from exc
        detail = ""
        if "production_score" in figures:
            m, c, p = figures["metric"], figures["candidate_score"], figures["production_score"]
            detail = f" ({m} {c:.4f} vs production {p:.4f})"
        print(f"promoted {version} (was {before or 'none'}){detail}")


@app.command("rollback")
def rollback_cmd(reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "") -> None:
    """Return production to the previously promoted version."""
    from training.registry import RegistryError

    with user_errors():
        reg = _registry()
        before = reg.production_version()
        try:
            now = reg.rollback(reason=reason)
        except RegistryError as exc:
            raise ChurnError(str(exc)) from exc
        print(f"rolled back {before} -> {now}")


@app.command("stage")
def stage_cmd(
    version: str,
    shadow: Annotated[
        bool, typer.Option("--shadow", help="Score VERSION in the shadow of production (logged, never returned).")
    ] = False,
    challenger: Annotated[
        float | None,
        typer.Option("--challenger", metavar="SHARE", help="Serve VERSION to this share (0-1] of users (A/B)."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove VERSION from the shadow/challenger stage.")] = False,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "",
) -> None:
    """Stage VERSION as --shadow, --challenger SHARE, or --clear it (gated: it must load, pass the
    smoke test and use this deployment's feature service; audited). The API picks it up within
    CHURN_RELOAD_INTERVAL_S."""
    with user_errors():
        if sum([shadow, challenger is not None, clear]) != 1:
            raise ChurnError("choose exactly one of --shadow, --challenger SHARE, --clear")
        reg = _registry()
        reason = reason or "manual"
        if clear:
            state = reg.clear_stage(version, reason=reason)
        elif shadow:
            state = reg.set_stage(version, "shadow", reason=reason)
        else:
            state = reg.set_stage(version, "challenger", share=challenger, reason=reason)
        ch = f"{state.challenger} ({state.share:.0%} of users)" if state.challenger else "none"
        print(f"shadow -> {state.shadow or 'none'}; challenger -> {ch}")


@app.command("compare")
def compare_cmd(
    since: Annotated[str, typer.Option(help="First prediction-log day (YYYY-MM-DD).")],
    until: Annotated[str | None, typer.Option(help="Last day (default: all).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    keep: Annotated[
        bool, typer.Option("--keep/--no-keep", help="Keep the report as the latest comparison (console).")
    ] = True,
) -> None:
    """Production vs shadow/challenger from the prediction log: agreement (Spearman, risk-tier
    changes), ROC-AUC and precision once labels mature, and a recommendation."""
    from cli.options import parse_date
    from jobs.compare import compare, save

    with user_errors():
        settings = get_settings()
        report = compare(settings, parse_date(since), parse_date(until) if until else None)
        if keep:
            save(settings, report)
        if json_out:
            print(json.dumps(report.to_dict(), indent=2, default=str))
            return
        _print_report(report)


def _print_report(report: ComparisonReport) -> None:
    print(f"prediction log since {report.since}: {report.records:,} records; "
          f"served by arm: {dict(report.served_by_arm)}")  # fmt: skip
    labels = report.labels
    if report.records:
        print(f"labels mature for {len(labels.mature_dates)} day(s), not yet for "
              f"{len(labels.immature_dates)}")  # fmt: skip
    for c in report.candidates:
        a = c.agreement
        print(f"\n{c.key}: {c.records:,} predictions; vs production on {a.users:,} users: "
              f"spearman {_fmt(a.spearman)}, risk tier differs {_fmt(a.tier_differs_share)}, "
              f"mean |diff| {_fmt(a.mean_abs_diff)}")  # fmt: skip
        for label, perf in (("candidate", c.performance), ("production", c.production_performance)):
            if perf:
                print(f"  {label:10} labelled users {perf.users:,}: roc_auc {_fmt(perf.roc_auc)}, "
                      f"precision@threshold {_fmt(perf.precision)}")  # fmt: skip
        print(f"  → {c.recommendation.action}: {c.recommendation.reason}")
    r = report.recommendation
    print(f"\nrecommendation: {r.action} — {r.reason}")
    if r.command:
        print(f"run: {r.command}")
