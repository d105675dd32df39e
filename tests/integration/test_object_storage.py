"""The platform on object storage: ``CHURN_DATA_DIR=s3://bucket/prefix`` against a real S3 API
(moto's server on loopback), with the same guarantees as on a local folder."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pytest

from churn.io import atomic_dir, clean_tmp, exclusive_lock, replace_dirs, write_parquet_atomic, write_text_atomic
from churn.settings import Settings
from churn.storage import fs_path, read_table
from tests.support.objectstore import S3Server, s3_server, s3_settings
from tests.support.servers import RedisProcess, create, live_server

END = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def site(s3: S3Server, tmp_path) -> Settings:
    return s3_settings(s3, s3.bucket(), tmp_path / "scratch")


def _keys(settings: Settings) -> list[str]:
    fs = settings.data_dir.fs
    fs.invalidate_cache()
    base = fs_path(settings.data_dir)
    return sorted(k[len(base) + 1 :] for k in fs.find(base))


def test_settings_parse_object_storage_urls(s3: S3Server, tmp_path) -> None:
    s = s3_settings(s3, "some-bucket", tmp_path)
    assert s.remote and str(s.data_dir) == "s3://some-bucket/site"
    assert str(s.layout.feature_partition("recency", END)) == "s3://some-bucket/site/features/recency/date=2026-11-01"
    assert s.feast_dir == tmp_path / "feast"  # Feast's repo files stay node-local
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Settings.from_env(env={"CHURN_DATA_DIR": "gs://elsewhere/x"})


def test_writes_publish_whole_objects_and_leave_nothing_behind(site: Settings) -> None:
    target = site.data_dir / "predictions" / "date=2026-11-01" / "p.parquet"
    write_parquet_atomic(target, pa.table({"x": [1, 2, 3]}))
    write_parquet_atomic(target, pa.table({"x": [4, 5]}))
    assert read_table(target).column("x").to_pylist() == [4, 5]

    folder = site.data_dir / "drift" / "date=2026-11-01"
    with atomic_dir(folder) as tmp:
        (tmp / "report.json").write_text("{}")
        (tmp / "old.txt").write_text("x")
    with (
        pytest.raises(RuntimeError),
        atomic_dir(folder, validate=lambda p: (_ for _ in ()).throw(RuntimeError())) as tmp,
    ):
        (tmp / "report.json").write_text('{"half": true}')
    assert (folder / "report.json").read_text() == "{}"  # a failed validation publishes nothing
    with atomic_dir(folder) as tmp:
        (tmp / "report.json").write_text('{"v": 2}')
    assert sorted(p.name for p in folder.iterdir()) == ["report.json"]  # stale objects removed

    staged = [site.scratch_dir / "stage" / f"date=2026-10-{d:02d}" for d in (1, 2)]
    for part in staged:
        part.mkdir(parents=True)
        (part / "part-0.parquet").write_bytes(b"PAR1")
    replace_dirs([(p, site.data_dir / "features" / "v" / p.name) for p in staged])
    assert [p.name for p in sorted((site.data_dir / "features" / "v").iterdir())] == [
        "date=2026-10-01",
        "date=2026-10-02",
    ]
    assert not any(".tmp-" in k for k in _keys(site))

    site.data_dir.fs.pipe(f"{fs_path(site.data_dir)}/raw/.tmp-killed-writer/part-0.parquet", b"partial")
    assert clean_tmp(site.data_dir, older_than_s=3600) == 0  # young: may belong to a live writer
    assert clean_tmp(site.data_dir) == 1
    assert not any(".tmp-" in k for k in _keys(site))


def test_registry_lock_admits_one_writer(site: Settings) -> None:
    lock = site.registry_root / ".lock"
    with exclusive_lock(lock):
        with pytest.raises(TimeoutError), exclusive_lock(lock, timeout_s=0.5):
            pass
    with exclusive_lock(lock, timeout_s=1):  # released: free again
        pass
    with exclusive_lock(lock):  # a lock left by a killed holder is broken once stale
        with exclusive_lock(lock, stale_after_s=0.0, timeout_s=5):
            pass


def test_writer_killed_mid_write_leaves_no_partial_object(s3: S3Server, site: Settings) -> None:
    target = site.data_dir / "features" / "big" / "date=2026-11-01" / "part-0.parquet"
    write_parquet_atomic(target, pa.table({"x": list(range(10))}))
    script = textwrap.dedent(
        f"""
        import numpy as np, pyarrow as pa, sys
        from tests.support.objectstore import s3_settings, S3Server
        from churn.io import write_parquet_atomic
        server = S3Server(); server.port = {s3.port}
        bucket, scratch = {site.data_dir.path.split("/")[0]!r}, {str(site.scratch_dir)!r}
        s = s3_settings(server, bucket, __import__("pathlib").Path(scratch))
        table = pa.table({{"x": np.random.default_rng(0).random(6_000_000)}})
        print("writing", flush=True)
        write_parquet_atomic(s.data_dir / "features" / "big" / "date=2026-11-01" / "part-0.parquet", table)
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    time.sleep(0.8)  # mid-way: writing the local file or uploading it
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert read_table(target).column("x").to_pylist() == list(range(10))  # the old object, whole
    clean_tmp(site.data_dir)
    assert [k for k in _keys(site) if "big" in k] == ["features/big/date=2026-11-01/part-0.parquet"]


