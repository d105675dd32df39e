"""Model registry: gate, rollback, audit, corrupt models, atomic pointer under concurrent readers.

Versions are trained for real (tiny LightGBM + baseline) on a synthetic training set, so no
Feast is involved and each version takes well under a second.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.schema import ALL_FEATURES
from tests.support.models import CUTOFFS, synthetic_set
from tests.support.settings import make_settings
from training.model import ChurnModel, ModelLoadError
from training.registry import ModelRegistry, PromotionRefused, RegistryError
from training.train import train_from_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A registry with a good, a second good and a bad version (none promoted)."""
    root = tmp_path_factory.mktemp("registry")
    settings = make_settings(root, reference_sample_rows=200)
    out = {}
    for name, ts in {
        "good": synthetic_set(0),
        "good2": synthetic_set(0),
        "bad": synthetic_set(0, noisy_train=True),
    }.items():
        out[name] = train_from_set(
            settings, ts, max_rounds=30, early_stopping=10, plots=name == "good"
        ).version
    return root, out


@pytest.fixture
def registry(trained, tmp_path: Path) -> tuple[ModelRegistry, dict[str, str]]:  # noqa: ANN001
    """A private copy of the trained registry, so each test starts with nothing promoted."""
    import shutil

    src, versions = trained
    shutil.copytree(src / "registry", tmp_path / "registry")
    return ModelRegistry(make_settings(tmp_path)), versions


def test_version_folder_contents(registry) -> None:  # noqa: ANN001
    reg, v = registry
    info = reg.get(v["good"])
    for name in (
        "model.txt",
        "baseline.joblib",
        "metadata.json",
        "metrics.json",
        "report.md",
        "reference.parquet",
        "test.parquet",
        "roc.png",
        "pr.png",
        "calibration.png",
        "importance.png",
    ):
        assert (info.path / name).is_file(), name
    meta = info.metadata
    assert meta["version"] == v["good"] and meta["kind"] in ("lightgbm", "logreg")
    assert meta["features"] == list(ALL_FEATURES) and meta["feature_service"] == "churn_v2"
    for key in (
        "threshold",
        "training_window",
        "rows",
        "data_hash",
        "git_sha",
        "libraries",
        "trained_at",
        "categories",
    ):
        assert key in meta, key
    test = info.metrics["test"]
    for model in ("lightgbm", "logreg"):
        for key in (
            "roc_auc",
            "pr_auc",
            "accuracy",
            "precision",
            "recall",
            "f1",
            "brier",
            "lift_top10",
            "recall_top10",
            "confusion_matrix",
            "per_plan",
        ):
            assert key in test[model], (model, key)
    ref = pd.read_parquet(info.path / "reference.parquet")
    assert len(ref) <= 200 and set(ALL_FEATURES) | {"churn_probability"} == set(ref.columns)
    assert [v.version for v in reg.list_versions()] == sorted(v.values())


@pytest.mark.parametrize("kind", ["lightgbm", "logreg"])
def test_row_and_frame_paths_agree(registry, kind: str) -> None:  # noqa: ANN001
    reg, v = registry
    path = reg.get(v["good"]).path
    model = ChurnModel.load(path, kind=kind)
    test = pd.read_parquet(path / "test.parquet")
    rows = [
        {k: (None if isinstance(x, float) and np.isnan(x) else x) for k, x in r.items()}
        for r in test[model.features].head(50).to_dict("records")
    ]
    rows[0]["country"] = "never-seen"  # unknown category
    rows[1].pop("plan")  # missing key
    frame = pd.DataFrame(rows, columns=model.features)
    np.testing.assert_allclose(model.predict_proba_rows(rows), model.predict_proba_frame(frame), rtol=1e-12)
    factors = model.top_factors(rows[:3], k=3)
    assert len(factors) == 3 and all(len(f) <= 3 and all(x["contribution"] > 0 for x in f) for f in factors)
    # the API's single pass: probability from the summed contributions (calibrated) = predict
    probas, explained = model.explain_rows(rows, k=3)
    np.testing.assert_allclose(probas, model.predict_proba_rows(rows), rtol=1e-9, atol=1e-12)
    assert explained[:3] == factors
    if kind == "logreg":  # the numpy fast path equals the sklearn pipeline it was extracted from
        import joblib

        from training.fit import baseline_input

        pipe = joblib.load(path / "baseline.joblib")
        X = baseline_input(test.head(50), model.features, model.categorical_features)
        from training.model import category_index, encode_frame

        mine = model.margin_matrix(
            encode_frame(test.head(50), model.features, category_index(model.categories))
        )
        np.testing.assert_allclose(mine, pipe.decision_function(X), rtol=1e-9, atol=1e-9)


