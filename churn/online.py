"""Online feature reads for the API: fast, bounded by a timeout, honest about freshness.

``OnlineFeatureReader(settings).read(user_ids)`` returns, per user, the feature service's
features *by name*, whether the user is known at all (any row in the online store), and the
age of the features in seconds (now - oldest event timestamp of the user's view rows).
Feast's TTL does not expire online values on read, so freshness is reported here and the
caller decides what is too old.

The read path goes below ``FeatureStore.get_online_features`` (registry lookups, response
protos, pandas-free but heavy): entity keys are serialized once per request with Feast's own
``serialize_entity_key`` and each view is read with the online store's ``online_read``, so the
storage format stays Feast's. Every online-store call has a timeout (SQLite: busy timeout;
Redis: socket and connect timeouts); failures raise :class:`OnlineStoreUnavailable`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from churn.errors import OnlineStoreUnavailable
from churn.schema import ENTITY_KEY
from churn.settings import Settings


@dataclass
class UserFeatures:
    user_id: str
    known: bool
    """False: no row at all for this user in any view (unknown user)."""
    features: dict[str, Any] = field(default_factory=dict)
    """Feature name → value (None when missing); every feature of the service is present."""
    missing: list[str] = field(default_factory=list)
    """Features without a value (row absent for a view, or null value) for a known user."""
    feature_age_seconds: float | None = None
    """Now minus the oldest event timestamp among the user's view rows (None if unknown)."""
    event_timestamps: dict[str, dt.datetime] = field(default_factory=dict)


@dataclass
class OnlineResult:
    users: list[UserFeatures]
    seconds: float

    def __iter__(self):
        return iter(self.users)

    def __len__(self) -> int:
        return len(self.users)

    def by_user(self) -> dict[str, UserFeatures]:
        return {u.user_id: u for u in self.users}


