"""The Redis online store (production): Feast's hash layout, read and bulk-loaded here.

Layout (Feast's): one hash per entity, key = serialized entity key + project, holding every view:
fields ``mmh3("<view>:<feature>")`` → serialized ``ValueProto`` and ``_ts:<view>`` → a serialized
``google.protobuf.Timestamp``.

Reads: Feast reads that hash view by view (a round trip each); here one HMGET per user fetches
every view of the service, with field names from Feast's key scheme and replies decoded by Feast's
own decoder, so only the number of round trips changes. The API's read uses redis-py's asyncio
client (the event loop serves other requests while Redis answers or hangs until the timeout).
Redis Cluster/Sentinel fall back to Feast's own clients, read in a worker thread.

Writes: the RESP protocol is built directly (redis-py spends most of its time packing
arguments): each column is serialized *with its framing* in a vectorized way, each HSET is one
``bytes.join``, and commands go out in large pipelined writes on one connection, replies counted
and checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from churn.errors import OnlineStoreUnavailable
from churn.schema import TIMESTAMP_FIELD
from feature_repo.feast_adapter import (
    FeastRedis,
    encode_column,
    entity_key_protos,
    parse_redis_connection,
    proto_timestamp,
    redis_feature_field,
    redis_key,
    redis_ts_field,
    redis_type,
    redis_view_name,
    resp_bulk,
)
from feature_repo.online import OnlineResult, OnlineStore, ViewRows, python_timestamps

if TYPE_CHECKING:
    import socket

    from feast import FeatureView

_ERROR_REPLY = re.compile(rb"(?:^|\n)-([^\r]*)")
"""An error reply among one-line replies: a line that starts with ``-`` (a negative integer starts with ``:``)."""

#: One view's slice of the single HMGET: (view name, requested names, first field, end field).
ReadPlan = list[tuple[str, list[str], int, int]]


def reconnect_once(retry_cls: Any) -> Any:
    """redis-py's retry policy for reads: one immediate retry on a broken connection.

    A pooled connection can be dead (reset by a Redis that was frozen or restarted): one retry on
    a fresh connection serves the request. Timeouts are never retried and there is no backoff
    (redis-py's default retries with backoff for seconds): a hung or dead Redis must fail within
    the timeout, and a dead one refuses the reconnect at once.
    """
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return retry_cls(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class RedisOnlineStore(OnlineStore):
    name = "redis"
    #: commands per pipelined socket write during a bulk load
    pipeline_commands = 5_000

    def __init__(self, settings: Any, store: Any = None) -> None:
        super().__init__(settings, store)
        self.nodes, self._conn_kwargs = parse_redis_connection(self.config.online_store.connection_string)
        self.state_key = f"churn:{self.project}:materialized"
        self._feast: FeastRedis | None = None
        self._fields: list[str | bytes] = []
        self._plan: ReadPlan = []
        self._aclient: tuple[Any, Any] | None = None  # (event loop, redis.asyncio client)
        self._wclient: Any = None
        self._rclient: Any = None

    @property
    def _plain(self) -> bool:
        """A single Redis server (not Cluster/Sentinel): our own clients and the asyncio path apply."""
        return redis_type(self.config) == "redis"

    def _client_kwargs(self, retry_cls: Any) -> dict[str, Any]:
        return {
            **self._conn_kwargs,
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            "retry": reconnect_once(retry_cls),
        }

    # --- reads ------------------------------------------------------------------------------------

    def _open_reads(self) -> None:
        import redis
        from redis.retry import Retry

        if self._plain:
            node = self.nodes[0]
            self._rclient = redis.Redis(host=node["host"], port=int(node["port"]), **self._client_kwargs(Retry))
        # Cluster/Sentinel: Feast builds its client; the connection string carries the timeouts.
        self._feast = FeastRedis(self.config, self._rclient)
        self._fields, self._plan = self._plan_read()

    def _plan_read(self) -> tuple[list[str | bytes], ReadPlan]:
        """The fields of one HMGET covering every view of the service, planned once."""
        assert self._feast is not None
        fields: list[str | bytes] = []
        plan: ReadPlan = []
        for fv, names in self.views:
            view, requested, hset_keys = self._feast.hash_fields(fv, names)
            plan.append((view, requested, len(fields), len(fields) + len(hset_keys)))
            fields += hset_keys
        return fields, plan

    def _decode(self, replies: list[list[bytes | None]]) -> list[ViewRows]:
        assert self._feast is not None
        decode = self._feast.decode
        return [[decode(reply[a:b], view, requested) for reply in replies] for view, requested, a, b in self._plan]

    def _read_views(self, user_ids: list[str]) -> list[ViewRows]:
        assert self._feast is not None
        redis_keys = self._feast.keys(entity_key_protos(user_ids))
        return self._decode(self._feast.read_hash_fields([(k, self._fields) for k in redis_keys]))

    async def read_async(self, user_ids: list[str]) -> OnlineResult:
        """The same HMGET, key scheme and decoder as :meth:`read`, awaited on the event loop."""
        self.connect()
        if not self._plain:
            return await asyncio.to_thread(self.read, user_ids)
        assert self._feast is not None
        t0 = time.perf_counter()
        try:
            client = self._async_client()
            redis_keys = self._feast.keys(entity_key_protos(user_ids))
            if len(redis_keys) == 1:  # the common case: no pipeline bookkeeping
                replies = [await client.hmget(redis_keys[0], self._fields)]
            else:
                async with client.pipeline(transaction=False) as pipe:
                    for k in redis_keys:
                        pipe.hmget(k, self._fields)
                    replies = await pipe.execute()
            per_view = self._decode(replies)
        except Exception as exc:
            raise self._unavailable(exc) from exc
        return self._result(user_ids, per_view, t0)

    def _async_client(self) -> Any:
        """One asyncio Redis client per event loop (its connections belong to the loop)."""
        loop = asyncio.get_running_loop()
        current = self._aclient
        if current is not None and current[0] is loop:
            return current[1]
        from redis import asyncio as redis_asyncio
        from redis.asyncio.retry import Retry

        node = self.nodes[0]
        client = redis_asyncio.Redis(host=node["host"], port=int(node["port"]), **self._client_kwargs(Retry))
        self._aclient = (loop, client)
        return client

    async def aclose(self) -> None:
        current, self._aclient = self._aclient, None
        if current is not None:
            await current[1].aclose()

    def _ping(self) -> bool:
        assert self._feast is not None
        return bool(self._feast.client().ping())

    # --- writes -------------------------------------------------------------------------------------

    def open_writes(self) -> None:
        if self._wclient is not None:
            return
        import redis

        node = self.nodes[0]
        kwargs = dict(self._conn_kwargs)
        # Bulk pipelines legitimately take longer than one online read: a generous, finite timeout.
        kwargs["socket_timeout"] = max(30.0, self.timeout_s)
        kwargs["socket_connect_timeout"] = max(5.0, self.timeout_s)
        client = redis.Redis(host=node["host"], port=int(node["port"]), **kwargs)
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            raise OnlineStoreUnavailable(
                f"Redis online store unreachable ({node['host']}:{node['port']}): {exc}"
            ) from exc
        self._wclient = client

    @property
    def wclient(self) -> Any:
        if self._wclient is None:
            self.open_writes()
        return self._wclient

    # Redis has no multi-view transaction to open or roll back: each pipelined HSET batch is
    # complete on its own (a user's hash holds every view), so these hooks only connect.
    def begin(self, fv: FeatureView, full: bool) -> None:
        self.open_writes()

    def finish(self, fv: FeatureView) -> None:
        return None

    def abort(self, fv: FeatureView) -> None:
        return None

    def prepare(self, fv: FeatureView, batch: pa.RecordBatch, features: list[str]) -> list[bytes]:
        """The commands of Feast's ``online_write_batch`` (one HSET per entity and view), as RESP."""
        keys = self.entity_keys(batch)
        view = redis_view_name(fv, self.config)
        ts_field = resp_bulk(redis_ts_field(view))
        ts_framed = [ts_field + resp_bulk(b) for b in _proto_timestamps(batch.column(TIMESTAMP_FIELD))]
        columns = [
            encode_column(batch.column(name), with_text=False, frame=resp_bulk(redis_feature_field(view, name)))[0]
            for name in features
        ]
        head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(features) + 1))
        ttl = self.config.online_store.key_ttl_seconds
        commands = []
        for key, ts, *cols in zip(keys, ts_framed, *columns, strict=True):
            full_key = resp_bulk(redis_key(key, self.project))
            commands.append(b"".join((head, full_key, ts, *cols)))
            if ttl:
                commands.append(b"*3\r\n$6\r\nEXPIRE\r\n" + full_key + resp_bulk(str(ttl).encode()))
        return commands

    def send(self, prepared: list[bytes]) -> None:
        """Pipelined writes on one connection; every reply read (an error reply raises).

        The replies are read off the connection's socket in bulk: parsing them one by one through
        redis-py cost more CPU than building the commands, on the cores Redis needs.
        """
        pool = self.wclient.connection_pool
        conn = pool.get_connection()
        try:
            step = self.pipeline_commands
            for lo in range(0, len(prepared), step):
                chunk = prepared[lo : lo + step]
                conn.send_packed_command([b"".join(chunk)])
                read_line_replies(conn._sock, len(chunk))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def read_state(self, target: str) -> dt.date | None:
        raw = self.wclient.hget(self.state_key, target)
        return dt.date.fromisoformat(raw.decode()) if raw else None

    def write_state(self, target: str, end: dt.date) -> None:
        self.wclient.hset(self.state_key, target, end.isoformat())

    def close(self) -> None:
        for client in (self._wclient, self._rclient):
            if client is not None:
                client.close()
        self._wclient = self._rclient = self._feast = None
        self._connected = False


