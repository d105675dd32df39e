"""Model rollout: arm assignment, stage gate + audit, crash-safe prediction log, compare report.

Versions are trained for real on the synthetic training set of ``test_registry`` (no Feast).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.compare import compare, compare_staged, save
from service.prediction_log import SCHEMA, LogRecord, PredictionLog, feature_hash
from service.routing import assign_arm
from tests.support.settings import make_settings
from training.stages import RolloutState

ROOT = Path(__file__).resolve().parents[2]


# --- arm assignment ----------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_arm_assignment_is_stable_and_matches_the_share(share: float) -> None:
    users = [f"u{i:07d}" for i in range(10_000)]
    arms = [assign_arm(u, share, "exp-1") for u in users]
    assert arms == [assign_arm(u, share, "exp-1") for u in users]  # same user, same arm
    observed = arms.count("challenger") / len(users)
    assert abs(observed - share) < 0.02, observed  # binomial sd at 10k users ≤ 0.005
    # growing the share only moves users INTO the challenger arm
    wider = [assign_arm(u, min(1.0, share * 1.5), "exp-1") for u in users]
    assert all(w == "challenger" for a, w in zip(arms, wider, strict=True) if a == "challenger")
    # another experiment (salt) reshuffles: overlap ≈ share², not share
    other = [assign_arm(u, share, "exp-2") for u in users]
    both = sum(a == o == "challenger" for a, o in zip(arms, other, strict=True)) / len(users)
    assert both < share * share + 0.02


# --- stages: gate + audit -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    from tests.support.models import synthetic_set
    from training.train import train_from_set

    root = tmp_path_factory.mktemp("rollout-registry")
    settings = make_settings(root, reference_sample_rows=200)
    versions = [
        train_from_set(settings, synthetic_set(seed), max_rounds=20, early_stopping=5, plots=False).version
        for seed in (0, 1, 2)
    ]
    return root, versions


@pytest.fixture
def registry(trained, tmp_path: Path):  # noqa: ANN001, ANN201
    from training.registry import ModelRegistry

    src, versions = trained
    shutil.copytree(src / "registry", tmp_path / "registry")
    reg = ModelRegistry(make_settings(tmp_path))
    reg.promote(versions[0], force=True)
    return reg, versions


def test_stage_shadow_challenger_clear_are_gated_and_audited(registry) -> None:  # noqa: ANN001
    from training.registry import RegistryError

    reg, (prod, v1, v2) = registry
    assert reg.stages() == RolloutState()  # no file: nothing staged
    reg.set_stage(v1, "shadow", reason="try it")
    state = reg.set_stage(v2, "challenger", share=0.1)
    assert state == reg.stages()
    assert (state.shadow, state.challenger, state.share, state.salt) == (v1, v2, 0.1, v2)
    reg.set_stage(v2, "challenger", share=0.3)  # ramp up: same experiment, same salt, same start
    assert reg.stages().share == 0.3 and reg.stages().salt == v2
    assert reg.stages().challenger_since == state.challenger_since
    raw = json.loads(reg.settings.layout.stages_file.read_text())
    assert raw["challenger"]["version"] == v2 and raw["shadow"]["version"] == v1
    assert not list(reg.root.glob(".tmp-*"))  # written to a temp file and renamed

    with pytest.raises(RegistryError, match="production"):
        reg.set_stage(prod, "shadow")
    with pytest.raises(RegistryError, match="share"):
        reg.set_stage(v1, "challenger", share=1.5)
    with pytest.raises(RegistryError, match="share"):
        reg.set_stage(v1, "challenger")
    with pytest.raises(RegistryError, match="no share"):
        reg.set_stage(v1, "shadow", share=0.5)
    with pytest.raises(RegistryError, match="unknown stage"):
        reg.set_stage(v1, "staging")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="unknown"):
        reg.set_stage("20990101T000000Z-abcdef", "shadow")

    reg.clear_stage(v1)
    assert reg.stages().shadow is None and reg.stages().challenger == v2
    with pytest.raises(RegistryError, match="neither"):
        reg.clear_stage(v1)

    actions = [e["action"] for e in reg.audit_entries()]
    assert actions[-4:] == ["stage:shadow", "stage:challenger", "stage:challenger", "stage:clear"]
    assert reg.audit_entries()[-4]["reason"] == "try it" and reg.audit_entries()[-4]["to"] == v1
    cleared = reg.audit_entries()[-1]
    assert json.loads(cleared["from"]) == {"shadow": v1, "challenger": v2}
    assert cleared["metrics"]["cleared"] == ["shadow"] and cleared["metrics"]["stages"]["shadow"] is None


def test_staging_a_version_in_the_other_slot_moves_it(registry) -> None:  # noqa: ANN001
    reg, (_, v1, _) = registry
    reg.set_stage(v1, "shadow")
    state = reg.set_stage(v1, "challenger", share=0.2)
    assert (state.shadow, state.challenger) == (None, v1)
    state = reg.set_stage(v1, "shadow")
    assert (state.shadow, state.challenger, state.share) == (v1, None, 0.0)


def test_a_hand_broken_stage_file_is_a_registry_error(registry) -> None:  # noqa: ANN001
    from training.registry import RegistryError

    reg, _ = registry
    reg.settings.layout.stages_file.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        reg.stages()


def test_stage_refuses_broken_models_and_foreign_feature_services(registry) -> None:  # noqa: ANN001
    from training.registry import PromotionRefused

    reg, (_, v1, v2) = registry
    meta_path = reg.models_dir / v1 / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["feature_service"] = "churn_v0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PromotionRefused, match="feature service"):
        reg.set_stage(v1, "shadow")
    model_file = json.loads((reg.models_dir / v2 / "metadata.json").read_text())
    kind = model_file["kind"]
    (reg.models_dir / v2 / model_file["models"][kind]["model_file"]).write_bytes(b"garbage")
    with pytest.raises(PromotionRefused):
        reg.set_stage(v2, "challenger", share=0.5)
    assert not reg.settings.layout.stages_file.exists()
    assert not [e for e in reg.audit_entries() if e["action"].startswith("stage:")]


# --- prediction log --------------------------------------------------------------------------------------
def _records(n: int, day: dt.date, arm: str = "production", kind: str = "served", seed: int = 0) -> list[LogRecord]:
    rng = np.random.default_rng(seed)
    t0 = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    out = []
    for i in range(n):
        p = float(rng.random())
        feats = {"a": float(i), "b": None, "plan": "free"}
        out.append(LogRecord(t0 + dt.timedelta(seconds=i), f"r{i}", f"u{i:05d}", "v1", arm, kind, p, "low", p > 0.5,
                             feats, ("a", "b", "plan"), "predict"))  # fmt: skip
    return out


def test_prediction_log_flushes_by_size_and_time_into_daily_partitions(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=0.2, max_records=100)
    log.start()
    try:
        for r in _records(250, dt.date(2026, 3, 1)) + _records(10, dt.date(2026, 3, 2)):
            log.append(r)
        deadline = time.monotonic() + 5
        while log.written < 260 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        log.close()
    assert log.written == 260 and log.dropped == 0
    files = sorted(tmp_path.glob("date=*/part-*.parquet"))
    assert {f.parent.name for f in files} == {"date=2026-03-01", "date=2026-03-02"}
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.schema.equals(SCHEMA) and table.num_rows == 260
    assert not list(tmp_path.rglob(".tmp-*"))
    row = table.slice(0, 1).to_pylist()[0]
    assert row["feature_hash"] == feature_hash({"a": 0.0, "b": None, "plan": "free"}, ("a", "b", "plan"))


def test_close_flushes_and_a_full_buffer_drops_instead_of_growing(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=3600, max_records=10)  # writer never started
    for r in _records(150, dt.date(2026, 3, 1)):
        log.append(r)
    assert log.dropped == 50  # bounded at 10 × max_records
    log.close()
    assert log.written == 100
    assert sum(pq.read_metadata(f).num_rows for f in tmp_path.rglob("part-*.parquet")) == 100


def test_a_failed_flush_leaves_no_file_under_a_final_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.prediction_log as plog

    def half_then_crash(table, where, **kwargs):  # noqa: ANN001, ANN003, ANN202
        where.write(b"PAR1 half a parquet file")
        raise OSError("disk full")

    log = PredictionLog(tmp_path, flush_interval_s=3600, max_records=1000)
    for r in _records(20, dt.date(2026, 3, 1)):
        log.append(r)
    monkeypatch.setattr(plog.pq, "write_table", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        log.flush()
    assert log.dropped == 20
    assert list(tmp_path.rglob("*.parquet")) == [] and not list(tmp_path.rglob(".tmp-*"))


# --- compare -------------------------------------------------------------------------------------------
def _write_events(settings, users: list[str], active: set[str], start: dt.date, days: int) -> None:  # noqa: ANN001
    for d in range(days):
        day = start + dt.timedelta(days=d)
        ids = [u for u in users if u in active] or users[:1]
        ts = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=10)
        df = pd.DataFrame({"user_id": ids, "event_ts": [ts] * len(ids), "event_type": "login",
                           "course_id": None, "minutes": 1.0})  # fmt: skip
        out = settings.raw_dir / "events" / f"date={day.isoformat()}"
        out.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out / "part-0.parquet")


def test_compare_reports_agreement_performance_and_a_recommendation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    rng = np.random.default_rng(3)
    day = dt.date(2026, 3, 1)
    users = [f"u{i:05d}" for i in range(1200)]
    churned = rng.random(len(users)) < 0.3
    active = {u for u, c in zip(users, churned, strict=True) if not c}
    _write_events(settings, users, active, day, 31)  # label window [D, D+30) covered
    # production: weak signal; shadow: strong signal; challenger: strong signal on its own users
    prod_p = np.clip(0.3 + 0.15 * churned + rng.normal(0, 0.2, len(users)), 0, 1)
    good_p = np.clip(0.2 + 0.6 * churned + rng.normal(0, 0.1, len(users)), 0, 1)
    salt = "ch-v"
    (settings.registry_root).mkdir(parents=True)
    settings.layout.stages_file.write_text(json.dumps(
        {"shadow": {"version": "sh-v"}, "challenger": {"version": "ch-v", "share": 0.5, "salt": salt}}))  # fmt: skip
    log = PredictionLog(settings.prediction_log_dir, flush_interval_s=3600, max_records=10**6)
    ts = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
    for i, u in enumerate(users):
        rid = f"r{i}"
        arm = assign_arm(u, 0.5, salt)
        version, p = ("ch-v", good_p[i]) if arm == "challenger" else ("prod-v", prod_p[i])
        log.append(LogRecord(ts, rid, u, version, arm, "served", p, "x", p >= 0.5, None, None, "predict"))
        if arm == "challenger":
            log.append(LogRecord(ts, rid, u, "prod-v", "production", "shadow", prod_p[i], "x", prod_p[i] >= 0.5, None,
                                 None, "predict"))  # fmt: skip
        log.append(
            LogRecord(ts, rid, u, "sh-v", "shadow", "shadow", good_p[i], "x", good_p[i] >= 0.5, None, None, "predict")
        )
    log.close()

    report = compare(settings, day)
    assert report.stages.shadow == "sh-v" and report.stages.challenger == "ch-v" and report.stages.share == 0.5
    assert report.served_by_arm["challenger"] + report.served_by_arm["production"] == len(users)
    assert report.labels.mature_dates == (day.isoformat(),)
    sh, ch = report.candidate("shadow", "sh-v"), report.candidate("challenger", "ch-v")
    assert sh.agreement.users == len(users)
    assert 0.0 < sh.agreement.spearman < 0.9 and 0.0 < sh.agreement.tier_differs_share < 1.0
    assert ch.agreement.users == report.served_by_arm["challenger"]
    for c in (sh, ch):
        assert c.performance.roc_auc > c.production_performance.roc_auc + 0.1
        assert c.recommendation.action == "promote"
        assert c.recommendation.command.startswith(f"churn models promote {c.version}")
    assert report.recommendation.action == "promote"
    # the JSON form keeps the CLI's --json shape
    as_json = json.loads(json.dumps(report.to_dict()))
    assert set(as_json["candidates"]) == {"shadow:sh-v", "challenger:ch-v"}
    assert as_json["candidates"]["shadow:sh-v"]["agreement"]["users"] == len(users)
    assert as_json["labels"]["mature_dates"] == [day.isoformat()] and as_json["recommendation"]["action"] == "promote"

    # the daily step compares what is staged since it was staged, and keeps the report
    assert compare_staged(settings, day).to_dict() == {**report.to_dict(), "until": day.isoformat()}
    save(settings, report, now=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    kept = json.loads(settings.layout.comparison_latest.read_text())
    assert kept["generated_at"] == "2026-04-01T00:00:00+00:00"
    assert kept["candidates"] == as_json["candidates"] and kept["stages"]["shadow"] == "sh-v"
    settings.layout.stages_file.write_text(json.dumps({"shadow": None, "challenger": None}))
    assert compare_staged(settings, day) is None

    # before labels mature: keep collecting
    early = compare(make_settings(tmp_path, churn_horizon_days=60), day)
    assert early.recommendation.action == "keep" and "mature" in early.recommendation.reason


def test_compare_of_an_empty_log_recommends_keep(tmp_path: Path) -> None:
    report = compare(make_settings(tmp_path), dt.date(2026, 3, 1))
    assert report.records == 0 and report.candidates == ()
    assert report.recommendation.action == "keep" and "no predictions" in report.recommendation.reason
    assert report.to_dict()["stages"] == {"shadow": None, "challenger": None, "share": 0.0}
