"""LightGBM fitting: defaults scaled to the data, a deterministic search picked by validation ROC-AUC,
and the flag on a model whose validation AUC peaked in its first rounds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.fit import SEARCH_GRID, SUSPICIOUS_ITERATION, config_params, fit_lightgbm, scaled_params, search_lightgbm
from training.report import lightgbm_section

FEATURES = ["a", "b", "c", "plan"]
CATEGORICAL = ["plan"]


def _frame(n: int, seed: int, flip: bool = False) -> pd.DataFrame:
    """A non-linear churn signal in a, b and plan; ``flip`` reverses it (a period unlike training)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n)})
    df["plan"] = rng.choice(["free", "basic", "premium"], n).astype(object)
    logit = 1.5 * df["a"] - np.abs(df["b"]) * 1.2 + np.where(df["plan"] == "free", 0.8, -0.4)
    if flip:
        logit = -logit
    df["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    return df


def test_defaults_scale_with_the_rows() -> None:
    small, large = scaled_params(2_000), scaled_params(2_000_000)
    assert small["num_leaves"] < large["num_leaves"] <= 127
    assert 10 <= small["min_data_in_leaf"] < large["min_data_in_leaf"] <= 500
    assert small["learning_rate"] <= large["learning_rate"]
    for p in (small, large):
        assert 20 <= p["early_stopping"] <= 100  # tens of rounds of patience
    assert len(SEARCH_GRID) <= 6 and SEARCH_GRID[0][1] == {}
    assert config_params(20_000, dict(SEARCH_GRID)["shallow"])["num_leaves"] < scaled_params(20_000)["num_leaves"]


def test_search_picks_the_best_validation_auc_and_is_deterministic() -> None:
    train, valid = _frame(3_000, 0), _frame(1_500, 1)
    first = search_lightgbm(train, valid, FEATURES, CATEGORICAL, seed=42, max_rounds=200)
    search = first.info["search"]
    aucs = [t["valid_auc"] for t in search["trials"]]
    assert len(aucs) == len(SEARCH_GRID) and search["by"] == "validation ROC-AUC"
    assert search["chosen"] == search["trials"][int(np.argmax(aucs))]["name"]  # first of any ties
    assert first.info["valid_auc"] == max(aucs)
    again = search_lightgbm(train, valid, FEATURES, CATEGORICAL, seed=42, max_rounds=200)
    assert again.info["search"] == search
    assert np.array_equal(first.model.predict_proba_frame(valid), again.model.predict_proba_frame(valid))
    assert first.info["best_iteration"] >= SUSPICIOUS_ITERATION and not first.info["suspicious_early_stop"]


def test_search_on_a_sample_refits_the_winner_on_all_rows() -> None:
    train, valid = _frame(3_000, 0), _frame(1_000, 1)
    fit = search_lightgbm(train, valid, FEATURES, CATEGORICAL, seed=42, max_rounds=100, search_rows=1_000)
    assert fit.info["search"]["sampled"] and fit.info["search"]["rows"] == 1_000
    chosen = dict(SEARCH_GRID)[fit.info["search"]["chosen"]]
    assert fit.info["params"]["min_data_in_leaf"] == config_params(3_000, chosen)["min_data_in_leaf"]


def test_a_model_that_stops_in_its_first_rounds_is_flagged() -> None:
    fit = fit_lightgbm(_frame(3_000, 0), _frame(1_000, 1, flip=True), FEATURES, CATEGORICAL, seed=42, max_rounds=200)
    assert fit.info["best_iteration"] < SUSPICIOUS_ITERATION and fit.info["suspicious_early_stop"]
    text = "\n".join(lightgbm_section(fit.info, fit.info["params"]))
    assert "Suspicious" in text
    fine = {**fit.info, "best_iteration": 120, "suspicious_early_stop": False}
    assert "Suspicious" not in "\n".join(lightgbm_section(fine, {}))
