"""Model quality on public logs and the synthetic world: the platform against an RFM reference.

For each log the platform's own pipeline runs end to end in a temporary ``CHURN_DATA_DIR``, through
the CLI exactly as a user would call it (``churn data import --event-map ... --unmapped activity``
or ``churn data generate``, then ``churn features build``, ``churn features apply``, ``churn train``).
The trained version's saved test set is then scored here with the version's served model, and in
the same run a reference is built straight from the raw events with pandas: a plain
recency/frequency/monetary LightGBM on the same population (users active within the last
``active_days`` before each cutoff), the same label (no event in ``[T, T + horizon)``) and the same
train/validation/test cutoffs the platform used (read from the version's metadata). Every scorer is
judged on the same test rows, with paired bootstrap intervals: the public logs are small and noisy,
and a point estimate alone would over-read differences of a few hundredths.

Logs:
* ``shop``: retentioneering's simple online shop (see ``benchmarks/public_logs.py``);
* ``churnsim``: fightchurn's ChurnSim ``socialnet7`` simulation;
* ``synthetic``: ``churn data generate`` (the only one with an oracle: the true churn probability).

    .venv/bin/python benchmarks/model_quality.py                      # all three logs
    .venv/bin/python benchmarks/model_quality.py --logs shop,synthetic --quick --out quality.json
    .venv/bin/python benchmarks/model_quality.py --logs shop --origins 4    # rolling origins

Rolling origins (``--origins N``): one cutoff is never enough to judge on (the shop's last full
cutoff, for one, is degenerate: almost every eligible user churns). With N > 1 each public log is
run N times, the k-th time (k = 0..N-1) on the raw log truncated to end ``k * ORIGIN_STEP_DAYS``
days earlier, before import, and then shifted so the truncated log ends yesterday. Each origin
thus has its own test cutoff, its own platform version and its own reference; a summary line per
log gives the mean platform - reference ROC-AUC over origins and how many origins have the
platform's ROC-AUC below the reference's 95% interval. The synthetic world is generated, not
loaded, so it runs origin 0 only (a note says so).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import public_logs  # the sibling script: run as a file, this folder is the first import root
from sklearn.metrics import average_precision_score, roc_auc_score

from churn.settings import Settings
from training.evaluate import top_mask
from training.registry import TEST_SET, ModelRegistry

LOGS = ("shop", "churnsim", "synthetic")
ORIGIN_STEP_DAYS = 7  # --origins: each origin ends this many days before the previous one
LABEL = "churned"
RECENCY = "days_since_last_activity"

# The shop's events → canonical types. The platform counts logins, course views, quiz attempts
# and completions; everything unlisted becomes generic ``activity`` (it keeps a user active and
# feeds recency, but no typed count).
SHOP_EVENT_MAP = {
    "main": "login",  # landing on the main page is the shop's nearest thing to starting a session
    "catalog": "course_view",  # browsing the catalogue = browsing courses
    "product1": "course_view",  # looking at one item = opening one course
    "product2": "course_view",
    "cart": "quiz_attempt",  # the first committed step beyond looking, as a quiz is beyond watching
    "payment_done": "course_complete",  # the funnel's goal reached, as a course completed is a learner's
    # delivery_* and payment_choice/card/cash: checkout sub-steps that follow a cart almost
    # mechanically; counted as typed events they would only repeat the cart signal, so: activity.
}

# ChurnSim socialnet7's behaviours → canonical types, by role rather than by name.
CHURNSIM_EVENT_MAP = {
    "like": "course_view",  # the most frequent, passive consumption
    "post": "quiz_attempt",  # active contribution
    "newfriend": "course_complete",  # the rare, high-utility milestone
    # message/reply (positive), adview/dislike/unfriend (negative utility): no canonical analogue;
    # kept as activity, so the typed features never see the behaviours that push users away.
}

EVENT_MAPS = {"shop": SHOP_EVENT_MAP, "churnsim": CHURNSIM_EVENT_MAP}


@dataclass
class LogRun:
    """What one log's run produced: the scored test rows, the cutoffs, timings and notes."""

    name: str
    data_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    version: str | None = None
    cutoffs: dict[str, Any] = field(default_factory=dict)
    platform_reported: dict[str, Any] = field(default_factory=dict)
    horizon_days: int = 30
    active_days: int = 30
    origin: int = 0  # rolling origin k: the raw log was cut k * ORIGIN_STEP_DAYS days short
    shift_days: int | None = None  # days the public log was moved forward (to end yesterday)


