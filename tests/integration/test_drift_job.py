"""The drift job end to end, in the real isolated env (.venv-drift), on a temporary data dir.

The main env only launches it (jobs.drift.launch); alibi-detect is never imported here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.settings import Settings
from jobs.drift.launch import DriftEnvMissing, run_drift
from tests.support.env import REPO, require_drift_env
from tests.support.settings import make_settings

pytestmark = pytest.mark.drift

VERSION = "20240101T000000Z-abc123"
DAY = dt.date(2024, 3, 1)
NUMERIC = ["logins_7d", "minutes_30d", "days_since_last_payment", "failed_payment_ratio_30d", "tenure_days"]
CATEGORICAL = ["plan", "country", "acquisition_channel", "device"]
FEATURES = [*NUMERIC, *CATEGORICAL]
SHIFTED = "minutes_30d"


def make_rows(n: int, seed: int) -> pd.DataFrame:
    """Feature rows like the real ones: counts, skewed floats with NaNs, string categoricals."""
    rng = np.random.default_rng(seed)
    pays = rng.random(n) < 0.7
    failed = np.where(pays, rng.beta(1, 8, n), np.nan)
    last_pay = np.where(pays, rng.exponential(12.0, n), np.nan)
    device = rng.choice(["web", "ios", "android"], n, p=[0.5, 0.25, 0.25]).astype(object)
    device[rng.random(n) < 0.03] = None
    return pd.DataFrame(
        {
            "user_id": [f"u{seed}-{i}" for i in range(n)],
            "logins_7d": rng.poisson(3.0, n).astype("int64"),
            "minutes_30d": rng.gamma(2.0, 60.0, n),
            "days_since_last_payment": last_pay,
            "failed_payment_ratio_30d": failed,
            "tenure_days": rng.integers(1, 720, n).astype("int64"),
            "plan": rng.choice(["free", "basic", "premium"], n, p=[0.5, 0.3, 0.2]),
            "country": rng.choice(["US", "IN", "DE", "BR", "GB"], n, p=[0.35, 0.25, 0.15, 0.15, 0.10]),
            "acquisition_channel": rng.choice(["organic", "ads", "referral"], n, p=[0.5, 0.3, 0.2]),
            "device": device,
            "churn_probability": rng.beta(2.0, 5.0, n),
        }
    )


def make_registry(settings: Settings, n: int = 5_000, seed: int = 1) -> None:
    vdir = settings.models_dir / VERSION
    vdir.mkdir(parents=True)
    meta = {
        "version": VERSION,
        "features": FEATURES,
        "categorical_features": CATEGORICAL,
        "feature_service": "churn_v1",
    }
    (vdir / "metadata.json").write_text(json.dumps(meta))
    make_rows(n, seed).drop(columns=["user_id"]).to_parquet(vdir / "reference.parquet", index=False)
    (settings.registry_root / "production").write_text(VERSION + "\n")


def write_current(settings: Settings, day: dt.date, df: pd.DataFrame) -> Path:
    path = settings.predictions_dir / f"date={day.isoformat()}" / "scored_features.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def current_unshifted() -> pd.DataFrame:
    return make_rows(5_000, seed=2)


def current_shifted() -> pd.DataFrame:
    df = current_unshifted()
    df[SHIFTED] = df[SHIFTED] * 1.6 + 30.0  # more minutes watched: a clear shift of one feature
    return df


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path)
    require_drift_env(s)
    make_registry(s)
    return s


def read_report(settings: Settings, day: dt.date = DAY) -> dict:
    return json.loads((settings.drift_dir / f"date={day.isoformat()}" / "report.json").read_text())


def test_unshifted_sample_is_not_drift(settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    write_current(settings, DAY, current_unshifted())
    assert run_drift(settings, DAY) == 0
    assert "no drift" in capfd.readouterr().out
    report = read_report(settings)
    assert report["verdict"]["drift_detected"] is False
    assert report["verdict"]["drifted_features"] == []
    assert set(report["features"]) == set(FEATURES)
    assert not any(f["drifted"] for f in report["features"].values())
    assert all(f["psi_level"] == "ok" for f in report["features"].values())
    assert report["prediction"]["psi_level"] == "ok"
    assert report["rows"] == {"reference": 5_000, "current": 5_000}
    assert report["model_version"] == VERSION
    assert report["thresholds"]["correction"] == "bonferroni"
    assert report["thresholds"]["corrected_p_value"] == pytest.approx(0.05 / len(FEATURES))
    # missing values are counted, not dropped silently
    assert report["features"]["days_since_last_payment"]["missing_share"]["reference"] > 0.2
    assert report["features"]["device"]["missing_share"]["current"] > 0.0
    latest = json.loads((settings.drift_dir / "latest.json").read_text())
    assert latest["drift_detected"] is False and latest["date"] == DAY.isoformat()


def test_one_shifted_feature_is_flagged(settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    write_current(settings, DAY, current_shifted())
    assert run_drift(settings, DAY) == 3
    assert "DRIFT DETECTED" in capfd.readouterr().out
    out = settings.drift_dir / f"date={DAY.isoformat()}"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.prom", "report.html", "report.json"]

    report = read_report(settings)
    v = report["verdict"]
    assert v["drift_detected"] is True
    assert v["drifted_features"] == [SHIFTED]
    assert v["psi_alert_features"] == [SHIFTED]
    f = report["features"][SHIFTED]
    assert f["psi"] >= 0.25 and f["psi_level"] == "alert"
    assert f["p_value"] < report["thresholds"]["corrected_p_value"]
    assert f["test"] == "ks" and report["features"]["plan"]["test"] == "chi2"
    assert SHIFTED in v["reason"]

    page = (out / "report.html").read_text()
    assert "DRIFT DETECTED" in page
    assert f"<h3>{SHIFTED}</h3>" in page
    assert page.count("data:image/png;base64,") == 2  # the drifted feature + the prediction

    prom = (out / "metrics.prom").read_text()
    for name in (
        "churn_feature_psi",
        "churn_drift_pvalue",
        "churn_prediction_psi",
        "churn_drift_detected",
        "churn_drift_last_run_timestamp_seconds",
    ):
        assert f"# TYPE {name} gauge" in prom and f"# HELP {name} " in prom
    assert "churn_drift_detected 1.0" in prom
    assert f'churn_feature_psi{{feature="{SHIFTED}"}}' in prom
    assert prom.count("churn_feature_psi{") == len(FEATURES)

    latest = json.loads((settings.drift_dir / "latest.json").read_text())
    assert latest["drift_detected"] is True
    assert latest["drifted_features"] == [SHIFTED]
    assert latest["psi_alert_features"] == [SHIFTED]
    assert latest["model_version"] == VERSION
    assert latest["date"] == DAY.isoformat()
    assert Path(latest["report"]) == out / "report.json"

    # --exit-zero: same verdict, status 0
    assert run_drift(settings, DAY, exit_zero=True) == 0


def test_rerun_same_date_is_idempotent(settings: Settings) -> None:
    write_current(settings, DAY, current_unshifted())
    assert run_drift(settings, DAY) == 0
    write_current(settings, DAY, current_shifted())  # the day was rescored
    assert run_drift(settings, DAY) == 3
    first = read_report(settings)
    assert run_drift(settings, DAY) == 3
    second = read_report(settings)
    first.pop("generated_at"), second.pop("generated_at")
    assert first == second
    # one clean directory per date, no temp leftovers
    assert sorted(p.name for p in settings.drift_dir.iterdir()) == [f"date={DAY.isoformat()}", "latest.json"]
    assert sorted(p.name for p in (settings.drift_dir / f"date={DAY.isoformat()}").iterdir()) == [
        "metrics.prom",
        "report.html",
        "report.json",
    ]


def test_missing_or_corrupt_input_fails_cleanly(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    write_current(settings, DAY, current_shifted())
    assert run_drift(settings, DAY) == 3
    latest = settings.drift_dir / "latest.json"
    report = settings.drift_dir / f"date={DAY.isoformat()}" / "report.json"
    before_latest, before_report = latest.read_bytes(), report.read_bytes()
    capfd.readouterr()

    # no scored features for a later day
    later = DAY + dt.timedelta(days=1)
    assert run_drift(settings, later) == 1
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: scored features not found") and "\n" not in err
    assert not (settings.drift_dir / f"date={later.isoformat()}").exists()

    # a corrupt scored_features file for an already-reported day leaves its report alone
    (write_current(settings, DAY, current_shifted())).write_bytes(b"not parquet")
    assert run_drift(settings, DAY) == 1
    assert "cannot read scored features" in capfd.readouterr().err

    # a missing column and a missing reference are errors too
    write_current(settings, later, current_unshifted().drop(columns=["plan"]))
    assert run_drift(settings, later) == 1
    assert "lacks column(s): plan" in capfd.readouterr().err
    (settings.models_dir / VERSION / "reference.parquet").unlink()
    write_current(settings, later, current_unshifted())
    assert run_drift(settings, later) == 1
    assert "reference sample not found" in capfd.readouterr().err

    assert latest.read_bytes() == before_latest
    assert report.read_bytes() == before_report
    assert not list(settings.drift_dir.rglob(".tmp-*"))


def test_older_date_does_not_replace_latest(settings: Settings) -> None:
    later = DAY + dt.timedelta(days=1)
    write_current(settings, later, current_unshifted())
    write_current(settings, DAY, current_shifted())
    assert run_drift(settings, later) == 0
    assert run_drift(settings, DAY) == 3  # backfill of an older day
    latest = json.loads((settings.drift_dir / "latest.json").read_text())
    assert latest["date"] == later.isoformat() and latest["drift_detected"] is False
    assert read_report(settings, DAY)["verdict"]["drift_detected"] is True


def test_missing_drift_env_is_a_clear_error(tmp_path: Path) -> None:
    s = make_settings(tmp_path, drift_python=tmp_path / "nope" / "python")
    with pytest.raises(DriftEnvMissing, match="make setup-drift"):
        run_drift(s, DAY)


# Our TabularDrift subclass only changes NaN handling: on complete data it must agree with alibi.
SAME_AS_ALIBI = """
import numpy as np
from alibi_detect.cd import TabularDrift
from jobs.drift.detect import _make_detector_class
rng = np.random.default_rng(0)
n = 3000
ref = np.column_stack([rng.normal(size=n), rng.integers(0, 4, n), rng.poisson(2, n)]).astype(float)
cur = np.column_stack([rng.normal(0.1, size=n), rng.integers(0, 5, n), rng.poisson(2.2, n)]).astype(float)
for correction in ("bonferroni", "fdr"):
    kw = dict(p_val=0.05, categories_per_feature={1: None}, correction=correction)
    ours = _make_detector_class()(ref, **kw).predict(cur)["data"]
    theirs = TabularDrift(ref, **kw).predict(cur)["data"]
    assert np.allclose(ours["p_val"], theirs["p_val"], rtol=1e-5), (ours["p_val"], theirs["p_val"])
    assert np.allclose(ours["distance"], theirs["distance"], rtol=1e-5)
    assert ours["is_drift"] == theirs["is_drift"] == 1
    assert np.all(ours["threshold"] == theirs["threshold"])
"""


def test_detector_matches_alibi_on_complete_data(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    require_drift_env(s)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "TRANSFORMERS_VERBOSITY": "error"}
    subprocess.run([str(s.drift_python_path), "-c", SAME_AS_ALIBI], env=env, cwd=REPO, check=True)
