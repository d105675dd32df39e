"""The Feast internals ``feature_repo.feast_adapter`` relies on: present, same shape, same bytes.

A Feast upgrade that renames a private helper, changes a signature, the entity-key serialization,
the Redis field hashing or the value encoding must fail *here*, loudly, before the fast
materialization writes keys or values that Feast's readers no longer find. Expected bytes are
written out literally, and each is also checked against what Feast's own code produces.
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
import sqlite3

import numpy as np
import pyarrow as pa
import pytest

from churn.settings import Settings
from feature_repo import feast_adapter as fa

USER_KEY = b"\x01\x00\x00\x00\x02\x00\x00\x00\x07\x00\x00\x00user_id\x02\x00\x00\x00\x08\x00\x00\x00u0000001"
"""Feast's v3 serialization of ``EntityKey(user_id="u0000001")``."""
DAY = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def _params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


# --- the internal symbols exist, with the signatures the adapter calls them with -----------------


def test_internal_helpers_keep_their_signatures():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores import helpers
    from feast.infra.online_stores.redis import _versioned_fv_name
    from feast.type_map import python_values_to_proto_values
    from feast.utils import to_naive_utc

    assert _params(serialize_entity_key)[:2] == ["entity_key", "entity_key_serialization_version"]
    assert _params(helpers._mmh3) == ["key"]
    assert _params(helpers.compute_versioned_name) == ["table", "enable_versioning"]
    assert _params(helpers.compute_table_id) == ["project", "table", "enable_versioning"]
    assert _params(helpers.extract_text_and_num) == ["val", "compute_num"]
    assert _params(helpers._redis_key)[:2] == ["project", "entity_key"]
    assert _params(_versioned_fv_name) == ["table", "config"]
    assert _params(python_values_to_proto_values)[:2] == ["values", "feature_type"]
    assert _params(to_naive_utc) == ["ts"]


def test_online_store_internals_keep_their_signatures():
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    assert isinstance(inspect.getattr_static(RedisOnlineStore, "_parse_connection_string"), staticmethod)
    assert _params(RedisOnlineStore._parse_connection_string) == ["connection_string"]
    assert _params(RedisOnlineStore._get_client) == ["online_store_config"]
    assert _params(RedisOnlineStore._generate_redis_keys_for_entities) == ["config", "entity_keys"]
    assert _params(RedisOnlineStore._generate_hset_keys_for_features) == [
        "feature_view",
        "requested_features",
        "fv_name_override",
    ]
    assert _params(RedisOnlineStore._read_hash_fields) == ["config", "commands"]
    assert _params(RedisOnlineStore._get_features_for_entity) == ["values", "feature_view", "requested_features"]
    assert isinstance(inspect.getattr_static(SqliteOnlineStore, "_get_db_path"), staticmethod)
    assert _params(SqliteOnlineStore._get_db_path) == ["config"]
    assert _params(SqliteOnlineStore.online_read)[:3] == ["config", "table", "entity_keys"]


def test_registry_records_materialization_the_way_the_adapter_calls_it():
    from feast.infra.registry.base_registry import BaseRegistry

    assert _params(BaseRegistry.apply_materialization)[:5] == [
        "feature_view",
        "project",
        "start_date",
        "end_date",
        "commit",
    ]


# --- keys ---------------------------------------------------------------------------------------------


def test_entity_keys_are_feasts_bytes():
    from feast.infra.key_encoding_utils import serialize_entity_key

    ids = ["u0000001", "", "ünïcode", "x" * 300]
    encoded = fa.EntityKeyEncoder(3).encode(ids)
    assert encoded[0] == USER_KEY
    for proto, key in zip(fa.entity_key_protos(ids), encoded, strict=True):
        assert serialize_entity_key(proto, entity_key_serialization_version=3) == key


def test_an_entity_key_format_change_refuses_to_write():
    encoder = fa.EntityKeyEncoder(3)
    encoder.prefix = encoder.prefix[:-1]
    with pytest.raises(fa.FeatureStoreError, match="refusing to write"):
        encoder.encode(["u0000001"])


def test_redis_key_and_fields_are_feasts():
    from feast.infra.online_stores.helpers import _mmh3, _redis_key

    (proto,) = fa.entity_key_protos(["u0000001"])
    assert fa.redis_key(USER_KEY, "churn") == USER_KEY + b"churn" == _redis_key("churn", proto, 3)
    assert fa.redis_feature_field("engagement", "logins_7d") == b"\xadU\xbe\xb9" == _mmh3("engagement:logins_7d")
    assert fa.redis_ts_field("engagement") == b"_ts:engagement"


def _defs(tmp_path, store: str):
    from feature_repo.definitions import build_definitions
    from feature_repo.store import repo_config

    s = Settings.from_env(env={}, data_dir=tmp_path, online_store=store, redis_url="redis://cache:6380/2")
    return repo_config(s), build_definitions(s).views["engagement"]