class Timer:
    """``with Timer(run, "train"):`` records wall seconds under that name."""

    def __init__(self, run: LogRun, name: str) -> None:
        self.run, self.name = run, name

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.run.timings[self.name] = round(time.perf_counter() - self.t0, 1)


# --- the platform's pipeline -------------------------------------------------------------------


def _churn(args: list[str], data_dir: Path, env_extra: dict[str, str]) -> str:
    """One ``churn`` CLI call against the temp store; returns its output, raised with it on failure."""
    exe = Path(sys.executable).with_name("churn")
    env = {**os.environ, "CHURN_DATA_DIR": str(data_dir), **env_extra}
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"`churn {' '.join(args)}` exited {proc.returncode}:\n{tail}")
    return proc.stdout


def _map_spec(mapping: dict[str, str]) -> str:
    """The inline ``source=canonical,...`` form ``churn data import --event-map`` accepts."""
    return ",".join(f"{k}={v}" for k, v in mapping.items())


def _import_log(run: LogRun, log: public_logs.EventLog, env: dict[str, str]) -> None:
    """Write the shifted log as Parquet next to the store and import it with its event map."""
    staging = run.data_dir.parent / f"{run.data_dir.name}-input"
    staging.mkdir(parents=True, exist_ok=True)
    events = staging / "events.parquet"
    log.events.to_parquet(events, index=False)
    args = [
        "data",
        "import",
        "--events",
        str(events),
        "--event-map",
        _map_spec(EVENT_MAPS[log.name]),
        "--unmapped",
        "activity",
        # Events a log records at the same second with the same type (or with types the map folds
        # into one) fail the duplicates gate; quarantine sets those few rows aside instead.
        "--quarantine",
    ]
    if log.payments is not None and len(log.payments):
        payments = staging / "payments.parquet"
        log.payments.to_parquet(payments, index=False)
        args += ["--payments", str(payments)]
    out = _churn(args, run.data_dir, env)
    run.notes += [" ".join(line.split()) for line in out.splitlines() if "data import" in line][-1:]


def churnsim_config(a: argparse.Namespace) -> public_logs.ChurnSimConfig:
    """The simulation's size: ``--quick`` shrinks it, explicit flags win over both."""
    small = {"customers": 800, "months": 6} if a.quick else {}
    given = {"customers": a.churnsim_customers, "months": a.churnsim_months}
    return public_logs.ChurnSimConfig(seed=a.seed, **{**small, **{k: v for k, v in given.items() if v}})


def truncate(log: public_logs.EventLog, days: int) -> public_logs.EventLog:
    """The log as it would have looked ``days`` days earlier: events and payments from midnight
    (UTC) of the day after its last event, less ``days``, onwards are dropped (original dates)."""
    if days <= 0:
        return log
    end = log.events["event_ts"].max().floor("D") + pd.Timedelta(days=1 - days)
    events = log.events[log.events["event_ts"] < end].reset_index(drop=True)
    payments = None
    if log.payments is not None:
        payments = log.payments[log.payments["payment_ts"] < end].reset_index(drop=True)
    return public_logs.EventLog(log.name, events, payments)


