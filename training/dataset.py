"""The training set: labels joined to point-in-time correct Feast features, split by time.

Features come from ``store.get_historical_features`` with the settings' feature service
(``settings.feature_service``), so each (user, cutoff T) row sees the feature row valid at T
(built from events strictly before T) and never a later one. The feature list, its views and
which features are categorical are read off that feature service, never hard-coded: a new
service (more views) trains without code changes. Splits are by cutoff, never by random rows:
the model is always evaluated on a period after the one it learnt from, as in production. Which
cutoffs train, validate and test is :mod:`training.labels`' rule (no label window of one split
overlaps another's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from churn.schema import CATEGORICAL_FEATURES, ENTITY_KEY, TIMESTAMP_FIELD
from churn.settings import Settings
from training.labels import CutoffPlan, apply_row_budget, build_labels, choose_cutoffs

LABEL = "churned"


@dataclass
class TrainingSet:
    """All labelled rows plus the split of cutoffs (oldest → newest).

    ``valid`` / ``test`` default to the second-to-last and last cutoffs (hand-built sets in
    tests); :func:`build_training_set` sets them from the cutoff plan, where a gap of one label
    horizon separates the splits.
    """

    frame: pd.DataFrame
    features: list[str]
    categorical: list[str]
    cutoffs: list[dt.date]
    valid: dt.date | None = None
    test: dt.date | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    """How the cutoffs were chosen (rule, caps, dropped cutoffs), for metadata and the report."""

    def __post_init__(self) -> None:
        self.cutoffs = sorted(self.cutoffs)
        if len(self.cutoffs) < 3:
            raise ValueError("a time split needs at least 3 cutoffs")
        self.valid = self.valid or self.cutoffs[-2]
        self.test = self.test or self.cutoffs[-1]

    @property
    def train_cutoffs(self) -> list[dt.date]:
        return [c for c in self.cutoffs if c < self.valid_cutoff]

    @property
    def valid_cutoff(self) -> dt.date:
        assert self.valid is not None
        return self.valid

    @property
    def test_cutoff(self) -> dt.date:
        assert self.test is not None
        return self.test

    def split(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(train, validation, test) rows by cutoff."""
        return time_split(self.frame, self.cutoffs, self.valid_cutoff, self.test_cutoff)

    def data_hash(self) -> str:
        """Content hash of the labelled rows, stored in metadata to tie a model to its data."""
        h = pd.util.hash_pandas_object(self.frame[[ENTITY_KEY, "cutoff", LABEL, *self.features]], index=False)
        return hashlib.sha256(h.to_numpy().tobytes()).hexdigest()[:16]


