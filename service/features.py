"""The API's view of the online store: one read per request, timed, with a circuit breaker.

Wraps the configured :class:`feature_repo.online.OnlineStore` (the same feature service the batch
jobs use). When the store is unreachable the read raises :class:`StoreUnavailable` (→ 503),
``churn_online_read_errors_total`` grows and the gateway marks the store down: ``/ready``
answers 503 and further reads fail fast (no timeout per request stalling the server) except one
trial read per ``RETRY_INTERVAL_S``; a successful read or ping marks it up again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from churn.errors import OnlineStoreUnavailable
from service.logs import log

if TYPE_CHECKING:
    from churn.settings import Settings
    from feature_repo.online import OnlineResult, OnlineStore, UserFeatures
    from service.metrics import ApiMetrics

RETRY_INTERVAL_S = 1.0


class StoreUnavailable(Exception):
    """The online store cannot be reached (→ 503)."""


def _default_reader(settings: Settings) -> OnlineStore:
    """The configured online store, connected: an unreadable registry fails here, like a dead store."""
    from feature_repo.online import online_store
    from feature_repo.store import ensure_registry

    ensure_registry(settings)
    return online_store(settings).connect()


class FeatureGateway:
    def __init__(self, settings: Settings, metrics: ApiMetrics, reader: OnlineStore | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._reader = reader
        self._lock = threading.Lock()
        self.available: bool | None = None  # None: not known yet
        self.last_error: str | None = None
        self._down_since: float | None = None
        self._up_since = 0.0  # monotonic time the store was last seen healthy
        self._next_trial = 0.0
        self.last_read_at: float | None = None
        self.last_feature_age: float | None = None

    @property
    def reader(self) -> OnlineStore:
        if self._reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = _default_reader(self.settings)
        return self._reader

    def feature_names(self) -> set[str] | None:
        """Features the online store serves (None when unknown: the store is not reachable yet)."""
        try:
            names = self.reader.feature_names
        except Exception:
            return None
        return set(names) if names else None

    # --- state -------------------------------------------------------------------------------
    def _mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.available is not False:
            log.error("online store unreachable: %s", self.last_error, extra={"event": "store_down"})
            self._down_since = time.monotonic()
        self.available = False
        self._next_trial = time.monotonic() + RETRY_INTERVAL_S

    def _mark_up(self) -> None:
        if self.available is False:
            log.info("online store reachable again", extra={"event": "store_up"})
        self._up_since = time.monotonic()
        self.available = True
        self.last_error = None
        self._down_since = None

    def ping(self) -> bool:
        """Blocking health check (run it in a thread)."""
        try:
            ok = self.reader.ping()
        except Exception as exc:
            self._mark_down(exc)
            return False
        if ok is False:
            self._mark_down(StoreUnavailable("ping failed"))
            return False
        self._mark_up()
        return True

    # --- the read ----------------------------------------------------------------------------
    async def read_async(self, user_ids: Sequence[str]) -> list[UserFeatures]:
        """One online read for all ``user_ids``: ``feature_repo.online.UserFeatures`` in the same order
        (``.known``, ``.features`` by name, ``.feature_age_seconds``). Awaited: waiting on the
        store never blocks other requests."""
        self._fail_fast()
        t0, started = time.perf_counter(), time.monotonic()
        try:
            result = await self.reader.read_async(user_ids if isinstance(user_ids, list) else list(user_ids))
        except Exception as exc:
            if not _is_store_error(exc):
                raise
            raise self._store_failed(exc, started) from exc
        return self._succeeded(result, t0)

    def _fail_fast(self) -> None:
        if self.available is False and time.monotonic() < self._next_trial:
            self.metrics.online_read_errors.inc()
            raise StoreUnavailable(f"online store unavailable: {self.last_error}")

    def _store_failed(self, exc: Exception, started: float) -> StoreUnavailable:
        self.metrics.online_read_errors.inc()
        # A read that began before the store was last seen healthy is stale news: letting it
        # flip the state back to down would fail fast every request of the next second.
        if started >= self._up_since:
            self._mark_down(exc)
        return StoreUnavailable(f"online store unavailable: {self.last_error}")

    def _succeeded(self, result: OnlineResult, t0: float) -> list[UserFeatures]:
        self.metrics.online_read.observe(time.perf_counter() - t0)
        if self.available is not True:
            self._mark_up()
        self.last_read_at = time.time()
        return result.users  # unknown vs known-with-missing-values is decided by the reader


def _is_store_error(exc: BaseException) -> bool:
    return isinstance(exc, OnlineStoreUnavailable)
