"""Fitting: the logistic-regression baseline, the LightGBM model, and Platt calibration.

LightGBM must work from a few thousand rows to a few million, so its defaults are scaled to the
training rows (:func:`scaled_params`) and a handful of configurations around them
(:data:`SEARCH_GRID`) are tried, each early-stopped on the validation cutoff; the one with the
best validation ROC-AUC wins (ties go to the earlier entry, so the choice is deterministic).

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

LGB_BASE: dict[str, Any] = {
    "objective": "binary",
    "metric": ["auc", "binary_logloss"],
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "is_unbalance": True,
    "cat_smooth": 10,
    "deterministic": True,
    "force_col_wise": True,
    "feature_pre_filter": False,
    "num_threads": TRAIN_THREADS,
    "verbosity": -1,
}
"""What every configuration shares; the size-dependent parameters come from :func:`scaled_params`."""

LARGE_ROWS = 500_000
"""From this many training rows on, a higher learning rate keeps the number of rounds (and the
time) bounded; the trees are then fitted on so much data that the extra step costs little."""

SUSPICIOUS_ITERATION = 10
"""A best iteration below this means validation AUC peaked in the first rounds: the trees learnt
almost nothing that carries over to the validation period (tiny data, a shift, or a leak)."""

SEARCH_GRID: tuple[tuple[str, dict[str, Any]], ...] = (
    ("scaled", {}),
    ("shallow", {"num_leaves": 0.25, "min_data_in_leaf": 2.0}),
    ("deep", {"num_leaves": 2.0, "min_data_in_leaf": 0.5}),
    ("regularised", {"min_data_in_leaf": 4.0, "lambda_l2": 10.0, "feature_fraction": 0.6}),
    ("additive", {"num_leaves": 3, "learning_rate": 2.0}),
    ("unweighted", {"is_unbalance": False}),
)
"""The LightGBM search: names and changes to the scaled defaults. A float multiplies the default
(``num_leaves``/``min_data_in_leaf``/``learning_rate``), anything else replaces it. ``additive``
(three-leaf trees, nearly a sum of per-feature effects) guards against the deep configurations
overfitting small data; ``unweighted`` drops class weighting (Platt calibration follows anyway)."""

_SCALED_KEYS = ("num_leaves", "min_data_in_leaf", "learning_rate")


def scaled_params(n_rows: int) -> dict[str, Any]:
    """Size-dependent LightGBM defaults for ``n_rows`` training rows.

    * ``num_leaves`` = 2^round(log10 n) − 1: tree capacity grows with the evidence (a few thousand
      rows support a handful of leaves, millions support dozens), within [7, 127].
    * ``min_data_in_leaf`` ≈ n / 1000 within [10, 500]: a leaf holds enough rows for a stable
      churn rate on small data, and big data can still split finely.
    * ``learning_rate`` 0.05, or 0.1 from :data:`LARGE_ROWS` rows on.
    * ``early_stopping`` = 2 / learning_rate rounds within [20, 100]: patience of tens of rounds,
      so a noisy validation AUC does not stop training in its first rounds.
    """
    n = max(int(n_rows), 1)
    learning_rate = 0.1 if n >= LARGE_ROWS else 0.05
    return {
        "num_leaves": int(np.clip(2 ** round(np.log10(max(n, 10))) - 1, 7, 127)),
        "min_data_in_leaf": int(np.clip(round(n / 1000), 10, 500)),
        "learning_rate": learning_rate,
        "early_stopping": int(np.clip(round(2 / learning_rate), 20, 100)),
    }


def config_params(n_rows: int, changes: dict[str, Any]) -> dict[str, Any]:
    """The scaled defaults for ``n_rows`` with one grid entry's changes applied."""
    params = scaled_params(n_rows)
    for key, value in changes.items():
        if key in _SCALED_KEYS and isinstance(value, float):
            params[key] = params[key] * value
        else:
            params[key] = value
    params["num_leaves"] = int(np.clip(round(params["num_leaves"]), 3, 255))
    params["min_data_in_leaf"] = max(1, int(round(params["min_data_in_leaf"])))
    params["learning_rate"] = float(params["learning_rate"])
    return params


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
    early_stopping: int | None = None,
    params: dict[str, Any] | None = None,
) -> Fitted:
    """One LightGBM configuration: native categoricals, early stopping on validation AUC.

    ``params`` default to :func:`scaled_params` for the training rows; ``early_stopping`` (rounds
    of patience) defaults to the configuration's own.
    """
    import lightgbm as lgb

    chosen = dict(params or scaled_params(len(train)))
    patience = int(early_stopping or chosen.pop("early_stopping", 50))
    chosen.pop("early_stopping", None)
    categories = _categories(train, categorical, with_missing=False)
    idx = category_index(categories)
    cat_pos = [features.index(f) for f in categorical]
    full = {**LGB_BASE, **chosen, "seed": seed}
    dtrain = lgb.Dataset(
        encode_frame(train, features, idx),
        label=train[LABEL].to_numpy(),
        feature_name=features,
        categorical_feature=cat_pos,
        free_raw_data=False,
        params={"feature_pre_filter": False},
    )
    dvalid = lgb.Dataset(encode_frame(valid, features, idx), label=valid[LABEL].to_numpy(), reference=dtrain)
    booster = lgb.train(
        full,
        dtrain,
        num_boost_round=max_rounds,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(patience, first_metric_only=True, verbose=False)],
    )
    rounds_run = booster.current_iteration()
    best = booster.best_iteration or rounds_run
    valid_auc = booster.best_score.get("valid", {}).get("auc")
    # Keep only the trees up to the best iteration, so the saved model is what was validated.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    model = _candidate("lightgbm", features, categorical, categories, booster=booster)
    return Fitted(
        model,
        booster,
        {
            "best_iteration": int(best),
            "rounds_run": int(rounds_run),
            "early_stopping_rounds": patience,
            "valid_auc": None if valid_auc is None else float(valid_auc),
            "suspicious_early_stop": bool(best < SUSPICIOUS_ITERATION),
            "params": {**full, "max_rounds": max_rounds},
        },
    )