def _reconnect_once(retry_cls: Any) -> Any:
    """redis-py's retry policy for the online store: one immediate retry on a broken connection.

    A pooled connection can be dead (reset by a Redis that was frozen or restarted): one retry on
    a fresh connection serves the request. Timeouts are never retried and there is no backoff
    (redis-py 7's default retries with backoff for ~5 s): a hung or dead Redis must fail within
    the timeout, and a dead one refuses the reconnect at once.
    """
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return retry_cls(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _value_of(proto) -> Any:
    kind = proto.WhichOneof("val")
    return None if kind is None else getattr(proto, kind)


class OnlineFeatureReader:
    """Thread-safe reader of the feature service ``settings.feature_service``."""

    def __init__(self, settings: Settings, store=None):
        from churn.feature_store import get_store

        self.settings = settings
        self.timeout_s = max(settings.online_timeout_ms, 1) / 1000.0
        self.store = store or get_store(settings)
        self.config = self.store.config
        self._lock = threading.Lock()
        try:
            service = self.store.get_feature_service(settings.feature_service)
            views = {fv.name: fv for fv in self.store.list_feature_views()}
        except Exception as exc:
            raise OnlineStoreUnavailable(f"feature registry not readable: {exc}") from exc
        self.views = []
        self.feature_names: list[str] = []
        for proj in service.feature_view_projections:
            fv = views[proj.name]
            names = [f.name for f in proj.features]
            self.views.append((fv, names))
            self.feature_names += names
        # A private online-store instance: our timeouts never leak into a shared FeatureStore.
        self.online_store = type(self.store._get_provider().online_store)()
        self._kind = self.config.online_store.type
        self._configure_timeouts()
        self._redis_fields = self._plan_redis_read() if self._kind == "redis" else None
        self._aclient: tuple[Any, Any] | None = None  # (event loop, redis.asyncio client)

    def _plan_redis_read(self) -> tuple[list[str | bytes], list[tuple[str, list[str], int, int]]]:
        """One HMGET per user for every view of the service, planned once.

        Feast keeps all views of an entity in one Redis hash but reads it view by view (a round
        trip each). The field names come from Feast's own key scheme and the replies go back
        through Feast's own decoder, so only the number of round trips changes.
        """
        from feast.infra.online_stores.redis import _versioned_fv_name

        fields: list[str | bytes] = []
        plan = []
        for fv, names in self.views:
            fv_name = _versioned_fv_name(fv, self.config)
            requested, hset_keys = self.online_store._generate_hset_keys_for_features(
                fv, list(names), fv_name_override=fv_name
            )
            plan.append((fv_name, requested, len(fields), len(fields) + len(hset_keys)))
            fields += hset_keys
        return fields, plan

    def _redis_read(self, keys: list) -> list[list]:
        fields, plan = self._redis_fields
        redis_keys = self.online_store._generate_redis_keys_for_entities(self.config, keys)
        replies = self.online_store._read_hash_fields(self.config, [(k, fields) for k in redis_keys])
        decode = self.online_store._get_features_for_entity
        return [[decode(reply[a:b], fv_name, requested) for reply in replies] for fv_name, requested, a, b in plan]

    # --- connections with timeouts ---------------------------------------------------------

    def _configure_timeouts(self) -> None:
        if self._kind == "sqlite":
            from feast.infra.online_stores.sqlite import SqliteOnlineStore

            path = SqliteOnlineStore._get_db_path(self.config)
            conn = sqlite3.connect(
                path,
                timeout=self.timeout_s,
                detect_types=sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES,
                check_same_thread=False,
            )
            # Bound every statement too, not just lock waits.
            deadline = {"t": 0.0}
            conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline["t"] else 0, 10_000)
            self._deadline = deadline
            self.online_store._conn = conn
        elif self._kind == "redis":
            # The connection string carries socket_timeout / socket_connect_timeout
            # (churn.feature_store.redis_connection_string).
            import redis
            from redis.retry import Retry

            nodes, kwargs = self.online_store._parse_connection_string(
                self.config.online_store.connection_string
            )
            kwargs.update(
                socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s, retry=_reconnect_once(Retry)
            )
            if self.config.online_store.redis_type == "redis":
                self.online_store._client = redis.Redis(
                    host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs
                )
            self._deadline = None
        else:  # pragma: no cover
            self._deadline = None

    def ping(self) -> bool:
        """Readiness: the online store answers within the timeout (raises otherwise)."""
        try:
            if self._kind == "redis":
                client = self.online_store._get_client(self.config.online_store)
                return bool(client.ping())
            with self._lock:
                self._arm()
                self.online_store._conn.execute("SELECT 1").fetchone()
            return True
        except Exception as exc:
            raise OnlineStoreUnavailable(f"{self._kind} online store unavailable: {exc}") from exc

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline["t"] = time.monotonic() + self.timeout_s

    # --- reads --------------------------------------------------------------------------------

    def _entity_keys(self, user_ids: list[str]) -> list:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return [EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=str(u))]) for u in user_ids]

    def read(self, user_ids: list[str]) -> OnlineResult:
        """Blocking read (batch jobs, tests, SQLite in a worker thread)."""
        t0 = time.perf_counter()
        keys = self._entity_keys(user_ids)
        per_view = []
        try:
            if self._kind == "sqlite":
                with self._lock:  # one shared connection; sqlite3 calls are short
                    for fv, names in self.views:
                        self._arm()
                        per_view.append(self.online_store.online_read(self.config, fv, keys, list(names)))
            else:
                per_view = self._redis_read(keys)
        except Exception as exc:
            raise OnlineStoreUnavailable(
                f"{self._kind} online read failed: {type(exc).__name__}: {exc}"
            ) from exc
        return self._result(user_ids, per_view, t0)

    async def read_async(self, user_ids: list[str]) -> OnlineResult:
        """The API's read: Redis through redis-py's asyncio client, so while Redis answers (or
        hangs until the timeout) the event loop serves other requests instead of blocking; the
        same HMGET, Feast key scheme and decoder as :meth:`read`. SQLite has no asyncio driver
        (nor does this path speak Redis Cluster/Sentinel): those reads run in a worker thread."""
        if self._kind != "redis" or self.config.online_store.redis_type != "redis":
            import asyncio

            return await asyncio.to_thread(self.read, user_ids)
        t0 = time.perf_counter()
        keys = self._entity_keys(user_ids)
        try:
            client = self._async_client()
            fields, plan = self._redis_fields
            redis_keys = self.online_store._generate_redis_keys_for_entities(self.config, keys)
            if len(redis_keys) == 1:  # the common case: no pipeline bookkeeping
                replies = [await client.hmget(redis_keys[0], fields)]
            else:
                async with client.pipeline(transaction=False) as pipe:
                    for k in redis_keys:
                        pipe.hmget(k, fields)
                    replies = await pipe.execute()
            decode = self.online_store._get_features_for_entity
            per_view = [
                [decode(reply[a:b], fv_name, requested) for reply in replies] for fv_name, requested, a, b in plan
            ]
        except Exception as exc:
            raise OnlineStoreUnavailable(
                f"{self._kind} online read failed: {type(exc).__name__}: {exc}"
            ) from exc
        return self._result(user_ids, per_view, t0)

    def _async_client(self) -> Any:
        """One asyncio Redis client per event loop (its connections belong to the loop)."""
        import asyncio

        loop = asyncio.get_running_loop()
        current = self._aclient
        if current is not None and current[0] is loop:
            return current[1]
        from redis import asyncio as redis_asyncio
        from redis.asyncio.retry import Retry

        nodes, kwargs = self.online_store._parse_connection_string(self.config.online_store.connection_string)
        kwargs.update(
            socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s, retry=_reconnect_once(Retry)
        )
        client = redis_asyncio.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
        self._aclient = (loop, client)
        return client

    async def aclose(self) -> None:
        """Close the asyncio client (call from the loop that used it)."""
        current, self._aclient = self._aclient, None
        if current is not None:
            await current[1].aclose()

    def _result(self, user_ids: list[str], per_view: list, t0: float) -> OnlineResult:
        now = dt.datetime.now(dt.UTC)
        users = []
        for i, uid in enumerate(user_ids):
            feats: dict[str, Any] = {}
            missing: list[str] = []
            stamps: dict[str, dt.datetime] = {}
            for (fv, names), rows in zip(self.views, per_view, strict=True):
                ts, values = rows[i]
                # Feast's Redis read returns epoch 0 and empty values for an absent hash.
                if ts is not None and values is not None and ts.timestamp() > 0:
                    stamps[fv.name] = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
                for n in names:
                    v = None if values is None or n not in values else _value_of(values[n])
                    feats[n] = v
                    if v is None:
                        missing.append(n)
            known = bool(stamps)
            age = (now - min(stamps.values())).total_seconds() if stamps else None
            users.append(
                UserFeatures(
                    user_id=uid,
                    known=known,
                    features=feats,
                    missing=missing if known else list(self.feature_names),
                    feature_age_seconds=age,
                    event_timestamps=stamps,
                )
            )
        return OnlineResult(users=users, seconds=time.perf_counter() - t0)
