"""Test data dirs: synthetic stores, copies of them, served sites (trained + promoted model), registry edits.

Nothing here starts a server or a subprocess (unit tests may use it).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from churn.layout import partition_files
from churn.schema import feature_table_schema
from churn.settings import Settings
from churn.storage import read_table
from tests.support.settings import make_settings

# The session's small store (fixture ``small_store``): 400 users × 120 days ending 2026-11-01.
SMALL_END = dt.date(2026, 11, 1)
SMALL_USERS = 400
SMALL_DAYS = 120

# The feature-store tests' data (fixture ``feature_data``): raw data + daily feature tables.
FEATURE_USERS = 300
FEATURE_DAYS = 75
FEATURE_SEED = 11
FEATURE_END = dt.date(2024, 3, 1)

# The session's served site shared by test_faults.py and test_hostile_input.py (fixture ``shared_site``).
SHARED_SITE_ADMIN_TOKEN = "faults-admin-token"
SHARED_SITE_MAX_BATCH = 50


def build_small_store(data_dir: Path) -> Settings:
    """Generate + validate the small synthetic store into ``data_dir`` and build its feature tables."""
    from jobs.aggregate import build_features
    from jobs.ingest import generate_store

    settings = make_settings(data_dir)
    generate_store(settings, users=SMALL_USERS, days=SMALL_DAYS, seed=7, end_date=SMALL_END)
    build_features(settings)
    return settings


def build_feature_data(data_dir: Path) -> dt.date:
    """Raw data + daily feature tables (``jobs.generate`` + ``jobs.aggregate``); the newest feature date."""
    from jobs.aggregate import build_features, partition_dates
    from jobs.generate import generate

    settings = make_settings(data_dir)
    generate(settings.raw_dir, users=FEATURE_USERS, days=FEATURE_DAYS, seed=FEATURE_SEED, end_date=FEATURE_END)
    build_features(settings)
    dates = partition_dates(settings.features_dir / "engagement")
    assert dates, "aggregation produced no feature partitions"
    return dates[-1]


def clone_data_dir(src: Path, dst: Path) -> Path:
    """A data dir sharing the feature tables of ``src`` (symlinked) but with its own Feast files."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "features").symlink_to(src / "features", target_is_directory=True)
    return dst


def copy_site(src: Settings | Path, dst: Path, *, symlinks: bool = False, **fields: Any) -> Settings:
    """A writable copy of a data dir (``shutil.copytree``) and its Settings (``make_settings`` fields)."""
    shutil.copytree(src.data_dir if isinstance(src, Settings) else src, dst, symlinks=symlinks)
    return make_settings(dst, **fields)


@dataclass
class StoreEnv:
    """A data dir with the Feast objects applied and materialized through ``end``."""

    settings: Settings
    store: object
    end: dt.date


def build_store_env(settings: Settings, end: dt.date) -> StoreEnv:
    """Apply the Feast objects and materialize the online store of ``settings`` through ``end``."""
    from feature_repo import store as cfs
    from jobs.materialize import materialize

    store = cfs.get_store(settings)
    cfs.apply(settings, store)
    materialize(settings, end, store=store)
    return StoreEnv(settings, store, end)


class ServedSite(NamedTuple):
    """A site ready to serve: SQLite online store materialized, a production model promoted."""

    settings: Settings
    version: str  # the production version
    users: list[str]  # users with a row in the newest feature partition (materialized)
    last_date: str  # the newest feature partition (YYYY-MM-DD)

    @property
    def root(self) -> Path:
        return self.settings.data_dir


def build_served_site(small_store: Settings, root: Path, **settings_fields: Any) -> ServedSite:
    """Copy the session's small store to ``root``, apply, materialize, train + promote a quick model.

    A NamedTuple: ``settings, version, users, last_date = build_served_site(...)`` also works.
    """
    from churn.schema import ENTITY_KEY
    from feature_repo import store as cfs
    from jobs.materialize import materialize
    from training.train import run_training

    settings = copy_site(small_store, root, **{"reference_sample_rows": 300, **settings_fields})
    store = cfs.get_store(settings)
    cfs.apply(settings, store)
    materialize(settings, store=store)
    result = run_training(settings, promote=True, max_rounds=30, early_stopping=10)
    assert result.promotion is not None, result.promotion_error
    newest = sorted((root / "features" / "profile").glob("date=*"))[-1]
    users = sorted(pd.read_parquet(newest, columns=[ENTITY_KEY])[ENTITY_KEY])
    return ServedSite(settings, result.version, users, newest.name.split("=")[1])


