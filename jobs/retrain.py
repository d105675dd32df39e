"""Automated retraining (``churn retrain [--force]``): train only when there is a reason to.

Triggers: a drift alert (``drift/latest.json``), a production model older than
``max_model_age_days``, a live performance drop (``monitor/latest.json``), no production model at
all, or ``--force``. Drift and performance verdicts only count when they concern the *current*
production model: after a retrain the old model's verdict must not trigger another one every day.

The candidate is promoted only through the registry's gate (never forced): a refusal is a normal
outcome (exit 0, reason printed), a training failure is not. Every run that trains appends one
JSON line to ``<registry_root>/retrain.log`` (triggers, candidate, promoted/refused and why).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from churn.errors import ChurnError, JobError
from churn.io import append_line
from churn.settings import Settings


class RetrainError(JobError):
    """Training the candidate failed: the production model is unchanged, exit non-zero."""


@dataclass(frozen=True)
class Trigger:
    name: str  # drift | stale_model | performance_drop | no_production_model | forced
    detail: str


@dataclass
class RetrainResult:
    triggers: list[Trigger]
    production_before: str | None
    candidate: str | None = None
    promoted: bool = False
    reason: str = ""
    seconds: float = 0.0
    log_entry: dict[str, Any] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return bool(self.triggers)

    def summary(self) -> str:
        if not self.ran:
            return f"no retrain needed: {self.reason}"
        why = ", ".join(t.name for t in self.triggers)
        verdict = "promoted" if self.promoted else "refused"
        return f"retrained ({why}): candidate {self.candidate} {verdict} — {self.reason}"


# --- triggers ----------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _production(settings: Settings) -> tuple[str | None, dict[str, Any] | None]:
    """Production version and its metadata, read straight from the registry layout (no model load)."""
    from training.registry import ModelRegistry

    registry = ModelRegistry(settings)
    version = registry.production_version()
    if version is None:
        return None, None
    return version, _read_json(settings.models_dir / version / "metadata.json")


def _trained_at(meta: dict[str, Any] | None) -> dt.datetime | None:
    raw = (meta or {}).get("trained_at")
    if not raw:
        return None
    try:
        ts = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def find_triggers(settings: Settings, force: bool = False, now: dt.datetime | None = None) -> list[Trigger]:
    """Every reason to retrain that holds right now (empty: the production model is fine)."""
    now = now or dt.datetime.now(dt.UTC)
    out: list[Trigger] = []
    if force:
        out.append(Trigger("forced", "--force"))
    version, meta = _production(settings)
    if version is None:
        return [*out, Trigger("no_production_model", f"{settings.layout.production_pointer} is missing")]
    trained = _trained_at(meta)
    max_age = dt.timedelta(days=settings.max_model_age_days)
    if trained is None:
        out.append(Trigger("stale_model", f"{version} has no readable trained_at in its metadata"))
    elif now - trained > max_age:
        age = (now - trained).total_seconds() / 86_400
        out.append(
            Trigger("stale_model", f"{version} is {age:.1f} days old (max {settings.max_model_age_days})")
        )
    drift = _read_json(settings.layout.drift_latest)
    if drift and drift.get("drift_detected") and drift.get("model_version") in (None, version):
        out.append(
            Trigger("drift", f"drift detected on {drift.get('date')}: {drift.get('reason', '')}".strip())
        )
    perf = _read_json(settings.layout.monitor_latest)
    if perf and perf.get("performance_drop") and perf.get("model_version") in (None, version):
        out.append(
            Trigger(
                "performance_drop",
                f"live ROC-AUC {perf.get('roc_auc')} on {perf.get('date')} "
                f"vs training {perf.get('training_roc_auc')}",
            )
        )
    return out


# --- training + gate ---------------------------------------------------------------------------


def train_candidate(settings: Settings, **train_kwargs: Any) -> str:
    """Train and register a candidate (not promoted); returns its version."""
    from training.labels import NotEnoughDataError
    from training.train import train

    try:
        result = train(settings, promote=False, **train_kwargs)
    except ChurnError:
        raise
    except NotEnoughDataError as exc:
        raise RetrainError(f"training failed: {exc}") from exc
    except Exception as exc:
        raise RetrainError(f"training failed: {type(exc).__name__}: {exc}") from exc
    return result.version


def promote_candidate(settings: Settings, version: str) -> tuple[bool, str]:
    """Ask the registry gate to promote ``version``; (promoted, why). Never forces."""
    from training.registry import ModelRegistry, RegistryError

    try:
        figures = ModelRegistry(settings).promote(version, force=False, reason="churn retrain")
    except RegistryError as exc:  # PromotionRefused: the gate said no (or the candidate won't load)
        return False, str(exc)
    metric = figures.get("metric", "score")
    cand, prod = figures.get("candidate_score"), figures.get("production_score")
    if prod is None:
        return True, f"no production model to beat ({metric} {cand:.4f})" if cand is not None else "promoted"
    return True, f"{metric} {cand:.4f} beats production {figures.get('production')} ({prod:.4f})"


def append_log(settings: Settings, entry: dict[str, Any]) -> Path:
    """Append one JSON line to the retrain log (``churn.io.append_line``)."""
    path = settings.layout.retrain_log
    append_line(path, json.dumps(entry, sort_keys=True, default=str))
    return path


def retrain(
    settings: Settings, force: bool = False, now: dt.datetime | None = None, **train_kwargs: Any
) -> RetrainResult:
    """Retrain if a trigger holds, promote through the gate, log why; a no-op otherwise.

    ``train_kwargs`` go to ``training.train.train`` (tests pass few boosting rounds).
    """
    t0 = time.perf_counter()
    triggers = find_triggers(settings, force=force, now=now)
    before, _ = _production(settings)
    result = RetrainResult(triggers=triggers, production_before=before)
    if not triggers:
        result.reason = f"production model {before} is fresh, no drift alert, no performance drop"
        result.seconds = time.perf_counter() - t0
        return result
    entry: dict[str, Any] = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "triggers": [asdict(t) for t in triggers],
        "production_before": before,
    }
    try:
        result.candidate = train_candidate(settings, **train_kwargs)
    except RetrainError as exc:
        append_log(settings, {**entry, "candidate": None, "outcome": "failed", "reason": str(exc)})
        raise
    result.promoted, result.reason = promote_candidate(settings, result.candidate)
    entry.update(
        candidate=result.candidate, outcome="promoted" if result.promoted else "refused", reason=result.reason
    )
    append_log(settings, entry)
    result.log_entry = entry
    result.seconds = time.perf_counter() - t0
    return result
