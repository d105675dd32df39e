"""Honest yardsticks for the test cutoff: the floor a model must clear and the ceiling it can reach.

* **Recency only** ranks users by days since their last activity (longer idle = riskier). It needs
  no training at all, and on churn data it is hard to beat; a model that does not beat it earns
  nothing for its complexity.
* **Oracle** (synthetic data only): the generator writes, for every day T, each recently active
  user's true probability of no event in ``[T, T + horizon)`` to ``raw/oracle/date=T/``. Its ROC-AUC
  on the test rows is the best any model could reach on them: the gap to it is what is left to win.

Both are scored on the very rows the models are tested on, with the same ranking metrics
(ROC-AUC, PR-AUC, lift and recall in the riskiest 10 %), so the report can put them side by side.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from churn.layout import ORACLE_TABLE, partition_files
from churn.schema import ENTITY_KEY
from churn.settings import Settings
from churn.storage import read_table
from training.evaluate import TOP_SHARE, top_mask

RECENCY_FEATURE = "days_since_last_activity"
ORACLE_HORIZON_DAYS = 30
"""The horizon the generator's oracle answers for (jobs/generate.py, which training may not
import); with any other label horizon the oracle answers a different question and is left out."""
RANKING_METRICS = ("roc_auc", "pr_auc", "lift_top10", "recall_top10")


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """Threshold-free metrics of a ranking: what a yardstick and a model can be compared on."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    both = len(np.unique(y)) == 2
    base = float(y.mean()) if len(y) else float("nan")
    top = top_mask(score, TOP_SHARE)
    precision_top = skm.precision_score(y, top, zero_division=0) if len(y) else 0.0
    return {
        "rows": int(len(y)),
        "churn_rate": base,
        "roc_auc": float(skm.roc_auc_score(y, score)) if both else None,
        "pr_auc": float(skm.average_precision_score(y, score)) if both else None,
        "lift_top10": float(precision_top / base) if base > 0 else None,
        "recall_top10": float(skm.recall_score(y, top, zero_division=0)) if len(y) else None,
    }


def recency_scores(frame: pd.DataFrame) -> np.ndarray | None:
    """Days since last activity as a risk score (higher = riskier); ``None`` without the feature.

    A missing value means no activity on record, the riskiest case, so it ranks above everyone.
    """
    if RECENCY_FEATURE not in frame:
        return None
    days = pd.to_numeric(frame[RECENCY_FEATURE], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(days).all():
        return None
    return np.where(np.isnan(days), np.nanmax(days) + 1.0, days)


def recency_yardstick(test: pd.DataFrame, label: str) -> dict[str, Any]:
    """The recency-only ranking scored on the test rows (``available: False`` if it cannot be)."""
    score = recency_scores(test)
    if score is None:
        return {"available": False, "reason": f"the feature service has no {RECENCY_FEATURE}"}
    return {"available": True, "score": RECENCY_FEATURE, **ranking_metrics(test[label].to_numpy(), score)}


def read_oracle(raw_dir: Path, cutoff: dt.date) -> pd.DataFrame | None:
    """The generator's ``user_id, p_churn`` (float64) for ``cutoff``, or ``None`` when ``raw_dir``
    has none (imported data, or a date the generator did not cover)."""
    files = partition_files(raw_dir / ORACLE_TABLE, {cutoff})
    if not files:
        return None
    df = pd.concat([read_table(f, [ENTITY_KEY, "p_churn"]).to_pandas() for f in files], ignore_index=True)
    df[ENTITY_KEY] = df[ENTITY_KEY].astype(str)
    df["p_churn"] = df["p_churn"].astype("float64")
    return df.drop_duplicates(ENTITY_KEY, keep="last")


def oracle_yardstick(
    settings: Settings, test: pd.DataFrame, cutoff: dt.date, label: str, served_scores: np.ndarray
) -> dict[str, Any] | None:
    """The oracle scored on the test rows it covers, with the served model on the same rows.

    ``None`` when there is no oracle (real data): the report then simply has no ceiling. Rows the
    oracle does not cover (if any) are left out of both numbers, so the gap compares like with like.
    """
    if settings.churn_horizon_days != ORACLE_HORIZON_DAYS:
        return None
    oracle = read_oracle(settings.layout.raw_dir, cutoff)
    if oracle is None:
        return None
    ids = test[ENTITY_KEY].astype(str)
    p = ids.map(oracle.set_index(ENTITY_KEY)["p_churn"]).to_numpy(dtype=np.float64)
    covered = ~np.isnan(p)
    y = test[label].to_numpy()
    out = {
        "available": True,
        "cutoff": str(cutoff),
        "coverage": float(covered.mean()) if len(covered) else 0.0,
        **ranking_metrics(y[covered], p[covered]),
    }
    out["served_roc_auc_same_rows"] = ranking_metrics(y[covered], np.asarray(served_scores)[covered])["roc_auc"]
    return out


def compute_yardsticks(
    settings: Settings, test: pd.DataFrame, cutoff: dt.date, label: str, served_scores: np.ndarray
) -> dict[str, dict[str, Any]]:
    """``{"recency": {...}, "oracle": {...}}`` for the test cutoff; ``oracle`` only when present."""
    out = {"recency": recency_yardstick(test, label)}
    oracle = oracle_yardstick(settings, test, cutoff, label, served_scores)
    if oracle is not None:
        out["oracle"] = oracle
    return out
