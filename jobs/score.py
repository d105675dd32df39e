"""Batch scoring: every active user of a day, scored by the production model (``churn score``).

Inputs are the offline feature partitions ``features/<view>/date=D/*.parquet`` of the views that
hold the model's features: partition D *is* the latest row per user as of D (see
``churn.schema``), so no point-in-time join is needed and DuckDB reads the day straight from
Parquet, joining the views on ``user_id`` and selecting columns by name.

Outputs (one atomic directory swap, so a failed run leaves the previous outputs untouched):
``predictions/date=D/{predictions.csv, predictions.parquet, scored_features.parquet}`` and the
Prometheus textfile ``predictions/metrics.prom``. Everything on the hot path is vectorized
(one LightGBM call for probabilities, one path-attribution pass for the top factors,
``argpartition`` to pick them, pyarrow to write the CSV) so 1M users take seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churn.errors import ChurnError, JobError
from churn.io import atomic_dir, write_text_atomic
from churn.layout import PREDICTIONS_CSV, PREDICTIONS_PARQUET, SCORED_FEATURES
from churn.policies import TIERS, RiskPolicy
from churn.schema import ENTITY_KEY, FEATURE_VIEWS
from churn.settings import Settings
from churn.storage import duckdb_connect

if TYPE_CHECKING:
    import pandas as pd

    from training.model import ChurnModel

PREDICTION_COLUMN = "churn_probability"
ACTIVITY_COLUMN = "days_since_last_activity"
TOP_K = 3
BATCH_THREADS = 2


class ScoreError(JobError):
    """Scoring cannot run (missing/corrupt inputs, no production model): one line, exit 1."""


@dataclass(frozen=True)
class ScoreResult:
    date: dt.date
    users: int
    model_version: str
    out_dir: Path
    tiers: dict[str, int]
    seconds: float

    def summary(self) -> str:
        tiers = ", ".join(f"{k} {v:,}" for k, v in self.tiers.items())
        return f"scored {self.users:,} active users for {self.date} with {self.model_version} ({tiers})"


# --- locations ---------------------------------------------------------------------------------


def output_dir(settings: Settings, date: dt.date) -> Path:
    return settings.layout.predictions(date)


def view_of(feature: str) -> str:
    """The feature view holding ``feature`` (the feature service is generated from FEATURE_VIEWS)."""
    for view, columns in FEATURE_VIEWS.items():
        if feature in columns:
            return view
    raise ScoreError(f"model feature {feature!r} is in no feature view of churn.schema.FEATURE_VIEWS")


def views_needed(features: list[str]) -> dict[str, list[str]]:
    """View → the model features it provides, plus the recency view for the activity filter."""
    out: dict[str, list[str]] = {}
    for f in features:
        out.setdefault(view_of(f), []).append(f)
    out.setdefault(view_of(ACTIVITY_COLUMN), [])
    return out


def partition_files(settings: Settings, view: str, date: dt.date) -> list[Path]:
    """The Parquet files of one view's partition for ``date``; a missing day is an error, not 0 users."""
    part = settings.layout.feature_partition(view, date)
    files = sorted(part.glob("*.parquet")) if part.is_dir() else []
    if not files:
        raise ScoreError(
            f"no feature partition for {date} in view {view!r} ({part}): "
            f"run `churn features build --end-date {date}`"
        )
    return files


# --- reading -----------------------------------------------------------------------------------


