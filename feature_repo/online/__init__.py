"""Online stores: one module per backend, its reads and writes together, like Feast's online stores.

:class:`OnlineStore` is the interface both backends (:mod:`.sqlite`, :mod:`.redis`) implement, in
Feast's own storage format so Feast's tools read what we write:

* reads (the API): ``read(user_ids)`` / ``await read_async(user_ids)`` return, per user, the
  feature service's features *by name*, whether the user is known at all, and the age of the
  features (Feast's TTL does not expire online values on read, so freshness is reported and the
  caller decides). Every call is bounded by ``settings.online_timeout_ms``; failures raise
  :class:`~churn.errors.OnlineStoreUnavailable`.
* writes (materialize): ``begin`` / ``write_batch`` (= ``send(prepare(...))``, split so a
  background thread can prepare the next chunk while one is sent) / ``finish`` / ``abort``, plus
  the last materialized date kept *inside* the store, so a wiped store is reloaded in full.

:func:`online_store` picks the backend from ``settings.online_store``. Construction is cheap:
the read side connects on first use (or :meth:`OnlineStore.connect`), the write side on
:meth:`OnlineStore.open_writes`, so the API never opens a bulk writer and a job never plans reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from churn.errors import FeatureStoreError, OnlineStoreUnavailable
from churn.schema import ENTITY_KEY
from feature_repo.feast_adapter import EntityKeyEncoder, value_of

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

    from churn.settings import Settings

__all__ = ["OnlineResult", "OnlineStore", "OnlineStoreUnavailable", "UserFeatures", "online_store"]

#: One view's rows for the requested users: (event timestamp, {feature: ValueProto}) per user.
ViewRows = list[tuple[Any, Any]]


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

    def __iter__(self) -> Iterator[UserFeatures]:
        return iter(self.users)

    def __len__(self) -> int:
        return len(self.users)

    def by_user(self) -> dict[str, UserFeatures]:
        return {u.user_id: u for u in self.users}


class OnlineStore(ABC):
    """One online-store backend of the feature service ``settings.feature_service``; thread-safe reads."""

    name: ClassVar[str]

    def __init__(self, settings: Settings, store: FeatureStore | None = None) -> None:
        from feature_repo.store import get_store

        self.settings = settings
        self.timeout_s = max(settings.online_timeout_ms, 1) / 1000.0
        self.store = store or get_store(settings)
        self.config = self.store.config
        self.project: str = self.store.project
        self.keys = EntityKeyEncoder(self.config.entity_key_serialization_version)
        self.views: list[tuple[FeatureView, list[str]]] = []
        self._feature_names: list[str] = []
        self._connected = False

    # --- read side ------------------------------------------------------------------------------

    def connect(self) -> OnlineStore:
        """Plan the feature service's reads and open the timeout-bounded read connection (once)."""
        if not self._connected:
            try:
                service = self.store.get_feature_service(self.settings.feature_service)
                views = {fv.name: fv for fv in self.store.list_feature_views()}
            except Exception as exc:
                raise OnlineStoreUnavailable(f"feature registry not readable: {exc}") from exc
            self.views = [(views[p.name], [f.name for f in p.features]) for p in service.feature_view_projections]
            self._feature_names = [n for _, names in self.views for n in names]
            self._open_reads()
            self._connected = True
        return self

    @property
    def feature_names(self) -> list[str]:
        """Every feature of the service, in service order."""
        self.connect()
        return self._feature_names

    def read(self, user_ids: list[str]) -> OnlineResult:
        """Blocking read (batch jobs, tests, SQLite in a worker thread)."""
        self.connect()
        t0 = time.perf_counter()
        try:
            per_view = self._read_views(user_ids)
        except Exception as exc:
            raise self._unavailable(exc) from exc
        return self._result(user_ids, per_view, t0)

    async def read_async(self, user_ids: list[str]) -> OnlineResult:
        """The API's read; backends without an asyncio driver read in a worker thread."""
        return await asyncio.to_thread(self.read, user_ids)

    def ping(self) -> bool:
        """Readiness: registry readable and the store answers within the timeout (raises otherwise)."""
        self.connect()
        try:
            return self._ping()
        except Exception as exc:
            raise OnlineStoreUnavailable(f"{self.name} online store unavailable: {exc}") from exc

    async def aclose(self) -> None:
        """Release what belongs to the running event loop (call from the loop that read)."""
        return None

    def _unavailable(self, exc: Exception) -> OnlineStoreUnavailable:
        return OnlineStoreUnavailable(f"{self.name} online read failed: {type(exc).__name__}: {exc}")

    @abstractmethod
    def _open_reads(self) -> None: ...

    @abstractmethod
    def _read_views(self, user_ids: list[str]) -> list[ViewRows]: ...

    @abstractmethod
    def _ping(self) -> bool: ...

    def _result(self, user_ids: list[str], per_view: list[ViewRows], t0: float) -> OnlineResult:
        now = dt.datetime.now(dt.UTC)
        users = [self._user(i, uid, per_view, now) for i, uid in enumerate(user_ids)]
        return OnlineResult(users=users, seconds=time.perf_counter() - t0)

    def _user(self, i: int, uid: str, per_view: list[ViewRows], now: dt.datetime) -> UserFeatures:
        feats: dict[str, Any] = {}
        missing: list[str] = []
        stamps: dict[str, dt.datetime] = {}
        for (fv, names), rows in zip(self.views, per_view, strict=True):
            ts, values = rows[i]
            # Feast's Redis read returns epoch 0 and empty values for an absent hash.
            if ts is not None and values is not None and ts.timestamp() > 0:
                stamps[fv.name] = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
            for n in names:
                v = None if values is None or n not in values else value_of(values[n])
                feats[n] = v
                if v is None:
                    missing.append(n)
        return UserFeatures(
            user_id=uid,
            known=bool(stamps),
            features=feats,
            missing=missing if stamps else list(self._feature_names),
            feature_age_seconds=(now - min(stamps.values())).total_seconds() if stamps else None,
            event_timestamps=stamps,
        )

    # --- write side -------------------------------------------------------------------------------

    @abstractmethod
    def open_writes(self) -> None:
        """Open the bulk-load connection; raises if the store is missing or unreachable."""

    @abstractmethod
    def begin(self, fv: FeatureView, full: bool) -> None:
        """Start loading one view (``full``: replace it rather than upsert)."""

    @abstractmethod
    def prepare(self, fv: FeatureView, batch: pa.RecordBatch, features: list[str]) -> Any:
        """Encode a batch for :meth:`send` (pure Python/numpy: safe in a background thread)."""

    @abstractmethod
    def send(self, prepared: Any) -> None:
        """Write what :meth:`prepare` produced."""

    def write_batch(self, fv: FeatureView, batch: pa.RecordBatch, features: list[str]) -> None:
        self.send(self.prepare(fv, batch, features))

    @abstractmethod
    def finish(self, fv: FeatureView) -> None:
        """The view's load is complete: make it visible to readers."""

    @abstractmethod
    def abort(self, fv: FeatureView) -> None:
        """The view's load failed: keep what readers saw before, where the store allows it."""

    @abstractmethod
    def read_state(self, target: str) -> dt.date | None:
        """The last materialized end date recorded for ``target`` (None: never, or a wiped store)."""

    @abstractmethod
    def write_state(self, target: str, end: dt.date) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Close every connection this object opened (read and write side)."""

    def entity_keys(self, batch: pa.RecordBatch) -> list[bytes]:
        """Feast's serialized entity keys of a batch's users."""
        return self.keys.encode(batch.column(ENTITY_KEY).to_pylist())


def python_timestamps(arr: pa.Array | pa.ChunkedArray) -> list[dt.datetime | None]:
    """UTC-aware datetimes per row, converted once per distinct value (a day has few)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_timestamp(arr.type) and arr.type.tz is None:
        arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
    enc = arr.dictionary_encode()
    lut = np.empty(len(enc.dictionary) + 1, dtype=object)
    lut[: len(enc.dictionary)] = enc.dictionary.to_pylist()
    lut[len(enc.dictionary)] = None
    return lut[enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)].tolist()


def online_store(settings: Settings, store: FeatureStore | None = None) -> OnlineStore:
    """The backend ``settings.online_store`` names (``store``: reuse an existing FeatureStore)."""
    if settings.online_store == "sqlite":
        from feature_repo.online.sqlite import SqliteOnlineStore

        return SqliteOnlineStore(settings, store)
    if settings.online_store == "redis":
        from feature_repo.online.redis import RedisOnlineStore

        return RedisOnlineStore(settings, store)
    raise FeatureStoreError(f"unknown online store {settings.online_store!r} (sqlite or redis)")