def run_pipeline(run: LogRun, a: argparse.Namespace) -> None:
    """Load or generate the data, then build, apply and train, each step timed."""
    env = {"CHURN_SEED": str(a.seed)}
    if a.feature_service:
        env["CHURN_FEATURE_SERVICE"] = a.feature_service
    with Timer(run, "data"):
        if run.name == "synthetic":
            users, days = (4000, 180) if a.quick else (20_000, 270)
            run.notes.append(f"churn data generate --users {users} --days {days} --seed {a.seed}")
            _churn(
                ["data", "generate", "--users", str(users), "--days", str(days), "--seed", str(a.seed)],
                run.data_dir,
                env,
            )
        else:
            log = public_logs.load(run.name, a.cache, churnsim_config(a))
            if run.origin:
                cut = run.origin * ORIGIN_STEP_DAYS
                log = truncate(log, cut)
                run.notes.append(
                    f"origin {run.origin}: raw log cut {cut} days short, ends {log.events['event_ts'].max():%Y-%m-%d}"
                )
            before = log.events["event_ts"].max()
            log = public_logs.shift_to_yesterday(log)
            run.shift_days = int((log.events["event_ts"].max() - before).days)
            run.notes.append(f"{log.events['user_id'].nunique():,} users, {len(log.events):,} events")
            _import_log(run, log, env)
    with Timer(run, "features build"):
        _churn(["features", "build"], run.data_dir, env)
    with Timer(run, "features apply"):
        _churn(["features", "apply"], run.data_dir, env)
    with Timer(run, "train"):
        _churn(["train"], run.data_dir, env)


def platform_test_rows(run: LogRun) -> pd.DataFrame:
    """The newest version's saved test rows scored by its served model (``platform`` column).

    Scoring the saved rows ourselves (rather than copying metrics.json) is what lets every other
    scorer be judged on exactly these rows, with paired bootstrap intervals.
    """
    settings = Settings.from_env(env={"CHURN_DATA_DIR": str(run.data_dir)})
    run.horizon_days, run.active_days = int(settings.churn_horizon_days), int(settings.active_days)
    registry = ModelRegistry(settings)
    info = registry.list_versions()[-1]
    run.version = info.version
    window = info.metadata.get("training_window", {})
    run.cutoffs = {
        "train": window.get("train_cutoffs", []),
        "valid": window.get("valid_cutoff"),
        "test": window.get("test_cutoff"),
    }
    served = info.metrics.get("served") or info.metadata.get("kind")
    run.platform_reported = {
        "served": served,
        "feature_service": info.metadata.get("feature_service"),
        "roc_auc": (info.metrics.get("test", {}).get(served) or {}).get("roc_auc"),
        "yardsticks": {k: v.get("roc_auc") for k, v in (info.metrics.get("yardsticks") or {}).items()},
    }
    test = pd.read_parquet(info.path / (info.metadata.get("test_set") or TEST_SET))
    test["user_id"] = test["user_id"].astype(str)
    test["platform"] = registry.load(info.version).predict_proba_frame(test)
    return test


# --- the reference: RFM straight from the raw events ---------------------------------------------


def _read_raw(data_dir: Path, table: str, columns: list[str]) -> pd.DataFrame:
    files = sorted((data_dir / "raw" / table).glob("date=*/*.parquet"))
    if not files:
        return pd.DataFrame(columns=columns)
    return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)


def daily_activity(data_dir: Path) -> pd.DataFrame:
    """Events per user per UTC day, with the day's last event time and its completions.

    Every cutoff's features and labels come from this one table, so the millions of raw events
    are grouped once rather than once per cutoff.
    """
    ev = _read_raw(data_dir, "events", ["user_id", "event_ts", "event_type"])
    ev["user_id"] = ev["user_id"].astype(str)
    ev["day"] = ev["event_ts"].dt.tz_convert("UTC").dt.floor("D").dt.tz_localize(None)
    ev["completion"] = (ev["event_type"] == "course_complete").astype(np.int32)
    return (
        ev.groupby(["user_id", "day"], sort=False)
        .agg(events=("event_ts", "size"), last_ts=("event_ts", "max"), completions=("completion", "sum"))
        .reset_index()
    )


def daily_payments(data_dir: Path) -> pd.DataFrame:
    """Succeeded payment amounts per user per UTC day (empty when the log has no payments)."""
    pay = _read_raw(data_dir, "payments", ["user_id", "payment_ts", "amount", "status"])
    if pay.empty:
        return pd.DataFrame(
            {
                "user_id": pd.Series(dtype=str),
                "day": pd.Series(dtype="datetime64[ns]"),
                "amount": pd.Series(dtype=float),
            }
        )
    pay = pay[pay["status"] == "succeeded"].copy()
    pay["user_id"] = pay["user_id"].astype(str)
    pay["day"] = pay["payment_ts"].dt.tz_convert("UTC").dt.floor("D").dt.tz_localize(None)
    return pay.groupby(["user_id", "day"], sort=False)["amount"].sum().reset_index()


