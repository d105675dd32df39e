"""Every use of Feast *internals*, in one module, so a Feast upgrade breaks in one known place.

The online stores (:mod:`feature_repo.online`) read and write Feast's own storage format faster
than Feast's public API allows (one HMGET per user instead of one per view, bulk loads instead of
a ``ValueProto`` object per value). That needs things Feast does not promise to keep stable:
private helpers (``_mmh3``, ``_versioned_fv_name``, the Redis store's ``_generate_*`` /
``_read_hash_fields`` / ``_get_features_for_entity`` / ``_get_client`` / ``_parse_connection_string``,
the SQLite store's ``_get_db_path`` and ``_conn``), the entity-key serializer, the protobuf
``ValueProto`` / ``EntityKey`` messages and their wire format, and the way Feast's SQLite store
stores timestamps. They are wrapped here and nowhere else; ``tests/unit/test_feast_adapter.py``
pins their signatures and the exact bytes they produce, and fails loudly if an upgrade changes them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from churn.errors import FeatureStoreError
from churn.schema import ENTITY_KEY

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, RepoConfig

#: ``ValueProto.double_val`` is field 5, wire type 1 (fixed64): tag byte ``(5 << 3) | 1``.
DOUBLE_TAG = 0x29
#: A serialized empty ``ValueProto``: Feast's null.
EMPTY_VALUE = b""


# --- entity keys ------------------------------------------------------------------------------


def entity_key_protos(user_ids: Sequence[str]) -> list[Any]:
    """Feast ``EntityKey`` messages for ``user_id`` values (the read path's request keys)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=str(u))]) for u in user_ids]


def serialize_user_key(user_id: str, version: int = 3) -> bytes:
    """Feast's own serialized entity key for one user (slow; the reference for :class:`EntityKeyEncoder`)."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    (proto,) = entity_key_protos([user_id])
    return serialize_entity_key(proto, entity_key_serialization_version=version)


class EntityKeyEncoder:
    """Feast's serialized ``user_id`` entity keys, built by concatenation instead of protobuf.

    For one string join key the serialization is a constant prefix, the UTF-8 length (uint32 LE)
    and the bytes; the prefix is taken from Feast itself and the first key of every batch is
    checked against ``serialize_entity_key``, so a format change refuses to write instead of
    silently writing keys no reader finds.
    """

    _pack = struct.Struct("<I").pack

    def __init__(self, version: int = 3) -> None:
        self.version = version
        self.prefix = serialize_user_key("", version)[:-4]  # drop the uint32 length (0) of ""

    def encode(self, user_ids: Sequence[str]) -> list[bytes]:
        pack, prefix = self._pack, self.prefix
        out = []
        for uid in user_ids:
            b = uid.encode("utf8")
            out.append(prefix + pack(len(b)) + b)
        if out and out[0] != serialize_user_key(user_ids[0], self.version):
            raise FeatureStoreError("entity key serialization differs from Feast's; refusing to write")
        return out


def redis_key(entity_key: bytes, project: str) -> bytes:
    """The Redis hash holding every view of one entity: Feast's ``_redis_key`` (key + project)."""
    return entity_key + project.encode("utf8")


# --- values -------------------------------------------------------------------------------------


def value_of(proto: Any) -> Any:
    """The Python value of a ``ValueProto`` (``None`` for Feast's null, the empty message)."""
    kind = proto.WhichOneof("val")
    return None if kind is None else getattr(proto, kind)


def value_type_of(arrow_type: pa.DataType) -> Any:
    """The Feast ``ValueType`` a feature table column is stored as."""
    from feast.value_type import ValueType

    if pa.types.is_floating(arrow_type):
        return ValueType.DOUBLE
    if pa.types.is_integer(arrow_type):
        return ValueType.INT64
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return ValueType.STRING
    raise FeatureStoreError(f"unsupported feature type {arrow_type}")


def text_of(proto: Any) -> str | None:
    """SQLite's ``value_text`` column for a value, computed by Feast's own helper."""
    from feast.infra.online_stores.helpers import extract_text_and_num

    return extract_text_and_num(proto, False)[0]


def resp_bulk(b: bytes) -> bytes:
    """A RESP bulk string: the framing :func:`encode_column` can wrap each value in for Redis."""
    return b"$%d\r\n%s\r\n" % (len(b), b)


def encode_column(
    arr: pa.Array | pa.ChunkedArray, with_text: bool, frame: bytes | None = None
) -> tuple[list[bytes], list | None]:
    """Serialized ``ValueProto`` per value (and SQLite's ``value_text``), exactly as Feast does.

    Doubles are packed with numpy (tag + little-endian float64) instead of one protobuf object
    each; ints and strings serialize each *distinct* value once with Feast's
    ``python_values_to_proto_values`` and gather. Nulls/NaN become the empty message, as in Feast.
    With ``frame`` (a RESP bulk string, the Redis hash field), each value comes back as
    ``frame + $<len>\\r\\n<value>\\r\\n``, ready to be joined into an HSET command.
    """
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    vt = value_type_of(arr.type)
    if vt == ValueType.DOUBLE:
        return _encode_doubles(arr, with_text, frame)
    enc = arr.dictionary_encode()
    uniques = enc.dictionary.to_numpy(zero_copy_only=False)
    protos = python_values_to_proto_values(uniques, vt) if len(uniques) else []
    lut = np.empty(len(protos) + 1, dtype=object)
    lut[: len(protos)] = [p.SerializeToString() for p in protos]
    lut[len(protos)] = EMPTY_VALUE
    if frame is not None:
        lut[:] = [frame + resp_bulk(b) for b in lut.tolist()]
    idx = enc.indices.fill_null(len(protos)).to_numpy(zero_copy_only=False)
    values = lut[idx].tolist()
    texts = None
    if with_text:
        tlut = np.empty(len(protos) + 1, dtype=object)
        tlut[: len(protos)] = [text_of(p) for p in protos]
        tlut[len(protos)] = None
        texts = tlut[idx].tolist()
    return values, texts


def _encode_doubles(arr: pa.Array, with_text: bool, frame: bytes | None) -> tuple[list[bytes], list | None]:
    """``double_val`` messages as one numpy record array (optionally RESP-framed), nulls patched."""
    x = arr.to_numpy(zero_copy_only=False).astype("<f8", copy=False)
    pre = b"" if frame is None else frame + b"$9\r\n"
    post = b"" if frame is None else b"\r\n"
    rec = np.empty(len(x), dtype=np.dtype([("p", f"V{len(pre)}"), ("t", "u1"), ("v", "<f8"), ("e", f"V{len(post)}")]))
    if pre:
        rec["p"] = np.void(pre)
        rec["e"] = np.void(post)
    rec["t"] = DOUBLE_TAG
    rec["v"] = x
    values = rec.view(f"V{rec.dtype.itemsize}").tolist()
    texts = list(map(str, x.tolist())) if with_text else None  # Feast: str(double_val)
    empty = EMPTY_VALUE if frame is None else frame + resp_bulk(EMPTY_VALUE)
    for i in np.flatnonzero(np.isnan(x)).tolist():
        values[i] = empty
        if texts is not None:
            texts[i] = None
    return values, texts


# --- timestamps -----------------------------------------------------------------------------------


def sqlite_epoch(ts: dt.datetime) -> int:
    """What Feast's SQLite store writes for an event/created timestamp.

    Feast converts to naive UTC (``to_naive_utc``) and its registered sqlite3 adapter stores
    ``int(naive.timestamp())`` (a local-time interpretation), converting back with
    ``datetime.fromtimestamp``: symmetric, so the value round-trips on any host time zone.
    """
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
    return int(ts.timestamp())


def proto_timestamp(ts: dt.datetime) -> bytes:
    """The ``_ts:<view>`` value of Feast's Redis hash: a serialized ``google.protobuf.Timestamp``."""
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(ts)
    return t.SerializeToString()


# --- SQLite store -----------------------------------------------------------------------------------


def sqlite_db_path(config: RepoConfig) -> str:
    """The online store's database file as Feast resolves it (relative to the repo path)."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    return SqliteOnlineStore._get_db_path(config)


def online_table(project: str, fv: FeatureView, config: RepoConfig) -> str:
    """The SQLite table of a view (``<project>_<view>``, versioned if the registry says so)."""
    from feast.infra.online_stores.helpers import compute_table_id

    return compute_table_id(project, fv, config.registry.enable_online_feature_view_versioning)


def sqlite_reader(conn: sqlite3.Connection) -> Any:
    """Feast's SQLite store on *our* connection (timeouts, progress deadline), for ``online_read``.

    Importing Feast's module also registers the sqlite3 converters its reads rely on.
    """
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    store = SqliteOnlineStore()
    store._conn = conn
    return store


# --- Redis store ------------------------------------------------------------------------------------


def parse_redis_connection(connection_string: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Feast's ``host:port,db=N,...`` string as (startup nodes, redis-py keyword arguments)."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    return RedisOnlineStore._parse_connection_string(connection_string)


def redis_view_name(fv: FeatureView, config: RepoConfig) -> str:
    """A view's name inside Feast's Redis hashes (versioned if the registry says so)."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    return compute_versioned_name(fv, config.registry.enable_online_feature_view_versioning)


def redis_feature_field(view: str, feature: str) -> bytes:
    """The hash field of one feature: Feast's ``mmh3("<view>:<feature>")`` (4 bytes)."""
    from feast.infra.online_stores.helpers import _mmh3

    return _mmh3(f"{view}:{feature}")


def redis_ts_field(view: str) -> bytes:
    """The hash field holding a view's event timestamp."""
    return f"_ts:{view}".encode()


def redis_type(config: RepoConfig) -> str:
    """``redis`` (one server), ``redis_cluster`` or ``redis_sentinel``."""
    kind = config.online_store.redis_type
    return str(getattr(kind, "value", kind))


class FeastRedis:
    """Feast's Redis online store used for its key scheme, decoder and (Cluster/Sentinel) clients.

    ``client`` replaces the client Feast would build, so our timeouts and retry policy apply; for
    Cluster/Sentinel (``client=None``) Feast builds its own from the connection string.
    """

    def __init__(self, config: RepoConfig, client: Any = None) -> None:
        from feast.infra.online_stores.redis import RedisOnlineStore

        self.config = config
        self._store = RedisOnlineStore()
        if client is not None:
            self._store._client = client

    def client(self) -> Any:
        return self._store._get_client(self.config.online_store)

    def hash_fields(self, fv: FeatureView, names: list[str]) -> tuple[str, list[str], list[str | bytes]]:
        """(view name, requested names incl. ``_ts:<view>``, hash fields) as Feast's read plans them."""
        from feast.infra.online_stores.redis import _versioned_fv_name

        view = _versioned_fv_name(fv, self.config)
        requested, fields = self._store._generate_hset_keys_for_features(fv, list(names), fv_name_override=view)
        return view, requested, fields

    def keys(self, entity_keys: list[Any]) -> list[bytes]:
        return self._store._generate_redis_keys_for_entities(self.config, entity_keys)

    def read_hash_fields(self, commands: list[tuple[bytes, list[str | bytes]]]) -> list[list[bytes | None]]:
        """One HMGET per (key, fields), pipelined by Feast's client (redis-py or GLIDE)."""
        return self._store._read_hash_fields(self.config, commands)

    def decode(self, reply: Sequence[bytes | None], view: str, requested: list[str]) -> tuple[Any, Any]:
        """Feast's decoder of one view's slice of an HMGET reply: (timestamp, {name: ValueProto})."""
        return self._store._get_features_for_entity(reply, view, requested)


# --- registry -------------------------------------------------------------------------------------


def record_materialization(store: FeatureStore, views: list[FeatureView], start: dt.datetime, end: dt.datetime) -> None:
    """Record intervals + AVAILABLE_ONLINE in Feast's registry, as its own materialize does."""
    for fv in views:
        store.registry.apply_materialization(fv, store.project, start, end, commit=False)
    store.registry.commit()


def enable_offline_object_storage(root: Any) -> None:
    """S3 access for Feast's DuckDB offline store, which reads every FileSource through ibis's
    default DuckDB connection (``feast.infra.offline_stores.duckdb``: ``ibis.read_parquet``).

    ibis insists on httpfs for ``s3://`` paths and would download it; installed from its wheel
    first (``churn.storage``), ibis finds it installed and only loads it. Idempotent.
    """
    import ibis

    from churn.storage import enable_object_storage

    enable_object_storage(ibis.get_backend().con, root)
