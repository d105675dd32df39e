"""One training run: training set → both models → calibration → evaluation → registry version.

``run_training`` is what ``churn train`` and ``churn retrain`` call. The version folder holds
both models; the served one (``metadata.kind``) is LightGBM if it beats the baseline on the
VALIDATION cutoff's ROC-AUC (the test cutoff is only for reporting and the promotion gate). Every
report also scores the yardsticks of :mod:`training.yardsticks` (recency-only, and the oracle on
synthetic data) on the same test rows, so a model's numbers always come with a floor and a ceiling.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from churn.schema import ENTITY_KEY
from churn.settings import Settings
from churn.storage import sha256
from training.dataset import LABEL, TrainingSet, build_training_set
from training.evaluate import choose_threshold, classification_metrics, segment_metrics
from training.fit import Fitted, fit_baseline, fit_platt, margins, search_lightgbm
from training.labels import NotEnoughDataError
from training.model import BASELINE_FILE, LIGHTGBM_FILE, METADATA
from training.registry import TEST_SET, ModelRegistry, VersionInfo
from training.report import metrics_table, ranking_table, render_report, write_plots
from training.yardsticks import RANKING_METRICS, compute_yardsticks


@dataclass
class TrainResult:
    version: str
    info: VersionInfo
    served: str
    test_metrics: dict[str, dict[str, Any]]
    promotion: dict[str, Any] | None = None
    promotion_error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    yardsticks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        return self.info.path / "report.md"

    def table(self) -> str:
        ranking = side_by_side(self.served, self.test_metrics, self.yardsticks)
        return metrics_table(self.test_metrics) + "\n\n" + ranking_table(ranking)


def side_by_side(
    served: str, test_metrics: dict[str, dict[str, Any]], yardsticks: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Test ranking metrics of the served model, both models and the available yardsticks."""
    rows = {"served": {"model": served, **{m: test_metrics[served].get(m) for m in RANKING_METRICS}}}
    rows["baseline"] = {"model": "logreg", **{m: test_metrics["logreg"].get(m) for m in RANKING_METRICS}}
    rows["lightgbm"] = {"model": "lightgbm", **{m: test_metrics["lightgbm"].get(m) for m in RANKING_METRICS}}
    for name, y in yardsticks.items():
        if y.get("available"):
            rows[f"{name}-only" if name == "recency" else name] = {
                "model": name,
                **{m: y.get(m) for m in RANKING_METRICS},
            }
    return rows


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _libraries() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("lightgbm", "scikit-learn", "numpy", "pandas", "feast", "duckdb"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _check_splits(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame) -> None:
    for name, df in (("train", train), ("validation", valid), ("test", test)):
        if df.empty:
            raise NotEnoughDataError(f"the {name} split has no rows: not enough users/history to train")
        if df[LABEL].nunique() < 2:
            raise NotEnoughDataError(
                f"the {name} split has a single class (churn rate {df[LABEL].mean():.2f}): "
                "not enough data to train and evaluate"
            )


def run_training(
    settings: Settings,
    *,
    store: Any = None,
    promote: bool = False,
    max_rounds: int = 2000,
    early_stopping: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> TrainResult:
    """Build the training set, train and evaluate both models, register a version, maybe promote."""
    import time

    t0 = time.perf_counter()
    ts = build_training_set(settings, store)
    n_train = int(ts.frame["cutoff"].isin(ts.train_cutoffs).sum())
    log(
        f"training set: {len(ts.frame):,} rows; train {n_train:,} rows over {len(ts.train_cutoffs)} cutoffs "
        f"{ts.train_cutoffs[0]}..{ts.train_cutoffs[-1]}, validation {ts.valid_cutoff}, test {ts.test_cutoff}"
    )
    result = train_from_set(settings, ts, promote=promote, max_rounds=max_rounds, early_stopping=early_stopping)
    result.timings["total_s"] = time.perf_counter() - t0
    result.timings["dataset_s"] = result.timings["total_s"] - result.timings["train_s"]
    return result


def train_from_set(
    settings: Settings,
    ts: TrainingSet,
    *,
    promote: bool = False,
    max_rounds: int = 2000,
    early_stopping: int | None = None,
    plots: bool = True,
) -> TrainResult:
    """Everything after the training set: fit, calibrate, evaluate, register, maybe promote."""
    import time

    t0 = time.perf_counter()
    train, valid, test = ts.split()
    _check_splits(train, valid, test)
    timings: dict[str, float] = {}
    t1 = time.perf_counter()
    fitted = {
        "lightgbm": search_lightgbm(
            train,
            valid,
            ts.features,
            ts.categorical,
            settings.seed,
            max_rounds=max_rounds,
            early_stopping=early_stopping,
            search_rows=int(settings.lgb_search_rows),
        ),
        "logreg": fit_baseline(train, ts.features, ts.categorical, settings.seed),
    }
    timings["fit_s"] = time.perf_counter() - t1

    y_valid, y_test = valid[LABEL].to_numpy(), test[LABEL].to_numpy()
    thresholds: dict[str, float] = {}
    rules: dict[str, str] = {}
    valid_metrics: dict[str, dict[str, Any]] = {}
    test_metrics: dict[str, dict[str, Any]] = {}
    brier: dict[str, tuple[float, float]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, fit in fitted.items():
        raw_test = 1 / (1 + np.exp(-margins(fit.model, test)))
        fit.model.set_calibration(fit_platt(fit.model, valid))
        p_valid = fit.model.predict_proba_frame(valid)
        p_test = fit.model.predict_proba_frame(test)
        thresholds[name], rules[name] = choose_threshold(
            y_valid, p_valid, settings.threshold_rule, settings.capacity_share
        )
        valid_metrics[name] = classification_metrics(y_valid, p_valid, thresholds[name])
        m = classification_metrics(y_test, p_test, thresholds[name])
        m["brier_uncalibrated"] = classification_metrics(y_test, raw_test, 0.5)["brier"]
        m["per_plan"] = segment_metrics(y_test, p_test, thresholds[name], test["plan"])
        test_metrics[name] = m
        brier[name] = (m["brier_uncalibrated"], m["brier"])
        curves[name] = (y_test, p_test)
        if name == "lightgbm":
            curves["lightgbm (uncalibrated)"] = (y_test, raw_test)
    auc_l, auc_b = valid_metrics["lightgbm"]["roc_auc"], valid_metrics["logreg"]["roc_auc"]
    served = "lightgbm" if (auc_l or 0) > (auc_b or 0) else "logreg"
    yardsticks = compute_yardsticks(settings, test, ts.test_cutoff, LABEL, curves[served][1])

    registry = ModelRegistry(settings)
    trained_at = dt.datetime.now(dt.UTC)
    context = dict(
        ts=ts,
        train=train,
        valid=valid,
        test=test,
        fitted=fitted,
        thresholds=thresholds,
        rules=rules,
        valid_metrics=valid_metrics,
        test_metrics=test_metrics,
        brier=brier,
        curves=curves,
        served=served,
        yardsticks=yardsticks,
        trained_at=trained_at,
        settings=settings,
        plots=plots,
    )
    version = registry.register(lambda tmp, name: _write_version(tmp, name, context))
    timings["train_s"] = time.perf_counter() - t0
    result = TrainResult(
        version=version.version,
        info=version,
        served=served,
        test_metrics=test_metrics,
        timings=timings,
        yardsticks=yardsticks,
    )
    if promote:
        from training.registry import PromotionRefused

        try:
            result.promotion = registry.promote(version.version, reason="churn train --promote")
        except PromotionRefused as exc:
            result.promotion_error = str(exc)
    return result


def _write_version(out: Path, version: str, c: dict[str, Any]) -> None:
    """Everything a version folder holds; metadata.json last (it carries the file checksums)."""
    import joblib

    ts: TrainingSet = c["ts"]
    settings: Settings = c["settings"]
    fitted: dict[str, Fitted] = c["fitted"]
    served: str = c["served"]
    fitted["lightgbm"].estimator.save_model(str(out / LIGHTGBM_FILE))
    joblib.dump(fitted["logreg"].estimator, out / BASELINE_FILE)

    test = c["test"][[ENTITY_KEY, "cutoff", LABEL, *ts.features]].copy()
    test["cutoff"] = test["cutoff"].astype(str)
    write_parquet_atomic(out / TEST_SET, test)

    # The drift reference is the newest population, not the whole training history: tenure and
    # lifetime totals grow with the calendar, so rows from months-old cutoffs would make every
    # scoring day look drifted. The test cutoff is the newest fully labelled population.
    recent = c["test"]
    sample = recent.sample(n=min(len(recent), settings.reference_sample_rows), random_state=settings.seed)
    reference = sample[ts.features].reset_index(drop=True)
    reference["churn_probability"] = fitted[served].model.predict_proba_frame(reference)
    write_parquet_atomic(out / "reference.parquet", reference)

    splits = {
        "train": (ts.train_cutoffs, c["train"]),
        "validation": ([ts.valid_cutoff], c["valid"]),
        "test": ([ts.test_cutoff], c["test"]),
    }
    split_info = {
        k: {"cutoffs": [str(x) for x in cs], "rows": int(len(df)), "churn_rate": float(df[LABEL].mean())}
        for k, (cs, df) in splits.items()
    }
    lgb_fit = fitted["lightgbm"]
    lgb_summary = {
        "best_iteration": lgb_fit.info["best_iteration"],
        "suspicious_early_stop": lgb_fit.info["suspicious_early_stop"],
        "search": lgb_fit.info.get("search"),
    }
    ranking = side_by_side(served, c["test_metrics"], c["yardsticks"])
    metrics = {
        "validation": c["valid_metrics"],
        "test": c["test_metrics"],
        "served": served,
        "threshold_rule": settings.threshold_rule,
        "splits": split_info,
        "yardsticks": c["yardsticks"],
        "test_ranking": ranking,
        "lightgbm": lgb_summary,
    }
    write_json_atomic(out / "metrics.json", metrics)

    gains = lgb_fit.estimator.feature_importance(importance_type="gain")
    importance = {f: float(g) for f, g in zip(lgb_fit.estimator.feature_name(), gains, strict=True)}
    # PNGs are the slowest part of a small run; tests that only need models can skip them.
    plots = write_plots(out, c["curves"], importance) if c["plots"] else []
    git_sha = _git_sha()
    report = render_report(
        {
            "version": version,
            "trained_at": c["trained_at"].isoformat(timespec="seconds"),
            "feature_service": settings.feature_service,
            "git_sha": git_sha,
            "served": served,
            "valid_auc": {k: v["roc_auc"] for k, v in c["valid_metrics"].items()},
            "horizon": settings.churn_horizon_days,
            "step_days": settings.cutoff_step_days,
            "splits": split_info,
            "test_metrics": c["test_metrics"],
            "threshold_rules": c["rules"],
            "brier": c["brier"],
            "lightgbm": lgb_summary,
            "lightgbm_params": lgb_fit.info["params"],
            "yardsticks": c["yardsticks"],
            "ranking": ranking,
            "selection": ts.selection,
            "plots": plots,
        }
    )
    write_text_atomic(out / "report.md", report)

    files = {"lightgbm": LIGHTGBM_FILE, "logreg": BASELINE_FILE}
    models: dict[str, Any] = {}
    for name, fit in fitted.items():
        fit.model.threshold = c["thresholds"][name]
        a, b = fit.model.calibration or (1.0, 0.0)
        models[name] = {
            "model_file": files[name],
            "files": {files[name]: sha256(out / files[name])},
            "categories": fit.model.categories,
            "threshold": c["thresholds"][name],
            "threshold_rule": c["rules"][name],
            "calibration": {"method": "platt", "a": a, "b": b},
            "smoke": fit.model.smoke_record(c["test"]),
            **fit.info,
        }
    metadata = {
        "version": version,
        "kind": served,
        "features": ts.features,
        "categorical_features": ts.categorical,
        "categories": models[served]["categories"],
        "feature_service": settings.feature_service,
        "threshold": c["thresholds"][served],
        "threshold_rule": settings.threshold_rule,
        "training_window": {
            "cutoffs": [str(x) for x in ts.cutoffs],
            "train_cutoffs": [str(x) for x in ts.train_cutoffs],
            "valid_cutoff": str(ts.valid_cutoff),
            "test_cutoff": str(ts.test_cutoff),
            "horizon_days": settings.churn_horizon_days,
            "labels_observed_until": str(ts.test_cutoff + dt.timedelta(days=settings.churn_horizon_days)),
            "selection": ts.selection,
        },
        "rows": {k: v["rows"] for k, v in split_info.items()},
        "data_hash": ts.data_hash(),
        "git_sha": git_sha,
        "libraries": _libraries(),
        "trained_at": c["trained_at"].isoformat(),
        "test_set": TEST_SET,
        "promotion_metric": settings.promotion_metric,
        "plots": plots,
        "models": models,
    }
    write_json_atomic(out / METADATA, metadata)


def train(settings: Settings, promote: bool = False, **kwargs: Any) -> TrainResult:
    """Alias of :func:`run_training` (the name the retrain job calls)."""
    return run_training(settings, promote=promote, **kwargs)
