"""Filesystem model registry: immutable version folders, a production pointer, history, audit.

Layout under ``settings.registry_root`` (a shared volume in production)::

    models/<YYYYmmddTHHMMSSZ>-<6 hex>/   one immutable folder per training run (atomic_dir)
    production                           the served version's name, replaced with os.replace
    history.json                         production versions in promotion order (for rollback)
    stages.json                          the rollout's shadow / challenger (training.stages)
    audit.log                            one JSON line per promotion / rollback / stage change

Every path comes from ``settings.layout`` (:class:`churn.layout.DataLayout`).

A version holds BOTH models of a training run (LightGBM ``model.txt`` and the logistic baseline
``baseline.joblib``); ``metadata.json["kind"]`` says which one is served. Readers never lock: the
pointer is swapped atomically and a version folder never changes after it appears, so a reader
sees the old or the new production model, never a mix. Writers (promote/rollback/set_stage/
clear_stage) take an ``flock`` so concurrent changes serialise. A model that fails to load or to
reproduce its smoke predictions can't be promoted or staged (and ``load`` raises ``ModelLoadError``);
a staged model must also read this deployment's feature service, since the API scores it on the
same online features as production.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churn.errors import NoProductionModel, PromotionRefused, RegistryError
from churn.io import append_line, atomic_dir, exclusive_lock, write_json_atomic, write_text_atomic
from churn.settings import Settings
from churn.storage import read_table
from training.model import METADATA, ChurnModel, ModelLoadError, feature_service_mismatch
from training.stages import RolloutState, Stage, read_state, write_state

VERSION_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
TEST_SET = "test.parquet"
LABEL = "churned"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class VersionInfo:
    version: str
    path: Path
    metadata: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.metadata.get("kind", "?"))

    @property
    def test_metric(self) -> dict[str, Any]:
        """Test-cutoff metrics of the served model."""
        return (self.metrics.get("test") or {}).get(self.kind, {})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layout = settings.layout
        self.root = self.layout.registry_root
        self.models_dir = self.layout.models_dir
        self.pointer = self.layout.production_pointer
        self.history_path = self.layout.production_history
        self.audit_path = self.layout.audit_log
        self.stages_path = self.layout.stages_file

    # --- reading --------------------------------------------------------------------------------
    def list_versions(self) -> list[VersionInfo]:
        """All complete versions, oldest first (temp folders of running writers are skipped)."""
        if not self.models_dir.exists():
            return []
        names = sorted(p.name for p in self.models_dir.iterdir() if p.is_dir() and VERSION_RE.match(p.name))
        return [self.get(n) for n in names]

    def get(self, version: str) -> VersionInfo:
        path = self.layout.model_dir(version)
        if not VERSION_RE.match(version) or not path.is_dir():
            raise RegistryError(f"unknown model version {version!r} (see `churn models list`)")
        return VersionInfo(version, path, _read_json(path / METADATA), _read_json(path / "metrics.json"))

    def production_version(self) -> str | None:
        """The served version named by the pointer file, or None before the first promotion."""
        try:
            name = self.pointer.read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def stages(self) -> RolloutState:
        """The staged shadow / challenger; ``StagesFileError`` (a ``RegistryError``) if corrupt."""
        return read_state(self.stages_path)

    def load(self, version: str) -> ChurnModel:
        """Load and smoke-test a version; ``ModelLoadError`` if it is missing or corrupt."""
        path = self.layout.model_dir(version)
        if not VERSION_RE.match(version) or not path.is_dir():
            raise ModelLoadError(f"model version {version!r} not found in {self.models_dir}")
        return ChurnModel.load(path)

    def load_production(self) -> ChurnModel:
        version = self.production_version()
        if version is None:
            raise NoProductionModel(
                f"no production model yet ({self.pointer} missing): run `churn train --promote`"
            )
        return self.load(version)

    def history(self) -> list[str]:
        return [str(v) for v in _read_json(self.history_path).get("production", [])]

    def audit_entries(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]

    # --- writing --------------------------------------------------------------------------------
    def new_version_name(self, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.UTC)
        while True:
            name = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
            if not self.layout.model_dir(name).exists():
                return name

    def register(self, write: Callable[[Path, str], None]) -> VersionInfo:
        """Create a version: ``write(tmp_dir, version)`` fills a temp folder, which must load and
        pass its smoke test before it is renamed into place (a failed run leaves nothing)."""
        version = self.new_version_name()
        with atomic_dir(self.layout.model_dir(version), validate=_validate_version) as tmp:
            write(tmp, version)
        return self.get(version)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with exclusive_lock(self.root / LOCK_FILE):
            yield

    def gate(self, version: str) -> dict[str, Any]:
        """Score candidate and current production on the candidate's test cutoff (same rows).

        Returns the figures; ``passed`` is False when the candidate does not beat production by
        ``promotion_min_gain`` on ``promotion_metric``.
        """
        from training.evaluate import score_metric

        metric = self.settings.promotion_metric
        candidate = self._load_for_promotion(version)
        current = self.production_version()
        out: dict[str, Any] = {"metric": metric, "candidate": version, "production": current, "passed": True}
        test_path = self.layout.model_dir(version) / TEST_SET
        if not test_path.exists():
            raise PromotionRefused(f"{version} has no {TEST_SET}: cannot compare it with production")
        test = read_table(test_path).to_pandas()
        y = test[LABEL].to_numpy()
        out["test_cutoff"] = str(test["cutoff"].iloc[0]) if "cutoff" in test and len(test) else None
        out["candidate_score"] = score_metric(metric, y, candidate.predict_proba_frame(test))
        if current is None or current == version:
            return out
        try:
            prod = self.load(current)
        except ModelLoadError as exc:  # a broken production model should be replaced, not defended
            out["production_error"] = str(exc)
            return out
        out["production_score"] = score_metric(metric, y, prod.predict_proba_frame(test))
        out["passed"] = out["candidate_score"] > out["production_score"] + self.settings.promotion_min_gain
        return out

    def _load_for_promotion(self, version: str) -> ChurnModel:
        self.get(version)
        try:
            return self.load(version)
        except ModelLoadError as exc:
            raise PromotionRefused(f"refusing {version}: {exc}") from exc

    def promote(
        self, version: str, force: bool = False, reason: str = "", actor: str | None = None
    ) -> dict[str, Any]:
        """Make ``version`` the production model if it passes the gate (or ``force``).

        A version that fails to load is refused even with ``force``.
        """
        with self._lock():
            current = self.production_version()
            if current == version:
                raise RegistryError(f"{version} is already the production model")
            if force:
                self._load_for_promotion(version)
                figures: dict[str, Any] = {"metric": self.settings.promotion_metric, "forced": True}
            else:
                figures = self.gate(version)
                if not figures["passed"]:
                    m = figures["metric"]
                    raise PromotionRefused(
                        f"refusing {version}: {m} {figures['candidate_score']:.4f} does not beat production "
                        f"{current} ({figures['production_score']:.4f} + min gain "
                        f"{self.settings.promotion_min_gain}) on test cutoff {figures.get('test_cutoff')}; "
                        "use --force to override"
                    )
            history = self.history() or ([current] if current else [])
            self._switch(version, [*history, version])
            self._audit(
                "promote", current, version, reason or ("forced" if force else "passed gate"), figures, actor
            )
            return figures

    def rollback(self, reason: str = "", actor: str | None = None) -> str:
        """Return production to the version promoted before the current one."""
        with self._lock():
            current = self.production_version()
            history = self.history()
            if current is None:
                raise RegistryError("no production model to roll back")
            if not history or history[-1] != current:
                history = [*history, current]
            if len(history) < 2:
                raise RegistryError(f"no previous production version to roll back to (history: {history})")
            previous = history[-2]
            try:
                self.load(previous)
            except ModelLoadError as exc:
                raise RegistryError(f"cannot roll back to {previous}: {exc}") from exc
            self._switch(previous, history[:-1])
            self._audit("rollback", current, previous, reason or "rollback", {}, actor)
            return previous

    # --- rollout stages ----------------------------------------------------------------------------
    def set_stage(
        self,
        version: str,
        stage: Stage,
        *,
        share: float | None = None,
        reason: str = "",
        actor: str | None = None,
    ) -> RolloutState:
        """Run ``version`` as the shadow, or as the challenger serving ``share`` of the users.

        Gated like promotion minus the metric (the API would refuse a model that cannot serve, so
        refusing it here keeps the stage file honest) and audited as ``stage:<stage>``.
        Raises ``RegistryError`` for a bad request, ``PromotionRefused`` for an unservable model.
        """
        _check_stage_request(stage, share)
        with self._lock():
            before = self.stages()
            self.get(version)
            if version == self.production_version():
                raise RegistryError(f"{version} is the production model; stage another version")
            self._gate_stage(version)
            now = _now()
            detail: dict[str, Any] = {}
            if stage == "challenger" and share is not None:
                after, detail = before.with_challenger(version, share, now), {"share": float(share)}
            else:
                after = before.with_shadow(version, now)
            self._write_stages(f"stage:{stage}", before, after, version, reason, detail, actor)
            return after

    def clear_stage(self, version: str, reason: str = "", actor: str | None = None) -> RolloutState:
        """Take ``version`` out of the rollout (whichever stage it holds); audited as ``stage:clear``."""
        with self._lock():
            before = self.stages()
            cleared = before.stage_of(version)
            if not cleared:
                raise RegistryError(f"{version} is neither the shadow nor the challenger model")
            after = before.without(version, now=_now())
            self._write_stages("stage:clear", before, after, version, reason, {"cleared": cleared}, actor)
            return after

    def _gate_stage(self, version: str) -> None:
        """The staged model loads, passes its smoke test and reads this deployment's features."""
        model = self._load_for_promotion(version)
        mismatch = feature_service_mismatch(model, self.settings.feature_service)
        if mismatch is not None:
            raise PromotionRefused(f"refusing {version}: {mismatch}")

    def _write_stages(
        self,
        action: str,
        before: RolloutState,
        after: RolloutState,
        version: str,
        reason: str,
        detail: dict[str, Any],
        actor: str | None,
    ) -> None:
        """Persist, then audit: an audit line always describes a state that was written."""
        write_state(self.stages_path, after)
        previous = json.dumps(before.versions(), sort_keys=True)
        self._audit(action, previous, version, reason or action, {**detail, "stages": after.to_dict()}, actor)

    def _switch(self, version: str, history: list[str]) -> None:
        # History first, pointer last: the pointer is the only thing readers look at.
        write_json_atomic(self.history_path, {"production": history})
        write_text_atomic(self.pointer, version + "\n")

    def _audit(
        self,
        action: str,
        before: str | None,
        after: str,
        reason: str,
        metrics: dict[str, Any],
        actor: str | None,
    ) -> None:
        entry = {
            "ts": _now(),
            "action": action,
            "who": actor or _whoami(),
            "from": before,
            "to": after,
            "reason": reason,
            "metrics": metrics,
        }
        append_line(self.audit_path, json.dumps(entry, sort_keys=True, default=str))


def _validate_version(path: Path) -> None:
    """Every model a version holds must load and reproduce its smoke predictions."""
    meta = _read_json(path / METADATA)
    for kind in meta.get("models") or {meta.get("kind")}:
        ChurnModel.load(path, kind=kind)


def _check_stage_request(stage: str, share: float | None) -> None:
    """A shadow takes no share; a challenger's share is a fraction of the users in (0, 1]."""
    if stage == "shadow":
        if share is not None:
            raise RegistryError("a shadow serves nobody: it takes no share")
    elif stage == "challenger":
        if share is None or not (0.0 < share <= 1.0):
            raise RegistryError(f"challenger share must be in (0, 1], got {share}")
    else:
        raise RegistryError(f"unknown stage {stage!r}: shadow or challenger")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid:{os.getuid()}"