def test_daily_loop_and_api_run_on_object_storage(s3: S3Server, tmp_path, request: pytest.FixtureRequest) -> None:
    """From an empty bucket: data, features, the daily chain (which trains the first model), scoring
    and drift, then the API loading models from the bucket and hot-reloading a promotion."""
    from jobs.aggregate import build_features
    from jobs.daily import daily
    from jobs.ingest import generate_store
    from tests.support.env import require_drift_env
    from training.registry import ModelRegistry

    redis = RedisProcess()  # the online store pods share, as in a cluster
    redis.start()
    request.addfinalizer(redis.stop)
    site = dict(
        reference_sample_rows=300,
        reload_interval_s=0.2,
        prediction_log="false",
        min_history_days=14,
        online_store="redis",
        redis_url=f"{redis.url}/0",
    )
    bucket = s3.bucket()
    settings = s3_settings(s3, bucket, tmp_path / "scratch", **site)
    require_drift_env(settings)
    generate_store(settings, users=250, days=110, seed=5, end_date=END)
    build_features(settings)
    first = daily(settings, END)
    assert first.steps[-1] == "housekeeping"
    registry = ModelRegistry(settings)
    version = registry.production_version()
    assert version is not None, "the retrain step trains the first model of a new install"

    again = daily(settings, END, first="score", last="drift")
    assert again.steps == ["score", "interventions", "drift"]
    keys = _keys(settings)
    for expected in (
        f"predictions/date={END}/predictions.parquet",
        f"interventions/plan/date={END}/plan.parquet",
        f"drift/date={END}/report.json",
        "drift/latest.json",
        f"registry/models/{version}/metadata.json",
        "registry/production",
        "registry/audit.log",
    ):
        assert expected in keys, expected
    assert json.loads((settings.layout.drift_latest).read_text())["date"] == END.isoformat()
    assert not any(".tmp-" in k for k in keys)
    local = sorted(p.relative_to(settings.scratch_dir).parts[0] for p in settings.scratch_dir.iterdir())
    assert local == ["feast"], local  # nothing but Feast's repo files lands on the node

    user = read_table(settings.layout.predictions(END) / "predictions.parquet", ["user_id"]).column(0)[0].as_py()
    # The API runs in a pod of its own: an empty scratch folder, no Feast registry until it builds
    # one from the definitions in code.
    api_pod = s3_settings(s3, bucket, tmp_path / "api-pod", console="on", **site)
    with live_server(create(api_pod)) as base:
        r = httpx.post(f"{base}/predict", json={"user_id": user}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == version
        _console_reads_the_bucket(base, settings, user, version)

        # A second version, written to the bucket and promoted: the API notices the pointer object.
        fs, models = settings.data_dir.fs, fs_path(settings.models_dir)
        clone = version[:-6] + "abcdef"
        for key in fs.find(f"{models}/{version}"):
            fs.copy(key, key.replace(f"/{version}/", f"/{clone}/"))
        meta = json.loads((settings.models_dir / clone / "metadata.json").read_text())
        write_text_atomic(settings.models_dir / clone / "metadata.json", json.dumps({**meta, "version": clone}))
        registry.promote(clone, force=True, reason="object-storage test")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            served = httpx.post(f"{base}/predict", json={"user_id": user}, timeout=30).json().get("model_version")
            if served == clone:
                break
            time.sleep(0.2)
        assert served == clone


def _console_reads_the_bucket(base: str, settings: Settings, user: str, version: str) -> None:
    """Every console page from an API pod whose data directory is the bucket (DuckDB over s3)."""
    scored = read_table(settings.layout.predictions(END) / "predictions.parquet", ["user_id", "risk_tier"]).to_pandas()
    get = lambda path: httpx.get(f"{base}/console{path}", timeout=60)  # noqa: E731
    page = get("")
    assert page.status_code == 200 and f'data-testid="scoring-day">{END}<' in page.text, page.text[:800]
    assert f'data-total="{len(scored)}"' in page.text
    high = int((scored["risk_tier"] == "high").sum())
    assert f'data-total="{high}"' in get("/at-risk?tier=high").text
    csv_rows = get("/at-risk.csv").text.strip().splitlines()
    assert len(csv_rows) == len(scored) + 1 and csv_rows[0].startswith('"user_id",')
    lookup = get(f"/users/{user}")
    assert (
        lookup.status_code == 200
        and 'data-testid="live-probability"' in lookup.text
        and 'data-testid="user-history"' in lookup.text
    )
    model = get("/model")
    assert model.status_code == 200 and f'data-testid="production-version">{version}<' in model.text
    drift = get("/drift")
    assert drift.status_code == 200 and f'href="/console/drift/files/date={END}/report.html"' in drift.text
    report = get(f"/drift/files/date={END}/report.html")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    runs = get("/runs")
    assert runs.status_code == 200 and '<tr data-step="compare" data-status="ok">' in runs.text