def test_first_promotion_then_gate_refuses_worse(registry) -> None:  # noqa: ANN001
    reg, v = registry
    assert reg.production_version() is None
    with pytest.raises(RegistryError):
        reg.load_production()
    reg.promote(v["good"])  # first model ever: no gate
    assert reg.production_version() == v["good"]
    with pytest.raises(PromotionRefused, match="does not beat production"):
        reg.promote(v["bad"])
    assert reg.production_version() == v["good"]
    assert [e["to"] for e in reg.audit_entries()] == [v["good"]]
    reg.promote(v["bad"], force=True, reason="test override")
    entry = reg.audit_entries()[-1]
    assert entry["from"] == v["good"] and entry["to"] == v["bad"] and entry["reason"] == "test override"
    assert {"who", "ts", "metrics"} <= set(entry)


def test_gate_rescores_production_on_candidate_test_set(registry) -> None:  # noqa: ANN001
    reg, v = registry
    reg.promote(v["bad"])
    figures = reg.gate(v["good"])
    assert figures["passed"] and figures["candidate_score"] > figures["production_score"]
    assert figures["test_cutoff"] == str(CUTOFFS[-1])


def test_rollback_returns_to_previous(registry) -> None:  # noqa: ANN001
    reg, v = registry
    with pytest.raises(RegistryError):
        reg.rollback()
    reg.promote(v["good"])
    reg.promote(v["good2"], force=True)
    assert reg.rollback() == v["good"]
    assert reg.production_version() == v["good"]
    assert reg.history() == [v["good"]]
    with pytest.raises(RegistryError, match="no previous"):
        reg.rollback()
    actions = [(e["action"], e["from"], e["to"]) for e in reg.audit_entries()]
    assert actions == [
        ("promote", None, v["good"]),
        ("promote", v["good"], v["good2"]),
        ("rollback", v["good2"], v["good"]),
    ]


def test_corrupt_model_is_refused(registry) -> None:  # noqa: ANN001
    reg, v = registry
    reg.promote(v["good"])
    info = reg.get(v["good2"])
    for kind in ("lightgbm", "logreg"):  # truncate both model files, whichever is served
        f = info.path / info.metadata["models"][kind]["model_file"]
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        with pytest.raises(ModelLoadError):
            ChurnModel.load(info.path, kind=kind)
    with pytest.raises(ModelLoadError):
        reg.load(v["good2"])
    for force in (False, True):
        with pytest.raises(PromotionRefused, match="refusing"):
            reg.promote(v["good2"], force=force)
    assert reg.production_version() == v["good"]
    assert reg.load_production().version == v["good"]


def test_missing_metadata_or_version_raises_model_load_error(registry) -> None:  # noqa: ANN001
    reg, v = registry
    with pytest.raises(ModelLoadError):
        reg.load("20990101T000000Z-abcdef")
    (reg.get(v["bad"]).path / "metadata.json").write_text("{not json")
    with pytest.raises(ModelLoadError):
        reg.load(v["bad"])


def test_readers_never_see_a_half_state_during_promotions(registry) -> None:  # noqa: ANN001
    reg, v = registry
    a, b = v["good"], v["good2"]
    reg.promote(a)
    reader = ModelRegistry(reg.settings)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[str] = set()

    def read() -> None:
        while not stop.is_set():
            try:
                name = reader.production_version()
                assert name in (a, b), name
                model = reader.load_production()
                assert model.version in (a, b)
                seen.add(model.version)
            except BaseException as exc:  # noqa: BLE001 - any failure is the test failing
                errors.append(exc)
                return

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(40):
            reg.promote(b if i % 2 == 0 else a, force=True)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert seen == {a, b}
    assert len(reg.audit_entries()) == 41
    assert all(json.loads(line) for line in reg.audit_path.read_text().splitlines())


def test_registry_files_live_where_the_layout_says(registry, tmp_path: Path) -> None:  # noqa: ANN001
    """A registry on its own volume (``CHURN_REGISTRY_DIR``): pointer, history, audit and stages follow."""
    import shutil

    reg, v = registry
    elsewhere = tmp_path / "shared-volume"
    shutil.copytree(reg.root, elsewhere)
    moved = ModelRegistry(make_settings(tmp_path / "data", registry_dir=elsewhere))
    layout = moved.settings.layout
    assert layout.registry_root == elsewhere
    moved.promote(v["good"])
    moved.set_stage(v["good2"], "shadow")
    assert layout.production_pointer.read_text().strip() == v["good"]
    assert json.loads(layout.production_history.read_text()) == {"production": [v["good"]]}
    assert json.loads(layout.stages_file.read_text())["shadow"]["version"] == v["good2"]
    assert [e["action"] for e in moved.audit_entries()] == ["promote", "stage:shadow"]
    assert layout.audit_log.exists() and reg.production_version() is None  # the original is untouched


def test_the_legacy_named_stage_slot_is_gone(registry) -> None:  # noqa: ANN001
    """Stages are shadow / challenger only (``stages.json``); no ``stage-<name>`` pointer files."""
    reg, v = registry
    assert not hasattr(reg, "stage") and not hasattr(reg, "staged_version")
    reg.promote(v["good"])
    reg.set_stage(v["good2"], "challenger", share=0.5)
    assert not list(reg.root.glob("stage-*"))
