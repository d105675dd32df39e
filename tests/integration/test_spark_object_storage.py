"""``CHURN_ENGINE=spark`` with the data on object storage (moto's S3 server), as a cluster runs it:
each step a process of its own whose Spark session reads and writes the bucket through ``s3a://``.

- The daily aggregation, started from the running totals stored in the bucket, writes the rows the
  DuckDB path wrote locally, and publishes them whole (no staging prefix left in the bucket).
- The point-in-time training set from Feast's Spark offline store over the bucket equals DuckDB's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from churn.layout import partition_dates
from churn.schema import FEATURE_VIEWS
from churn.settings import Settings
from churn.storage import fs_path
from tests.support.env import REPO
from tests.support.objectstore import S3Server, s3_server, s3_settings, s3a_spark_conf
from tests.support.sites import copy_site, view_rows
from tests.support.tools import run

REBUILT = 1  # newest dates the Spark job rebuilds in the bucket
SITE = {"reference_sample_rows": 300, "min_history_days": 7}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def bucket_site(small_store: Settings, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The small site in a bucket without its newest dates' feature rows, then those dates rebuilt
    by ``churn features build`` on Spark in a process of its own (the job pod's view)."""
    conf = "spark.sql.shuffle.partitions=3," + s3a_spark_conf()
    settings = s3_settings(
        s3, s3.bucket(), tmp_path_factory.mktemp("spark-s3"), engine="spark", spark_conf=conf, **SITE
    )
    newest = partition_dates(small_store.features_dir / "engagement")[-REBUILT:]
    fs, base = settings.data_dir.fs, fs_path(settings.data_dir)
    local = small_store.data_dir
    held_back = {f"date={d}" for d in newest}
    files = [
        p for p in sorted(local.rglob("*"))
        if p.is_file() and not (p.relative_to(local).parts[0] == "features" and held_back & set(p.parts))
    ]  # fmt: skip
    fs.put([str(p) for p in files], [f"{base}/{p.relative_to(local).as_posix()}" for p in files])
    assert partition_dates(settings.layout.feature_view_dir("engagement"))[-1] < newest[0]

    proc = run([sys.executable, "-m", "cli.main", "features", "build"], env=_job_env(settings), timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fs.invalidate_cache()
    return settings


def _job_env(settings: Settings) -> dict[str, str]:
    """A job pod's environment: every setting as a ``CHURN_*`` variable, nothing else of this process's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")} | settings.as_env()


def test_spark_builds_the_duckdb_rows_in_the_bucket(small_store: Settings, bucket_site: Settings) -> None:
    days = partition_dates(small_store.features_dir / "engagement")[-REBUILT:]
    assert partition_dates(bucket_site.layout.feature_view_dir("engagement"))[-REBUILT:] == days
    for view in FEATURE_VIEWS:
        want, got = view_rows(small_store, view, days), view_rows(bucket_site, view, days)
        assert len(want) > 200  # most of the 400 users are in scope on the day
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=view)
    fs, base = bucket_site.data_dir.fs, fs_path(bucket_site.features_dir)
    left = [k for k in fs.find(base) if ".tmp-" in k or k.endswith(".crc") or k.endswith("_SUCCESS")]
    assert left == []


TRAINING_SET = textwrap.dedent(
    """
    import json, sys
    from churn.settings import Settings
    from feature_repo.store import apply
    from training.dataset import build_training_set

    settings = Settings.from_env()
    apply(settings)
    ts = build_training_set(settings)
    ts.frame.to_parquet(sys.argv[1])
    print(json.dumps({"valid": str(ts.valid), "test": str(ts.test), "cutoffs": [str(c) for c in ts.cutoffs],
                      "features": ts.features}))
    """
)


def test_spark_training_set_from_the_bucket_equals_the_duckdb_one(
    small_store: Settings, bucket_site: Settings, tmp_path: Path
) -> None:
    from feature_repo.store import apply
    from training.dataset import build_training_set

    duck = copy_site(small_store, tmp_path / "duck", **SITE)
    apply(duck)
    want = build_training_set(duck)
    out = tmp_path / "spark.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", TRAINING_SET, str(out)],
        env=_job_env(bucket_site),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert meta == {
        "valid": str(want.valid),
        "test": str(want.test),
        "cutoffs": [str(c) for c in want.cutoffs],
        "features": want.features,
    }
    got = pd.read_parquet(out)
    assert len(want.frame) > 300 and want.frame["logins_7d"].notna().any()
    pd.testing.assert_frame_equal(got[list(want.frame.columns)], want.frame)
