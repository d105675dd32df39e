"""Metrics for a scored cutoff, and the rule that turns probabilities into a yes/no decision.

All metrics come from ``sklearn.metrics``. Beyond accuracy (the business asked for > 75 %, which
a model can reach by predicting "no churn" for everyone when churn is rare) we report the
ranking metrics (ROC-AUC, PR-AUC), calibration (Brier) and what a retention team acting on the
riskiest 10 % would get (lift and recall in that top decile).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

TOP_SHARE = 0.10


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str, capacity_share: float) -> tuple[float, str]:
    """Decision threshold from the VALIDATION cutoff.

    * ``best_f1``: the candidate threshold (percentiles of the validation scores) with the best F1.
    * ``capacity``: flag the top ``capacity_share`` of users (the retention team's capacity).
    """
    if rule == "capacity":
        t = float(np.quantile(p, 1.0 - capacity_share))
        return t, f"capacity: top {capacity_share:.0%} riskiest users on the validation cutoff (p >= {t:.4f})"
    # F1 = harmonic mean of sklearn's precision and recall at every distinct score (one pass),
    # then confirmed with f1_score at the chosen threshold.
    precision, recall, thresholds = skm.precision_recall_curve(y, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    best = int(np.argmax(f1))
    t = float(thresholds[best])
    f1_at_t = skm.f1_score(y, p >= t, zero_division=0)
    return t, f"best_f1: threshold maximising F1 on the validation cutoff (F1={f1_at_t:.3f} at p >= {t:.4f})"


def top_mask(p: np.ndarray, share: float = TOP_SHARE) -> np.ndarray:
    """The ``share`` highest-scored rows (ties broken by position, so exactly ceil(share·n) rows)."""
    n = max(1, int(np.ceil(share * len(p))))
    mask = np.zeros(len(p), dtype=bool)
    mask[np.argsort(-p, kind="stable")[:n]] = True
    return mask


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Every number the report and the promotion gate use, for one scored set."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = p >= threshold
    both = len(np.unique(y)) == 2
    top = top_mask(p)
    base = float(y.mean()) if len(y) else float("nan")
    precision_top = skm.precision_score(y, top, zero_division=0)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "rows": int(len(y)),
        "churn_rate": base,
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else None,
        "pr_auc": float(skm.average_precision_score(y, p)) if both else None,
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "brier": float(skm.brier_score_loss(y, p)) if len(y) else None,
        "log_loss": float(skm.log_loss(y, np.clip(p, 1e-12, 1 - 1e-12), labels=[0, 1])) if len(y) else None,
        "lift_top10": float(precision_top / base) if base > 0 else None,
        "recall_top10": float(skm.recall_score(y, top, zero_division=0)),
        "threshold": float(threshold),
        "flagged_share": float(pred.mean()) if len(y) else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def segment_metrics(y: np.ndarray, p: np.ndarray, threshold: float, segment: pd.Series) -> dict[str, Any]:
    """The same metrics per segment value (e.g. plan), for fairness and targeting checks."""
    seg = segment.astype(object).where(segment.notna(), "missing").astype(str).to_numpy()
    out = {}
    for value in sorted(set(seg)):
        m = seg == value
        full = classification_metrics(np.asarray(y)[m], np.asarray(p)[m], threshold)
        out[value] = {
            k: full[k]
            for k in (
                "rows",
                "churn_rate",
                "roc_auc",
                "pr_auc",
                "accuracy",
                "precision",
                "recall",
                "f1",
                "brier",
                "confusion_matrix",
            )
        }
    return out


def score_metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """The promotion metric, higher is better (Brier/log loss are negated)."""
    if name == "roc_auc":
        return float(skm.roc_auc_score(y, p))
    if name == "pr_auc":
        return float(skm.average_precision_score(y, p))
    if name == "brier":
        return -float(skm.brier_score_loss(y, p))
    if name == "log_loss":
        return -float(skm.log_loss(y, np.clip(p, 1e-12, 1 - 1e-12), labels=[0, 1]))
    raise ValueError(f"unsupported promotion metric {name!r} (roc_auc, pr_auc, brier, log_loss)")
