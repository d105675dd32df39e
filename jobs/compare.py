"""Production vs the staged shadow / challenger, judged from the prediction log.

``churn models compare`` answers "should this candidate replace production?" with evidence the
API collected while serving: every served prediction and every off-path shadow scoring is in the
prediction log (:mod:`service.prediction_log`), so this job needs no model and no feature store.

* **Agreement** (available at once): on the same requests, how differently the candidate ranks
  users (Spearman) and how many would change risk tier (:class:`churn.policies.RiskPolicy`).
* **Performance** (once labels mature, :class:`churn.policies.LabelPolicy`): the churn label of a
  prediction made on day D is known when raw events cover ``[D, D + horizon)``. A challenger is
  judged on its own users against production on the others (A/B); a shadow on the very requests
  production served.
* **Recommendation**: ``promote`` / ``keep`` / ``drop``, with the command that acts on it.

The result is typed (:class:`ComparisonReport`); ``to_dict()`` is the ``--json`` form, and the
last one is kept beside the stages (:func:`save`) for the console's Model page, which reads it as
JSON because the service layer never imports jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from churn.io import write_json_atomic
from churn.layout import partition_dates, partition_dir
from churn.policies import LabelPolicy, RiskPolicy

if TYPE_CHECKING:
    import pandas as pd

    from churn.settings import Settings

LOG_FILES = "part-*.parquet"
"""Final prediction-log files only: a writer's hidden ``.tmp-*`` files are never read."""
LOG_COLUMNS = ("request_id", "user_id", "model_version", "arm", "kind", "probability", "will_churn", "ts")
PRODUCTION, CHALLENGER, SHADOW = "production", "challenger", "shadow"
MIN_LABELLED = 200
"""Labelled users each side needs before a verdict: fewer make ROC-AUC differences noise."""

Action = Literal["promote", "keep", "drop"]


# --- the report -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recommendation:
    action: Action
    reason: str
    command: str | None = None

    @classmethod
    def keep(cls, reason: str) -> Recommendation:
        return cls("keep", reason)


@dataclass(frozen=True)
class Agreement:
    """Candidate vs production on the same users (the latest scoring of each)."""

    users: int
    spearman: float | None
    tier_differs_share: float | None
    mean_abs_diff: float | None


@dataclass(frozen=True)
class ArmPerformance:
    """One model on labelled users: ``roc_auc`` is ``None`` until both outcomes occur."""

    users: int
    churn_rate: float | None
    roc_auc: float | None
    precision: float | None


@dataclass(frozen=True)
class CandidateComparison:
    arm: str
    version: str
    records: int
    agreement: Agreement
    performance: ArmPerformance | None
    production_performance: ArmPerformance | None
    recommendation: Recommendation

    @property
    def key(self) -> str:
        return f"{self.arm}:{self.version}"


@dataclass(frozen=True)
class LabelCoverage:
    mature_dates: tuple[str, ...] = ()
    immature_dates: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageSummary:
    shadow: str | None
    challenger: str | None
    share: float


@dataclass(frozen=True)
class ComparisonReport:
    since: dt.date
    until: dt.date | None
    records: int
    stages: StageSummary
    recommendation: Recommendation
    served_by_arm: Mapping[str, int] = dataclasses.field(default_factory=dict)
    labels: LabelCoverage = LabelCoverage()
    production_versions: tuple[str, ...] = ()
    production_performance: ArmPerformance | None = None
    candidates: tuple[CandidateComparison, ...] = ()

    def candidate(self, arm: str, version: str) -> CandidateComparison:
        """``KeyError`` when that arm/version scored nothing in the period."""
        for c in self.candidates:
            if (c.arm, c.version) == (arm, version):
                return c
        raise KeyError(f"{arm}:{version}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``churn models compare --json``); candidates keyed ``<arm>:<version>``."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "records": self.records,
            "stages": dataclasses.asdict(self.stages),
            "served_by_arm": dict(self.served_by_arm),
            "labels": {k: list(v) for k, v in dataclasses.asdict(self.labels).items()},
            "production": {
                "versions": list(self.production_versions),
                "performance": _asdict(self.production_performance),
            },
            "candidates": {c.key: dataclasses.asdict(c) for c in self.candidates},
            "recommendation": dataclasses.asdict(self.recommendation),
        }


def _asdict(value: Any) -> dict[str, Any] | None:
    return None if value is None else dataclasses.asdict(value)


