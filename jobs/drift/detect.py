"""Load the production model's reference and a day's scored features; test them for drift.

Runs in the isolated drift env only (imports alibi-detect). Reads Parquet and JSON, nothing else.

Tests, per feature (inputs built by name from ``metadata.json["features"]``):

* **Statistical test** -- alibi-detect ``TabularDrift``: two-sample Kolmogorov-Smirnov for
  numeric features, chi-squared on the contingency table for categorical ones, with a
  Bonferroni (default) or FDR correction across features at ``settings.drift_p_value``.
  Categoricals are encoded with the *reference's* categories (:class:`CategoricalEncoder`):
  categories absent from the reference share one extra "unseen" code, missing values another,
  so both take part in the chi-squared test. Numeric NaNs are **dropped per feature** before
  the KS test (imputing would put a spike at the imputed value); a change in the missing rate
  is caught by the PSI's missing bin instead. A numeric feature with no non-missing value on
  either side cannot be KS-tested and gets ``p_value = 1`` (its PSI still decides).
* **PSI** (:mod:`jobs.drift.psi`): reference-decile bins + missing bin, or category shares.

Rule (also written into every report):

* a feature is *drifted* when ``psi >= psi_alert`` **or** its p-value is below the corrected
  threshold (Bonferroni: ``p_value / n_features``; FDR: the Benjamini-Hochberg cut-off) **and**
  its PSI is at least ``psi_warn``. Significance alone is not enough: with thousands of rows a
  KS test flags shifts too small to matter (a weekday effect on recency, say), and a drift alert
  that fires every day retrains every day and is soon ignored;
* drift is *detected* when any feature is drifted **or** the prediction PSI
  (``churn_probability``) is ``>= psi_alert``. alibi's batch-level ``is_drift`` and the
  prediction's KS p-value are reported for information.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from churn.errors import DataError
from churn.layout import SCORED_FEATURES
from churn.settings import Settings
from churn.storage import read_schema, read_table
from jobs.drift.psi import (
    DEFAULT_BINS,
    CategoricalEncoder,
    NumericBins,
    PsiResult,
    categorical_psi,
    numeric_psi,
    psi_level,
)

PREDICTION_COLUMN = "churn_probability"
CORRECTIONS = ("bonferroni", "fdr")


class DriftInputError(DataError):
    """Missing or unreadable inputs: reported as one line, exit status 1, nothing written."""


class NoProductionModelYet(DriftInputError):
    """A new install before its first model: nothing was scored, so there is nothing to compare."""


# --- inputs --------------------------------------------------------------------------------------
@dataclass
class DriftInputs:
    date: dt.date
    model_version: str
    features: list[str]
    categorical: list[str]
    reference: pd.DataFrame
    current: pd.DataFrame
    reference_path: Path
    current_path: Path


def current_path(settings: Settings, date: dt.date) -> Path:
    return settings.layout.predictions(date) / SCORED_FEATURES


def production_version(settings: Settings) -> str:
    pointer = settings.layout.production_pointer
    try:
        version = pointer.read_text().strip()
    except FileNotFoundError:
        raise NoProductionModelYet(f"no production model: {pointer} is missing (train and promote one)") from None
    except OSError as exc:
        raise DriftInputError(f"cannot read {pointer}: {exc}") from None
    if not version:
        raise DriftInputError(f"no production model: {pointer} is empty")
    return version


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DriftInputError(f"model metadata not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise DriftInputError(f"cannot read model metadata {path}: {exc}") from None
    features = meta.get("features") if isinstance(meta, dict) else None
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise DriftInputError(f"{path} has no 'features' list")
    return meta


def _read_parquet(path: Path, columns: list[str], what: str) -> pd.DataFrame:
    if not path.exists():
        raise DriftInputError(f"{what} not found: {path}")
    try:
        schema = read_schema(path)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise DriftInputError(f"{what} {path} lacks column(s): {shown}")
        df = read_table(path, columns=columns).to_pandas()
    except DriftInputError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise DriftInputError(f"cannot read {what} {path}: {exc}") from None
    if df.empty:
        raise DriftInputError(f"{what} {path} has no rows")
    return df


def load_inputs(settings: Settings, date: dt.date) -> DriftInputs:
    """Everything the job needs, or a :class:`DriftInputError` naming what is missing."""
    version = production_version(settings)
    version_dir = settings.models_dir / version
    if not version_dir.is_dir():
        raise DriftInputError(f"production model {version!r} not found in {settings.models_dir}")
    meta = _read_metadata(version_dir / "metadata.json")
    features: list[str] = list(meta["features"])
    columns = [*features, PREDICTION_COLUMN]
    ref_path = version_dir / "reference.parquet"
    cur_path = current_path(settings, date)
    reference = _read_parquet(ref_path, columns, "reference sample")
    current = _read_parquet(cur_path, columns, "scored features")
    declared = set(meta.get("categorical_features") or [])
    # A declared categorical, or any column the reference does not store as numbers.
    categorical = [
        f
        for f in features
        if f in declared or not (pd.api.types.is_numeric_dtype(reference[f]) or reference[f].isna().all())
    ]
    return DriftInputs(
        date=date,
        model_version=str(meta.get("version") or version),
        features=features,
        categorical=categorical,
        reference=reference,
        current=current,
        reference_path=ref_path,
        current_path=cur_path,
    )


# --- results -------------------------------------------------------------------------------------
@dataclass
class FeatureResult:
    name: str
    kind: str  # "numeric" | "categorical"
    psi: PsiResult
    psi_level: str
    p_value: float
    statistic: float
    test: str  # "ks" | "chi2"
    drifted: bool
    reasons: list[str] = field(default_factory=list)
    unseen_categories: list[str] = field(default_factory=list)


@dataclass
class DriftResult:
    inputs: DriftInputs
    features: list[FeatureResult]
    prediction_psi: PsiResult
    prediction_psi_level: str
    prediction_p_value: float
    alibi_is_drift: bool
    corrected_threshold: float
    correction: str
    thresholds: dict[str, float | str | int]
    drift_detected: bool
    drifted_features: list[str]
    psi_alert_features: list[str]
    psi_warn_features: list[str]
    reason: str
    # numeric arrays (reference, current) kept for the plots of drifted features
    numeric_values: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _make_detector_class() -> type:
    # TRANSFORMERS_VERBOSITY: alibi-detect imports `transformers`, which otherwise prints a
    # "None of PyTorch, TensorFlow or Flax" advisory on every run. A logging knob, not a setting.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from alibi_detect.cd import TabularDrift
    from scipy.stats import chi2_contingency, ks_2samp

    class NanAwareTabularDrift(TabularDrift):
        """alibi's TabularDrift with NaNs dropped per numeric feature before the KS test.

        Categorical columns hold non-negative integer codes (no NaN), tested exactly as alibi does
        (chi-squared over the union of reference and current categories), counted with bincount.
        Batch-level decision and Bonferroni/FDR correction are alibi's own ``predict``.
        """

        def feature_score(self, x_ref: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x_ref = x_ref.reshape(x_ref.shape[0], -1)
            x = x.reshape(x.shape[0], -1)
            p_val = np.ones(self.n_features, dtype=np.float64)
            dist = np.zeros(self.n_features, dtype=np.float64)
            for f in range(self.n_features):
                if f in self.cat_vars:
                    ref_codes = x_ref[:, f].astype(np.int64)
                    cur_codes = x[:, f].astype(np.int64)
                    n = int(max(ref_codes.max(), cur_codes.max())) + 1
                    table = np.vstack([np.bincount(c, minlength=n) for c in (ref_codes, cur_codes)])
                    table = table[:, table.sum(axis=0) > 0]  # union of the categories present
                    if table.shape[1] < 2:
                        continue  # one category on both sides: nothing to test, p = 1
                    stat, p, _, _ = chi2_contingency(table)
                else:
                    a, b = x_ref[:, f], x[:, f]
                    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
                    if a.size == 0 or b.size == 0:
                        continue  # untestable: the PSI (missing bin) decides
                    stat, p = ks_2samp(a, b, alternative=self.alternative, mode="asymp")
                dist[f], p_val[f] = stat, p
            return p_val, dist

    return NanAwareTabularDrift


def analyse(
    inputs: DriftInputs,
    psi_warn: float,
    psi_alert: float,
    p_value: float,
    correction: str = "bonferroni",
    n_bins: int = DEFAULT_BINS,
) -> DriftResult:
    """Run PSI and alibi's TabularDrift on every feature; apply the rule in the module doc."""
    if correction not in CORRECTIONS:
        raise DriftInputError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    ref, cur = inputs.reference, inputs.current
    cat_set = set(inputs.categorical)
    n_ref, n_cur, n_feat = len(ref), len(cur), len(inputs.features)
    # Column-major: each feature is filled and tested as one contiguous column.
    x_ref = np.empty((n_ref, n_feat), dtype=np.float64, order="F")
    x_cur = np.empty((n_cur, n_feat), dtype=np.float64, order="F")
    psis: list[PsiResult] = []
    unseen: dict[str, list[str]] = {}
    numeric_values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, name in enumerate(inputs.features):
        if name in cat_set:
            enc = CategoricalEncoder.fit(ref[name])
            x_ref[:, i] = enc.transform(ref[name])
            x_cur[:, i] = enc.transform(cur[name])
            psis.append(categorical_psi(ref[name], cur[name], encoder=enc))
            unseen[name] = enc.unseen_values(cur[name])
        else:
            a, b = _numeric(ref[name]), _numeric(cur[name])
            x_ref[:, i], x_cur[:, i] = a, b
            psis.append(numeric_psi(a, b, bins=NumericBins.fit(a, n_bins)))
            numeric_values[name] = (a, b)

    detector_cls = _make_detector_class()
    cd = detector_cls(
        x_ref,
        p_val=p_value,
        categories_per_feature={i: None for i, f in enumerate(inputs.features) if f in cat_set},
        x_ref_preprocessed=True,  # already encoded; no preprocess_fn
        correction=correction,
    )
    pred = cd.predict(x_cur, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    p_vals = np.asarray(pred["p_val"], dtype=np.float64)
    stats = np.asarray(pred["distance"], dtype=np.float64)
    alibi_is_drift = bool(pred["is_drift"])
    threshold = pred["threshold"]
    if np.ndim(threshold) > 0:  # FDR with nothing significant returns every BH bound; none applies
        threshold = float(np.min(threshold))
    threshold = float(threshold)

    results: list[FeatureResult] = []
    for i, name in enumerate(inputs.features):
        psi = psis[i]
        level = psi_level(psi.psi, psi_warn, psi_alert)
        reasons = []
        if psi.psi >= psi_alert:
            reasons.append(f"psi {psi.psi:.3f} >= {psi_alert}")
        if p_vals[i] < threshold and psi.psi >= psi_warn:
            reasons.append(f"p {p_vals[i]:.3g} < {threshold:.3g} ({correction}) with psi {psi.psi:.3f} >= {psi_warn}")
        results.append(
            FeatureResult(
                name=name,
                kind="categorical" if name in cat_set else "numeric",
                psi=psi,
                psi_level=level,
                p_value=float(p_vals[i]),
                statistic=float(stats[i]),
                test="chi2" if name in cat_set else "ks",
                drifted=bool(reasons),
                reasons=reasons,
                unseen_categories=unseen.get(name, []),
            )
        )

    from scipy.stats import ks_2samp

    pa_, pb_ = _numeric(ref[PREDICTION_COLUMN]), _numeric(cur[PREDICTION_COLUMN])
    pred_psi = numeric_psi(pa_, pb_, n_bins=n_bins)
    pa_, pb_ = pa_[~np.isnan(pa_)], pb_[~np.isnan(pb_)]
    pred_p = float(ks_2samp(pa_, pb_, mode="asymp").pvalue) if pa_.size and pb_.size else 1.0
    numeric_values[PREDICTION_COLUMN] = (_numeric(ref[PREDICTION_COLUMN]), _numeric(cur[PREDICTION_COLUMN]))

    drifted = [r.name for r in results if r.drifted]
    alert = [r.name for r in results if r.psi_level == "alert"]
    warn = [r.name for r in results if r.psi_level == "warn"]
    pred_alert = pred_psi.psi >= psi_alert
    drift_detected = bool(drifted) or pred_alert
    reason = _reason(results, alibi_is_drift, threshold, correction, pred_psi.psi, psi_alert)
    return DriftResult(
        inputs=inputs,
        features=results,
        prediction_psi=pred_psi,
        prediction_psi_level=psi_level(pred_psi.psi, psi_warn, psi_alert),
        prediction_p_value=pred_p,
        alibi_is_drift=alibi_is_drift,
        corrected_threshold=threshold,
        correction=correction,
        thresholds={
            "psi_warn": psi_warn,
            "psi_alert": psi_alert,
            "p_value": p_value,
            "correction": correction,
            "corrected_p_value": threshold,
            "psi_bins": n_bins,
        },
        drift_detected=drift_detected,
        drifted_features=drifted,
        psi_alert_features=alert,
        psi_warn_features=warn,
        reason=reason,
        numeric_values=numeric_values,
    )


def _reason(
    results: list[FeatureResult],
    alibi_is_drift: bool,
    threshold: float,
    correction: str,
    pred_psi: float,
    psi_alert: float,
) -> str:
    parts = []
    tested = [r.name for r in results if r.drifted and r.p_value < threshold]
    if tested:
        parts.append(f"TabularDrift ({correction}, p < {threshold:.3g}, PSI >= warn) flagged {', '.join(tested)}")
    quiet = [r.name for r in results if r.p_value < threshold and not r.drifted]
    if quiet:
        parts.append(f"significant but below the PSI warn level (not drift): {', '.join(quiet)}")
    psi_hit = [f"{r.name} ({r.psi.psi:.3f})" for r in results if r.psi.psi >= psi_alert]
    if psi_hit:
        parts.append(f"PSI >= {psi_alert}: {', '.join(psi_hit)}")
    if pred_psi >= psi_alert:
        parts.append(f"prediction PSI {pred_psi:.3f} >= {psi_alert}")
    if any(r.drifted for r in results) or pred_psi >= psi_alert:
        return "; ".join(parts)
    prefix = "; ".join(parts) + "; " if parts else ""
    top = max(results, key=lambda r: r.psi.psi)
    low = min(results, key=lambda r: r.p_value)
    return (
        f"{prefix}no drift: max PSI {top.psi.psi:.3f} ({top.name}) < {psi_alert}, "
        f"min p {low.p_value:.3g} ({low.name}; corrected threshold {threshold:.3g}, {correction}), "
        f"prediction PSI {pred_psi:.3f}"
    )
