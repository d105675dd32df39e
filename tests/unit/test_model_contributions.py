"""Model checks: batch path attribution is consistent with the model and with exact SHAP."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from training.model import ChurnModel
from training.single_row import SingleRowContributions


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


def test_single_row_fast_path_gives_exactly_the_shap_of_booster_predict():
    """The API's one-user path (LightGBM's prepared single-row predictor) and the batch call must
    not differ by a bit, NaNs included (missing features take the trees' default directions)."""
    model, X = _model()
    X = X[:200].copy()
    X[::7, 2] = np.nan
    fast = SingleRowContributions(model._booster, X.shape[1])
    exact = np.asarray(model._booster.predict(X, pred_contrib=True, num_threads=1))
    got = np.stack([fast(X[i]) for i in range(len(X))])
    np.testing.assert_array_equal(got, exact)
    rows = [dict(zip(model.features, x.tolist(), strict=True)) for x in X[:20]]
    one_by_one = [model.explain_rows([r], k=3) for r in rows]
    together = model.explain_rows(rows, k=3)
    np.testing.assert_array_equal(np.concatenate([p for p, _ in one_by_one]), together[0])
    assert [f[0] for _, f in one_by_one] == together[1]


def test_single_row_fast_path_refuses_a_row_of_the_wrong_width():
    model, X = _model()
    fast = SingleRowContributions(model._booster, X.shape[1])
    with pytest.raises(ValueError, match="expected 6 features"):
        fast(X[0, :5])


@pytest.mark.parametrize(
    ("mode", "row_ms", "offloaded"),
    [("auto", 0.2, False), ("auto", 5.0, True), ("always", 0.2, True), ("never", 5.0, False)],
)
def test_auto_scores_on_the_loop_only_what_is_cheap_to_score(mode: str, row_ms: float, offloaded: bool) -> None:
    """``auto`` follows the model's measured one-user cost, not its kind: a small tree model stays
    on the loop, a large one (or a slow linear one) goes to a thread."""
    import dataclasses
    import datetime as dt

    from churn.settings import Settings
    from service.model_holder import ServingModel
    from service.prediction import PredictionService

    settings = Settings(score_in_thread=mode, score_inline_max_ms=1.0)
    svc = PredictionService(settings, holder=None, features=None, metrics=None)  # type: ignore[arg-type]
    sm = ServingModel(None, "v", "lightgbm", 0.5, None, dt.datetime.now(dt.UTC), ("f0",), row_ms=row_ms)
    assert svc._offload(sm) is offloaded
    assert svc._offload(dataclasses.replace(sm, kind="logreg")) is offloaded


def test_load_measures_what_one_user_costs_the_model() -> None:
    from service.model_holder import _timed_explain

    model, _ = _model()
    row = dict.fromkeys(model.features)
    proba, cost = _timed_explain(model, row)
    assert 0.0 < cost < 1000.0
    np.testing.assert_array_equal(proba, model.explain_rows([row], k=3)[0])