def _window_sums(df: pd.DataFrame, t: pd.Timestamp, cols: list[str], windows: tuple[int | None, ...]) -> pd.DataFrame:
    """Sums of ``cols`` (and, for events, active days) over the last ``w`` days; ``None`` = all history."""
    out = {}
    for w in windows:
        part = df if w is None else df[df["day"] >= t - pd.Timedelta(days=w)]
        suffix = "all" if w is None else f"{w}d"
        sums = part.groupby("user_id")[cols].sum()
        out.update({f"{c}_{suffix}": sums[c] for c in cols})
        if "events" in cols:
            out[f"active_days_{suffix}"] = part.groupby("user_id").size()
    return pd.DataFrame(out)


def rfm_at(daily: pd.DataFrame, pays: pd.DataFrame, cutoff: dt.date, horizon: int, active: int) -> pd.DataFrame:
    """Eligible users at ``cutoff`` with recency/frequency/monetary features and the label.

    Eligible and labelled as the platform defines it (``churn.policies.LabelPolicy``): last event
    at most ``active`` days before the cutoff midnight; churned = no event in ``[T, T + horizon)``.
    """
    t = pd.Timestamp(cutoff)
    past = daily[daily["day"] < t]
    last = past.groupby("user_id")["last_ts"].max().dt.tz_convert("UTC").dt.tz_localize(None)
    recency = (t - last).dt.total_seconds() / 86400
    users = recency[recency <= active].index
    past = past[past["user_id"].isin(users)]
    frame = pd.DataFrame(index=users)
    frame["recency_days"] = recency.loc[users]
    frame["tenure_days"] = (t - past.groupby("user_id")["day"].min()).dt.days
    frame = frame.join(_window_sums(past, t, ["events", "completions"], (7, 30, 90, None)))
    frame = frame.join(_window_sums(pays[pays["day"] < t], t, ["amount"], (30, 90, None)))
    frame = frame.fillna(0.0)
    future = daily[(daily["day"] >= t) & (daily["day"] < t + pd.Timedelta(days=horizon))]["user_id"].unique()
    frame[LABEL] = (~frame.index.isin(future)).astype(np.int8)
    frame["cutoff"] = str(cutoff)
    return frame.rename_axis("user_id").reset_index()


def reference_scores(run: LogRun, seed: int) -> pd.DataFrame:
    """Train the RFM LightGBM on the platform's train cutoffs, stop early on its validation
    cutoff, and score its test cutoff; returns ``user_id, churned, recency_days, reference``."""
    daily, pays = daily_activity(run.data_dir), daily_payments(run.data_dir)
    at = lambda c: rfm_at(daily, pays, dt.date.fromisoformat(c), run.horizon_days, run.active_days)  # noqa: E731
    train = pd.concat([at(c) for c in run.cutoffs["train"]], ignore_index=True)
    valid, test = at(run.cutoffs["valid"]), at(run.cutoffs["test"])
    features = [c for c in train.columns if c not in ("user_id", "cutoff", LABEL)]
    model = lgb.LGBMClassifier(
        n_estimators=2000,
        learning_rate=0.03,
        num_leaves=15,
        min_child_samples=50,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        random_state=seed,
        n_jobs=2,
        verbose=-1,
    )
    model.fit(
        train[features],
        train[LABEL],
        eval_X=valid[features],
        eval_y=valid[LABEL],
        eval_metric="auc",
        callbacks=[lgb.early_stopping(100, verbose=False)],
    )
    run.notes.append(f"reference: {len(train):,} train rows, best iteration {model.best_iteration_}")
    test["reference"] = model.predict_proba(test[features])[:, 1]
    return test[["user_id", LABEL, "recency_days", "reference"]]


def oracle_scores(run: LogRun) -> pd.DataFrame | None:
    """The synthetic generator's true churn probability at the test cutoff, if it wrote one."""
    path = run.data_dir / "raw" / "oracle" / f"date={run.cutoffs['test']}" / "part-0.parquet"
    if not path.exists():
        return None
    df = pd.read_parquet(path, columns=["user_id", "p_churn"])
    return df.assign(user_id=df["user_id"].astype(str)).rename(columns={"p_churn": "oracle"})


