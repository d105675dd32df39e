"""Training end to end on the small synthetic site: Feast point-in-time features, no leaks, the
cutoff rule on real data, a registered version that loads and serves with its yardsticks, and
`churn train` errors on too little data."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.settings import Settings
from tests.support.sites import copy_site

T = dt.date(2026, 10, 2)  # the small store's last fully labelled cutoff
HORIZON = dt.timedelta(days=30)
EXTREME = 10**9


@pytest.fixture(scope="module")
def store_copy(small_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A writable copy of the small site with the Feast objects applied (historical retrieval only
    needs the registry, not materialisation)."""
    from feature_repo.store import apply

    settings = copy_site(
        small_store, tmp_path_factory.mktemp("training") / "data", reference_sample_rows=300, min_history_days=7
    )
    apply(settings)
    return settings


@pytest.fixture(scope="module")
def leaky_store(store_copy: Settings) -> tuple[Settings, str, float]:
    """Plant an extreme value in the feature row dated the day AFTER cutoff T for one user."""
    part = store_copy.features_dir / "engagement" / f"date={T + dt.timedelta(days=1)}" / "part-0.parquet"
    before = pd.read_parquet(store_copy.features_dir / "engagement" / f"date={T}")
    df = pd.read_parquet(part)
    recency = pd.read_parquet(store_copy.features_dir / "recency" / f"date={T}")
    eligible = set(recency.loc[recency["days_since_last_activity"] <= store_copy.active_days, "user_id"])
    user = sorted(set(df["user_id"]) & set(before["user_id"]) & eligible)[0]  # a training row at T
    df.loc[df["user_id"] == user, "logins_7d"] = EXTREME
    df.to_parquet(part, index=False)
    true_value = float(before.loc[before["user_id"] == user, "logins_7d"].iloc[0])
    return store_copy, user, true_value


def test_training_rows_do_not_see_future_feature_rows(leaky_store) -> None:  # noqa: ANN001
    from training.dataset import build_training_set, entity_frame, historical_features

    settings, user, true_value = leaky_store
    ts = build_training_set(settings)
    row = ts.frame[(ts.frame["user_id"] == user) & (ts.frame["cutoff"] == T)]
    assert len(row) == 1
    assert row["logins_7d"].iloc[0] == true_value != EXTREME
    assert (ts.frame["logins_7d"] < EXTREME).all()
    # Positive control: the planted row IS visible to an entity timestamped at T + 1 day.
    later = entity_frame(pd.DataFrame({"user_id": [user], "cutoff": [T + dt.timedelta(days=1)], "churned": [0]}))
    assert historical_features(settings, later)["logins_7d"].iloc[0] == EXTREME
    # Split ordering on the real set: no training label window reaches validation, none of
    # validation's reaches test; training covers the history weekly.
    train, valid, test = ts.split()
    assert set(test["cutoff"]) == {T} and set(valid["cutoff"]) == {T - HORIZON}
    assert all(c + HORIZON <= ts.valid_cutoff for c in train["cutoff"].unique())
    assert set(train["cutoff"]) == set(ts.train_cutoffs) and len(ts.train_cutoffs) == 4
    assert {(b - a).days for a, b in zip(ts.train_cutoffs, ts.train_cutoffs[1:], strict=False)} == {7}
    # The features are the feature service's, in its order (not a hard-coded list).
    from training.dataset import open_feature_service, service_columns

    _, service = open_feature_service(settings)
    assert ts.features == service_columns(service).features and "plan" in ts.categorical
    assert ts.frame["event_timestamp"].dtype == "datetime64[us, UTC]"


def test_train_registers_and_promotes_a_servable_version(leaky_store) -> None:  # noqa: ANN001
    from training.registry import ModelRegistry
    from training.train import run_training

    settings, _, _ = leaky_store
    result = run_training(settings, promote=True, max_rounds=40, early_stopping=10)
    reg = ModelRegistry(settings)
    assert result.promotion is not None and reg.production_version() == result.version
    meta = result.info.metadata
    assert meta["training_window"]["test_cutoff"] == str(T)
    assert meta["training_window"]["labels_observed_until"] == "2026-11-01"
    for name in ("roc.png", "pr.png", "calibration.png", "importance.png", "report.md", "reference.parquet"):
        assert (result.info.path / name).is_file()
    report = result.report_path.read_text()
    assert "Accuracy target" in report and ("beats" in report or "does NOT beat" in report)
    metrics = json.loads((result.info.path / "metrics.json").read_text())
    recency = metrics["yardsticks"]["recency"]
    assert recency["available"] and recency["rows"] == metrics["splits"]["test"]["rows"]
    has_oracle = (settings.raw_dir / "oracle" / f"date={T}").is_dir()
    assert ("oracle" in metrics["yardsticks"]) == has_oracle
    assert {"served", "baseline", "lightgbm", "recency-only"} <= set(metrics["test_ranking"])
    assert "recency-only" in report and ("beats recency-only" in report or "does NOT beat recency-only" in report)
    assert ("Gap to the oracle" in report) == has_oracle
    assert metrics["lightgbm"]["search"]["chosen"] in report
    assert meta["training_window"]["valid_cutoff"] == str(T - HORIZON)
    m = result.test_metrics["lightgbm"]
    assert 0.5 < m["roc_auc"] <= 1 and m["brier_uncalibrated"] is not None
    model = reg.load_production()
    test = pd.read_parquet(result.info.path / "test.parquet")
    p = model.predict_proba_frame(test)
    assert np.all((p >= 0) & (p <= 1))
    ref = pd.read_parquet(result.info.path / "reference.parquet")
    assert len(ref) == min(300, len(test)) and "churn_probability" in ref
    # drawn from the newest (test) population, not the whole training history
    assert ref["tenure_days"].min() >= test["tenure_days"].min()


def test_train_command_fails_cleanly_without_enough_data(store_copy: Settings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    env = {
        "CHURN_DATA_DIR": str(store_copy.data_dir),
        "CHURN_MIN_HISTORY_DAYS": "60",
        "CHURN_REGISTRY_DIR": str(tmp_path),
    }
    from churn.settings import get_settings

    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["train"], env=env)
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 1, res.output
    assert "not enough history" in res.output
    assert not (tmp_path / "models").exists()
