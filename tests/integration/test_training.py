"""Training end to end on the small synthetic site: Feast point-in-time features, no leaks,
a registered version that loads and serves, and `churn train` errors on too little data."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.settings import Settings
from tests.conftest import make_settings

T = dt.date(2026, 10, 2)  # the small store's last fully labelled cutoff
EXTREME = 10**9


@pytest.fixture(scope="module")
def store_copy(small_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A writable copy of the small site with the Feast objects applied (historical retrieval only
    needs the registry, not materialisation)."""
    from churn.feature_store import apply

    root = tmp_path_factory.mktemp("training") / "data"
    shutil.copytree(small_store.data_dir, root)
    settings = make_settings(root, reference_sample_rows=300)
    apply(settings)
    return settings


@pytest.fixture(scope="module")
def leaky_store(store_copy: Settings) -> tuple[Settings, str, float]:
    """Plant an extreme value in the feature row dated the day AFTER cutoff T for one user."""
    part = store_copy.features_dir / "engagement" / f"date={T + dt.timedelta(days=1)}" / "part-0.parquet"
    before = pd.read_parquet(store_copy.features_dir / "engagement" / f"date={T}")
    df = pd.read_parquet(part)
    user = sorted(set(df["user_id"]) & set(before["user_id"]))[0]
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
    later = entity_frame(
        pd.DataFrame({"user_id": [user], "cutoff": [T + dt.timedelta(days=1)], "churned": [0]})
    )
    assert historical_features(settings, later)["logins_7d"].iloc[0] == EXTREME
    # Split ordering on the real set: every train cutoff precedes validation, which precedes test.
    train, valid, test = ts.split()
    assert train["cutoff"].max() < valid["cutoff"].min() and valid["cutoff"].max() < test["cutoff"].min()
    assert set(test["cutoff"]) == {T}
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
    m = result.test_metrics["lightgbm"]
    assert 0.5 < m["roc_auc"] <= 1 and m["brier_uncalibrated"] is not None
    model = reg.load_production()
    test = pd.read_parquet(result.info.path / "test.parquet")
    p = model.predict_proba_frame(test)
    assert np.all((p >= 0) & (p <= 1))
    ref = pd.read_parquet(result.info.path / "reference.parquet")
    assert len(ref) == 300 and "churn_probability" in ref


def test_train_command_fails_cleanly_without_enough_data(small_store: Settings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    env = {
        "CHURN_DATA_DIR": str(small_store.data_dir),
        "CHURN_CUTOFF_STEP_DAYS": "60",
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
