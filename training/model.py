"""The servable model: :class:`ChurnModel` loads a registry version and scores users.

One encoding for training and serving: numeric features as float (missing → NaN) and
categoricals as the index of their value in the category list saved at training time (unknown
or missing → NaN, or the ``__missing__`` category when training saw missing values). The API's
fast path (:meth:`ChurnModel.predict_proba_rows`) builds that float matrix straight from dicts,
without pandas; the batch path (:meth:`ChurnModel.predict_proba_frame`) vectorises the same rule.

Both kinds produce a *margin* (log-odds): LightGBM's raw score or the logistic regression's
linear term (recomputed with numpy from the fitted pipeline's parameters). A Platt calibrator
fitted on the validation cutoff maps the margin to a probability, undoing the skew of class
weighting while keeping the ranking.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.errors import ModelLoadError  # re-exported: callers catch it from here
from churn.storage import sha256
from training.single_row import SingleRowContributions

MISSING = "__missing__"
"""Category token for a missing value (the baseline one-hot encodes it when training saw it)."""

METADATA = "metadata.json"
LIGHTGBM_FILE = "model.txt"
BASELINE_FILE = "baseline.joblib"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --- encoding -----------------------------------------------------------------------------------
def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def encode_rows(
    rows: list[dict[str, Any]], features: list[str], cat_index: dict[str, dict[str, float]]
) -> np.ndarray:
    """Float matrix from dicts by feature NAME (missing key/None → NaN; unknown category → NaN)."""
    X = np.full((len(rows), len(features)), np.nan)
    for i, row in enumerate(rows):
        for j, f in enumerate(features):
            v = row.get(f)
            idx = cat_index.get(f)
            if idx is not None:
                X[i, j] = idx.get(MISSING if _is_missing(v) else str(v), np.nan)
            elif v is not None:
                try:
                    X[i, j] = float(v)
                except (TypeError, ValueError):
                    pass  # not a number: stays NaN, i.e. missing, as the models were trained
    return X


def encode_frame(df: pd.DataFrame, features: list[str], cat_index: dict[str, dict[str, float]]) -> np.ndarray:
    """Same encoding as :func:`encode_rows`, vectorised over a DataFrame (columns by name)."""
    X = np.full((len(df), len(features)), np.nan)
    for j, f in enumerate(features):
        if f not in df:
            continue
        col = df[f]
        idx = cat_index.get(f)
        if idx is not None:
            obj = col.astype(object)
            keys = obj.where(obj.notna(), MISSING).astype(str)
            X[:, j] = keys.map(idx).astype("float64").to_numpy()
        else:
            X[:, j] = pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()
    return X


def category_index(categories: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    return {f: {str(v): float(i) for i, v in enumerate(vals)} for f, vals in categories.items()}


# --- the model ----------------------------------------------------------------------------------
def top_factor_indices(contrib: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest contributions per row, largest first.

    ``argpartition`` is O(n·F) instead of a full sort; only the k picked columns are then sorted.
    Only positive values are factors (a feature lowering risk is not a reason to act): callers
    mask ``values <= 0``.
    """
    k = min(k, contrib.shape[1])
    part = np.argpartition(-contrib, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(contrib, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def feature_service_mismatch(model: Any, serving: str) -> str | None:
    """Why ``model`` cannot run where ``serving`` is the feature service read (``None``: it can).

    A model's inputs are looked up by name in one Feast feature service; scoring it with another
    service's rows would silently feed it the wrong (or missing) columns.
    """
    used = getattr(model, "feature_service", None)
    if used == serving:
        return None
    return f"model {getattr(model, 'version', '?')} uses feature service {used!r}, this deployment serves {serving!r}"


class ChurnModel:
    """A loaded, servable model of one registry version (see docs/contracts.md)."""

    def __init__(
        self,
        *,
        version: str,
        kind: str,
        features: list[str],
        categorical_features: list[str],
        categories: dict[str, list[str]],
        threshold: float,
        calibration: tuple[float, float] | None,
        metadata: dict[str, Any],
        booster: Any = None,
        pipeline: Any = None,
    ) -> None:
        self.version = version
        self.kind = kind
        self.features = list(features)
        self.categorical_features = list(categorical_features)
        self.categories = {f: list(v) for f, v in categories.items()}
        # Versions from before the service was recorded were all trained on the first one.
        self.feature_service = str(metadata.get("feature_service", "churn_v1"))
        self.threshold = float(threshold)
        self.metadata = metadata
        trained = metadata.get("trained_at")
        self.trained_at = dt.datetime.fromisoformat(trained) if trained else dt.datetime.now(dt.UTC)
        self._cat_index = category_index(self.categories)
        self._calibration = calibration
        self._booster = booster
        self._single_row_contrib: SingleRowContributions | None = None
        self._linear: _Linear | None = None
        if kind == "lightgbm":
            if booster is None:
                raise ModelLoadError("lightgbm model without a booster")
            if list(booster.feature_name()) != self.features:
                raise ModelLoadError("booster feature names differ from metadata features")
        elif kind == "logreg":
            if pipeline is None:
                raise ModelLoadError("logreg model without a pipeline")
            self._linear = _Linear.from_pipeline(
                pipeline, self.features, self.categorical_features, self.categories
            )
        else:
            raise ModelLoadError(f"unknown model kind {kind!r}")

    @property
    def calibration(self) -> tuple[float, float] | None:
        """Platt parameters ``(a, b)``: probability = sigmoid(a·margin + b); None = raw sigmoid."""
        return self._calibration

    def set_calibration(self, calibration: tuple[float, float] | None) -> None:
        self._calibration = calibration

    # -- scoring -----------------------------------------------------------------------------
    def margin_matrix(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Uncalibrated log-odds for an encoded matrix (1 thread: the API's single rows; batch: more)."""
        if self._booster is not None:
            return np.asarray(self._booster.predict(X, raw_score=True, num_threads=num_threads), dtype=float)
        assert self._linear is not None
        return self._linear.contributions(X).sum(axis=1) + self._linear.intercept

    def proba_matrix(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        return self.proba_from_margin(self.margin_matrix(X, num_threads))

    def proba_from_margin(self, m: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw margins (Platt scaling acts on the margin)."""
        if self._calibration is not None:
            a, b = self._calibration
            m = a * m + b
        return _sigmoid(m)

    def predict_proba_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Churn probability per row dict (fast path for the API: no pandas)."""
        if not rows:
            return np.empty(0)
        return self.proba_matrix(encode_rows(rows, self.features, self._cat_index))

    def predict_proba_frame(self, df: pd.DataFrame) -> np.ndarray:
        """Churn probability per DataFrame row (batch path; columns matched by name)."""
        if len(df) == 0:
            return np.empty(0)
        return self.proba_matrix(encode_frame(df, self.features, self._cat_index))

    def contributions_matrix(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Per-feature log-odds contributions of an encoded matrix, shape ``(n, len(features))``."""
        if self._booster is not None:
            raw = self._booster.predict(X, pred_contrib=True, num_threads=num_threads)
            return np.asarray(raw, dtype=float)[:, : len(self.features)]
        assert self._linear is not None
        return self._linear.contributions(X)

    def path_contributions_matrix(self, X: np.ndarray, num_threads: int = 1, chunk: int = 200_000) -> np.ndarray:
        """Fast per-feature contributions for batch scoring (Saabas path attribution).

        Exact SHAP (``pred_contrib``) walks every tree per row and takes minutes at 1M users.
        Path attribution credits each split's change in the node value to the split feature,
        so a row's contributions are a lookup per tree of its leaf's precomputed path vector:
        one ``pred_leaf`` call plus a gather (README has the measured speed-up). Like SHAP, the contributions sum to
        the row's margin minus the trees' root values and agree on the dominant factors; the API
        keeps exact SHAP for single users. Logistic regression is exact and cheap either way.
        """
        if self._booster is None:
            return self.contributions_matrix(X, num_threads)
        return self.path_scores(X, num_threads, chunk)[1]

    def path_scores(self, X: np.ndarray, num_threads: int = 1, chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
        """``(margin, contributions)`` of a LightGBM model from ONE ``pred_leaf`` pass.

        The margin is the sum of the reached leaves' values (float64, what ``predict(raw_score)``
        returns), so batch scoring needs no second walk of the trees for its probabilities. The
        per-block gathers run in ``num_threads`` threads: numpy releases the GIL inside them.
        """
        from concurrent.futures import ThreadPoolExecutor

        table, values = self._leaf_path_table(), self._leaf_values
        n_trees, n_features = table.shape[0], len(self.features)
        margin = np.empty(X.shape[0], dtype=np.float64)
        out = np.empty((X.shape[0], n_features), dtype=np.float32)
        block = 4096  # rows per accumulation, small enough for the running sum to stay in cache
        trees = np.arange(n_trees)

        def accumulate(start: int, leaves: np.ndarray) -> None:
            for b in range(0, leaves.shape[0], block):
                lv = leaves[b : b + block]
                acc = np.zeros((lv.shape[0], n_features), dtype=np.float32)
                for t in range(n_trees):
                    acc += table[t][lv[:, t]]
                out[start + b : start + b + lv.shape[0]] = acc
                margin[start + b : start + b + lv.shape[0]] = values[trees, lv].sum(axis=1)

        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            for start in range(0, X.shape[0], chunk):
                leaves = self._booster.predict(X[start : start + chunk], pred_leaf=True, num_threads=num_threads)
                leaves = np.asarray(leaves).reshape(-1, n_trees)
                step = -(-leaves.shape[0] // max(1, num_threads))
                parts = range(0, leaves.shape[0], step)
                list(pool.map(accumulate, [start + i for i in parts], [leaves[i : i + step] for i in parts]))
        return margin, out

    def _leaf_path_table(self) -> np.ndarray:
        """``(trees, leaves, features)``: each leaf's path contributions, built once per model
        (with ``_leaf_values``, ``(trees, leaves)``: each leaf's output)."""
        cached = getattr(self, "_path_table", None)
        if cached is not None:
            return cached
        trees = self._booster.dump_model()["tree_info"]
        width = max(t["num_leaves"] for t in trees)
        table = np.zeros((len(trees), width, len(self.features)), dtype=np.float32)
        values = np.zeros((len(trees), width), dtype=np.float64)

        def walk(node: dict[str, Any], acc: np.ndarray, t: int) -> None:
            if "leaf_index" in node or "left_child" not in node:  # a leaf, or a single-leaf tree
                table[t, node.get("leaf_index", 0)] = acc
                values[t, node.get("leaf_index", 0)] = node.get("leaf_value", 0.0)
                return
            for child in (node["left_child"], node["right_child"]):
                step = acc.copy()
                child_value = child.get("leaf_value", child.get("internal_value", 0.0))
                step[node["split_feature"]] += child_value - node["internal_value"]
                walk(child, step, t)

        for t, tree in enumerate(trees):
            walk(tree["tree_structure"], np.zeros(len(self.features), dtype=np.float32), t)
        self._leaf_values = values
        self._path_table = table
        return table

    def top_factors(self, rows: list[dict[str, Any]], k: int = 3) -> list[list[dict[str, Any]]]:
        """Per row, up to ``k`` features pushing the risk UP most (positive contributions only).

        LightGBM: SHAP values (``pred_contrib``); logreg: coefficient × scaled value. Both are
        in log-odds before calibration, which preserves their order.
        """
        if not rows:
            return []
        contrib = self.contributions_matrix(encode_rows(rows, self.features, self._cat_index))
        return self._top_k(rows, contrib, k)

    def explain_rows(self, rows: list[dict[str, Any]], k: int = 3) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
        """Probabilities and top factors from ONE contribution pass (the API's path).

        Contributions sum to the margin (SHAP's bias column included; the linear intercept
        added), so the probability needs no second model call: for a single LightGBM row the
        SHAP pass is most of the work and ``predict`` would repeat the tree walk. Exact SHAP, not
        the batch job's path attribution: on models with interactions the two disagree on the
        top-3 factors of too many users to serve one as the other.
        """
        if not rows:
            return np.empty(0), []
        X = encode_rows(rows, self.features, self._cat_index)
        if self._booster is not None:
            if len(rows) == 1:
                raw = self._single_row()(X[0])[None, :]
            else:
                raw = np.asarray(self._booster.predict(X, pred_contrib=True, num_threads=1), dtype=float)
            contrib, margin = raw[:, : len(self.features)], raw.sum(axis=1)
        else:
            assert self._linear is not None
            contrib = self._linear.contributions(X)
            margin = contrib.sum(axis=1) + self._linear.intercept
        return self.proba_from_margin(margin), self._top_k(rows, contrib, k)

    def _single_row(self) -> SingleRowContributions:
        """LightGBM's prepared single-row SHAP predictor, made on first use (one per model)."""
        fast = self._single_row_contrib
        if fast is None:
            fast = self._single_row_contrib = SingleRowContributions(self._booster, len(self.features))
        return fast

    def _top_k(self, rows: list[dict[str, Any]], contrib: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        idx, vals = top_factor_indices(contrib, k)
        names = self.features
        return [
            [
                {"feature": names[j], "value": row.get(names[j]), "contribution": float(v)}
                for j, v in zip(idx[i].tolist(), vals[i].tolist(), strict=True)
                if v > 0
            ]
            for i, row in enumerate(rows)
        ]

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str, kind: str | None = None) -> ChurnModel:
        """Load the served model of a version folder (or ``kind``); verify it and smoke-test it."""
        path = Path(path) if isinstance(path, str) else path  # a local folder or an s3:// one
        try:
            meta = json.loads((path / METADATA).read_text())
        except FileNotFoundError:
            raise ModelLoadError(f"no {METADATA} in {path}") from None
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"unreadable {path / METADATA}: {exc}") from None
        kind = kind or meta.get("kind")
        spec = (meta.get("models") or {}).get(kind)
        if not spec:
            raise ModelLoadError(f"{path.name}: no model of kind {kind!r} in metadata")
        try:
            for name, digest in (spec.get("files") or {}).items():
                if sha256(path / name) != digest:
                    raise ModelLoadError(f"{path.name}: {name} is corrupt (checksum mismatch)")
            booster = pipeline = None
            if kind == "lightgbm":
                import lightgbm as lgb

                booster = lgb.Booster(model_str=(path / spec["model_file"]).read_text())
            else:
                import joblib

                with (path / spec["model_file"]).open("rb") as fh:
                    pipeline = joblib.load(fh)
            calib = spec.get("calibration")
            model = cls(
                version=str(meta.get("version", path.name)),
                kind=kind,
                features=meta["features"],
                categorical_features=meta.get("categorical_features", []),
                categories=spec.get("categories", {}),
                threshold=spec.get("threshold", 0.5),
                calibration=(float(calib["a"]), float(calib["b"])) if calib else None,
                metadata=meta,
                booster=booster,
                pipeline=pipeline,
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # any library error while reading a model file = corrupt version
            raise ModelLoadError(f"{path.name}: cannot load {kind} model: {exc}") from exc
        model.smoke_test(spec.get("smoke"))
        return model

    def smoke_test(self, smoke: dict[str, Any] | None) -> None:
        """Score the rows stored at training time; refuse the model unless it reproduces them."""
        rows = (smoke or {}).get("rows") or [{}]
        try:
            got = self.predict_proba_rows(rows)
        except Exception as exc:
            raise ModelLoadError(f"{self.version}: smoke prediction failed: {exc}") from exc
        if got.shape != (len(rows),) or not np.all(np.isfinite(got)) or np.any((got < 0) | (got > 1)):
            raise ModelLoadError(f"{self.version}: smoke prediction out of range: {got}")
        expected = (smoke or {}).get("probabilities")
        if expected is not None and not np.allclose(got, expected, atol=1e-6):
            raise ModelLoadError(f"{self.version}: smoke predictions differ from training time")

    def smoke_record(self, frame: pd.DataFrame, n: int = 5) -> dict[str, Any]:
        """A few rows and their probabilities, stored in metadata and replayed by :meth:`smoke_test`."""
        sample = frame[self.features].head(n)
        rows = [{k: (None if _is_missing(v) else v) for k, v in r.items()} for r in sample.to_dict("records")]
        return {"rows": rows, "probabilities": self.predict_proba_rows(rows).tolist()}


class _Linear:
    """The baseline pipeline as plain arrays, so rows score without pandas or sklearn overhead."""

    def __init__(
        self,
        intercept: float,
        coef_num: np.ndarray,
        median: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        num_idx: np.ndarray,
        cat_coefs: list[tuple[int, np.ndarray]],
        n_features: int,
    ) -> None:
        self.intercept = intercept
        self.coef_num, self.median, self.mean, self.scale = coef_num, median, mean, scale
        self.num_idx, self.cat_coefs, self.n_features = num_idx, cat_coefs, n_features

    @classmethod
    def from_pipeline(
        cls, pipeline: Any, features: list[str], categorical: list[str], categories: dict[str, list[str]]
    ) -> _Linear:
        pre = pipeline.named_steps["pre"]
        clf = pipeline.named_steps["clf"]
        num_pipe = pre.named_transformers_["num"]
        numeric = [f for f in features if f not in categorical]
        coef = np.asarray(clf.coef_[0], dtype=float)
        n_num = len(numeric)
        enc: Any = pre.named_transformers_["cat"] if categorical else None
        cat_coefs: list[tuple[int, np.ndarray]] = []
        pos = n_num
        for i, f in enumerate(categorical):
            cats = [str(c) for c in enc.categories_[i]]
            if cats != categories[f]:
                raise ModelLoadError(f"baseline categories of {f} differ from metadata")
            cat_coefs.append((features.index(f), coef[pos : pos + len(cats)]))
            pos += len(cats)
        if pos != len(coef):
            raise ModelLoadError("baseline coefficient count does not match its features")
        return cls(
            intercept=float(clf.intercept_[0]),
            coef_num=coef[:n_num],
            median=np.asarray(num_pipe.named_steps["impute"].statistics_, dtype=float),
            mean=np.asarray(num_pipe.named_steps["scale"].mean_, dtype=float),
            scale=np.asarray(num_pipe.named_steps["scale"].scale_, dtype=float),
            num_idx=np.array([features.index(f) for f in numeric], dtype=int),
            cat_coefs=cat_coefs,
            n_features=len(features),
        )

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature log-odds terms: coef × standardised value; a category's own coefficient."""
        out = np.zeros((X.shape[0], self.n_features))
        num = X[:, self.num_idx]
        num = np.where(np.isnan(num), self.median, num)
        out[:, self.num_idx] = self.coef_num * (num - self.mean) / self.scale
        for j, coefs in self.cat_coefs:
            codes = X[:, j]
            ok = ~np.isnan(codes)
            out[ok, j] = coefs[codes[ok].astype(int)]
        return out
