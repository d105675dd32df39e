"""Scoring: features from the online store → production model → typed response.

No pandas here: one online read and one contribution pass (probability and top factors
together, :meth:`training.model.ChurnModel.explain_rows`) per request or per batch, and msgspec
Structs out. The model reference is taken once at the start of each call (see
:mod:`service.model_holder`).

The API's path is asynchronous: the online read awaits the store (the event loop serves other
requests meanwhile), then the scoring runs on the loop when it is cheap (the model's one-user cost
is measured when it is loaded) or in a worker thread when it is not (SHAP over a large tree
ensemble, with the GIL released inside LightGBM; every batch), per ``settings.score_in_thread``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from churn.policies import RiskPolicy
from service.features import FeatureGateway
from service.model_holder import NO_MODEL, ModelHolder, ServingModel
from service.schemas import BatchItemError, BatchItemOk, BatchResponse, Factor, Prediction

if TYPE_CHECKING:
    from churn.settings import Settings
    from feature_repo.online import UserFeatures
    from service.metrics import ApiMetrics
    from service.rollout import RolloutManager


class NoModel(Exception):
    """No production model is loaded (→ 503)."""


class UnknownUser(Exception):
    """The online store has no features for this user (→ 404)."""


class PredictionService:
    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        features: FeatureGateway,
        metrics: ApiMetrics,
        rollout: RolloutManager | None = None,
    ):
        self.settings = settings
        self.rollout = rollout
        self.holder = holder
        self.features = features
        self.metrics = metrics
        self.risk = RiskPolicy.from_settings(settings)
        self.score_in_thread = str(settings.score_in_thread)

    def _offload(self, sm: ServingModel) -> bool:
        """Score this model in a worker thread? ``auto``: when one user costs it more than the
        inline budget (measured at load, so a bigger model moves off the loop by itself)."""
        if self.score_in_thread == "auto":
            return sm.row_ms > self.settings.score_inline_max_ms
        return self.score_in_thread == "always"

    def tier(self, p: float) -> str:
        return self.risk.tier(p)

    def _model(self) -> ServingModel:
        current = self.holder.current  # grabbed once per request
        if current is None:
            raise NoModel(self.holder.last_error or NO_MODEL)
        return current

    async def predict_one_async(self, user_id: str, request_id: str | None = None) -> Prediction:
        production = self._model()
        (uf,) = await self.features.read_async([user_id])
        sm, arm = self._route(uf, production)
        if self._offload(sm):
            return await asyncio.to_thread(self._score_one, uf, production, sm, arm, request_id)
        return self._score_one(uf, production, sm, arm, request_id)

    async def preview_async(self, user_id: str) -> tuple[Prediction | None, UserFeatures, str | None]:
        """The operator console's look at one user: the online features and, when a production
        model is loaded, its prediction. Read-only: no A/B routing, nothing logged to the prediction
        log, no prediction metrics (an operator looking is not traffic). ``UnknownUser`` if the store
        has no features; the third item says why there is no prediction (no model)."""
        (uf,) = await self.features.read_async([user_id])
        if not uf.known:
            raise UnknownUser(f"unknown user {user_id!r}: no features in the online store")
        production = self.holder.current
        if production is None:
            return None, uf, self.holder.last_error or NO_MODEL
        if self._offload(production):
            return await asyncio.to_thread(self._explain_one, uf, production), uf, None
        return self._explain_one(uf, production), uf, None

    def _explain_one(self, uf: UserFeatures, sm: ServingModel) -> Prediction:
        probas, factors = sm.model.explain_rows([uf.features], k=3)
        return self._prediction(uf, sm, float(probas[0]), factors[0], dt.datetime.now(dt.UTC))

    def _prediction(
        self, uf: UserFeatures, sm: ServingModel, p: float, factors: list, now: dt.datetime, arm: str = "production"
    ) -> Prediction:
        """The response for one scored user: tier, action and factors by the shared risk policy."""
        tier = self.tier(p)
        return Prediction(
            user_id=uf.user_id,
            churn_probability=p,
            risk_tier=tier,  # type: ignore[arg-type]
            recommended_action=self.risk.action(tier),
            will_churn=p >= sm.threshold,
            top_factors=[Factor(f["feature"], f["value"], float(f["contribution"])) for f in factors],
            model_version=sm.version,
            feature_age_seconds=uf.feature_age_seconds,
            scored_at=now,
            arm=arm,  # type: ignore[arg-type]
        )

    def _route(self, uf: UserFeatures, production: ServingModel) -> tuple[ServingModel, str]:
        if not uf.known:
            raise UnknownUser(f"unknown user {uf.user_id!r}: no features in the online store")
        if self.rollout is None:
            return production, "production"
        return self.rollout.route(uf.user_id, production)

    def _score_one(
        self, uf: UserFeatures, production: ServingModel, sm: ServingModel, arm: str, request_id: str | None
    ) -> Prediction:
        rows = [uf.features]
        try:
            probas, factors = sm.model.explain_rows(rows, k=3)
        except Exception:
            if arm == "production":
                raise
            # a challenger that fails must not fail the user: production serves instead
            self.rollout.metrics.challenger_errors.labels(version=sm.version).inc()  # type: ignore[union-attr]
            sm, arm = production, "production"
            probas, factors = sm.model.explain_rows(rows, k=3)
        p = float(probas[0])
        tier = self.tier(p)
        now = dt.datetime.now(dt.UTC)
        if self.rollout is not None:
            self.rollout.record(
                request_id=request_id, user_id=uf.user_id, served=sm, arm=arm, probability=p, tier=tier,
                will_churn=p >= sm.threshold, features=uf.features, production=production,
                endpoint="predict", ts=now,
            )  # fmt: skip
        self.metrics.observe_prediction(p, tier)
        age = uf.feature_age_seconds
        if age is not None:
            self.metrics.feature_age.observe(age)
            self.features.last_feature_age = age
        return self._prediction(uf, sm, p, factors[0], now, arm)

    async def predict_batch_async(self, user_ids: Sequence[str], request_id: str | None = None) -> BatchResponse:
        """One awaited online read, then the scoring of up to ``max_batch_size`` rows in a thread."""
        production = self._model()
        read = await self.features.read_async(user_ids)
        return await asyncio.to_thread(self._score_batch, read, production, request_id)

    def _score_batch(self, read: list[UserFeatures], production: ServingModel, request_id: str | None) -> BatchResponse:
        now = dt.datetime.now(dt.UTC)
        known = [uf for uf in read if uf.known]
        results: list[BatchItemOk | BatchItemError] = []
        rollout = self.rollout
        # one model call per arm: users grouped by the arm their id hashes to
        arms: dict[str, tuple[ServingModel, list]] = {}
        for uf in known:
            sm, arm = rollout.route(uf.user_id, production) if rollout is not None else (production, "production")
            arms.setdefault(arm, (sm, []))[1].append(uf)
        scored: dict[int, BatchItemOk] = {}
        for arm, (sm, group) in list(arms.items()):
            rows = [uf.features for uf in group]
            try:
                probas, factors = sm.model.explain_rows(rows, k=3)
            except Exception:
                if arm == "production":
                    raise
                rollout.metrics.challenger_errors.labels(version=sm.version).inc(len(group))  # type: ignore[union-attr]
                sm, arm = production, "production"
                probas, factors = sm.model.explain_rows(rows, k=3)
            for i, uf in enumerate(group):
                p = float(probas[i])
                tier = self.tier(p)
                self.metrics.observe_prediction(p, tier)
                age = uf.feature_age_seconds
                if age is not None:
                    self.metrics.feature_age.observe(age)
                    self.features.last_feature_age = age
                if rollout is not None:
                    rollout.record(
                        request_id=request_id, user_id=uf.user_id, served=sm, arm=arm, probability=p, tier=tier,
                        will_churn=p >= sm.threshold, features=uf.features, production=production,
                        endpoint="batch", ts=now,
                    )  # fmt: skip
                scored[id(uf)] = BatchItemOk(
                    user_id=uf.user_id,
                    churn_probability=p,
                    risk_tier=tier,  # type: ignore[arg-type]
                    recommended_action=self.risk.action(tier),
                    will_churn=p >= sm.threshold,
                    top_factors=[Factor(f["feature"], f["value"], float(f["contribution"])) for f in factors[i]],
                    model_version=sm.version,
                    feature_age_seconds=age,
                    scored_at=now,
                    arm=arm,  # type: ignore[arg-type]
                )
        errors = 0
        for uf in read:
            item = scored.get(id(uf))
            if item is None:
                errors += 1
                results.append(
                    BatchItemError(
                        user_id=uf.user_id, error="unknown user: no features in the online store", status_code=404
                    )
                )
            else:
                results.append(item)
        return BatchResponse(
            model_version=production.version, scored_at=now, count=len(results), errors=errors, results=results
        )
