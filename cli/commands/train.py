"""``churn train``: build the training set, train baseline + LightGBM, register a version."""

from __future__ import annotations

from typing import Annotated

import typer

from churn.console import console, step
from churn.settings import get_settings
from cli.options import ChurnError, user_errors

app = typer.Typer()


@app.command("train")
def train_cmd(
    promote: Annotated[
        bool, typer.Option(help="Promote the new version through the gate (first model: no gate).")
    ] = False,
) -> None:
    """Train and evaluate both models on time-split cutoffs; register the version (and maybe promote it).

    A promotion refused by the gate is a normal outcome (the version stays registered, production
    is unchanged): it is reported, and the command still exits 0.
    """
    from training.labels import NotEnoughDataError
    from training.registry import RegistryError
    from training.train import run_training

    settings = get_settings()
    with user_errors(), step("train") as r:
        try:
            result = run_training(settings, promote=promote, log=lambda m: console.print(m))
        except (NotEnoughDataError, RegistryError) as exc:
            raise ChurnError(str(exc)) from exc
        except RuntimeError as exc:
            if "churn features apply" in str(exc):
                raise ChurnError(str(exc)) from exc
            raise
        print(
            f"\nTest-cutoff metrics ({result.info.metadata['training_window']['test_cutoff']}), "
            f"served model: {result.served}\n"
        )
        print(result.table())
        print(f"\nreport: {result.report_path}")
        r.extra.update(
            version=result.version,
            served=result.served,
            roc_auc=f"{result.test_metrics[result.served]['roc_auc']:.4f}",
        )
        if promote:
            if result.promotion_error:
                console.print(f"[yellow]not promoted:[/yellow] {result.promotion_error}")
                r.extra["promoted"] = "no"
            else:
                r.extra["promoted"] = "yes"
        r.wrote.append(str(result.info.path))
