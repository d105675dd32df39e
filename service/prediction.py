"""Scoring: features from the online store → production model → typed response.

No pandas here: one online read, one ``predict_proba_rows`` and one ``top_factors`` call per
request (or per batch), and msgspec Structs out. The model reference is taken once at the start
of each call (see :mod:`service.model_holder`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.features import FeatureGateway
from service.model_holder import NO_MODEL, ModelHolder, ServingModel
from service.schemas import BatchItemError, BatchItemOk, BatchResponse, Factor, Prediction

if TYPE_CHECKING:
    from churn.settings import Settings
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
        self.risk_medium = float(settings.risk_medium)
        self.risk_high = float(settings.risk_high)
        actions = settings.intervention_map
        self.actions = {tier: actions.get(tier, "none") for tier in ("low", "medium", "high")}

    def tier(self, p: float) -> str:
        if p >= self.risk_high:
            return "high"
        if p >= self.risk_medium:
            return "medium"
        return "low"

    def _model(self) -> ServingModel:
        current = self.holder.current  # grabbed once per request
        if current is None:
            raise NoModel(self.holder.last_error or NO_MODEL)
        return current

    def _score_one(self, sm: ServingModel, rows: list[dict]) -> tuple[float, list[dict]]:
        model = sm.model
        return float(model.predict_proba_rows(rows)[0]), model.top_factors(rows, k=3)[0]

    def predict_one(self, user_id: str, request_id: str | None = None) -> Prediction:
        production = sm = self._model()
        (uf,) = self.features.read([user_id])
        if not uf.known:
            raise UnknownUser(f"unknown user {user_id!r}: no features in the online store")
        rows = [uf.features]
        rollout = self.rollout
        arm = "production"
        if rollout is not None:
            sm, arm = rollout.route(user_id, production)
        try:
            p, factors = self._score_one(sm, rows)
        except Exception:
            if arm == "production":
                raise
            # a challenger that fails must not fail the user: production serves instead
            rollout.metrics.challenger_errors.labels(version=sm.version).inc()  # type: ignore[union-attr]
            sm, arm = production, "production"
            p, factors = self._score_one(sm, rows)
        tier = self.tier(p)
        now = dt.datetime.now(dt.UTC)
        if rollout is not None:
            rollout.record(
                request_id=request_id, user_id=user_id, served=sm, arm=arm, probability=p, tier=tier,
                will_churn=p >= sm.threshold, features=uf.features, production=production,
                endpoint="predict", ts=now,
            )  # fmt: skip
        self.metrics.observe_prediction(p, tier)
        age = uf.feature_age_seconds
        if age is not None:
            self.metrics.feature_age.observe(age)
            self.features.last_feature_age = age
        return Prediction(
            user_id=user_id,
            churn_probability=p,
            risk_tier=tier,  # type: ignore[arg-type]
            recommended_action=self.actions[tier],
            will_churn=p >= sm.threshold,
            top_factors=[Factor(f["feature"], f["value"], float(f["contribution"])) for f in factors],
            model_version=sm.version,
            feature_age_seconds=age,
            scored_at=now,
            arm=arm,  # type: ignore[arg-type]
        )

    def predict_batch(self, user_ids: Sequence[str], request_id: str | None = None) -> BatchResponse:
        production = self._model()
        read = self.features.read(user_ids)
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
                probas = sm.model.predict_proba_rows(rows)
                factors = sm.model.top_factors(rows, k=3)
            except Exception:
                if arm == "production":
                    raise
                rollout.metrics.challenger_errors.labels(version=sm.version).inc(len(group))  # type: ignore[union-attr]
                sm, arm = production, "production"
                probas = sm.model.predict_proba_rows(rows)
                factors = sm.model.top_factors(rows, k=3)
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
                    recommended_action=self.actions[tier],
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
