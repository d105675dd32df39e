"""The training set: labels joined to point-in-time correct Feast features, split by time.

Features come from ``store.get_historical_features`` with the ``churn_v1`` feature service, so
each (user, cutoff T) row sees the feature row valid at T (built from events strictly before T)
and never a later one. Splits are by cutoff, never by random rows: the model is always evaluated
on a period after the one it learnt from, as in production.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import pandas as pd

from churn.schema import ALL_FEATURES, CATEGORICAL_FEATURES, ENTITY_KEY, TIMESTAMP_FIELD
from churn.settings import Settings
from training.labels import build_labels, choose_cutoffs

LABEL = "churned"


@dataclass
class TrainingSet:
    """All labelled rows plus the split of cutoffs (oldest → newest)."""

    frame: pd.DataFrame
    features: list[str]
    categorical: list[str]
    cutoffs: list[dt.date]

    @property
    def train_cutoffs(self) -> list[dt.date]:
        return self.cutoffs[:-2]

    @property
    def valid_cutoff(self) -> dt.date:
        return self.cutoffs[-2]

    @property
    def test_cutoff(self) -> dt.date:
        return self.cutoffs[-1]

    def split(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(train, validation, test): earlier cutoffs, the second-to-last, the last."""
        return time_split(self.frame, self.cutoffs)

    def data_hash(self) -> str:
        """Content hash of the labelled rows, stored in metadata to tie a model to its data."""
        h = pd.util.hash_pandas_object(self.frame[[ENTITY_KEY, "cutoff", LABEL, *self.features]], index=False)
        return hashlib.sha256(h.to_numpy().tobytes()).hexdigest()[:16]


def time_split(
    frame: pd.DataFrame, cutoffs: list[dt.date]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split rows by cutoff: train on all but the last two, validate on one, test on the last."""
    ordered = sorted(cutoffs)
    if len(ordered) < 3:
        raise ValueError("a time split needs at least 3 cutoffs")
    train = frame[frame["cutoff"].isin(ordered[:-2])]
    valid = frame[frame["cutoff"] == ordered[-2]]
    test = frame[frame["cutoff"] == ordered[-1]]
    return train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True)


def entity_frame(labels: pd.DataFrame) -> pd.DataFrame:
    """Feast entity rows: ``user_id`` + ``event_timestamp`` = cutoff midnight, datetime64[us, UTC].

    Nanosecond timestamps break Feast's point-in-time join, hence the explicit ``us`` cast.
    """
    ts = pd.to_datetime(labels["cutoff"].astype(str), utc=True).astype("datetime64[us, UTC]")
    out = pd.DataFrame(
        {ENTITY_KEY: labels[ENTITY_KEY].astype(str).to_numpy(), TIMESTAMP_FIELD: ts.to_numpy()}
    )
    out[TIMESTAMP_FIELD] = out[TIMESTAMP_FIELD].astype("datetime64[us, UTC]")
    out["cutoff"] = labels["cutoff"].to_numpy()
    out[LABEL] = labels[LABEL].to_numpy()
    return out


def historical_features(settings: Settings, entity_df: pd.DataFrame, store=None) -> pd.DataFrame:  # noqa: ANN001
    """Point-in-time features of the feature service for ``entity_df`` (extra columns pass through)."""
    from churn.feature_store import get_store
    from churn.feature_store import historical_features as point_in_time

    store = store or get_store(settings)
    try:
        store.get_feature_service(settings.feature_service)
    except Exception as exc:  # feast raises FeatureServiceNotFoundException (or a registry error)
        raise RuntimeError(
            f"feature service {settings.feature_service!r} not registered: run `churn features apply` ({exc})"
        ) from exc
    return point_in_time(settings, entity_df, store=store)


def build_training_set(settings: Settings, store=None) -> TrainingSet:  # noqa: ANN001
    """Labels for every cutoff + features as of each cutoff, one row per (user, cutoff)."""
    cutoffs = choose_cutoffs(settings)
    labels = build_labels(settings, cutoffs)
    feats = historical_features(settings, entity_frame(labels), store)
    features = [f for f in ALL_FEATURES if f in feats.columns]
    missing = sorted(set(ALL_FEATURES) - set(features))
    if missing:
        raise RuntimeError(
            f"feature service {settings.feature_service!r} lacks columns: {', '.join(missing)}"
        )
    frame = normalise(feats, features)
    frame = frame.sort_values(["cutoff", ENTITY_KEY], kind="stable").reset_index(drop=True)
    categorical = [f for f in features if f in CATEGORICAL_FEATURES]
    return TrainingSet(frame=frame, features=features, categorical=categorical, cutoffs=cutoffs)


def normalise(df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Numeric features as float64, categoricals as object (None = missing), label as int8."""
    out = df.copy()
    for f in features:
        if f in CATEGORICAL_FEATURES:
            col = out[f].astype(object)
            out[f] = col.where(col.notna(), None)
        else:
            out[f] = pd.to_numeric(out[f], errors="coerce").astype("float64")
    if LABEL in out:
        out[LABEL] = out[LABEL].astype("int8")
    return out