# --- metrics --------------------------------------------------------------------------------------


def lift_top10(y: np.ndarray, score: np.ndarray) -> float:
    """Churn rate among the riskiest 10 % over the overall rate (the platform's own top rule)."""
    base = y.mean()
    return float(y[top_mask(score)].mean() / base) if base > 0 else float("nan")


def point_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "lift_top10": lift_top10(y, score),
    }


def bootstrap(y: np.ndarray, scores: dict[str, np.ndarray], resamples: int, seed: int) -> dict[str, np.ndarray]:
    """ROC-AUC of every scorer on the same resampled rows (paired), plus platform − reference.

    Pairing matters: scorers share the rows' luck, so their difference is much tighter than the
    two separate intervals suggest.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    out: dict[str, list[float]] = {k: [] for k in scores}
    while len(next(iter(out.values()))) < resamples:
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        for k, s in scores.items():
            out[k].append(roc_auc_score(yb, s[idx]))
    arrays = {k: np.asarray(v) for k, v in out.items()}
    if "platform" in arrays and "reference" in arrays:
        arrays["platform - reference"] = arrays["platform"] - arrays["reference"]
    return arrays


def interval(samples: np.ndarray) -> list[float]:
    return [float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))]


def evaluate(run: LogRun, platform: pd.DataFrame, reference: pd.DataFrame, resamples: int, seed: int) -> dict:
    """Every scorer on the platform's test rows; population agreement with the reference's rows."""
    rows = platform[["user_id", LABEL, "platform", RECENCY]].merge(
        reference.rename(columns={LABEL: "ref_label"}), on="user_id", how="left"
    )
    oracle = oracle_scores(run)
    if oracle is not None:
        rows = rows.merge(oracle, on="user_id", how="left")
    population = {
        "platform_rows": int(len(platform)),
        "reference_rows": int(len(reference)),
        "common_rows": int(rows["reference"].notna().sum()),
        "label_agreement": float((rows["ref_label"] == rows[LABEL])[rows["reference"].notna()].mean()),
    }
    keep = rows["reference"].notna() & rows[RECENCY].notna()
    if oracle is not None:
        keep &= rows["oracle"].notna()
    rows = rows[keep].reset_index(drop=True)
    y = rows[LABEL].to_numpy(dtype=int)
    scores = {
        "platform": rows["platform"].to_numpy(float),
        "reference": rows["reference"].to_numpy(float),
        "recency-only": rows[RECENCY].to_numpy(float),
    }
    if oracle is not None:
        scores["oracle"] = rows["oracle"].to_numpy(float)
    boot = bootstrap(y, scores, resamples, seed)
    scorers = {k: {**point_metrics(y, s), "roc_auc_ci95": interval(boot[k])} for k, s in scores.items()}
    return {
        "rows": int(len(y)),
        "churn_rate": float(y.mean()),
        "population": population,
        "scorers": scorers,
        "platform_minus_reference_roc_auc_ci95": interval(boot["platform - reference"]),
        "bootstrap_resamples": resamples,
    }


# --- one log, the table -----------------------------------------------------------------------------


def run_log(name: str, a: argparse.Namespace, origin: int = 0) -> dict:
    """Pipeline, reference and evaluation for one log at one rolling origin; a failure is
    reported, not raised."""
    root = Path(tempfile.mkdtemp(prefix=f"churn-quality-{name}-o{origin}-"))
    run = LogRun(name, root / "data", origin=origin)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"log": name, "origin": origin, "truncated_days": origin * ORIGIN_STEP_DAYS}
    try:
        run_pipeline(run, a)
        with Timer(run, "score test set"):
            platform = platform_test_rows(run)
        with Timer(run, "reference"):
            reference = reference_scores(run, a.seed)
        with Timer(run, "evaluate"):
            result.update(evaluate(run, platform, reference, a.resamples, a.seed))
    except Exception as exc:  # one broken log must not hide the others' results
        result["error"] = f"{type(exc).__name__}: {exc}"
        if a.verbose:
            traceback.print_exc()
    finally:
        run.timings["total"] = round(time.perf_counter() - t0, 1)
        result.update(
            version=run.version,
            cutoffs=run.cutoffs,
            shift_days=run.shift_days,
            test_cutoff_original=(
                str(dt.date.fromisoformat(run.cutoffs["test"]) - dt.timedelta(days=run.shift_days))
                if run.shift_days is not None and run.cutoffs.get("test")
                else None
            ),
            platform_reported=run.platform_reported,
            timings=run.timings,
            notes=run.notes,
            data_dir=str(root) if a.keep else None,
        )
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


ORDER = ("platform", "reference", "recency-only", "oracle")


def _label(r: dict) -> str:
    """The log's name, with its rolling origin when it is not the full log."""
    return f"{r['log']} −{r['truncated_days']}d" if r.get("origin") else r["log"]


