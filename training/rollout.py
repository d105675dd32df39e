"""Model rollout: shadow and challenger (A/B) stages, arm assignment, and the comparison report.

Stage state lives next to the production pointer, in ``<registry_root>/stages.json``, replaced
atomically (temp file → ``os.replace``) under the registry's lock, and every change is a line in
``audit.log`` (``stage:shadow`` / ``stage:challenger`` / ``stage:clear``)::

    {"shadow": {"version": V, "since": ts} | null,
     "challenger": {"version": V, "share": 0.1, "salt": "...", "since": ts} | null}

* **shadow** — scored by the API on the same feature vector after the response is sent; its
  predictions are only logged, never returned.
* **challenger** — serves ``share`` of the users, chosen by a stable hash of ``salt + user_id``
  (:func:`assign_arm`), so a user always lands in the same arm while the experiment runs. The salt
  is fixed when the challenger is first staged (its version name), so raising the share only adds
  users to the challenger arm (nobody switches back), and a new experiment reshuffles the users.

Staging is gated like promotion, minus the metric: the version must load, reproduce its smoke
predictions and use the feature service this deployment serves. :func:`compare` reads the
prediction log (``service/prediction_log.py``) and reports agreement and — once labels mature —
each arm's ROC-AUC and precision, with a recommendation (promote / keep / drop).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.io import write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

    from churn.settings import Settings
    from training.registry import ModelRegistry

STAGES_FILE = "stages.json"
ARMS = ("production", "challenger")
_HASH_SCALE = float(2**64)


# --- arm assignment ------------------------------------------------------------------------------
def bucket(user_id: str, salt: str) -> float:
    """A stable position of ``user_id`` in [0, 1) (blake2b of salt + user id; not Python's hash)."""
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def assign_arm(user_id: str, share: float, salt: str) -> str:
    """``"challenger"`` for the ``share`` of users whose bucket falls below it, else ``"production"``."""
    if share <= 0.0:
        return "production"
    return "challenger" if bucket(user_id, salt) < share else "production"


# --- stage state --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutState:
    shadow: str | None = None
    challenger: str | None = None
    share: float = 0.0
    salt: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        shadow = data.get("shadow") or {}
        challenger = data.get("challenger") or {}
        return cls(
            shadow=shadow.get("version"),
            challenger=challenger.get("version"),
            share=float(challenger.get("share", 0.0)) if challenger else 0.0,
            salt=str(challenger.get("salt", challenger.get("version", ""))) if challenger else "",
        )


def stages_path(settings: Settings) -> Path:
    return Path(settings.registry_root) / STAGES_FILE


def read_stages_raw(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(stages_path(settings).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:  # written atomically, so this means someone edited it by hand
        raise ValueError(f"{stages_path(settings)} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def read_state(settings: Settings) -> RolloutState:
    return RolloutState.from_dict(read_stages_raw(settings))


def _gate(registry: ModelRegistry, version: str) -> None:
    """Loads, passes its smoke test and serves this deployment's feature service."""
    from training.registry import PromotionRefused

    model = registry._load_for_promotion(version)  # RegistryError if unknown, PromotionRefused if broken
    fs = getattr(model, "feature_service", None)
    if fs != registry.settings.feature_service:
        raise PromotionRefused(
            f"refusing {version}: it uses feature service {fs!r}, this deployment serves "
            f"{registry.settings.feature_service!r}"
        )


def set_stage(
    registry: ModelRegistry,
    version: str,
    *,
    shadow: bool = False,
    challenger: float | None = None,
    clear: bool = False,
    reason: str = "",
    actor: str | None = None,
) -> dict[str, Any]:
    """Mark ``version`` as shadow, as challenger with ``challenger`` share, or clear its stage.

    Returns the new stage state. Raises ``RegistryError`` (or ``PromotionRefused``) when refused.
    """
    from training.registry import RegistryError

    if sum([bool(shadow), challenger is not None, bool(clear)]) != 1:
        raise RegistryError("choose exactly one of --shadow, --challenger SHARE, --clear")
    if challenger is not None and not (0.0 < challenger <= 1.0):
        raise RegistryError(f"challenger share must be in (0, 1], got {challenger}")
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    settings = registry.settings
    with registry._lock():
        state = read_stages_raw(settings)
        before = json.loads(json.dumps(state))
        if clear:
            cleared = [s for s in ("shadow", "challenger") if (state.get(s) or {}).get("version") == version]
            if not cleared:
                raise RegistryError(f"{version} is neither the shadow nor the challenger model")
            for s in cleared:
                state[s] = None
            action, detail = "stage:clear", {"cleared": cleared}
        else:
            registry.get(version)
            if version == registry.production_version():
                raise RegistryError(f"{version} is the production model; stage another version")
            _gate(registry, version)
            # a version holds one rollout stage at a time: staging it elsewhere moves it
            if shadow:
                if (state.get("challenger") or {}).get("version") == version:
                    state["challenger"] = None
                state["shadow"] = {"version": version, "since": now}
                action, detail = "stage:shadow", {}
            else:
                if (state.get("shadow") or {}).get("version") == version:
                    state["shadow"] = None
                old = state.get("challenger") or {}
                same = old.get("version") == version
                state["challenger"] = {
                    "version": version,
                    "share": float(challenger),  # type: ignore[arg-type]
                    "salt": old.get("salt", version) if same else version,
                    "since": old.get("since", now) if same else now,
                }
                action, detail = "stage:challenger", {"share": float(challenger)}  # type: ignore[arg-type]
        state["updated_at"] = now
        write_json_atomic(stages_path(settings), state)
        prev = {k: (before.get(k) or {}).get("version") for k in ("shadow", "challenger")}
        registry._audit(
            action, json.dumps(prev, sort_keys=True), version, reason or action, {**detail, "stages": state}, actor
        )
        return state


# --- comparison -----------------------------------------------------------------------------------
def _tier(p: Any, medium: float, high: float) -> Any:
    import numpy as np

    return np.where(p >= high, "high", np.where(p >= medium, "medium", "low"))


def _agreement(base: pd.Series, other: pd.Series, settings: Settings) -> dict[str, Any]:
    """Spearman rank correlation and the share of users whose risk tier differs (latest per user)."""
    from scipy.stats import spearmanr

    n = len(base)
    out: dict[str, Any] = {"users": int(n)}
    if n >= 3 and base.nunique() > 1 and other.nunique() > 1:
        out["spearman"] = float(spearmanr(base.to_numpy(), other.to_numpy()).statistic)
    else:
        out["spearman"] = None
    t1 = _tier(base.to_numpy(), settings.risk_medium, settings.risk_high)
    t2 = _tier(other.to_numpy(), settings.risk_medium, settings.risk_high)
    out["tier_differs_share"] = float((t1 != t2).mean()) if n else None
    out["mean_abs_diff"] = float((base - other).abs().mean()) if n else None
    return out


def _labelled(settings: Settings, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Attach ``churned`` to predictions whose 30-day label window is covered by raw events
    (same rule and label as ``churn monitor``); returns (rows, mature dates, immature dates)."""
    import pandas as pd

    from jobs.monitor import active_users, labels_mature

    pieces, mature, immature = [], [], []
    for day, rows in frame.groupby("date"):
        date = dt.date.fromisoformat(str(day))
        ok, _ = labels_mature(settings, date)
        if not ok:
            immature.append(str(day))
            continue
        mature.append(str(day))
        end = date + dt.timedelta(days=settings.churn_horizon_days)
        active = set(active_users(settings, date, end)["user_id"].to_pylist())
        rows = rows.copy()
        rows["churned"] = (~rows["user_id"].isin(active)).astype(int)
        pieces.append(rows)
    out = pd.concat(pieces, ignore_index=True) if pieces else frame.iloc[0:0].assign(churned=0)
    return out, mature, immature


def _performance(rows: pd.DataFrame) -> dict[str, Any]:
    from sklearn.metrics import precision_score, roc_auc_score

    y = rows["churned"].to_numpy()
    both = len(set(y.tolist())) == 2
    return {
        "users": int(len(rows)),
        "churn_rate": float(y.mean()) if len(y) else None,
        "roc_auc": float(roc_auc_score(y, rows["probability"])) if both else None,
        "precision": float(precision_score(y, rows["will_churn"].astype(int), zero_division=0)) if len(y) else None,
    }


def read_log(settings: Settings, since: dt.date, until: dt.date | None = None) -> pd.DataFrame:
    """Prediction-log records of days ``since`` .. ``until`` (inclusive); final files only."""
    import pandas as pd
    import pyarrow.parquet as pq

    root = Path(settings.prediction_log_dir)
    frames = []
    if root.exists():
        for part in sorted(root.glob("date=*")):
            day = part.name.split("=", 1)[1]
            try:
                d = dt.date.fromisoformat(day)
            except ValueError:
                continue
            if d < since or (until is not None and d > until):
                continue
            for f in sorted(part.glob("part-*.parquet")):
                frames.append(pq.read_table(f).to_pandas())
    if not frames:
        return pd.DataFrame(
            columns=["request_id", "user_id", "model_version", "arm", "kind", "probability", "will_churn", "ts", "key"]
        )
    df = pd.concat(frames, ignore_index=True)
    # one scoring = (request, user): a batch request scores many users under one request id
    df["key"] = df["request_id"].fillna("").astype(str) + "\x1f" + df["user_id"].astype(str)
    df["date"] = pd.to_datetime(df["ts"], utc=True).dt.date.astype(str)
    return df


def compare(settings: Settings, since: dt.date, until: dt.date | None = None) -> dict[str, Any]:
    """Agreement of production with shadow / challenger, per-arm performance once labels mature,
    and a recommendation (``promote`` / ``keep`` / ``drop``) with the command that acts on it."""
    df = read_log(settings, since, until)
    state = read_state(settings)
    report: dict[str, Any] = {
        "since": since.isoformat(),
        "until": until.isoformat() if until else None,
        "records": int(len(df)),
        "stages": {"shadow": state.shadow, "challenger": state.challenger, "share": state.share},
        "candidates": {},
    }
    if df.empty:
        report["recommendation"] = {"action": "keep", "reason": "no predictions logged in the period", "command": None}
        return report
    df = df.sort_values("ts")
    served = df[df["kind"] == "served"]
    report["served_by_arm"] = {str(k): int(v) for k, v in served.groupby("arm").size().items()}
    # production score of every request: served by production, or scored alongside a challenger
    prod = df[df["arm"] == "production"].drop_duplicates("key", keep="last").set_index("key")
    labelled, mature, immature = _labelled(settings, served)
    report["labels"] = {"mature_dates": mature, "immature_dates": immature}
    perf_prod = _performance(labelled[labelled["arm"] == "production"]) if len(labelled) else None
    versions_prod = sorted(set(served.loc[served["arm"] == "production", "model_version"]))
    report["production"] = {"versions": versions_prod, "performance": perf_prod}

    for arm in ("shadow", "challenger"):
        rows = df[df["arm"] == arm]
        if rows.empty:
            continue
        for version, vrows in rows.groupby("model_version"):
            vrows = vrows.drop_duplicates("key", keep="last").set_index("key")
            paired = vrows.join(prod[["probability", "user_id"]], how="inner", rsuffix="_prod")
            per_user = paired.sort_values("ts").groupby("user_id").last()
            entry: dict[str, Any] = {
                "arm": arm,
                "version": str(version),
                "records": int(len(vrows)),
                "agreement": _agreement(per_user["probability_prod"], per_user["probability"], settings),
            }
            if arm == "challenger":
                # A/B: each arm on its own users, labelled
                lab = labelled[(labelled["arm"] == "challenger") & (labelled["model_version"] == version)]
                entry["performance"] = _performance(lab) if len(lab) else None
                entry["production_performance"] = perf_prod
            else:
                # shadow: the same requests, both models, labelled by the served row's date
                sh = vrows.reset_index()
                sh = sh[sh["key"].isin(labelled["key"])]
                if len(sh):
                    lab = sh.merge(labelled[["key", "churned"]], on="key")
                    base = labelled[labelled["key"].isin(sh["key"])]
                    entry["performance"] = _performance(lab)
                    entry["production_performance"] = _performance(base)
                else:
                    entry["performance"] = None
                    entry["production_performance"] = None
            entry["recommendation"] = _recommend(settings, entry)
            report["candidates"][f"{arm}:{version}"] = entry
    current = [c for c in report["candidates"].values() if c["version"] in (state.shadow, state.challenger)]
    pick = current or list(report["candidates"].values())
    report["recommendation"] = (
        pick[-1]["recommendation"]
        if pick
        else {"action": "keep", "reason": "no shadow or challenger predictions in the period", "command": None}
    )
    return report


MIN_LABELLED = 200  # labelled users per arm before a verdict


def _recommend(settings: Settings, entry: dict[str, Any]) -> dict[str, Any]:
    version = entry["version"]
    perf, base = entry.get("performance"), entry.get("production_performance")
    if not perf or not base or perf.get("roc_auc") is None or base.get("roc_auc") is None:
        return {
            "action": "keep",
            "reason": "labels not mature yet (30 days of events after the prediction date); keep collecting",
            "command": None,
        }
    if min(perf["users"], base["users"]) < MIN_LABELLED:
        return {
            "action": "keep",
            "reason": f"fewer than {MIN_LABELLED} labelled users per arm; keep collecting",
            "command": None,
        }
    gain = perf["roc_auc"] - base["roc_auc"]
    margin = max(float(settings.promotion_min_gain), 0.0)
    figures = f"ROC-AUC {perf['roc_auc']:.4f} vs production {base['roc_auc']:.4f}"
    if gain > margin:
        return {
            "action": "promote",
            "reason": f"{figures} (+{gain:.4f})",
            "command": f'churn models promote {version} --reason "rollout compare: {figures}"',
        }
    if gain < -float(settings.performance_drop_margin):
        return {
            "action": "drop",
            "reason": f"{figures} ({gain:.4f})",
            "command": f"churn models stage {version} --clear",
        }
    return {"action": "keep", "reason": f"{figures}: no clear difference yet", "command": None}
