"""/ready and /health: the state of the model and of the online store."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from typing import TYPE_CHECKING

from service.schemas import Health, ModelState, Ready, StoreState

if TYPE_CHECKING:
    from churn.settings import Settings
    from service.features import FeatureGateway
    from service.model_holder import ModelHolder


class HealthService:
    def __init__(self, settings: Settings, holder: ModelHolder, features: FeatureGateway) -> None:
        self.settings = settings
        self.holder = holder
        self.features = features
        self.started = time.monotonic()

    async def _ping(self) -> bool:
        return await asyncio.to_thread(self.features.ping)

    async def ready(self) -> Ready:
        reasons: list[str] = []
        if self.holder.current is None:
            reasons.append(self.holder.last_error or "no production model: run churn train --promote")
        if not await self._ping():
            reasons.append(f"online store unreachable: {self.features.last_error}")
        return Ready(ready=not reasons, reasons=reasons)

    async def health(self) -> Health:
        store_ok = await self._ping()
        sm = self.holder.current
        last = self.holder.last_reload.as_dict() if self.holder.last_reload else None
        if sm is None:
            model = ModelState(status="down", detail=self.holder.last_error, last_reload=last)
        else:
            age = sm.age_seconds()
            model = ModelState(
                status="degraded" if self.holder.last_error else "ok",
                version=sm.version,
                kind=sm.kind,
                trained_at=sm.trained_at,
                age_seconds=None if math.isnan(age) else round(age, 1),
                loaded_at=sm.loaded_at,
                threshold=sm.threshold,
                detail=self.holder.last_error,
                last_reload=last,
            )
        f = self.features
        store = StoreState(
            status="ok" if store_ok else "down",
            kind=self.settings.online_store,
            detail=f.last_error,
            last_read_age_seconds=None if f.last_read_at is None else round(time.time() - f.last_read_at, 3),
            feature_age_seconds_last=f.last_feature_age,
        )
        if sm is None or not store_ok:
            status = "down"
        elif model.status != "ok":
            status = "degraded"
        else:
            status = "ok"
        return Health(
            status=status,  # type: ignore[arg-type]
            model=model,
            online_store=store,
            feature_service=self.settings.feature_service,
            uptime_seconds=round(time.monotonic() - self.started, 1),
        )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