def test_redis_read_plan_and_keys_match_the_write_side(tmp_path):
    config, fv = _defs(tmp_path, "redis")
    names = [f.name for f in fv.features]
    feast = fa.FeastRedis(config)
    view, requested, fields = feast.hash_fields(fv, names)
    assert view == fa.redis_view_name(fv, config) == "engagement"
    assert requested == [*names, "_ts:engagement"]
    assert fields == [*(fa.redis_feature_field(view, n) for n in names), "_ts:engagement"]
    assert feast.keys(fa.entity_key_protos(["u0000001"])) == [fa.redis_key(USER_KEY, config.project)]
    nodes, kwargs = fa.parse_redis_connection(config.online_store.connection_string)
    assert nodes == [{"host": "cache", "port": "6380"}] and kwargs["db"] == 2
    assert fa.redis_type(config) == "redis"
    client = object()  # our client (timeouts, retry policy) is the one Feast's read path uses
    assert fa.FeastRedis(config, client).client() is client


def test_redis_values_written_decode_with_feasts_decoder(tmp_path):
    config, fv = _defs(tmp_path, "redis")
    names = [f.name for f in fv.features][:2]
    feast = fa.FeastRedis(config)
    view, requested, _ = feast.hash_fields(fv, names)
    values = fa.encode_column(pa.array([2.5, None], pa.float64()), with_text=False)[0]
    ts, decoded = feast.decode([*values, fa.proto_timestamp(DAY)], view, requested)
    assert ts == DAY
    assert [fa.value_of(decoded[n]) for n in names] == [2.5, None]


def test_sqlite_paths_and_tables_are_feasts(tmp_path):
    config, fv = _defs(tmp_path, "sqlite")
    assert fa.sqlite_db_path(config) == str(tmp_path / "feast" / "online_store.db")
    assert fa.online_table("churn", fv, config) == "churn_engagement"
    conn = sqlite3.connect(":memory:")  # our connection (timeouts, deadline) is the one online_read uses
    assert fa.sqlite_reader(conn)._get_conn(config) is conn


# --- values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arr,want_values,want_texts",
    [
        (pa.array([1.5, None]), [b")\x00\x00\x00\x00\x00\x00\xf8?", b""], ["1.5", None]),
        (pa.array([5, None], pa.int64()), [b" \x05", b""], ["5", None]),
        (pa.array(["free", None]), [b"\x12\x04free", b""], ["free", None]),
    ],
)
def test_value_bytes_are_fixed(arr, want_values, want_texts):
    assert fa.encode_column(arr, with_text=True) == (want_values, want_texts)


def test_encode_column_matches_feast():
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    rng = np.random.default_rng(0)
    doubles = pa.array([0.0, -0.0, 1.5, math.inf, -math.inf, None, float("nan"), *rng.normal(size=50)])
    ints = pa.array([0, 1, -1, 2**40, -(2**62), None, *rng.integers(-5, 500, 50).tolist()], pa.int64())
    strings = pa.array(["", "free", "ünï", None, "free"], pa.string())
    for arr, vt in ((doubles, ValueType.DOUBLE), (ints, ValueType.INT64), (strings, ValueType.STRING)):
        values, texts = fa.encode_column(arr, with_text=True)
        protos = python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), vt)
        assert values == [p.SerializeToString() for p in protos]
        assert texts == [extract_text_and_num(p, False)[0] for p in protos]
        framed, _ = fa.encode_column(arr, with_text=False, frame=b"$4\r\nabcd\r\n")
        assert framed == [b"$4\r\nabcd\r\n" + fa.resp_bulk(v) for v in values]


def test_value_of_decodes_feasts_protos():
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    protos = python_values_to_proto_values(np.array([3, None], dtype=object), ValueType.INT64)
    assert [fa.value_of(p) for p in protos] == [3, None]


# --- timestamps ----------------------------------------------------------------------------------------


def test_redis_timestamp_bytes_are_fixed():
    from google.protobuf.timestamp_pb2 import Timestamp

    assert fa.proto_timestamp(DAY) == b"\x08\x80\xb5\x84\xaf\x06"
    t = Timestamp()
    t.ParseFromString(fa.proto_timestamp(DAY))
    assert t.seconds == int(DAY.timestamp())


def test_sqlite_timestamp_is_what_feasts_adapter_stores():
    import feast.infra.online_stores.sqlite as feast_sqlite
    from feast.utils import to_naive_utc

    adapt = sqlite3.adapters[(dt.datetime, sqlite3.PrepareProtocol)]
    assert adapt is feast_sqlite.adapt_datetime_epoch
    for ts in (DAY, dt.datetime(2024, 3, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=5))), DAY.replace(tzinfo=None)):
        assert fa.sqlite_epoch(ts) == adapt(to_naive_utc(ts))
        # and Feast's read converter gives the naive UTC time back
        assert feast_sqlite.convert_timestamp(str(fa.sqlite_epoch(ts)).encode()) == to_naive_utc(ts)


def test_feast_duckdb_offline_store_reads_sources_through_ibis_default_backend() -> None:
    """``enable_offline_object_storage`` prepares ibis's default DuckDB connection: that only helps
    while Feast's DuckDB store reads FileSources with ``ibis.read_parquet`` (that connection)."""
    import inspect

    from feast.infra.offline_stores import duckdb as feast_duckdb

    source = inspect.getsource(feast_duckdb._read_data_source)
    assert "ibis.read_parquet(" in source
