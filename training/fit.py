"""Fitting: the logistic-regression baseline, the LightGBM model, and Platt calibration.

Both models see exactly the encoding :class:`training.model.ChurnModel` uses at serving time,
and both come back as ``ChurnModel`` objects, so the numbers in the report are produced by the
same code that later serves traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.dataset import LABEL
from training.model import MISSING, ChurnModel, category_index, encode_frame

TRAIN_THREADS = 2
"""Fixed (not "all cores") so training is reproducible across machines; 2 = the reference machine.
Serving always predicts with 1 thread."""

LGB_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": ["auc", "binary_logloss"],
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "is_unbalance": True,
    "cat_smooth": 10,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": TRAIN_THREADS,
    "verbosity": -1,
}


@dataclass
class Fitted:
    """A trained model plus what the registry must store about it."""

    model: ChurnModel
    estimator: Any  # lgb.Booster or sklearn Pipeline
    info: dict[str, Any] = field(default_factory=dict)


def _categories(train: pd.DataFrame, categorical: list[str], with_missing: bool) -> dict[str, list[str]]:
    out = {}
    for f in categorical:
        col = train[f].astype(object)
        vals = sorted({str(v) for v in col[col.notna()]})
        if with_missing and col.isna().any():
            vals = sorted([*vals, MISSING])
        out[f] = vals
    return out


def _candidate(
    kind: str, features: list[str], categorical: list[str], categories: dict[str, list[str]], **model: Any
) -> ChurnModel:
    """An unregistered, uncalibrated model (threshold 0.5 until the validation cutoff sets it)."""
    return ChurnModel(
        version="candidate",
        kind=kind,
        features=features,
        categorical_features=categorical,
        categories=categories,
        threshold=0.5,
        calibration=None,
        metadata={"features": features, "categorical_features": categorical},
        **model,
    )


def fit_lightgbm(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    seed: int,
    max_rounds: int = 2000,
    early_stopping: int = 100,
) -> Fitted:
    """LightGBM with native categoricals, class weighting and early stopping on validation AUC."""
    import lightgbm as lgb

    categories = _categories(train, categorical, with_missing=False)
    idx = category_index(categories)
    cat_pos = [features.index(f) for f in categorical]
    params = {**LGB_PARAMS, "seed": seed}
    dtrain = lgb.Dataset(
        encode_frame(train, features, idx),
        label=train[LABEL].to_numpy(),
        feature_name=features,
        categorical_feature=cat_pos,
        free_raw_data=False,
    )
    dvalid = lgb.Dataset(encode_frame(valid, features, idx), label=valid[LABEL].to_numpy(), reference=dtrain)
    evals: dict[str, Any] = {}
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=max_rounds,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(early_stopping, first_metric_only=True, verbose=False),
            lgb.record_evaluation(evals),
        ],
    )
    rounds_run = booster.current_iteration()
    best = booster.best_iteration or rounds_run
    # Keep only the trees up to the best iteration, so the saved model is what was validated.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    model = _candidate("lightgbm", features, categorical, categories, booster=booster)
    return Fitted(
        model,
        booster,
        {
            "best_iteration": int(best),
            "rounds_run": int(rounds_run),
            "params": {**params, "max_rounds": max_rounds},
        },
    )


def baseline_input(df: pd.DataFrame, features: list[str], categorical: list[str]) -> pd.DataFrame:
    """Frame for the sklearn pipeline: categoricals as strings with missing → ``__missing__``."""
    out = df[features].copy()
    for f in categorical:
        col = out[f].astype(object)
        out[f] = col.where(col.notna(), MISSING).astype(str)
    return out


def fit_baseline(train: pd.DataFrame, features: list[str], categorical: list[str], seed: int) -> Fitted:
    """Scaled/imputed numerics + one-hot categoricals → class-balanced logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f for f in features if f not in categorical]
    pre = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ],
        remainder="drop",
    )
    pipe = Pipeline(
        [("pre", pre), ("clf", LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed))]
    )
    pipe.fit(baseline_input(train, features, categorical), train[LABEL].to_numpy())
    enc = pipe.named_steps["pre"].named_transformers_["cat"]
    categories = {f: [str(c) for c in enc.categories_[i]] for i, f in enumerate(categorical)}
    model = _candidate("logreg", features, categorical, categories, pipeline=pipe)
    return Fitted(model, pipe, {"params": {"class_weight": "balanced", "max_iter": 5000}})


def fit_platt(model: ChurnModel, valid: pd.DataFrame) -> tuple[float, float]:
    """Platt scaling of the model's margin on the validation cutoff: p = sigmoid(a·margin + b).

    Class weighting inflates probabilities; a monotone 1-D logistic fit undoes that without
    changing the ranking (ROC-AUC is unchanged), unlike isotonic regression's ties.
    """
    from sklearn.linear_model import LogisticRegression

    X = encode_frame(valid, model.features, category_index(model.categories))
    margin = model.margin_matrix(X).reshape(-1, 1)
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(margin, valid[LABEL].to_numpy())
    return float(lr.coef_[0][0]), float(lr.intercept_[0])


def margins(model: ChurnModel, df: pd.DataFrame) -> np.ndarray:
    return model.margin_matrix(encode_frame(df, model.features, category_index(model.categories)))