def time_split(
    frame: pd.DataFrame, cutoffs: list[dt.date], valid: dt.date | None = None, test: dt.date | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split rows by cutoff: train on cutoffs before validation, validate on one, test on one.

    Without explicit ``valid``/``test`` they are the second-to-last and last cutoffs.
    """
    ordered = sorted(cutoffs)
    if len(ordered) < 3:
        raise ValueError("a time split needs at least 3 cutoffs")
    valid = valid or ordered[-2]
    test = test or ordered[-1]
    if not valid < test:
        raise ValueError(f"validation cutoff {valid} must precede test cutoff {test}")
    train = frame[frame["cutoff"].isin([c for c in ordered if c < valid])]
    valid_rows = frame[frame["cutoff"] == valid]
    test_rows = frame[frame["cutoff"] == test]
    return train.reset_index(drop=True), valid_rows.reset_index(drop=True), test_rows.reset_index(drop=True)


def entity_frame(labels: pd.DataFrame) -> pd.DataFrame:
    """Feast entity rows: ``user_id`` + ``event_timestamp`` = cutoff midnight, datetime64[us, UTC].

    Nanosecond timestamps break Feast's point-in-time join, hence the explicit ``us`` cast.
    """
    ts = pd.to_datetime(labels["cutoff"].astype(str), utc=True).astype("datetime64[us, UTC]")
    out = pd.DataFrame({ENTITY_KEY: labels[ENTITY_KEY].astype(str).to_numpy(), TIMESTAMP_FIELD: ts.to_numpy()})
    out[TIMESTAMP_FIELD] = out[TIMESTAMP_FIELD].astype("datetime64[us, UTC]")
    out["cutoff"] = labels["cutoff"].to_numpy()
    out[LABEL] = labels[LABEL].to_numpy()
    return out


@dataclass(frozen=True)
class ServiceColumns:
    """What a feature service serves: its views and features (in service order)."""

    views: list[str]
    features: list[str]
    categorical: list[str]


def service_columns(service: Any) -> ServiceColumns:
    """Views, features and categoricals of a Feast ``FeatureService`` (string features = categorical)."""
    views: list[str] = []
    features: list[str] = []
    categorical: list[str] = []
    for projection in service.feature_view_projections:
        views.append(projection.name)
        for f in projection.features:
            features.append(f.name)
            if f.name in CATEGORICAL_FEATURES or getattr(f.dtype, "name", "") == "STRING":
                categorical.append(f.name)
    return ServiceColumns(views=views, features=features, categorical=categorical)


def open_feature_service(settings: Settings, store=None) -> tuple[Any, Any]:  # noqa: ANN001
    """(store, feature service); a clear error when the service is not registered."""
    from feature_repo.store import get_store

    store = store or get_store(settings)
    try:
        service = store.get_feature_service(settings.feature_service)
    except Exception as exc:  # feast raises FeatureServiceNotFoundException (or a registry error)
        raise RuntimeError(
            f"feature service {settings.feature_service!r} not registered: run `churn features apply` ({exc})"
        ) from exc
    return store, service


def historical_features(settings: Settings, entity_df: pd.DataFrame, store=None) -> pd.DataFrame:  # noqa: ANN001
    """Point-in-time features of the feature service for ``entity_df`` (extra columns pass through)."""
    from feature_repo.store import historical_features as point_in_time

    store, _ = open_feature_service(settings, store)
    return point_in_time(settings, entity_df, store=store)


def budgeted_labels(settings: Settings, plan: CutoffPlan) -> tuple[pd.DataFrame, CutoffPlan]:
    """Labels of validation, test and the training cutoffs the row budget keeps.

    Training cutoffs are labelled newest first and labelling stops once the budget is exceeded,
    so a long history costs no more than the budget; see :func:`training.labels.apply_row_budget`.
    """
    budget = int(settings.max_training_rows)
    frames = [build_labels(settings, [plan.valid, plan.test])]
    rows: dict[dt.date, int] = {}
    train_frames: dict[dt.date, pd.DataFrame] = {}
    for c in sorted(plan.train, reverse=True):
        train_frames[c] = build_labels(settings, [c])
        rows[c] = len(train_frames[c])
        if budget > 0 and sum(rows.values()) > budget:
            break
    plan = apply_row_budget(plan, rows, budget)
    for c in plan.train:
        df = train_frames[c]
        if plan.sampled_rows is not None and len(df) > plan.sampled_rows:
            df = df.sample(n=plan.sampled_rows, random_state=settings.seed).sort_values(ENTITY_KEY)
        frames.append(df)
    return pd.concat(frames, ignore_index=True), plan


def build_training_set(settings: Settings, store=None) -> TrainingSet:  # noqa: ANN001
    """Labels for every cutoff + features as of each cutoff, one row per (user, cutoff)."""
    store, service = open_feature_service(settings, store)
    columns = service_columns(service)
    plan = choose_cutoffs(settings, columns.views)
    labels, plan = budgeted_labels(settings, plan)
    feats = historical_features(settings, entity_frame(labels), store)
    missing = [f for f in columns.features if f not in feats.columns]
    if missing:
        raise RuntimeError(f"feature service {settings.feature_service!r} lacks columns: {', '.join(missing)}")
    frame = normalise(feats, columns.features, columns.categorical)
    frame = frame.sort_values(["cutoff", ENTITY_KEY], kind="stable").reset_index(drop=True)
    selection = {
        "rule": "test = newest fully observed usable date; validation = newest usable <= test - horizon; "
        "train = every cutoff_step_days back from the newest usable <= validation - horizon",
        "cutoff_step_days": int(settings.cutoff_step_days),
        "min_history_days": int(settings.min_history_days),
        "max_training_rows": int(settings.max_training_rows),
        "n_cutoffs_cap": int(settings.n_cutoffs),
        "dropped_train_cutoffs": [str(c) for c in plan.dropped],
        "sampled_train_rows": plan.sampled_rows,
        "feature_views": columns.views,
    }
    return TrainingSet(
        frame=frame,
        features=columns.features,
        categorical=columns.categorical,
        cutoffs=plan.all,
        valid=plan.valid,
        test=plan.test,
        selection=selection,
    )


def normalise(
    df: pd.DataFrame, features: list[str], categorical: list[str] | tuple[str, ...] = CATEGORICAL_FEATURES
) -> pd.DataFrame:
    """Numeric features as float64, categoricals as object (None = missing), label as int8."""
    out = df.copy()
    cats = set(categorical)
    for f in features:
        if f in cats:
            col = out[f].astype(object)
            out[f] = col.where(col.notna(), None)
        else:
            out[f] = pd.to_numeric(out[f], errors="coerce").astype("float64")
    if LABEL in out:
        out[LABEL] = out[LABEL].astype("int8")
    return out
