"""The scheduled batch jobs end to end on the small synthetic site: score, monitor, retrain, daily.

One production model is trained per module (few boosting rounds) on a copy of the session's
``small_store``; every test works on its own copy of that data dir, so tests never see each
other's outputs. Jobs are called with explicit Settings, plus a few real ``churn`` subprocesses
(exit codes, one summary line) with ``CHURN_DATA_DIR`` set.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from churn.schema import ENTITY_KEY
from churn.settings import Settings
from tests.support.env import require_drift_env
from tests.support.sites import copy_site, snapshot
from tests.support.tools import run_cli

DAY = dt.date(2026, 10, 1)  # labels mature: events run to 2026-10-31
YESTERDAY = DAY - dt.timedelta(days=1)
LAST_DAY = dt.date(2026, 11, 1)  # newest feature partition (features as of the end of the data)
TRAIN_KW = {"max_rounds": 30, "early_stopping": 10}
FACTORS = [f"factor_{i}{s}" for i in (1, 2, 3) for s in ("", "_value", "_contribution")]
PREDICTION_COLUMNS = [
    "user_id",
    "churn_probability",
    "risk_tier",
    "recommended_action",
    "will_churn",
    "model_version",
    "scored_at",
    *FACTORS,
]


@pytest.fixture(scope="module")
def trained(small_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """small_store + Feast apply + a promoted production model (few rounds)."""
    from feature_repo.store import apply
    from training.train import train

    settings = copy_site(small_store, tmp_path_factory.mktemp("jobs") / "data")
    apply(settings)
    result = train(settings, promote=True, **TRAIN_KW)
    assert result.promotion is not None, result.promotion_error
    return settings


@pytest.fixture
def store(trained: Settings, tmp_path: Path) -> Settings:
    """A private copy of the trained store (Feast re-applied lazily by the tests that need it)."""
    return copy_site(trained, tmp_path / "data")


# --- score ---------------------------------------------------------------------------------------


def test_score_writes_three_files_for_active_users_only(store: Settings) -> None:
    from jobs.score import score

    res = score(store, DAY)
    out = store.predictions_dir / f"date={DAY}"
    assert sorted(p.name for p in out.iterdir()) == [
        "predictions.csv",
        "predictions.parquet",
        "scored_features.parquet",
    ]
    preds = pq.read_table(out / "predictions.parquet")
    assert preds.column_names == PREDICTION_COLUMNS
    assert pacsv.read_csv(out / "predictions.csv").column_names == PREDICTION_COLUMNS

    recency = pq.read_table(store.features_dir / "recency" / f"date={DAY}").to_pandas()
    active = set(recency.loc[recency["days_since_last_activity"] <= store.active_days, ENTITY_KEY])
    assert 0 < len(active) < len(recency)  # the filter really drops idle users
    assert set(preds[ENTITY_KEY].to_pylist()) == active and res.users == len(active)

    df = preds.to_pandas()
    assert df["churn_probability"].between(0, 1).all()
    expected_tier = df["churn_probability"].map(
        lambda p: "high" if p >= store.risk_high else "medium" if p >= store.risk_medium else "low"
    )
    assert (df["risk_tier"] == expected_tier).all()
    assert (df["recommended_action"] == df["risk_tier"].map(store.intervention_map)).all()
    assert df["model_version"].nunique() == 1
    assert (df["factor_1_contribution"].dropna() > 0).all()
    assert (df["factor_1_contribution"].fillna(0) >= df["factor_2_contribution"].fillna(0)).all()

    meta = json.loads((store.models_dir / df["model_version"][0] / "metadata.json").read_text())
    scored = pq.read_table(out / "scored_features.parquet")
    assert scored.column_names == [ENTITY_KEY, *meta["features"], "churn_probability"]
    prom = (store.predictions_dir / "metrics.prom").read_text()
    assert f"churn_batch_scoring_users {float(len(active))}" in prom
    assert "churn_batch_scoring_last_success_timestamp_seconds" in prom


def test_score_rerun_is_idempotent(store: Settings) -> None:
    from jobs.score import score

    out = store.predictions_dir / f"date={DAY}"
    score(store, DAY)
    first = {n: pq.read_table(out / n) for n in ("predictions.parquet", "scored_features.parquet")}
    first_csv = pacsv.read_csv(out / "predictions.csv")
    score(store, DAY)
    for name, table in first.items():
        again = pq.read_table(out / name)
        cols = [c for c in table.column_names if c != "scored_at"]
        assert again.select(cols).equals(table.select(cols)), name
    again_csv = pacsv.read_csv(out / "predictions.csv")
    assert again_csv.drop_columns(["scored_at"]).equals(first_csv.drop_columns(["scored_at"]))
    assert not [p for p in store.predictions_dir.iterdir() if p.name.startswith(".tmp-")]


def test_score_refuses_corrupt_or_missing_partition(store: Settings) -> None:
    from jobs.score import score

    score(store, YESTERDAY)
    score(store, DAY)
    before = snapshot(store.predictions_dir)

    part = next((store.features_dir / "engagement" / f"date={DAY}").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated write
    proc = run_cli(store, "score", "--date", DAY.isoformat())
    assert proc.returncode != 0
    assert "error" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(store.predictions_dir) == before  # byte-identical, metrics.prom included

    from jobs.score import ScoreError

    shutil.rmtree(store.features_dir / "recency" / f"date={DAY}")
    with pytest.raises(ScoreError, match="no feature partition"):
        score(store, DAY)
    assert snapshot(store.predictions_dir) == before


def test_score_cli_prints_one_summary_line(store: Settings) -> None:
    proc = run_cli(store, "score", "--date", DAY.isoformat())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("score:") and "users=" in lines[0]


# --- monitor -------------------------------------------------------------------------------------


def _set_training_auc(settings: Settings, version: str, auc: float) -> None:
    path = settings.models_dir / version / "metrics.json"
    metrics = json.loads(path.read_text())
    kind = json.loads((settings.models_dir / version / "metadata.json").read_text())["kind"]
    metrics["test"][kind]["roc_auc"] = auc
    path.write_text(json.dumps(metrics))


def test_monitor_reports_live_performance_and_flags_a_drop(store: Settings) -> None:
    from jobs.monitor import monitor
    from jobs.score import score

    version = score(store, DAY).model_version
    _set_training_auc(store, version, 0.0)  # live can't be worse than this: no drop
    res = monitor(store, DAY)
    report = json.loads((store.monitor_dir / f"date={DAY}" / "report.json").read_text())
    assert res.matured and 0.6 < report["roc_auc"] <= 1.0  # a real signal on live data
    assert 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    assert report["model_version"] == version and report["performance_drop"] is False
    assert json.loads((store.monitor_dir / "latest.json").read_text())["performance_drop"] is False

    _set_training_auc(store, version, 1.0)  # tampered: training claimed perfection
    monitor(store, DAY)
    latest = json.loads((store.monitor_dir / "latest.json").read_text())
    assert latest["performance_drop"] is True and latest["roc_auc_drop"] > store.performance_drop_margin

    from jobs.retrain import find_triggers

    assert [t.name for t in find_triggers(store)] == ["performance_drop"]


def test_monitor_waits_for_labels(store: Settings) -> None:
    from jobs.score import score

    late = dt.date(2026, 10, 20)
    score(store, late)
    proc = run_cli(store, "monitor", "--date", late.isoformat())
    assert proc.returncode == 0, proc.stderr
    assert "not mature" in proc.stdout
    assert not store.monitor_dir.exists()


# --- retrain -------------------------------------------------------------------------------------


def _log(settings: Settings) -> list[dict]:
    path = settings.registry_root / "retrain.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_retrain_skipped_without_trigger(store: Settings) -> None:
    from jobs.retrain import retrain

    prod = (store.registry_root / "production").read_text()
    res = retrain(store)
    assert not res.ran and "no retrain needed" in res.summary()
    assert (store.registry_root / "production").read_text() == prod
    assert _log(store) == []


def test_retrain_forced(store: Settings) -> None:
    from jobs.retrain import retrain

    res = retrain(store, force=True, **TRAIN_KW)
    assert [t.name for t in res.triggers] == ["forced"] and res.candidate
    (entry,) = _log(store)
    assert entry["candidate"] == res.candidate and entry["outcome"] in {"promoted", "refused"}
    assert entry["outcome"] == ("promoted" if res.promoted else "refused") and entry["reason"]
    prod = (store.registry_root / "production").read_text().strip()
    assert (prod == res.candidate) == res.promoted


def test_retrain_on_stale_model(store: Settings) -> None:
    from jobs.retrain import find_triggers, retrain

    version = (store.registry_root / "production").read_text().strip()
    meta = json.loads((store.models_dir / version / "metadata.json").read_text())
    trained_at = dt.datetime.fromisoformat(meta["trained_at"])
    later = trained_at + dt.timedelta(days=store.max_model_age_days + 1)
    assert [t.name for t in find_triggers(store, now=later)] == ["stale_model"]
    res = retrain(store, now=later, **TRAIN_KW)
    assert res.candidate and _log(store)[0]["triggers"][0]["name"] == "stale_model"


def test_retrain_on_drift_verdict(store: Settings) -> None:
    from jobs.retrain import find_triggers, retrain

    version = (store.registry_root / "production").read_text().strip()
    store.drift_dir.mkdir(parents=True)
    verdict = {"date": str(LAST_DAY), "drift_detected": True, "model_version": version, "reason": "test"}
    (store.drift_dir / "latest.json").write_text(json.dumps(verdict))
    assert [t.name for t in find_triggers(store)] == ["drift"]
    (store.drift_dir / "latest.json").write_text(json.dumps({**verdict, "model_version": "older-model"}))
    assert find_triggers(store) == []  # a verdict about a replaced model no longer counts
    (store.drift_dir / "latest.json").write_text(json.dumps(verdict))
    res = retrain(store, **TRAIN_KW)
    assert res.candidate and _log(store)[0]["triggers"][0]["name"] == "drift"


def test_retrain_cli_without_trigger(store: Settings) -> None:
    proc = run_cli(store, "retrain")
    assert proc.returncode == 0, proc.stderr
    assert "no retrain needed" in proc.stdout


# --- daily ---------------------------------------------------------------------------------------


def test_daily_end_to_end(store: Settings) -> None:
    require_drift_env(store)
    proc = run_cli(store, "daily", "--date", LAST_DAY.isoformat())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = ["ingest", "build", "apply", "materialize", "score", "interventions", "drift", "retrain", "compare",
             "housekeeping"]  # fmt: skip
    for i, name in enumerate(steps, 1):
        assert f"daily {i}/{len(steps)} {name}:" in proc.stdout
    assert "daily 9/10 compare: result=nothing staged: no comparison" in proc.stdout
    assert "daily 1/10 ingest: result=no landing prefix; skipped" in proc.stdout  # a site importing by hand
    assert f"daily metrics: wrote {store.layout.daily_metrics}" in proc.stdout
    assert (store.predictions_dir / f"date={LAST_DAY}" / "predictions.csv").exists()
    assert store.layout.intervention_plan(LAST_DAY).exists()  # the default sink: CRM exports
    exports = {p.name for p in store.layout.exports(LAST_DAY).iterdir()}
    assert exports and exports <= {"discount_offer.csv", "support_outreach.csv"}
    assert json.loads((store.drift_dir / "latest.json").read_text())["date"] == str(LAST_DAY)
    assert proc.stdout.strip().splitlines()[-1].startswith("daily:")


def test_daily_stops_at_first_failing_step(store: Settings) -> None:
    from jobs.daily import DailyError, daily

    # score fails: the pointer names a version the registry does not hold
    (store.registry_root / "production").write_text("20990101T000000Z-abcdef\n")
    with pytest.raises(DailyError, match="step 'score'"):
        daily(store, LAST_DAY)
    assert not (store.drift_dir / "latest.json").exists()


def test_daily_on_a_new_install_skips_scoring_until_a_model_exists(store: Settings) -> None:
    from jobs.daily import daily

    (store.registry_root / "production").unlink()
    out = store.predictions_dir / f"date={LAST_DAY}"
    before = sorted(out.iterdir()) if out.exists() else None
    result = daily(store, LAST_DAY, first="score", last="score")
    assert result.steps == ["score"]
    assert (sorted(out.iterdir()) if out.exists() else None) == before  # nothing scored, nothing failed