def markdown(results: list[dict]) -> str:
    """The README table: one row per scorer per log (and origin), intervals from the paired bootstrap."""
    lines = [
        "| log | test cutoff | test rows (churn) | scorer | ROC-AUC [95% CI] | PR-AUC | lift top 10% "
        "| platform − reference [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {_label(r)} | – | – | failed | {r['error'].splitlines()[0][:120]} | | | |")
            continue
        head = f"| {_label(r)} | {r['cutoffs']['test']} | {r['rows']:,} ({r['churn_rate']:.0%}) |"
        for k in ORDER:
            if k not in r["scorers"]:
                continue
            s = r["scorers"][k]
            lo, hi = s["roc_auc_ci95"]
            auc = f"{s['roc_auc']:.3f} [{lo:.3f}, {hi:.3f}]"
            d_lo, d_hi = r["platform_minus_reference_roc_auc_ci95"]
            delta = f"{d_lo:+.3f} … {d_hi:+.3f}" if k == "platform" else ""
            lines.append(f"{head} {k} | {auc} | {s['pr_auc']:.3f} | {s['lift_top10']:.2f} | {delta} |")
            head = "| | | |"
    return "\n".join(lines)


def summary(r: dict) -> str:
    """Context under the table: cutoffs, population agreement, the paired difference, wall times."""
    times = ", ".join(f"{k} {v:.0f}s" for k, v in r["timings"].items())
    if "error" in r:
        return f"{_label(r)}: FAILED after {times}\n  {r['error']}"
    p, lo_hi = r["population"], r["platform_minus_reference_roc_auc_ci95"]
    rep = r["platform_reported"]
    own = f" (log's own date {r['test_cutoff_original']})" if r.get("test_cutoff_original") else ""
    return (
        f"{_label(r)}: version {r['version']} (served {rep.get('served')}, feature service "
        f"{rep.get('feature_service')}, metrics.json test ROC-AUC {rep.get('roc_auc')})\n"
        f"  cutoffs: {len(r['cutoffs']['train'])} train ({r['cutoffs']['train'][0]}..{r['cutoffs']['train'][-1]}), "
        f"valid {r['cutoffs']['valid']}, test {r['cutoffs']['test']}{own}\n"
        f"  population: platform {p['platform_rows']:,} rows, reference {p['reference_rows']:,}, "
        f"common {p['common_rows']:,}, label agreement {p['label_agreement']:.3f}\n"
        f"  platform - reference ROC-AUC, paired 95% CI: [{lo_hi[0]:+.3f}, {lo_hi[1]:+.3f}]\n"
        f"  {'; '.join(r['notes'])}\n"
        f"  wall time: {times}"
    )


def origins_summary(name: str, runs: list[dict]) -> dict:
    """Over one log's origins: mean platform − reference ROC-AUC, and how often the platform falls
    below the reference's 95% interval (or the paired difference's interval lies below zero)."""
    ok = [r for r in runs if "error" not in r]
    deltas = [r["scorers"]["platform"]["roc_auc"] - r["scorers"]["reference"]["roc_auc"] for r in ok]
    below = [
        r["origin"] for r in ok if r["scorers"]["platform"]["roc_auc"] < r["scorers"]["reference"]["roc_auc_ci95"][0]
    ]
    paired_below = [r["origin"] for r in ok if r["platform_minus_reference_roc_auc_ci95"][1] < 0]
    return {
        "log": name,
        "origins": len(runs),
        "succeeded": len(ok),
        "test_cutoffs": [r["cutoffs"]["test"] for r in ok],
        "test_cutoffs_original": [r.get("test_cutoff_original") for r in ok],
        "churn_rates": [r["churn_rate"] for r in ok],
        "platform_minus_reference_roc_auc": deltas,
        "mean_platform_minus_reference_roc_auc": float(np.mean(deltas)) if deltas else None,
        "origins_platform_below_reference_ci95": below,
        "origins_paired_difference_ci95_below_zero": paired_below,
    }


