"""Model checks: batch path attribution is consistent with the model and with exact SHAP."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from training.model import ChurnModel


def _model(seed: int = 0) -> tuple[ChurnModel, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = [f"f{i}" for i in range(6)]
    X = rng.normal(size=(4000, 6))
    y = (2.0 * X[:, 0] - 1.5 * X[:, 1] + 0.2 * rng.normal(size=4000) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1, "seed": 1},
        lgb.Dataset(X, y, feature_name=features),
        num_boost_round=40,
    )
    model = ChurnModel(
        version="t",
        kind="lightgbm",
        features=features,
        categorical_features=[],
        categories={},
        threshold=0.5,
        calibration=None,
        metadata={},
        booster=booster,
    )
    return model, X[:500]


def test_path_contributions_sum_to_the_margin():
    model, X = _model()
    contrib = model.path_contributions_matrix(X, chunk=128)  # several chunks
    roots = sum(t["tree_structure"]["internal_value"] for t in model._booster.dump_model()["tree_info"])
    np.testing.assert_allclose(contrib.sum(axis=1) + roots, model.margin_matrix(X), rtol=1e-4, atol=1e-4)


def test_path_contributions_agree_with_shap_on_the_dominant_factor():
    model, X = _model()
    fast = model.path_contributions_matrix(X)
    exact = model.contributions_matrix(X)
    top_fast, top_exact = np.abs(fast).argmax(axis=1), np.abs(exact).argmax(axis=1)
    assert (top_fast == top_exact).mean() > 0.9
    assert set(np.unique(top_exact)) <= {0, 1}  # the informative features, as with SHAP


def _rich_model(seed: int = 0) -> tuple[ChurnModel, np.ndarray]:
    """Many features, non-linear effects and interactions: where path attribution and SHAP can part."""
    rng = np.random.default_rng(seed)
    n, k = 20_000, 24
    features = [f"f{i}" for i in range(k)]
    X = rng.normal(size=(n, k))
    logit = (
        1.5 * X[:, 0]
        - 1.2 * np.abs(X[:, 1])
        + 0.8 * X[:, 2] * X[:, 3]
        + 0.6 * (X[:, 4] > 0.5)
        + 0.4 * np.sin(2 * X[:, 5])
        + 0.3 * X[:, 6:12].sum(axis=1)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 40,
         "verbose": -1, "num_threads": 1, "seed": 1, "deterministic": True},  # fmt: skip
        lgb.Dataset(X, y, feature_name=features),
        num_boost_round=300,
    )
    model = ChurnModel(
        version="t", kind="lightgbm", features=features, categorical_features=[], categories={},
        threshold=0.5, calibration=(1.1, -0.2), metadata={}, booster=booster,
    )  # fmt: skip
    return model, rng.normal(size=(1000, k))


def test_path_explain_gives_the_exact_probability():
    model, X = _rich_model()
    rows = [dict(zip(model.features, r, strict=True)) for r in X[:200]]
    proba, _ = model.explain_rows(rows, attribution="path")
    np.testing.assert_allclose(proba, model.predict_proba_rows(rows), rtol=0, atol=1e-9)
    single, factors = model.explain_rows(rows[:1], attribution="path")
    assert single[0] == proba[0] and all(f["contribution"] > 0 for f in factors[0])


def test_path_top3_factors_match_exact_shap_for_95_percent_of_users():
    """The served factors (top 3 positive contributions) as a set, per user, path vs exact SHAP."""
    model, X = _rich_model()
    rows = [dict(zip(model.features, r, strict=True)) for r in X]
    _, fast = model.explain_rows(rows, attribution="path")
    _, exact = model.explain_rows(rows, attribution="shap")
    same = [{f["feature"] for f in a} == {f["feature"] for f in b} for a, b in zip(fast, exact, strict=True)]
    assert np.mean(same) >= 0.95, np.mean(same)
