"""Plots (matplotlib, Agg) and the human-readable ``report.md`` stored with each model version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PLOTS = {"roc": "roc.png", "pr": "pr.png", "calibration": "calibration.png", "importance": "importance.png"}


def _plt():  # noqa: ANN202 - matplotlib's pyplot module
    import matplotlib

    matplotlib.use("Agg")  # files only: no display in jobs or containers
    import matplotlib.pyplot as plt

    return plt


def write_plots(out: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], importance: dict[str, float]) -> list[str]:
    """ROC, precision-recall and reliability curves of every scored set, LightGBM importances."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        if "uncalibrated" in name:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test cutoff)")
    ax.legend(loc="lower right")
    fig.tight_layout(), fig.savefig(out / PLOTS["roc"], dpi=100), plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        if "uncalibrated" in name:
            continue
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=name)
    base = float(np.mean(next(iter(curves.values()))[0]))
    ax.axhline(base, color="k", ls=":", lw=1, label=f"base rate {base:.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test cutoff)")
    ax.legend(loc="upper right")
    fig.tight_layout(), fig.savefig(out / PLOTS["pr"], dpi=100), plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(mean, frac, marker="o", ms=3, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed churn rate", title="Reliability (test cutoff)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout(), fig.savefig(out / PLOTS["calibration"], dpi=100), plt.close(fig)

    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20][::-1]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set(xlabel="total gain", title="LightGBM feature importance (top 20)")
    fig.tight_layout(), fig.savefig(out / PLOTS["importance"], dpi=100), plt.close(fig)
    return list(PLOTS.values())


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


METRIC_ROWS = [
    "roc_auc",
    "pr_auc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "brier",
    "lift_top10",
    "recall_top10",
]


