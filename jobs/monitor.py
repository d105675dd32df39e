"""Model performance on live data, once labels mature (``churn monitor --date D``).

Drift says the inputs moved; only realised outcomes say the model got worse. A user scored on D
has churned if they have no activity in ``[D, D + churn_horizon_days)``, which is known once raw
events cover that whole window (``D + horizon <= last event day + 1``). The job then joins the
predictions of D with those labels (DuckDB over the raw event partitions), computes ROC-AUC,
precision and recall at the model's threshold, and compares the ROC-AUC with the test ROC-AUC the
model reached at training time (``metrics.json`` in its version folder): a drop of more than
``performance_drop_margin`` is recorded in ``monitor/latest.json`` and is a retrain trigger.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from churn.errors import DataError, JobError
from churn.io import atomic_dir, write_json_atomic
from churn.layout import PREDICTIONS_PARQUET
from churn.policies import LabelPolicy
from churn.schema import ENTITY_KEY
from churn.settings import Settings
from training.labels import active_users, labels_mature

REPORT_JSON = "report.json"


class MonitorError(JobError):
    """Monitoring cannot run (no predictions for the date, unreadable inputs)."""


@dataclass(frozen=True)
class MonitorResult:
    date: dt.date
    matured: bool
    report: dict[str, Any] | None
    out_dir: Path | None
    seconds: float
    reason: str = ""

    def summary(self) -> str:
        if not self.matured or self.report is None:
            return f"labels for {self.date} not mature yet: {self.reason}; nothing written"
        r = self.report
        auc = "n/a" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        ref = "n/a" if r["training_roc_auc"] is None else f"{r['training_roc_auc']:.3f}"
        drop = "PERFORMANCE DROP" if r["performance_drop"] else "ok"
        return (
            f"{self.date}: {r['users']:,} users, churn rate {r['churn_rate']:.3f}, ROC-AUC {auc} "
            f"(training {ref}), precision {r['precision']:.3f}, recall {r['recall']:.3f} → {drop}"
        )


# --- inputs (the label rule and the raw-event reader live in churn.policies / training.labels) --------


def read_predictions(settings: Settings, date: dt.date) -> pa.Table:
    path = settings.layout.predictions(date) / PREDICTIONS_PARQUET
    if not path.exists():
        raise MonitorError(f"no predictions for {date}: {path} is missing (run `churn score --date {date}`)")
    try:
        return pq.read_table(path, columns=[ENTITY_KEY, "churn_probability", "will_churn", "model_version"])
    except (OSError, pa.ArrowException) as exc:
        raise MonitorError(f"cannot read {path}: {exc}") from None


# --- metrics -----------------------------------------------------------------------------------


def training_roc_auc(settings: Settings, version: str) -> float | None:
    """Test-cutoff ROC-AUC of the served model of ``version`` at training time (its ``metrics.json``)."""
    from training.registry import ModelRegistry, RegistryError

    try:
        value = ModelRegistry(settings).get(version).test_metric.get("roc_auc")
    except RegistryError:
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def performance(y_true: np.ndarray, proba: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC (None if only one class is present), precision and recall at the model's threshold."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    auc = float(roc_auc_score(y_true, proba)) if len(np.unique(y_true)) == 2 else None
    return {
        "roc_auc": auc,
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
    }


# --- the job -----------------------------------------------------------------------------------


def build_report(settings: Settings, date: dt.date) -> dict[str, Any]:
    predictions = read_predictions(settings, date)
    if predictions.num_rows == 0:
        raise MonitorError(f"predictions for {date} hold no users")
    _, window_end = LabelPolicy.from_settings(settings).window(date)
    try:
        active = set(active_users(settings, date, window_end)[ENTITY_KEY].to_pylist())
    except DataError as exc:
        raise MonitorError(str(exc)) from None
    ids = predictions[ENTITY_KEY].to_pylist()
    y_true = np.fromiter((uid not in active for uid in ids), dtype=bool, count=len(ids)).astype(int)
    proba = predictions["churn_probability"].to_numpy()
    predicted = predictions["will_churn"].to_numpy(zero_copy_only=False).astype(int)
    versions = sorted(set(predictions["model_version"].to_pylist()))
    version = versions[0] if len(versions) == 1 else None
    metrics = performance(y_true, proba, predicted)
    reference = training_roc_auc(settings, version) if version else None
    drop = (
        None if metrics["roc_auc"] is None or reference is None else round(reference - metrics["roc_auc"], 6)
    )
    return {
        "date": date.isoformat(),
        "label_window": [date.isoformat(), window_end.isoformat()],
        "model_version": version,
        "users": len(ids),
        "churned": int(y_true.sum()),
        "churn_rate": float(y_true.mean()),
        "predicted_churn": int(predicted.sum()),
        **metrics,
        "training_roc_auc": reference,
        "roc_auc_drop": drop,
        "performance_drop_margin": settings.performance_drop_margin,
        "performance_drop": bool(drop is not None and drop > settings.performance_drop_margin),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _latest_date(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["date"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def monitor(settings: Settings, date: dt.date) -> MonitorResult:
    """Evaluate the predictions of ``date`` against realised churn; writes nothing before labels mature."""
    t0 = time.perf_counter()
    mature, why = labels_mature(settings, date)
    if not mature:
        return MonitorResult(date, False, None, None, time.perf_counter() - t0, why)
    report = build_report(settings, date)
    out = settings.layout.monitor(date)
    with atomic_dir(out) as tmp:
        (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    latest = settings.layout.monitor_latest
    previous = _latest_date(latest)
    if previous is None or previous <= report["date"]:  # a backfill must not hide a newer verdict
        write_json_atomic(latest, {**report, "report": str(out / REPORT_JSON)})
    return MonitorResult(date, True, report, out, time.perf_counter() - t0)
