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



def test_path_scores_give_the_model_margin_and_the_same_contributions_in_any_thread_count():
    model, X = _model()
    margin, contrib = model.path_scores(X, num_threads=2, chunk=128)
    np.testing.assert_allclose(margin, model.margin_matrix(X), rtol=0, atol=1e-9)  # exact, not approximate
    one_margin, one_contrib = model.path_scores(X, num_threads=1)
    np.testing.assert_array_equal(one_contrib, contrib)
    np.testing.assert_array_equal(one_margin, margin)
    np.testing.assert_array_equal(model.path_contributions_matrix(X), contrib)
