"""Feature repo definitions, generated config, and what `feast apply` parses (serialization: test_feast_adapter)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from churn.schema import ALL_FEATURES, FEATURE_VIEWS
from churn.settings import Settings
from feature_repo import store as cfs

REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def test_init_is_import_free():
    tree = ast.parse((REPO / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_definitions_follow_schema(tmp_path):
    from feature_repo.definitions import build_definitions

    s = Settings.from_env(env={}, data_dir=tmp_path)
    d = build_definitions(s)
    assert d.service.name == "churn_v2" and d.user.join_key == "user_id"
    assert set(d.views) == set(FEATURE_VIEWS)
    for view, cols in FEATURE_VIEWS.items():
        fv = d.views[view]
        assert [f.name for f in fv.features] == list(cols)
        assert fv.ttl.days >= 2
        assert d.sources[view].path.startswith(str(s.features_dir))
        assert d.sources[view].file_format is not None
    assert sorted(f.name for fv in d.views.values() for f in fv.features) == sorted(ALL_FEATURES)


@pytest.mark.parametrize("store,registry", [("sqlite", ""), ("redis", "postgresql+psycopg://postgres@db:5432/feast")])
def test_rendered_yaml_loads_in_feast(tmp_path, store, registry):
    from feast.repo_config import load_repo_config

    s = Settings.from_env(
        env={},
        data_dir=tmp_path,
        online_store=store,
        feast_registry_url=registry,
        redis_url="redis://cache:6380/2",
        online_timeout_ms=250,
    )
    path = cfs.write_feature_store_yaml(s, tmp_path / "feature_store.yaml")
    cfg = load_repo_config(tmp_path, path)
    assert cfg.project == "churn" and cfg.offline_store.type == "duckdb"
    if store == "redis":
        assert cfg.online_store.connection_string.startswith("cache:6380,db=2")
        assert "socket_timeout=0.25" in cfg.online_store.connection_string
        assert cfg.registry.registry_type == "sql" and cfg.registry.path == registry
    else:
        assert cfg.online_store.path == str(tmp_path / "feast" / "online_store.db")
        assert cfg.registry.path == str(tmp_path / "feast" / "registry.db")
    assert cfs.repo_config(s).online_store.type == store


def test_spark_engine_renders_feasts_spark_offline_store_and_spark_sources(tmp_path):
    """``CHURN_ENGINE=spark``: Feast's Spark offline store on the configured master, in UTC, with the
    operator's extra settings on top; each view's source is its partition folder."""
    from feast.repo_config import load_repo_config

    from feature_repo.definitions import build_definitions

    s = Settings.from_env(
        env={"CHURN_ENGINE": "spark", "CHURN_SPARK_MASTER": "spark://spark-master:7077",
             "CHURN_SPARK_CONF": "spark.executor.memory=4g, spark.sql.session.timeZone=UTC"},
        data_dir=tmp_path,
    )  # fmt: skip
    cfg = load_repo_config(tmp_path, cfs.write_feature_store_yaml(s, tmp_path / "feature_store.yaml"))
    assert cfg.offline_store.type == "spark"
    conf = cfg.offline_store.spark_conf
    assert conf["spark.master"] == "spark://spark-master:7077" and conf["spark.executor.memory"] == "4g"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert cfg.batch_engine.type == "spark.engine" and cfg.batch_engine.spark_conf == conf
    assert "batch_engine" not in cfs.config_dict(Settings.from_env(env={}, data_dir=tmp_path))
    sources = build_definitions(s).sources
    assert {type(src).__name__ for src in sources.values()} == {"SparkSource"}
    assert sources["history"].path == f"{s.features_dir}/history"
    duck = build_definitions(Settings.from_env(env={}, data_dir=tmp_path)).sources
    assert {type(src).__name__ for src in duck.values()} == {"FileSource"}


@pytest.mark.parametrize(
    ("master", "extra", "partitions"),
    [("local[3]", "", "3"), ("local", "", "1"), ("local[2,4]", "", "2"),
     ("local[2]", "spark.sql.shuffle.partitions=64", "64"), ("spark://m:7077", "", None)],
)  # fmt: skip
def test_local_spark_shuffles_one_partition_per_core_unless_configured(tmp_path, master, extra, partitions):
    s = Settings.from_env(
        env={"CHURN_ENGINE": "spark", "CHURN_SPARK_MASTER": master, "CHURN_SPARK_CONF": extra}, data_dir=tmp_path
    )
    assert cfs.spark_conf(s).get("spark.sql.shuffle.partitions") == partitions


@pytest.mark.parametrize("conf", ["spark.executor.memory", "=4g", "a=1,,b"])
def test_spark_conf_items_must_be_key_value(tmp_path, conf):
    from churn.errors import SettingsError

    with pytest.raises(SettingsError, match="CHURN_SPARK_CONF: .* is not key=value"):
        Settings.from_env(env={"CHURN_ENGINE": "spark", "CHURN_SPARK_CONF": conf}, data_dir=tmp_path)


def test_spark_engine_on_object_storage_reads_through_s3a(tmp_path):
    from churn.storage import spark_uri
    from feature_repo.definitions import build_definitions

    env = {"CHURN_ENGINE": "spark", "CHURN_DATA_DIR": "s3://bucket/churn", "CHURN_LOCAL_DIR": str(tmp_path)}
    s = Settings.from_env(env=env | {"CHURN_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    conf = cfs.spark_conf(s)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    source = build_definitions(s).views["engagement"].batch_source
    assert source.path == "s3a://bucket/churn/features/engagement"
    assert spark_uri(tmp_path) == str(tmp_path)
    # AWS itself: s3a's own endpoint and addressing; the operator's CHURN_SPARK_CONF has the last word
    aws = Settings.from_env(env=env | {"CHURN_SPARK_CONF": "spark.hadoop.fs.s3a.path.style.access=true"})
    assert "spark.hadoop.fs.s3a.endpoint" not in cfs.spark_conf(aws)
    assert cfs.spark_conf(aws)["spark.hadoop.fs.s3a.path.style.access"] == "true"
    local = Settings.from_env(env={"CHURN_ENGINE": "spark"}, data_dir=tmp_path)
    assert not any(k.startswith("spark.hadoop.fs.s3a.") for k in cfs.spark_conf(local))


def test_a_process_spark_submit_started_keeps_its_master_and_sizes(tmp_path, monkeypatch):
    s = Settings.from_env(
        env={"CHURN_ENGINE": "spark", "CHURN_SPARK_CONF": "spark.executor.memory=8g"}, data_dir=tmp_path
    )
    assert cfs.spark_conf(s)["spark.master"] == "local[2]"
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")  # what spark-submit hands a Python driver
    conf = cfs.spark_conf(s)
    assert not {"spark.master", "spark.app.name", "spark.sql.shuffle.partitions"} & set(conf)
    assert conf["spark.sql.session.timeZone"] == "UTC" and conf["spark.executor.memory"] == "8g"


def test_unknown_engine_is_refused(tmp_path):
    with pytest.raises(ValueError, match="CHURN_ENGINE must be one of"):
        Settings.from_env(env={"CHURN_ENGINE": "polars"}, data_dir=tmp_path)


def test_feast_apply_parses_only_the_definitions():
    """`feast apply` in feature_repo/ imports every .py not in .feastignore: only definitions.py."""
    from feast.repo_operations import get_repo_files

    assert get_repo_files(REPO) == [(REPO / "definitions.py").resolve()]


def test_committed_yaml_is_the_embedded_default():
    """`feast` run from feature_repo/ on a fresh checkout must use the same store as `churn`."""
    import yaml

    from churn.settings import Settings

    repo = Path(__file__).resolve().parents[2] / "feature_repo"
    committed = yaml.safe_load((repo / "feature_store.yaml").read_text())
    default = Settings.from_env(env={})
    resolved = {
        "registry": (repo / committed["registry"]["path"]).resolve(),
        "online": (repo / committed["online_store"]["path"]).resolve(),
    }
    assert resolved["registry"] == (default.feast_dir / "registry.db").resolve()
    assert resolved["online"] == (default.feast_dir / "online_store.db").resolve()
    assert committed["offline_store"]["type"] == "duckdb" and committed["project"] == "churn"