def read_active_features(settings: Settings, date: dt.date, features: list[str]) -> pa.Table:
    """``user_id`` + ``features`` (by name) of users active within ``active_days`` before ``date``.

    One DuckDB query: each view's partition D is read once, views are LEFT JOINed on ``user_id``
    to the recency view (so a user is never silently dropped), ordered by ``user_id`` so a rerun
    produces identical files.
    """
    import duckdb

    by_view = views_needed(features)
    base = view_of(ACTIVITY_COLUMN)
    files = {view: partition_files(settings, view, date) for view in by_view}
    alias = {view: f"v{i}" for i, view in enumerate(by_view)}

    def source(view: str) -> str:
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files[view])
        return f"read_parquet([{listed}], hive_partitioning=false) AS {alias[view]}"

    select = ", ".join(f'{alias[view_of(f)]}."{f}"' for f in features)
    joins = " ".join(
        f"LEFT JOIN {source(v)} ON {alias[v]}.{ENTITY_KEY} = {alias[base]}.{ENTITY_KEY}"
        for v in by_view
        if v != base
    )
    sql = (
        f"SELECT {alias[base]}.{ENTITY_KEY}, {select} FROM {source(base)} {joins} "
        f"WHERE {alias[base]}.{ACTIVITY_COLUMN} <= {float(settings.active_days)!r} "
        f"ORDER BY {alias[base]}.{ENTITY_KEY}"
    )
    con = duckdb_connect(settings.data_dir, config=settings.duckdb_config)
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET threads = {BATCH_THREADS}")
        table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise ScoreError(f"cannot read feature partitions for {date}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    if pc.count_distinct(table[ENTITY_KEY]).as_py() != table.num_rows:
        raise ScoreError(f"feature partitions for {date} hold duplicate user_id rows")
    return table


# --- scoring -----------------------------------------------------------------------------------


def encode(model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
    """The model's float matrix for ``frame`` (by feature name), built once and used for both passes."""
    from training.model import category_index, encode_frame

    return encode_frame(frame, list(model.features), category_index(model.categories))


def probabilities(model: ChurnModel, X: np.ndarray) -> np.ndarray:
    """Calibrated churn probabilities of an encoded matrix (what ``predict_proba_frame`` returns)."""
    return np.asarray(model.proba_matrix(X, num_threads=BATCH_THREADS), dtype=np.float64)


def contributions(model: ChurnModel, X: np.ndarray) -> np.ndarray:
    """Per-feature log-odds contributions, shape ``(n, len(model.features))``, whole matrix at once.

    LightGBM: path attribution (``ChurnModel.path_contributions_matrix``), since exact SHAP would
    take minutes at 1M users; logreg: coefficient × scaled value, as in the API.
    """
    raw = model.path_contributions_matrix(X, num_threads=BATCH_THREADS)
    return np.asarray(raw, dtype=np.float64)[:, : len(model.features)]


def _gather_as_string(table: pa.Table, features: list[str], idx: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Row i gets ``str(table[features[idx[i]]][i])`` (null where not ``valid``), no per-row Python loop.

    Rows are grouped by feature (stable argsort), each group's values are taken and cast to
    string in one call, and the concatenation is put back in row order with one ``take``.
    """
    n = len(idx)
    rows = np.arange(n)
    order = np.argsort(np.where(valid, idx, -1), kind="stable")
    sorted_idx = np.where(valid, idx, -1)[order]
    bounds = np.searchsorted(sorted_idx, np.arange(-1, len(features) + 1))
    pieces: list[pa.Array] = [pa.nulls(int(bounds[1] - bounds[0]), pa.string())]
    for j, name in enumerate(features):
        lo, hi = int(bounds[j + 1]), int(bounds[j + 2])
        if hi == lo:
            continue
        col = table[name].take(pa.array(rows[order[lo:hi]]))
        if pa.types.is_floating(col.type):
            col = pc.round(col, 4)
        pieces.append(pc.cast(col, pa.string()).combine_chunks())
    gathered = pa.concat_arrays(pieces)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = rows
    return gathered.take(pa.array(inverse))


def factor_columns(
    table: pa.Table, features: list[str], contrib: np.ndarray, k: int = TOP_K
) -> dict[str, pa.Array]:
    """``factor_i``, ``factor_i_value``, ``factor_i_contribution`` for the k features pushing risk UP most.

    Only positive contributions are factors (a feature lowering risk is not a reason to act), so a
    slot may be empty (null).
    """
    from training.model import top_factor_indices

    idx, vals = top_factor_indices(contrib, k)
    names = np.array(features, dtype=object)
    out: dict[str, pa.Array] = {}
    for slot in range(idx.shape[1]):
        valid = vals[:, slot] > 0
        out[f"factor_{slot + 1}"] = pa.array(names[idx[:, slot]], pa.string(), mask=~valid)
        out[f"factor_{slot + 1}_value"] = _gather_as_string(table, features, idx[:, slot], valid)
        out[f"factor_{slot + 1}_contribution"] = pa.array(
            np.round(vals[:, slot], 6), pa.float64(), mask=~valid
        )
    return out


def build_outputs(
    settings: Settings, model: ChurnModel, features: pa.Table, scored_at: dt.datetime
) -> tuple[pa.Table, pa.Table]:
    """(predictions, scored_features) for the rows of ``features``."""
    names = list(model.features)
    frame = features.select(names).to_pandas()
    X = encode(model, frame)
    if model.kind == "lightgbm" and len(X):  # one walk of the trees gives both
        margin, contrib = model.path_scores(X, num_threads=BATCH_THREADS)
        proba = np.asarray(model.proba_from_margin(margin), dtype=np.float64)
    else:
        proba = probabilities(model, X)
        contrib = contributions(model, X) if len(X) else np.empty((0, len(names)))
    n = features.num_rows
    risk = RiskPolicy.from_settings(settings)
    tier_idx = risk.tier_index(proba)
    tiers = np.array(TIERS, dtype=object)[tier_idx]
    actions = risk.action_array(tier_idx)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        ENTITY_KEY: features[ENTITY_KEY],
        PREDICTION_COLUMN: pa.array(np.round(proba, 6)),
        "risk_tier": pa.array(tiers, pa.string()),
        "recommended_action": pa.array(actions, pa.string()),
        "will_churn": pa.array(proba >= model.threshold),
        "model_version": pa.repeat(pa.scalar(model.version), n) if n else pa.array([], pa.string()),
        "scored_at": pa.repeat(pa.scalar(scored_at, pa.timestamp("us", tz="UTC")), n)
        if n
        else pa.array([], pa.timestamp("us", tz="UTC")),
    }
    if n:
        columns.update(factor_columns(features, names, contrib))
    else:
        for slot in range(1, TOP_K + 1):
            columns[f"factor_{slot}"] = pa.array([], pa.string())
            columns[f"factor_{slot}_value"] = pa.array([], pa.string())
            columns[f"factor_{slot}_contribution"] = pa.array([], pa.float64())
    predictions = pa.table(columns)
    scored = features.select([ENTITY_KEY, *names]).append_column(PREDICTION_COLUMN, pa.array(proba))
    return predictions, scored


# --- writing -----------------------------------------------------------------------------------


def _validate_outputs(expected_rows: int):
    def check(tmp: Path) -> None:
        for name in (PREDICTIONS_PARQUET, SCORED_FEATURES):
            rows = pq.read_metadata(tmp / name).num_rows
            if rows != expected_rows:
                raise ScoreError(f"{name}: wrote {rows} rows, expected {expected_rows}")
        if not (tmp / PREDICTIONS_CSV).stat().st_size:
            raise ScoreError(f"{PREDICTIONS_CSV} is empty")

    return check


def write_outputs(out_dir: Path, predictions: pa.Table, scored: pa.Table) -> None:
    """All three files in a temp directory, checked, then swapped in for ``out_dir`` at once."""
    with atomic_dir(out_dir, validate=_validate_outputs(predictions.num_rows)) as tmp:
        pq.write_table(predictions, tmp / PREDICTIONS_PARQUET, compression="zstd")
        pq.write_table(scored, tmp / SCORED_FEATURES, compression="zstd")
        pacsv.write_csv(
            predictions,
            tmp / PREDICTIONS_CSV,
            write_options=pacsv.WriteOptions(quoting_style="needed", batch_size=65_536),
        )


def metrics_text(users: int, finished: float) -> str:
    """The Prometheus textfile (node-exporter textfile collector format)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    reg = CollectorRegistry()
    Gauge(
        "churn_batch_scoring_last_success_timestamp_seconds",
        "Unix time of the last successful batch scoring run.",
        registry=reg,
    ).set(finished)
    Gauge(
        "churn_batch_scoring_users", "Users scored by the last successful batch scoring run.", registry=reg
    ).set(users)
    return generate_latest(reg).decode()


# --- the job -----------------------------------------------------------------------------------


def load_model(settings: Settings) -> ChurnModel:
    """The production model, checked to be built on the configured feature service."""
    from training.registry import ModelRegistry

    registry = ModelRegistry(settings)
    if registry.production_version() is None:
        raise ScoreError("no production model: run `churn train --promote` (or `churn retrain`)")
    try:
        model = registry.load_production()
    except ChurnError:
        raise
    except Exception as exc:  # ModelLoadError and friends: a corrupt model must not score anything
        raise ScoreError(f"cannot load the production model: {exc}") from None
    check_model(settings, model)
    return model


def check_model(settings: Settings, model: ChurnModel) -> None:
    from training.model import feature_service_mismatch

    if (why := feature_service_mismatch(model, settings.feature_service)) is not None:
        raise ScoreError(f"production {why} (CHURN_FEATURE_SERVICE)")


def score(settings: Settings, date: dt.date, model: ChurnModel | None = None) -> ScoreResult:
    """Score every active user as of ``date``; rerunning a date replaces its outputs atomically."""
    t0 = time.perf_counter()
    model = model or load_model(settings)
    features = read_active_features(settings, date, list(model.features))
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    predictions, scored = build_outputs(settings, model, features, scored_at)
    out = output_dir(settings, date)
    write_outputs(out, predictions, scored)
    write_text_atomic(
        settings.layout.scoring_metrics, metrics_text(predictions.num_rows, time.time())
    )
    tier_values = predictions["risk_tier"].to_numpy(zero_copy_only=False)
    tiers = {t: int((tier_values == t).sum()) for t in reversed(TIERS)}
    return ScoreResult(date, predictions.num_rows, model.version, out, tiers, time.perf_counter() - t0)
