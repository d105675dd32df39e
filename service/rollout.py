"""Serving side of model rollout: challenger routing (A/B), shadow scoring, prediction logging.

:class:`RolloutManager` holds one immutable :class:`RolloutServing` (shadow model, challenger model,
share, salt), swapped atomically like the production model (see :mod:`service.model_holder`). It
polls the registry's stage file (``DataLayout.stages_file``, written by ``churn models stage``)
every ``reload_interval_s``, reads it through ``ModelRegistry.stages()`` and loads staged versions
in a worker thread through the same checks as production (:meth:`ModelHolder.load_candidate`:
load, smoke test, feature service, features the store serves); a refused version is not served
and the reason shows in the logs and ``churn_rollout_reload_total{result="failed"}``.

Hot path, per scored user: :meth:`route` (one hash when a challenger is staged, :mod:`service.routing`),
:meth:`record` (a counter, a ``deque.append`` into the prediction log, and — only when a shadow is
staged or the user is in the challenger arm — a non-blocking ``put`` on a bounded queue). Shadow
scoring runs on a single daemon thread draining that queue in micro-batches, after the response
is built and outside the request's latency; when the queue is full the job is dropped and counted
(``churn_shadow_dropped_total``), never waited for. A shadow model that raises only increments
``churn_shadow_errors_total{version}``. For users in the challenger arm the production model is
also scored off the critical path (logged as ``arm=production, kind=shadow``), so ``churn models
compare`` can measure agreement on the same users.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import Counter, Gauge, Histogram, Info

from churn.policies import RiskPolicy
from churn.storage import signature
from service.logs import log
from service.prediction_log import LogRecord, PredictionLog
from service.routing import CHALLENGER, PRODUCTION, SHADOW, assign_arm

if TYPE_CHECKING:
    from churn.settings import Settings
    from service.metrics import ApiMetrics
    from service.model_holder import ModelHolder, ServingModel
    from training.registry import RolloutState

SHADOW_BATCH = 16
SHADOW_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class RolloutMetrics:
    def __init__(self, registry: Any) -> None:
        r = registry
        self.by_arm = Counter(
            "churn_predictions_by_arm", "Predictions by model version and arm (production|challenger|shadow).",
            ["version", "arm"], registry=r,
        )  # fmt: skip
        self.shadow_latency = Histogram(
            "churn_shadow_prediction_seconds", "Shadow scoring latency (one model call per micro-batch).",
            buckets=SHADOW_BUCKETS, registry=r,
        )  # fmt: skip
        self.shadow_errors = Counter("churn_shadow_errors", "Shadow scorings that raised.", ["version"], registry=r)
        self.shadow_dropped = Counter(
            "churn_shadow_dropped", "Shadow scorings dropped because the shadow queue was full.", registry=r
        )
        self.shadow_queue = Gauge("churn_shadow_queue_depth", "Shadow scorings waiting.", registry=r)
        self.challenger_errors = Counter(
            "churn_challenger_errors", "Challenger scorings that raised (production served instead).",
            ["version"], registry=r,
        )  # fmt: skip
        self.log_records = Counter(
            "churn_prediction_log_records",
            "Prediction-log records by result (written|dropped).",
            ["result"],
            registry=r,
        )
        for result in ("written", "dropped"):
            self.log_records.labels(result=result)
        self.log_errors = Counter(
            "churn_prediction_log_flush_errors", "Prediction-log flushes that failed.", registry=r
        )
        self.stage = Info("churn_rollout", "Staged shadow / challenger versions and the challenger share.", registry=r)
        self.stage.info({"shadow": "none", "challenger": "none", "share": "0"})
        self.reload = Counter("churn_rollout_reload", "Stage (re)load attempts by result.", ["result"], registry=r)
        for result in ("success", "failed"):  # at 0 from the start, so the first failure is an increase
            self.reload.labels(result=result)
        self._arm_children: dict[tuple[str, str], Any] = {}

    def count(self, version: str, arm: str) -> None:
        key = (version, arm)
        child = self._arm_children.get(key)
        if child is None:
            child = self._arm_children[key] = self.by_arm.labels(version=version, arm=arm)
        child.inc()


@dataclass(frozen=True)
class RolloutServing:
    shadow: ServingModel | None = None
    challenger: ServingModel | None = None
    share: float = 0.0
    salt: str = ""


EMPTY = RolloutServing()


class ShadowJob(NamedTuple):
    """A served request queued for off-path scoring by ``targets`` (model, arm it is logged as)."""

    request_id: str | None
    user_id: str
    features: dict[str, Any]
    targets: list[tuple[ServingModel, str]]
    endpoint: str
    ts: dt.datetime


class RolloutManager:
    def __init__(self, settings: Settings, holder: ModelHolder, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = RolloutMetrics(metrics.registry)
        self.current: RolloutServing = EMPTY
        self.state: RolloutState | None = None  # the stage state last read (None: not read yet)
        self.last_error: str | None = None
        self.path = settings.layout.stages_file
        self.risk = RiskPolicy.from_settings(settings)
        self._sig: tuple[int, int, int] | None = None
        self._load_lock = threading.Lock()
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=max(int(settings.shadow_queue_size), 1))
        self._worker: threading.Thread | None = None
        self._error_logged: set[str] = set()
        m = self.metrics
        self.log: PredictionLog | None = (
            PredictionLog(
                settings.layout.prediction_log_dir,
                flush_interval_s=settings.prediction_log_flush_s,
                max_records=settings.prediction_log_max_records,
                on_written=lambda n: m.log_records.labels(result="written").inc(n),
                on_dropped=lambda n: m.log_records.labels(result="dropped").inc(n),
                on_error=m.log_errors.inc,
            )
            if settings.prediction_log
            else None
        )

    # --- stage state (worker thread) ----------------------------------------------------------------
    def _stat(self) -> str | None:
        return signature(self.path)  # local file or S3 object alike

    def _load_slot(self, version: str | None, loaded: ServingModel | None, slot: str) -> ServingModel | None:
        from service.model_holder import ModelRefused

        if version is None:
            return None
        if loaded is not None and loaded.version == version:
            return loaded
        try:
            sm = self.holder.load_candidate(version)
        except ModelRefused as exc:
            self.last_error = f"{slot}: {exc}"
            self.metrics.reload.labels(result="failed").inc()
            log.error("rollout %s refused: %s", slot, exc, extra={"event": "rollout_reload", "slot": slot})
            return None
        self.metrics.reload.labels(result="success").inc()
        log.info("rollout %s loaded: %s", slot, version, extra={"event": "rollout_reload", "slot": slot})
        return sm

    def load_stages(self, *, force: bool = False) -> RolloutServing:
        """Blocking: read the stage state and load what it names (unchanged models are kept)."""
        with self._load_lock:
            sig = self._stat()
            if not force and sig == self._sig:
                return self.current
            self._sig = sig
            try:
                state = self.holder.registry.stages()
            except Exception as exc:  # keep serving what we have
                self.last_error = f"cannot read {self.path}: {exc}"
                self.metrics.reload.labels(result="failed").inc()
                log.error(self.last_error, extra={"event": "rollout_reload"})
                return self.current
            self.last_error = None
            cur = self.current
            shadow = self._load_slot(state.shadow, cur.shadow, "shadow")
            challenger = self._load_slot(state.challenger, cur.challenger, "challenger")
            new = RolloutServing(shadow, challenger, state.share if challenger else 0.0, state.salt)
            self.current = new  # one atomic reference assignment
            self.state = state
            self.metrics.stage.info(
                {
                    "shadow": shadow.version if shadow else "none",
                    "challenger": challenger.version if challenger else "none",
                    "share": f"{new.share:g}",
                }
            )
            return new

    async def startup(self) -> None:
        if self.log is not None:
            self.log.start()
        self._start_worker()
        await asyncio.to_thread(self.load_stages, force=True)

    async def reload(self) -> RolloutServing:
        """Admin reload: read the stage state now, not at the watcher's next tick."""
        return await asyncio.to_thread(self.load_stages, force=True)

    async def watch(self) -> None:
        interval = max(float(self.settings.reload_interval_s), 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                if self._stat() != self._sig:
                    await asyncio.to_thread(self.load_stages)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rollout watcher iteration failed", extra={"event": "rollout_watch_error"})

    def shutdown(self, timeout: float = 10.0) -> None:
        """Finish queued shadow work (bounded), then flush the prediction log."""
        if self._worker is not None:
            with contextlib.suppress(queue.Full):  # the worker stops at the join timeout anyway
                self._queue.put(None, timeout=timeout)
            self._worker.join(timeout)
            self._worker = None
        if self.log is not None:
            self.log.close()

    # --- hot path ----------------------------------------------------------------------------------
    def route(self, user_id: str, production: ServingModel) -> tuple[ServingModel, str]:
        cur = self.current
        ch = cur.challenger
        if ch is not None and cur.share > 0.0 and assign_arm(user_id, cur.share, cur.salt) == CHALLENGER:
            return ch, CHALLENGER
        return production, PRODUCTION

    def record(
        self,
        *,
        request_id: str | None,
        user_id: str,
        served: ServingModel,
        arm: str,
        probability: float,
        tier: str,
        will_churn: bool,
        features: dict[str, Any],
        production: ServingModel,
        endpoint: str,
        ts: dt.datetime,
    ) -> None:
        """Count, log, and queue shadow work. Never raises into the request."""
        try:
            self.metrics.count(served.version, arm)
            if self.log is not None:
                self.log.append(
                    LogRecord(ts, request_id, user_id, served.version, arm, "served", probability, tier, will_churn,
                              features, served.features, endpoint)
                )  # fmt: skip
            cur = self.current
            targets: list[tuple[ServingModel, str]] = []
            if arm == CHALLENGER:
                targets.append((production, PRODUCTION))
            if cur.shadow is not None:
                targets.append((cur.shadow, SHADOW))
            if targets:
                try:
                    self._queue.put_nowait(ShadowJob(request_id, user_id, features, targets, endpoint, ts))
                except queue.Full:
                    self.metrics.shadow_dropped.inc()
        except Exception:  # logging/shadow must never fail a served prediction
            log.exception("rollout record failed", extra={"event": "rollout_record_error"})

    # --- shadow worker --------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        q = self._queue
        while True:
            job = q.get()
            if job is None:
                q.task_done()
                return
            jobs = [job]
            stop = False
            while len(jobs) < SHADOW_BATCH:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self.metrics.shadow_queue.set(q.qsize())
            try:
                self._score(jobs)
            except Exception:
                log.exception("shadow batch failed", extra={"event": "shadow_error"})
            finally:
                for _ in range(len(jobs) + stop):
                    q.task_done()
            time.sleep(0)  # release the GIL between micro-batches: requests come first
            if stop:
                return

    def _score(self, jobs: list[ShadowJob]) -> None:
        """One model call per target model over the micro-batch, then one log record per scoring."""
        groups: dict[int, tuple[ServingModel, str, list[ShadowJob]]] = {}
        for job in jobs:
            for sm, arm in job.targets:
                groups.setdefault(id(sm), (sm, arm, []))[2].append(job)
        for sm, arm, group in groups.values():
            t0 = time.perf_counter()
            try:
                probas = sm.model.predict_proba_rows([j.features for j in group])
            except Exception as exc:
                self.metrics.shadow_errors.labels(version=sm.version).inc(len(group))
                if sm.version not in self._error_logged:
                    self._error_logged.add(sm.version)
                    log.error(
                        "shadow scoring with %s failed: %s: %s", sm.version, type(exc).__name__, exc,
                        extra={"event": "shadow_error", "model_version": sm.version},
                    )  # fmt: skip
                continue
            self.metrics.shadow_latency.observe(time.perf_counter() - t0)
            for job, p in zip(group, probas, strict=True):
                p = float(p)
                self.metrics.count(sm.version, arm)
                if self.log is not None:
                    self.log.append(
                        LogRecord(job.ts, job.request_id, job.user_id, sm.version, arm, "shadow", p,
                                  self.risk.tier(p), p >= sm.threshold, job.features, sm.features, job.endpoint)
                    )  # fmt: skip

    def drain(self, timeout: float = 10.0) -> bool:
        """Tests/benchmarks: wait until the shadow queue is empty (best effort)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False