def clone_version(
    settings: Settings,
    version: str,
    suffix: str,
    *,
    edit: Callable[[dict[str, Any]], Any] | None = None,
    corrupt: bool = False,
) -> str:
    """Copy a registered version folder under a new name (``version`` with its last 6 characters replaced
    by ``suffix``), optionally editing its metadata or corrupting its model file; the new name."""
    name = version[:-6] + suffix
    dst = settings.models_dir / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(settings.models_dir / version, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["version"] = name
    if edit:
        edit(meta)
    (dst / "metadata.json").write_text(json.dumps(meta))
    if corrupt:
        model_file = meta["models"][meta["kind"]]["model_file"]
        (dst / model_file).write_bytes(b"not a model")
    return name


def set_pointer(settings: Settings, version: str) -> None:
    """Point the registry's production pointer at ``version`` (atomically, as the registry does)."""
    from churn.io import write_text_atomic

    write_text_atomic(settings.registry_root / "production", version + "\n")


def synthetic_scores(settings: Settings, day: dt.date, users: int, seed: int = 0) -> Path:
    """Write a day's batch scores as ``jobs/score.py`` would (the columns the intervention plan
    reads), without a model: seeded probabilities, tiered and mapped to actions by the settings."""
    import numpy as np
    import pyarrow as pa

    from churn.io import write_parquet_atomic
    from churn.layout import PREDICTIONS_PARQUET
    from churn.policies import TIERS, RiskPolicy

    rng = np.random.default_rng(seed)
    proba = np.round(rng.beta(2, 3, users), 6)
    risk = RiskPolicy.from_settings(settings)
    idx = risk.tier_index(proba)
    table = pa.table(
        {
            "user_id": [f"u{i:06d}" for i in range(users)],
            "churn_probability": proba,
            "risk_tier": pa.array(np.array(TIERS, dtype=object)[idx], pa.string()),
            "recommended_action": pa.array(risk.action_array(idx), pa.string()),
        }
    )
    path = settings.layout.predictions(day) / PREDICTIONS_PARQUET
    write_parquet_atomic(path, table)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root``: relative path → bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tmp_leftovers(root: Path) -> list[Path]:
    """Temporary files (``.tmp-*``) an interrupted atomic write left under ``root``."""
    return sorted(root.rglob(".tmp-*"))


class ScoredSite(NamedTuple):
    """A served site with what the operator console shows: batch scores of ``days``, drift reports of
    the same days (``drift/latest.json`` naming the newest), a daily run's step state."""

    settings: Settings
    version: str  # the production version
    users: list[str]  # users with a row in the newest feature partition (materialized)
    days: list[dt.date]  # scored days, oldest first

    @property
    def root(self) -> Path:
        return self.settings.data_dir


def synthetic_drift_report(settings: Settings, day: dt.date, psi: dict[str, float], prediction_psi: float) -> Path:
    """``drift/date=D/report.{json,html}`` in the drift job's format (features' PSI, verdict) without the
    drift environment; ``latest.json`` names ``day`` when it is the newest. The report's directory."""
    from churn.io import write_json_atomic, write_text_atomic

    alert = float(settings.psi_alert)
    drifted = sorted(n for n, v in psi.items() if v >= alert)
    report = {
        "date": day.isoformat(),
        "generated_at": f"{day.isoformat()}T06:00:00+00:00",
        "model_version": "synthetic",
        "features": {
            n: {"type": "numeric", "psi": v, "psi_level": "alert" if v >= alert else "ok", "drifted": v >= alert}
            for n, v in psi.items()
        },
        "prediction": {"column": "churn_probability", "psi": prediction_psi, "psi_level": "ok"},
        "verdict": {
            "drift_detected": bool(drifted),
            "drifted_features": drifted,
            "psi_alert_features": drifted,
            "reason": f"PSI >= {alert}: {', '.join(drifted)}" if drifted else "no feature drifted",
        },
    }
    folder = settings.layout.drift(day)
    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.html", f"<!doctype html><title>drift {day}</title><h1>Drift report {day}</h1>\n")
    latest = settings.layout.drift_latest
    newest = json.loads(latest.read_text())["date"] if latest.exists() else ""
    if day.isoformat() >= newest:
        v = report["verdict"]
        write_json_atomic(
            latest,
            {
                "date": day.isoformat(),
                "drift_detected": v["drift_detected"],
                "drifted_features": v["drifted_features"],
                "psi_alert_features": v["psi_alert_features"],
                "prediction_psi": prediction_psi,
                "model_version": "synthetic",
                "reason": v["reason"],
                "report": str(folder / "report.json"),
                "generated_at": report["generated_at"],
            },
        )
    return folder


def build_scored_site(served: ServedSite, root: Path, days: int = 3, **settings_fields: Any) -> ScoredSite:
    """A writable copy of ``served`` (``copy_site``, Settings fields as keyword arguments) scored by the
    real batch job on its newest ``days`` feature dates, with drift reports and a recorded daily run."""
    from jobs.daily_metrics import DailyMetrics
    from jobs.score import score

    settings = copy_site(served.root, root, symlinks=True, **settings_fields)
    last = dt.date.fromisoformat(served.last_date)
    scored = [last - dt.timedelta(days=i) for i in reversed(range(days))]
    for i, day in enumerate(scored):
        score(settings, day)
        synthetic_drift_report(
            settings, day, {"days_since_last_activity": 0.05 + 0.1 * i, "logins_30d": 0.02, "tenure_days": 0.3}, 0.01
        )
    metrics = DailyMetrics(settings)
    metrics.begin_run(last)
    for step, seconds in (("build", 1.5), ("materialize", 0.8), ("score", 2.25)):
        metrics.record_step(step, seconds, ok=True)
    metrics.record_step("drift", 0.4, ok=False, detail="drift environment missing")
    metrics.publish()
    return ScoredSite(settings, served.version, served.users, scored)


def view_rows(settings: Settings, view: str, days: list[dt.date]) -> pd.DataFrame:
    """A feature view's rows on ``days`` (local or in a bucket), each file checked against the view's
    schema, without the write time, in a stable order: what two engines' builds are compared on.
    Spark marks some columns NOT NULL; readers treat them as the nullable ones, so types only."""
    schema = feature_table_schema(view)
    frames = []
    for file in partition_files(settings.layout.feature_view_dir(view), days):
        table = read_table(file)
        assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in schema], view
        frames.append(table.to_pandas())
    assert frames, (view, days)
    rows = pd.concat(frames, ignore_index=True).drop(columns=["created"])
    return rows.sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