def origins_line(s: dict) -> str:
    """One summary line per log over its rolling origins."""
    if not s["succeeded"]:
        return f"{s['log']} over {s['origins']} origins: all failed"
    per = ", ".join(
        f"{orig or c} ({rate:.0%} churn) {d:+.3f}"
        for c, orig, rate, d in zip(
            s["test_cutoffs"],
            s["test_cutoffs_original"],
            s["churn_rates"],
            s["platform_minus_reference_roc_auc"],
            strict=True,
        )
    )
    failed = s["origins"] - s["succeeded"]
    return (
        f"{s['log']} over {s['succeeded']} origins{f' ({failed} failed)' if failed else ''}: "
        f"mean platform − reference ROC-AUC {s['mean_platform_minus_reference_roc_auc']:+.3f}; "
        f"platform below the reference's 95% CI at {len(s['origins_platform_below_reference_ci95'])}/{s['succeeded']} "
        f"origins; paired difference CI below zero at "
        f"{len(s['origins_paired_difference_ci95_below_zero'])}/{s['succeeded']}\n"
        f"  per origin (test cutoff in the log's own dates, churn rate, platform − reference): {per}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", default=",".join(LOGS), help=f"comma-separated subset of {','.join(LOGS)}")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quick", action="store_true", help="a smaller synthetic world and ChurnSim run")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: a temp file)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (at least 500)")
    ap.add_argument("--cache", type=Path, default=public_logs.DEFAULT_CACHE, help="downloads and simulations")
    ap.add_argument("--churnsim-customers", type=int, default=None, help="ChurnSim's starting customers")
    ap.add_argument("--churnsim-months", type=int, default=None, help="ChurnSim's simulated months")
    ap.add_argument("--feature-service", default=None, help="CHURN_FEATURE_SERVICE for the pipeline")
    ap.add_argument(
        "--origins",
        type=int,
        default=1,
        help=f"rolling origins per public log: the k-th (k=0..N-1) cuts the raw log {ORIGIN_STEP_DAYS}*k days short",
    )
    ap.add_argument("--keep", action="store_true", help="keep each log's temp data directory")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failed logs")
    a = ap.parse_args()
    logs = [x.strip() for x in a.logs.split(",") if x.strip()]
    if unknown := sorted(set(logs) - set(LOGS)):
        ap.error(f"unknown logs {unknown}; choose from {', '.join(LOGS)}")
    if a.resamples < 500:
        ap.error("--resamples must be at least 500")
    if a.origins < 1:
        ap.error("--origins must be at least 1")
    results, summaries = [], []
    for name in logs:
        n = a.origins
        if name == "synthetic" and n > 1:
            print(f"--- {name}: rolling origins are not supported for the generated world; origin 0 only", flush=True)
            n = 1
        runs = []
        for k in range(n):
            print(
                f"--- {name}" + (f" origin {k} (raw log cut {k * ORIGIN_STEP_DAYS} days short)" if n > 1 else ""),
                flush=True,
            )
            runs.append(run_log(name, a, origin=k))
            print(summary(runs[-1]), flush=True)
        results += runs
        if n > 1:
            summaries.append(origins_summary(name, runs))
    out = a.out or Path(tempfile.mkstemp(prefix="churn-model-quality-", suffix=".json")[1])
    out.write_text(
        json.dumps(
            {
                "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seed": a.seed,
                "quick": a.quick,
                "origins": a.origins,
                "origin_step_days": ORIGIN_STEP_DAYS,
                "results": results,
                "origin_summaries": summaries,
            },
            indent=2,
        )
    )
    print()
    print(markdown(results))
    for s in summaries:
        print()
        print(origins_line(s))
    print(f"\nJSON: {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
