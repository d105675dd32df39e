"""The serving model and its hot reload.

``ModelHolder.current`` is one immutable :class:`ServingModel` reference. A request reads it
once at its start and uses that object to the end, so swapping in a new model (a single
attribute assignment, atomic under the GIL) never mixes two models inside one request and
in-flight requests finish on the old one.

New models are loaded in a worker thread (never in the event loop), smoke-tested, checked
against ``settings.feature_service`` and only then swapped in. A model that fails any of that
is refused: ``churn_model_reload_total{result="failed"}``, a log line, ``/health`` shows the
reason, and the previous model keeps serving.

Two triggers: :meth:`ModelHolder.watch` polls the registry's ``production`` pointer every
``settings.reload_interval_s`` (one ``stat``; the file is read only when its inode, size or
mtime changed — the registry replaces it by rename), and ``POST /admin/reload``
(:meth:`ModelHolder.reload`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.storage import signature
from service.logs import log

if TYPE_CHECKING:
    from churn.settings import Settings
    from service.metrics import ApiMetrics

NO_MODEL = "no production model: run churn train --promote"


@dataclass(frozen=True)
class ServingModel:
    model: Any  # training.model.ChurnModel
    version: str
    kind: str
    threshold: float
    trained_at: dt.datetime | None
    loaded_at: dt.datetime
    features: tuple[str, ...]
    row_ms: float = 0.0
    """What one user's probability and factors cost this model on this machine, measured at load
    (the fastest of a few smoke calls): where ``auto`` decides to score on the loop or in a thread."""

    def age_seconds(self) -> float:
        if self.trained_at is None:
            return math.nan
        trained = self.trained_at if self.trained_at.tzinfo else self.trained_at.replace(tzinfo=dt.UTC)
        return (dt.datetime.now(dt.UTC) - trained).total_seconds()


@dataclass
class ReloadOutcome:
    result: str  # success | failed | unchanged
    version: str | None
    previous_version: str | None
    detail: str | None = None
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "version": self.version,
            "previous_version": self.previous_version,
            "detail": self.detail,
            "at": self.at.isoformat(),
        }


class ModelRefused(Exception):
    """The candidate model cannot serve (load error, wrong feature service, failed smoke test)."""


def _default_registry(settings: Settings) -> Any:
    from training.registry import ModelRegistry

    return ModelRegistry(settings)


class ModelHolder:
    """Holds the production model; loads, validates and swaps new versions."""

    def __init__(
        self,
        settings: Settings,
        metrics: ApiMetrics,
        registry_factory: Callable[[Settings], Any] = _default_registry,
        required_features: Callable[[], set[str] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._registry_factory = registry_factory
        self._registry: Any = None
        self._required_features = required_features
        self.current: ServingModel | None = None
        self.pointer_path: Path = settings.layout.production_pointer
        self._pointer_sig: tuple[int, int, int] | None = None
        self._load_lock = threading.Lock()
        self.last_reload: ReloadOutcome | None = None
        self.last_error: str | None = None
        self.metrics.set_model(None)

    # --- registry access ---------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = self._registry_factory(self.settings)
        return self._registry

    def _stat_pointer(self) -> str | None:
        return signature(self.pointer_path)  # local file or S3 object alike

    def _pointer_version(self) -> str | None:
        return self.registry.production_version()

    # --- loading (worker thread) ---------------------------------------------------------------
    def load_candidate(self, version: str) -> ServingModel:
        """Load ``version`` and prove it can serve here, or raise :class:`ModelRefused`.

        The one gate for everything the API serves (production, shadow, challenger), so a staged
        model is held to exactly the checks production is. Blocking: call it from a worker thread.
        """
        from training.model import ModelLoadError, feature_service_mismatch

        try:
            model = self.registry.load(version)
        except ModelLoadError as exc:
            raise ModelRefused(f"model {version} failed to load: {exc}") from exc
        except Exception as exc:  # corrupt metadata, missing folder, registry errors...
            raise ModelRefused(f"model {version} failed to load: {type(exc).__name__}: {exc}") from exc
        mismatch = feature_service_mismatch(model, self.settings.feature_service)
        if mismatch is not None:
            raise ModelRefused(mismatch)
        features = tuple(model.features)
        required = self._required_features() if self._required_features else None
        if required is not None:
            missing = sorted(set(features) - required)
            if missing:
                raise ModelRefused(f"model {version} needs features the online store does not serve: {missing}")
        try:  # smoke test the exact calls the request path makes (all features missing), timed
            proba, row_ms = _timed_explain(model, dict.fromkeys(features))
            p = float(proba[0])
            if not (0.0 <= p <= 1.0):
                raise ValueError(f"probability {p} out of [0, 1]")
        except Exception as exc:
            raise ModelRefused(f"model {version} failed the smoke test: {type(exc).__name__}: {exc}") from exc
        return ServingModel(
            model=model,
            version=str(model.version),
            kind=str(getattr(model, "kind", "")),
            threshold=float(model.threshold),
            trained_at=getattr(model, "trained_at", None),
            loaded_at=dt.datetime.now(dt.UTC),
            features=features,
            row_ms=row_ms,
        )

    def _swap(self, new: ServingModel) -> None:
        self.current = new  # the one atomic reference assignment
        self.metrics.set_model(new.version, new.kind, new.age_seconds)

    def load_production(self, *, force: bool, trigger: str) -> ReloadOutcome:
        """Blocking: (re)load the version the pointer names. Runs in a worker thread."""
        with self._load_lock:
            previous = self.current.version if self.current else None
            sig = self._stat_pointer()
            try:
                version = self._pointer_version()
            except Exception as exc:
                version = None
                outcome = ReloadOutcome("failed", None, previous, f"cannot read production pointer: {exc}")
                return self._record(outcome, sig, trigger)
            if version is None:
                detail = NO_MODEL
                if previous is None:
                    self._pointer_sig = sig
                    self.last_error = detail
                    return ReloadOutcome("unchanged", None, None, detail)
                outcome = ReloadOutcome(
                    "failed", None, previous, "production pointer is gone; keeping the current model"
                )
                return self._record(outcome, sig, trigger)
            if not force and previous == version:
                self._pointer_sig = sig
                return ReloadOutcome("unchanged", version, previous)
            t0 = time.perf_counter()
            try:
                candidate = self.load_candidate(version)
            except ModelRefused as exc:
                return self._record(ReloadOutcome("failed", version, previous, str(exc)), sig, trigger)
            self._swap(candidate)
            took = time.perf_counter() - t0
            outcome = ReloadOutcome("success", candidate.version, previous, f"loaded in {took * 1000:.0f} ms")
            return self._record(outcome, sig, trigger)

    def _record(self, outcome: ReloadOutcome, sig: tuple[int, int, int] | None, trigger: str) -> ReloadOutcome:
        # Remember the pointer state even on failure: the poller retries only when it changes.
        self._pointer_sig = sig
        self.last_reload = outcome
        self.metrics.model_reload.labels(result=outcome.result).inc()
        fields = {"event": "model_reload", "trigger": trigger, **outcome.as_dict()}
        if outcome.result == "failed":
            self.last_error = outcome.detail
            log.error("model reload refused: %s", outcome.detail, extra=fields)
        else:
            self.last_error = None
            log.info("model reload %s: %s", outcome.result, outcome.version, extra=fields)
        return outcome

    def pointer_changed(self) -> bool:
        return self._stat_pointer() != self._pointer_sig

    # --- async entry points --------------------------------------------------------------------
    async def startup(self) -> None:
        await asyncio.to_thread(self.load_production, force=False, trigger="startup")

    async def reload(self) -> ReloadOutcome:
        """Admin reload: load the pointer's version again, even if it is the serving one."""
        return await asyncio.to_thread(self.load_production, force=True, trigger="admin")

    async def watch(self) -> None:
        """Poll the pointer; load in a thread when it changed. Runs until cancelled."""
        interval = max(float(self.settings.reload_interval_s), 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                if self.pointer_changed():
                    await asyncio.to_thread(self.load_production, force=False, trigger="watch")
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watcher die
                log.exception("model watcher iteration failed", extra={"event": "model_watch_error"})


def _timed_explain(model: Any, row: dict[str, Any], repeats: int = 5) -> tuple[Any, float]:
    """The probabilities of one single-row explain call and the fastest of ``repeats`` such calls, in
    ms: the least the loop would be held (a busy machine only makes the others slower)."""
    best, proba = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        proba, _ = model.explain_rows([row], k=3)
        best = min(best, time.perf_counter() - t)
    return proba, best * 1000.0
