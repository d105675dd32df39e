"""``churn models``: list, inspect, promote (gated), roll back and stage registry versions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from churn.commands._common import ChurnError, user_errors
from churn.console import console
from churn.settings import get_settings

app = typer.Typer(help="Inspect and promote model versions in the registry.", no_args_is_help=True)


def _registry():  # noqa: ANN202
    from training.registry import ModelRegistry

    return ModelRegistry(get_settings())


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


@app.command("list")
def list_cmd() -> None:
    """All versions, oldest first; `*` marks production."""
    reg = _registry()
    prod = reg.production_version()
    versions = reg.list_versions()
    if not versions:
        console.print(f"no model versions in {reg.models_dir}: run `churn train`")
        return
    print(f"{'':1} {'version':24} {'kind':9} {'test cutoff':11} {'roc_auc':>8} {'pr_auc':>8} {'accuracy':>8}")
    for v in versions:
        m = v.test_metric
        cutoff = (v.metadata.get("training_window") or {}).get("test_cutoff", "-")
        mark = "*" if v.version == prod else " "
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
            figures = reg.promote(
                version, force=force, reason=reason or ("manual --force" if force else "manual")
            )
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
    stage: Annotated[str, typer.Option(help="Slot name, e.g. staging or shadow.")] = "staging",
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "",
) -> None:
    """Point a non-production slot (default `staging`) at VERSION (it must load)."""
    from training.registry import RegistryError

    with user_errors():
        try:
            _registry().stage(version, stage=stage, reason=reason)
        except RegistryError as exc:
            raise ChurnError(str(exc)) from exc
        print(f"{stage} -> {version}")