def metrics_table(test: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per metric, one column per model (test cutoff)."""
    names = list(test)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for m in METRIC_ROWS:
        lines.append(f"| {m} | " + " | ".join(_fmt(test[n].get(m)) for n in names) + " |")
    return "\n".join(lines)


RANKING_COLUMNS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "lift_top10": "lift top 10%"}


def ranking_table(ranking: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per scorer (served, both models, yardsticks), ranking metrics across."""
    lines = ["| scorer | " + " | ".join(RANKING_COLUMNS.values()) + " |", "|---|" + "---|" * len(RANKING_COLUMNS)]
    for name, row in ranking.items():
        label = f"served ({row['model']})" if name == "served" else name
        lines.append(f"| {label} | " + " | ".join(_fmt(row.get(m)) for m in RANKING_COLUMNS) + " |")
    return "\n".join(lines)


def yardstick_verdicts(served: str, test: dict[str, dict[str, Any]], yardsticks: dict[str, Any]) -> list[str]:
    """Plain sentences: does the served model beat recency-only, and how far is it from the oracle."""
    auc = test[served]["roc_auc"]
    out = []
    recency = yardsticks.get("recency", {})
    if recency.get("available") and auc is not None and recency.get("roc_auc") is not None:
        beats = auc > recency["roc_auc"]
        out.append(
            f"- **The served model ({served}) {'beats' if beats else 'does NOT beat'} recency-only** on test "
            f"ROC-AUC ({_fmt(auc)} vs {_fmt(recency['roc_auc'])}, a difference of {auc - recency['roc_auc']:+.4f})"
            + (
                "."
                if beats
                else ": ranking users by days since their last activity does at least as well; it is not "
                "earning its keep."
            )
        )
    else:
        out.append("- Recency-only could not be scored (the feature service has no days_since_last_activity).")
    oracle = yardsticks.get("oracle")
    if oracle and oracle.get("roc_auc") is not None:
        same = oracle.get("served_roc_auc_same_rows")
        gap = oracle["roc_auc"] - same if same is not None else None
        out.append(
            f"- **Gap to the oracle**: the generator's true churn probability reaches ROC-AUC "
            f"{_fmt(oracle['roc_auc'])} on these rows (coverage {oracle['coverage']:.1%}); the served model "
            f"{_fmt(same)}, a gap of {_fmt(gap)}. That gap is all that any model could still win."
        )
    else:
        out.append("- No oracle in this store (real data has none): there is no known ceiling.")
    return out


def render_report(ctx: dict[str, Any]) -> str:
    """``report.md``: data, split, metrics, threshold rule, calibration, segments, verdicts."""
    test = ctx["test_metrics"]
    lgb_auc, base_auc = test["lightgbm"]["roc_auc"], test["logreg"]["roc_auc"]
    beats = lgb_auc is not None and base_auc is not None and lgb_auc > base_auc
    served = ctx["served"]
    acc = test[served]["accuracy"]
    naive = 1 - test[served]["churn_rate"]
    lines = [
        f"# Churn model {ctx['version']}",
        "",
        f"Trained {ctx['trained_at']} on feature service `{ctx['feature_service']}` (git {ctx['git_sha']}).",
        f"Served model: **{served}** (chosen on validation ROC-AUC: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in ctx["valid_auc"].items())
        + ").",
        "",
        "## Data and split",
        f"Label: churned at cutoff T = no activity in [T, T+{ctx['horizon']}d). "
        "One row per cutoff for each user active within CHURN_ACTIVE_DAYS before T (the population "
        "batch scoring scores); features are Feast point-in-time values as of T. "
        "Split by time, never by row: test = the newest fully observed cutoff; validation = the newest "
        f"cutoff at least {ctx['horizon']} days before it (its labels end before the test window starts, "
        "so nothing chosen on validation has seen the test period); training = every "
        f"{ctx['step_days']} days back over the whole history from the "
        f"newest cutoff at least {ctx['horizon']} days before validation (no training label window "
        "overlaps the validation window).",
        "",
        "| split | cutoffs | rows | churn rate |",
        "|---|---|---|---|",
    ]
    for split, info in ctx["splits"].items():
        lines.append(f"| {split} | {', '.join(info['cutoffs'])} | {info['rows']:,} | {info['churn_rate']:.3f} |")
    selection = ctx.get("selection", {})
    if selection.get("dropped_train_cutoffs"):
        lines += [
            "",
            f"Left out by the caps (CHURN_MAX_TRAINING_ROWS={selection.get('max_training_rows')}, "
            f"CHURN_N_CUTOFFS={selection.get('n_cutoffs_cap')}): {len(selection['dropped_train_cutoffs'])} older "
            "training cutoffs.",
        ]
    if selection.get("sampled_train_rows"):
        lines += [
            "",
            "The newest training cutoff alone exceeded the row budget: sampled to "
            f"{selection['sampled_train_rows']:,} rows.",
        ]
    ranking = ctx.get("ranking")
    if ranking:
        lines += [
            "",
            "## Against the yardsticks (test cutoff, same rows)",
            "Recency-only ranks users by days since their last activity (longer idle = riskier): the floor "
            "any model must clear. The oracle (synthetic data only) is the generator's true churn "
            "probability: the ceiling.",
            "",
            ranking_table(ranking),
            "",
            *yardstick_verdicts(served, test, ctx.get("yardsticks", {})),
        ]
    lines += [
        "",
        "## Test-cutoff metrics",
        f"Threshold rule — {ctx['threshold_rules'][served]}.",
        "Each model uses its own threshold, chosen on the validation cutoff.",
        "",
        metrics_table(test),
        "",
        f"- **LightGBM {'beats' if beats else 'does NOT beat'} the baseline** on test ROC-AUC "
        f"({_fmt(lgb_auc)} vs {_fmt(base_auc)}).",
        f"- **Accuracy target (> 75 %)**: the served model reaches {acc:.1%} "
        f"({'met' if acc > 0.75 else 'NOT met'}). "
        f'For reference, predicting "nobody churns" scores {naive:.1%}: '
        "accuracy depends on the threshold and the churn rate, so judge the model by ROC-AUC/PR-AUC and "
        "by lift/recall in the riskiest 10 %.",
        f"- Acting on the top 10 % riskiest users finds {test[served]['recall_top10']:.1%} of churners "
        f"({_fmt(test[served]['lift_top10'])}× the base rate).",
        "",
        "Confusion matrix of the served model at its threshold (test): "
        + ", ".join(f"{k}={v:,}" for k, v in test[served]["confusion_matrix"].items()),
        "",
        "## Calibration",
        "Class weighting (`is_unbalance` / `class_weight=balanced`) inflates probabilities; a Platt "
        "scaling fitted on the validation cutoff corrects them without changing the ranking.",
        "",
        "| model | Brier before (raw, class-weighted) | Brier after Platt |",
        "|---|---|---|",
    ]
    for name, (before, after) in ctx["brier"].items():
        lines.append(f"| {name} | {_fmt(before)} | {_fmt(after)} |")
    lines += [
        "",
        "## Per plan (served model, test cutoff)",
        "",
        "| plan | rows | churn rate | ROC-AUC | accuracy | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for plan, m in test[served]["per_plan"].items():
        lines.append(
            f"| {plan} | {m['rows']:,} | {_fmt(m['churn_rate'])} | {_fmt(m['roc_auc'])} "
            f"| {_fmt(m['accuracy'])} "
            f"| {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} |"
        )
    lines += ["", "## Plots", ""]
    lines += [f"![{Path(v).stem}]({v})" for v in ctx.get("plots", PLOTS.values())] or ["(plots skipped)"]
    lines += ["", *lightgbm_section(ctx.get("lightgbm", {}), ctx.get("lightgbm_params", {}))]
    return "\n".join(lines) + "\n"


def lightgbm_section(info: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The LightGBM search (every configuration's validation AUC), the winner and the early-stop check."""
    lines = ["## LightGBM", ""]
    search = info.get("search") or {}
    if search:
        lines += [
            f"Configuration search on the validation cutoff ({len(search['trials'])} configurations, "
            f"{search['rows']:,} training rows{' sampled' if search.get('sampled') else ''}), picked by "
            f"{search['by']}: **{search['chosen']}**.",
            "",
            "| configuration | validation ROC-AUC | best iteration |",
            "|---|---|---|",
        ]
        lines += [f"| {t['name']} | {_fmt(t['valid_auc'])} | {t['best_iteration']} |" for t in search["trials"]]
        lines.append("")
    keys = ("num_leaves", "min_data_in_leaf", "learning_rate", "lambda_l2", "feature_fraction", "is_unbalance")
    if params:
        lines.append("Parameters: " + ", ".join(f"{k}={params[k]}" for k in keys if k in params) + ".")
    best = info.get("best_iteration")
    lines.append(f"LightGBM stopped at iteration {best} (early stopping on validation AUC).")
    if info.get("suspicious_early_stop"):
        lines.append(
            f"- **Suspicious: the best iteration ({best}) is in the first rounds.** Validation AUC peaked "
            "almost at once, so the trees learnt little that carries over to the validation period "
            "(too little data, a shift between periods, or a leak): do not trust this LightGBM."
        )
    return lines
