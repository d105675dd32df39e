"""Yardsticks: the recency-only ranking (longer idle = riskier) and the generator's oracle."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.settings import make_settings
from training.yardsticks import compute_yardsticks, ranking_metrics, recency_scores

T = dt.date(2026, 10, 2)


def _test_rows(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Churners are idle longer on average, so recency ranks them high."""
    rng = np.random.default_rng(seed)
    churned = (rng.random(n) < 0.3).astype("int8")
    idle = rng.gamma(2.0, 3.0, n) + 8.0 * churned
    return pd.DataFrame(
        {"user_id": [f"u{i:04d}" for i in range(n)], "days_since_last_activity": idle, "churned": churned}
    )


def _write_oracle(data_dir: Path, day: dt.date, users: list[str], p: np.ndarray) -> None:
    out = data_dir / "raw" / "oracle" / f"date={day}"
    out.mkdir(parents=True)
    table = pa.table({"user_id": users, "p_churn": pa.array(p.astype(np.float32))})
    pq.write_table(table, out / "part-0.parquet")


def test_recency_ranks_longer_idle_as_riskier(tmp_path: Path) -> None:
    rows = _test_rows()
    out = compute_yardsticks(make_settings(tmp_path), rows, T, "churned", np.zeros(len(rows)))
    recency = out["recency"]
    assert recency["available"] and recency["rows"] == len(rows)
    assert recency["roc_auc"] > 0.75  # the sign is right: a reversed score would be far below 0.5
    assert recency["lift_top10"] > 1.5
    assert "oracle" not in out  # no raw/oracle: real data has no ceiling


def test_missing_recency_ranks_riskiest_and_absent_feature_is_reported() -> None:
    frame = pd.DataFrame({"days_since_last_activity": [1.0, np.nan, 5.0]})
    assert list(recency_scores(frame)) == [1.0, 6.0, 5.0]
    assert recency_scores(pd.DataFrame({"x": [1.0]})) is None


def test_oracle_is_read_for_the_test_cutoff_and_joined_by_user(tmp_path: Path) -> None:
    rows = _test_rows()
    settings = make_settings(tmp_path)
    # a perfect oracle on the test date, shuffled and missing one user; a useless one the day before
    order = np.random.default_rng(1).permutation(len(rows))[1:]
    truth = rows["churned"].to_numpy()[order] * 0.9 + 0.05
    _write_oracle(tmp_path, T, rows["user_id"].to_numpy()[order].tolist(), truth)
    _write_oracle(tmp_path, T - dt.timedelta(days=1), rows["user_id"].tolist(), np.full(len(rows), 0.5))
    served = rows["days_since_last_activity"].to_numpy()
    oracle = compute_yardsticks(settings, rows, T, "churned", served)["oracle"]
    assert oracle["roc_auc"] == 1.0 and oracle["cutoff"] == str(T)
    assert oracle["rows"] == len(rows) - 1 and 0.99 < oracle["coverage"] < 1.0
    assert oracle["served_roc_auc_same_rows"] < 1.0
    # another horizon asks a different question than the oracle answers: left out
    other = make_settings(tmp_path, churn_horizon_days=14)
    assert "oracle" not in compute_yardsticks(other, rows, T, "churned", served)


def test_ranking_metrics_of_a_single_class_are_none() -> None:
    m = ranking_metrics(np.zeros(5), np.arange(5.0))
    assert m["roc_auc"] is None and m["lift_top10"] is None
