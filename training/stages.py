"""Rollout stage state: which versions run as shadow and as challenger, and its file format.

Only :class:`training.registry.ModelRegistry` calls this module: the registry owns the lock, the
gate and the audit around every change, and everyone else asks ``ModelRegistry.stages()``.
The state lives in ``DataLayout.stages_file`` (``stages.json``), replaced atomically::

    {"shadow": {"version": V, "since": ts} | null,
     "challenger": {"version": V, "share": 0.1, "salt": "...", "since": ts} | null,
     "updated_at": ts}

* **shadow**: scored by the API on the same feature vector after the response is sent; its
  predictions are only logged, never returned.
* **challenger**: serves ``share`` of the users, chosen by a stable hash of ``salt + user_id``
  (:mod:`service.routing`). The salt is fixed when a challenger is first staged (its version name),
  so raising the share only adds users to the challenger arm, and a new experiment reshuffles them.

A version holds at most one stage: staging it in the other slot moves it there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from churn.errors import RegistryError
from churn.io import write_json_atomic

Stage = Literal["shadow", "challenger"]
STAGES: tuple[Stage, ...] = ("shadow", "challenger")


class StagesFileError(RegistryError):
    """``stages.json`` is not valid JSON: it is written atomically, so someone edited it by hand."""


@dataclass(frozen=True)
class RolloutState:
    """The staged shadow and challenger (``None``: the slot is empty)."""

    shadow: str | None = None
    challenger: str | None = None
    share: float = 0.0
    salt: str = ""
    shadow_since: str | None = None
    challenger_since: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        """Tolerant of missing keys so that a hand-trimmed file still reads as a valid state."""
        shadow = data.get("shadow") or {}
        challenger = data.get("challenger") or {}
        return cls(
            shadow=shadow.get("version"),
            challenger=challenger.get("version"),
            share=float(challenger.get("share", 0.0)) if challenger else 0.0,
            salt=str(challenger.get("salt", challenger.get("version", ""))) if challenger else "",
            shadow_since=shadow.get("since"),
            challenger_since=challenger.get("since"),
            updated_at=data.get("updated_at"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The file format (and the ``stages`` detail of an audit entry)."""
        shadow = {"version": self.shadow, "since": self.shadow_since} if self.shadow else None
        challenger = (
            {"version": self.challenger, "share": self.share, "salt": self.salt, "since": self.challenger_since}
            if self.challenger
            else None
        )
        out: dict[str, Any] = {"shadow": shadow, "challenger": challenger}
        if self.updated_at is not None:
            out["updated_at"] = self.updated_at
        return out

    def versions(self) -> dict[str, str | None]:
        """Stage → version, the ``from`` side of an audit entry."""
        return {"shadow": self.shadow, "challenger": self.challenger}

    def stage_of(self, version: str) -> list[Stage]:
        return [s for s in STAGES if self.versions()[s] == version]

    # --- transitions (pure: the registry persists and audits them) -------------------------------
    def with_shadow(self, version: str, now: str) -> RolloutState:
        state = self.without(version) if self.challenger == version else self
        return dataclasses.replace(state, shadow=version, shadow_since=now, updated_at=now)

    def with_challenger(self, version: str, share: float, now: str) -> RolloutState:
        """Re-staging the running challenger only changes its share: same salt, same start."""
        same = self.challenger == version
        state = self.without(version) if self.shadow == version else self
        return dataclasses.replace(
            state,
            challenger=version,
            share=float(share),
            salt=self.salt if same else version,
            challenger_since=self.challenger_since if same else now,
            updated_at=now,
        )

    def without(self, version: str, now: str | None = None) -> RolloutState:
        state = self
        if self.shadow == version:
            state = dataclasses.replace(state, shadow=None, shadow_since=None)
        if self.challenger == version:
            state = dataclasses.replace(state, challenger=None, share=0.0, salt="", challenger_since=None)
        return dataclasses.replace(state, updated_at=now) if now is not None else state


def read_state(path: Path) -> RolloutState:
    """The state in ``path``; no file means nothing is staged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return RolloutState()
    except ValueError as exc:
        raise StagesFileError(f"{path} is not valid JSON: {exc}") from exc
    return RolloutState.from_dict(data if isinstance(data, dict) else {})


def write_state(path: Path, state: RolloutState) -> None:
    """Temp file then rename, so the API's watcher never reads half a file."""
    write_json_atomic(path, state.to_dict())