def read_line_replies(sock: socket.socket, n: int) -> None:
    """Read ``n`` replies that are one line each (HSET's and EXPIRE's integers, or an error).

    Every reply is read before an error is raised, so the connection stays in step; more lines
    than commands sent means it was not, and raises too.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    buf = bytearray()
    seen = 0
    while seen < n:
        try:
            data = sock.recv(1 << 16)
        except TimeoutError as exc:  # redis-py's own errors, as its reply reader raised them
            raise RedisTimeoutError("Timeout reading from Redis during a bulk write") from exc
        except OSError as exc:
            raise RedisConnectionError(f"Error reading from Redis during a bulk write: {exc}") from exc
        if not data:
            raise RedisConnectionError("Redis closed the connection during a bulk write")
        seen += data.count(b"\n")
        buf += data
    if seen != n:
        raise RedisConnectionError(f"expected {n} replies from Redis, read {seen}: the connection is out of step")
    error = _ERROR_REPLY.search(buf)
    if error:
        raise ResponseError(error.group(1).decode(errors="replace"))


def _proto_timestamps(arr: pa.Array) -> list[bytes]:
    """Feast's ``_ts`` value per row, serialized once per distinct timestamp."""
    cache: dict[Any, bytes] = {}
    out = []
    for ts in python_timestamps(arr):
        b = cache.get(ts)
        if b is None:
            b = cache[ts] = proto_timestamp(ts)
        out.append(b)
    return out