# --- reading the log --------------------------------------------------------------------------------
def read_prediction_log(settings: Settings, since: dt.date, until: dt.date | None = None) -> pd.DataFrame:
    """Prediction-log records of days ``since`` .. ``until`` (inclusive), with ``key`` and ``date``.

    ``key`` identifies one scoring (request, user): a batch request scores many users under one
    request id, and a shadow scoring shares the key of the served prediction it shadows.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    root = settings.layout.prediction_log_dir
    days = [d for d in partition_dates(root) if d >= since and (until is None or d <= until)]
    frames = [pq.read_table(f).to_pandas() for d in days for f in sorted(partition_dir(root, d).glob(LOG_FILES))]
    if not frames:
        return pd.DataFrame(columns=[*LOG_COLUMNS, "key", "date"])
    df = pd.concat(frames, ignore_index=True)
    df["key"] = df["request_id"].fillna("").astype(str) + "\x1f" + df["user_id"].astype(str)
    df["date"] = pd.to_datetime(df["ts"], utc=True).dt.date.astype(str)
    return df


# --- labels, agreement, performance -------------------------------------------------------------------
def attach_labels(settings: Settings, served: pd.DataFrame) -> tuple[pd.DataFrame, LabelCoverage]:
    """``churned`` for served predictions whose label window raw events already cover.

    The same rule and label as training and ``churn monitor``: no event in ``[D, D + horizon)``.
    """
    import pandas as pd

    from training.labels import active_users

    policy = LabelPolicy.from_settings(settings)
    event_days = partition_dates(settings.layout.raw_table("events"))
    last_event_day = event_days[-1] if event_days else None
    pieces, mature, immature = [], [], []
    for day, rows in served.groupby("date"):
        date = dt.date.fromisoformat(str(day))
        ok, _ = policy.mature(date, last_event_day)
        if not ok:
            immature.append(str(day))
            continue
        mature.append(str(day))
        start, end = policy.window(date)
        active = set(active_users(settings, start, end)["user_id"].to_pylist())
        pieces.append(rows.assign(churned=(~rows["user_id"].isin(active)).astype(int)))
    labelled = pd.concat(pieces, ignore_index=True) if pieces else served.iloc[0:0].assign(churned=0)
    return labelled, LabelCoverage(tuple(mature), tuple(immature))


def agreement(base: pd.Series, other: pd.Series, risk: RiskPolicy) -> Agreement:
    """How far ``other`` moves users from ``base``: rank correlation, tier changes, mean gap."""
    from scipy.stats import spearmanr

    n = len(base)
    spearman = None
    if n >= 3 and base.nunique() > 1 and other.nunique() > 1:
        spearman = float(spearmanr(base.to_numpy(), other.to_numpy()).statistic)
    if not n:
        return Agreement(0, spearman, None, None)
    differs = risk.tiers(base.to_numpy()) != risk.tiers(other.to_numpy())
    return Agreement(int(n), spearman, float(differs.mean()), float((base - other).abs().mean()))


def performance(rows: pd.DataFrame) -> ArmPerformance:
    from sklearn.metrics import precision_score, roc_auc_score

    y = rows["churned"].to_numpy()
    if not len(y):
        return ArmPerformance(0, None, None, None)
    both = len(set(y.tolist())) == 2
    return ArmPerformance(
        users=int(len(y)),
        churn_rate=float(y.mean()),
        roc_auc=float(roc_auc_score(y, rows["probability"])) if both else None,
        precision=float(precision_score(y, rows["will_churn"].astype(int), zero_division=0)),
    )


def recommend(
    settings: Settings, version: str, perf: ArmPerformance | None, base: ArmPerformance | None
) -> Recommendation:
    """Promote on a clear ROC-AUC gain, drop on a clear loss, otherwise keep collecting.

    "Clear" uses the same margins as promotion (``promotion_min_gain``) and as the monitor's
    performance-drop alert (``performance_drop_margin``).
    """
    if perf is None or base is None or perf.roc_auc is None or base.roc_auc is None:
        horizon = LabelPolicy.from_settings(settings).horizon_days
        return Recommendation.keep(
            f"labels not mature yet ({horizon} days of events after the prediction date); keep collecting"
        )
    if min(perf.users, base.users) < MIN_LABELLED:
        return Recommendation.keep(f"fewer than {MIN_LABELLED} labelled users per arm; keep collecting")
    gain = perf.roc_auc - base.roc_auc
    figures = f"ROC-AUC {perf.roc_auc:.4f} vs production {base.roc_auc:.4f}"
    if gain > max(float(settings.promotion_min_gain), 0.0):
        command = f'churn models promote {version} --reason "rollout compare: {figures}"'
        return Recommendation("promote", f"{figures} (+{gain:.4f})", command)
    if gain < -float(settings.performance_drop_margin):
        return Recommendation("drop", f"{figures} ({gain:.4f})", f"churn models stage {version} --clear")
    return Recommendation.keep(f"{figures}: no clear difference yet")


# --- the comparison ---------------------------------------------------------------------------------
def _challenger_performance(
    labelled: pd.DataFrame, version: str, production: ArmPerformance | None
) -> tuple[ArmPerformance | None, ArmPerformance | None]:
    """A/B: the challenger on the users it served vs production on the users production served."""
    rows = labelled[(labelled["arm"] == CHALLENGER) & (labelled["model_version"] == version)]
    return (performance(rows) if len(rows) else None), production


def _shadow_performance(
    labelled: pd.DataFrame, scorings: pd.DataFrame
) -> tuple[ArmPerformance | None, ArmPerformance | None]:
    """Shadow: both models on the same labelled requests (labelled by the served prediction)."""
    shadowed = scorings.reset_index()
    shadowed = shadowed[shadowed["key"].isin(labelled["key"])]
    if not len(shadowed):
        return None, None
    candidate = shadowed.merge(labelled[["key", "churned"]], on="key")
    base = labelled[labelled["key"].isin(shadowed["key"])]
    return performance(candidate), performance(base)


def _candidates(
    settings: Settings,
    log: pd.DataFrame,
    labelled: pd.DataFrame,
    production_perf: ArmPerformance | None,
) -> list[CandidateComparison]:
    """One comparison per (arm, version) that scored in the period, shadow before challenger."""
    risk = RiskPolicy.from_settings(settings)
    # production's score of every request: served by production, or scored beside a challenger
    production = log[log["arm"] == PRODUCTION].drop_duplicates("key", keep="last").set_index("key")
    out = []
    for arm in (SHADOW, CHALLENGER):
        for version, rows in log[log["arm"] == arm].groupby("model_version"):
            scorings = rows.drop_duplicates("key", keep="last").set_index("key")
            paired = scorings.join(production[["probability", "user_id"]], how="inner", rsuffix="_prod")
            per_user = paired.sort_values("ts").groupby("user_id").last()
            if arm == CHALLENGER:
                perf, base = _challenger_performance(labelled, str(version), production_perf)
            else:
                perf, base = _shadow_performance(labelled, scorings)
            out.append(
                CandidateComparison(
                    arm=arm,
                    version=str(version),
                    records=int(len(scorings)),
                    agreement=agreement(per_user["probability_prod"], per_user["probability"], risk),
                    performance=perf,
                    production_performance=base,
                    recommendation=recommend(settings, str(version), perf, base),
                )
            )
    return out


def _overall(candidates: list[CandidateComparison], staged: StageSummary) -> Recommendation:
    """The verdict on what is staged now (else on the last candidate seen in the period)."""
    current = [c for c in candidates if c.version in (staged.shadow, staged.challenger)]
    pick = current or candidates
    if not pick:
        return Recommendation.keep("no shadow or challenger predictions in the period")
    return pick[-1].recommendation


def compare(settings: Settings, since: dt.date, until: dt.date | None = None) -> ComparisonReport:
    """The comparison report for prediction-log days ``since`` .. ``until`` (inclusive)."""
    from training.registry import ModelRegistry

    state = ModelRegistry(settings).stages()
    staged = StageSummary(state.shadow, state.challenger, state.share)
    log = read_prediction_log(settings, since, until)
    if log.empty:
        return ComparisonReport(since, until, 0, staged, Recommendation.keep("no predictions logged in the period"))
    log = log.sort_values("ts")
    served = log[log["kind"] == "served"]
    labelled, coverage = attach_labels(settings, served)
    production_perf = performance(labelled[labelled["arm"] == PRODUCTION]) if len(labelled) else None
    candidates = _candidates(settings, log, labelled, production_perf)
    return ComparisonReport(
        since=since,
        until=until,
        records=int(len(log)),
        stages=staged,
        recommendation=_overall(candidates, staged),
        served_by_arm={str(k): int(v) for k, v in served.groupby("arm").size().items()},
        labels=coverage,
        production_versions=tuple(sorted(set(served.loc[served["arm"] == PRODUCTION, "model_version"]))),
        production_performance=production_perf,
        candidates=tuple(candidates),
    )


def _since_day(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).date()
    except ValueError:
        return None


def compare_staged(settings: Settings, date: dt.date) -> ComparisonReport | None:
    """The daily comparison: what is staged now, from the day it was staged until ``date``.

    ``None`` when nothing is staged (the kept report then stays as the last word on the last
    candidate; the console shows whether its stages are still the current ones).
    """
    from training.registry import ModelRegistry

    state = ModelRegistry(settings).stages()
    if not (state.shadow or state.challenger):
        return None
    starts = [
        d
        for version, since in ((state.shadow, state.shadow_since), (state.challenger, state.challenger_since))
        if version and (d := _since_day(since)) is not None
    ]
    since = min(starts) if starts else date
    return compare(settings, min(since, date), date)


def save(settings: Settings, report: ComparisonReport, now: dt.datetime | None = None) -> None:
    """Keep ``report`` as the latest comparison (replaced atomically: a reader sees old or new)."""
    generated = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    write_json_atomic(settings.layout.comparison_latest, {"generated_at": generated, **report.to_dict()})