def search_lightgbm(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    seed: int,
    *,
    max_rounds: int = 2000,
    early_stopping: int | None = None,
    search_rows: int = 0,
    grid: tuple[tuple[str, dict[str, Any]], ...] = SEARCH_GRID,
) -> Fitted:
    """Try each grid configuration on the validation cutoff; return the best by validation ROC-AUC.

    With more than ``search_rows`` training rows (> 0) the search fits on a seeded sample of that
    size (the defaults scaled to the sample), then the winner is refitted on every row with the
    defaults scaled to the full set: the search stays affordable at millions of rows.
    """
    sampled = 0 < search_rows < len(train)
    pool = train.sample(n=search_rows, random_state=seed) if sampled else train
    trials: list[dict[str, Any]] = []
    best: tuple[float, int, Fitted] | None = None
    for i, (name, changes) in enumerate(grid):
        fit = fit_lightgbm(
            pool, valid, features, categorical, seed, max_rounds, early_stopping, config_params(len(pool), changes)
        )
        auc = fit.info["valid_auc"] if fit.info["valid_auc"] is not None else float("-inf")
        trials.append({"name": name, "valid_auc": fit.info["valid_auc"], "best_iteration": fit.info["best_iteration"]})
        if best is None or auc > best[0]:
            best = (auc, i, fit)
    assert best is not None
    _, winner, fit = best
    name, changes = grid[winner]
    if sampled:
        fit = fit_lightgbm(
            train, valid, features, categorical, seed, max_rounds, early_stopping, config_params(len(train), changes)
        )
    fit.info["search"] = {
        "chosen": name,
        "by": "validation ROC-AUC",
        "rows": int(len(pool)),
        "sampled": sampled,
        "trials": trials,
    }
    return fit


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
