"""What each console page shows, as a plain dict for its template: read from the data directory.

Blocking (file and DuckDB reads): the controller calls it in the console's own worker threads.
Every page has an empty state that names the command to run instead of failing: no scoring yet, no
drift report, no model, no daily run.

Sources, all read-only: ``predictions/date=D/`` (:mod:`service.console.queries`), the registry
(:class:`training.registry.ModelRegistry`: versions, audit log, stages), ``drift/date=D/report.json``
and ``drift/latest.json``, ``daily/steps.json`` (:mod:`jobs.daily_metrics` keeps it) and the registry's
``comparison.json`` (:func:`jobs.compare.save`), both read here as JSON, since the service layer
does not import jobs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from churn.layout import DRIFT_REPORT_HTML, DRIFT_REPORT_JSON, parse_partition, partition_dates
from churn.policies import DAILY_STEPS
from churn.schema import FEATURE_VIEWS
from churn.settings import Settings
from churn.storage import is_remote
from service.console.charts import Guide, Series, line_chart
from service.console.factors import feature_words, format_value, phrase
from service.console.queries import (
    HISTORY_DAYS,
    SORTS,
    TOP_K,
    USER_COLUMNS,
    AtRiskQuery,
    ConsoleQueries,
    FilterOptions,
    parse_query,
)

DRIFT_DAYS = 30
DRIFT_CHART_FEATURES = 8
"""The chart draws the prediction and the features with the highest PSI over the window."""
HISTORY_ENTRIES = 50
SERVED_FILES = {".html": "text/html; charset=utf-8", ".json": "application/json"}
"""What the drift file route serves (everything else under the drift dir is refused)."""
METRIC_ROWS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("brier", "Brier score"),
    ("lift_top10", "lift in the top 10%"),
    ("recall_top10", "recall in the top 10%"),
    ("churn_rate", "churn rate"),
)


class NotFound(LookupError):
    """The page's subject does not exist (→ 404 page)."""


def _read_json(path: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ts(value: Any) -> str | None:
    """A Unix time or ISO string as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if value is None:
        return None
    try:
        if isinstance(value, int | float):
            when = dt.datetime.fromtimestamp(float(value), dt.UTC)
        else:
            when = dt.datetime.fromisoformat(str(value))
            when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "?"
    return f"{s:.2f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"


def factor_list(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A predictions row's top factors in plain words (empty slots left out)."""
    out = []
    for i in range(1, TOP_K + 1):
        name = row.get(f"factor_{i}")
        if not name:
            continue
        out.append(
            {
                "feature": name,
                "text": phrase(name, row.get(f"factor_{i}_value")),
                "contribution": row.get(f"factor_{i}_contribution"),
            }
        )
    return out


@dataclass
class ConsolePages:
    settings: Settings
    queries: ConsoleQueries

    def __post_init__(self) -> None:
        self.layout = self.settings.layout

    # --- at-risk learners ------------------------------------------------------------------------------
    def at_risk_context(self, **params: Any) -> dict[str, Any]:
        """The table for the newest scoring day; ``BadQuery`` for a parameter outside its whitelist."""
        day = self.queries.latest_day()
        if day is None:
            # Still check the parameters: a bad one is a 400 whatever the data.
            parse_query(FilterOptions(), **{k: v for k, v in params.items() if k not in ("plan", "country", "action")})
            return {"day": None}
        src = self.queries.sources(day)
        options = self.queries.options(src)
        q = parse_query(options, **params)
        page = self.queries.page(day, src, q)
        rows = []
        for r in page.rows:
            rows.append({**r, "factors": factor_list(r)})
        return {
            "day": day,
            "q": q,
            "page": page,
            "rows": rows,
            "options": options,
            "tier_counts": self.queries.tier_counts(src),
            "users_table": src.users is not None,
            "sortable": [c for c in SORTS if src.users is not None or c not in USER_COLUMNS],
            "first_row": q.offset + 1 if page.total else 0,
            "last_row": min(q.offset + q.size, page.total),
        }

    def export(self, **params: Any) -> tuple[dt.date, AtRiskQuery, Any]:
        """(day, query, CSV chunk iterator) of the current filter; ``NotFound`` before any scoring."""
        day = self.queries.latest_day()
        if day is None:
            raise NotFound("no batch scoring yet: run `churn score` or `churn daily`")
        src = self.queries.sources(day)
        q = parse_query(self.queries.options(src), **params)
        return day, q, self.queries.export_csv(src, q)

    # --- one user -------------------------------------------------------------------------------------------
    def user_context(self, user_id: str, prediction: Any, features: Any, live_error: str | None) -> dict[str, Any]:
        """``prediction``/``features`` come from the API's PredictionService (``None`` when the online
        store does not know the user); ``NotFound`` when neither the store nor the scores do."""
        history = self.queries.user_history(user_id, HISTORY_DAYS)
        if features is None and not history:
            why = live_error or "no features in the online store"
            raise NotFound(
                f"unknown user {user_id!r}: {why}, and no batch score in the last {HISTORY_DAYS} scoring days"
            )
        live = None
        if prediction is not None:
            live = {
                "p": prediction.churn_probability,
                "tier": prediction.risk_tier,
                "action": prediction.recommended_action,
                "will_churn": prediction.will_churn,
                "version": prediction.model_version,
                "scored_at": _ts(prediction.scored_at.isoformat()),
                "factors": [
                    {"text": phrase(f.feature, f.value), "feature": f.feature, "contribution": f.contribution}
                    for f in prediction.top_factors
                ],
            }
        feature_rows = []
        if features is not None:
            now = dt.datetime.now(dt.UTC)
            view_of = {name: view for view, cols in FEATURE_VIEWS.items() for name in cols}
            for name, value in features.features.items():
                view = view_of.get(name, "?")
                stamp = features.event_timestamps.get(view)
                feature_rows.append(
                    {
                        "name": name,
                        "words": feature_words(name),
                        "value": format_value(value),
                        "view": view,
                        "as_of": _ts(stamp.isoformat()) if stamp else None,
                        "age": _age((now - stamp).total_seconds()) if stamp else "no row",
                    }
                )
        latest = None
        if history:
            last = history[-1]
            row = self.queries.scored_row(last.day, user_id)
            latest = {"day": last.day, "row": row, "factors": factor_list(row or {})}
        chart = None
        if history:
            days = [h.day for h in history]
            chart = line_chart(
                days,
                [Series("churn probability", [h.churn_probability for h in history])],
                guides=[
                    Guide(float(self.settings.risk_medium), "medium", "#ff7f0e"),
                    Guide(float(self.settings.risk_high), "high", "#d62728"),
                ],
                title=f"daily batch score, last {len(days)} scoring days",
                y_max=1.0,
                testid="user-scores-chart",
            )
        return {
            "user_id": user_id,
            "live": live,
            "live_error": live_error,
            "known_online": features is not None,
            "feature_age": _age(features.feature_age_seconds) if features is not None else None,
            "features": feature_rows,
            "profile": self.queries.user_profile(user_id),
            "history": history,
            "latest": latest,
            "chart": chart,
        }

    # --- model -----------------------------------------------------------------------------------------------
    def registry(self) -> Any:
        from training.registry import ModelRegistry

        return ModelRegistry(self.settings)

    def model_context(self) -> dict[str, Any]:
        registry = self.registry()
        version = registry.production_version()
        card = None
        if version is not None:
            try:
                info = registry.get(version)
            except Exception as exc:  # a pointer at a missing folder: say so, do not fail the page
                card = {"version": version, "error": str(exc)}
            else:
                card = self._card(info)
        try:
            stages = registry.stages()
            stages_error = None
        except Exception as exc:
            stages, stages_error = None, str(exc)
        try:
            entries = registry.audit_entries()
            audit_error = None
        except Exception as exc:
            entries, audit_error = [], f"audit log unreadable: {exc}"
        history = []
        for e in reversed(entries[-HISTORY_ENTRIES:]):
            history.append(
                {
                    "ts": _ts(e.get("ts")),
                    "action": e.get("action"),
                    "from": e.get("from"),
                    "to": e.get("to"),
                    "who": e.get("who"),
                    "reason": e.get("reason"),
                    "score": _gate_text(e.get("metrics") or {}),
                }
            )
        staged = []
        if stages is not None:
            if stages.shadow:
                staged.append(
                    {"stage": "shadow", "version": stages.shadow, "since": _ts(stages.shadow_since), "share": None}
                )
            if stages.challenger:
                staged.append(
                    {
                        "stage": "challenger",
                        "version": stages.challenger,
                        "since": _ts(stages.challenger_since),
                        "share": stages.share,
                    }
                )
        try:
            versions = [v.version for v in registry.list_versions()]
        except Exception:
            versions = []
        return {
            "card": card,
            "history": history,
            "audit_error": audit_error,
            "staged": staged,
            "stages_error": stages_error,
            "versions": versions,
            "comparison": self.comparison(stages),
        }

    def comparison(self, stages: Any) -> dict[str, Any] | None:
        """The kept comparison (``jobs.compare.save``), flagged stale when what is staged changed."""
        report = _read_json(self.settings.layout.comparison_latest)
        if not isinstance(report, dict):
            return None
        staged = report.get("stages") or {}
        current = stages is not None and (staged.get("shadow"), staged.get("challenger")) == (
            stages.shadow,
            stages.challenger,
        )
        candidates = []
        for key, c in sorted((report.get("candidates") or {}).items()):
            agreement = c.get("agreement") or {}
            mine, base = c.get("performance") or {}, c.get("production_performance") or {}
            candidates.append(
                {
                    "key": key,
                    "arm": c.get("arm"),
                    "version": c.get("version"),
                    "records": c.get("records"),
                    "agreement": {k: _num(agreement.get(k)) for k in ("users", "spearman", "tier_differs_share")},
                    "roc_auc": _num(mine.get("roc_auc")),
                    "labelled": mine.get("users"),
                    "production_roc_auc": _num(base.get("roc_auc")),
                    "production_labelled": base.get("users"),
                    "recommendation": c.get("recommendation") or {},
                }
            )
        return {
            "generated_at": _ts(report.get("generated_at")),
            "since": report.get("since"),
            "until": report.get("until"),
            "records": report.get("records"),
            "current": current,
            "stages": staged,
            "labels": report.get("labels") or {},
            "recommendation": report.get("recommendation") or {},
            "candidates": candidates,
        }

    def _card(self, info: Any) -> dict[str, Any]:
        meta, metrics = info.metadata, info.metrics
        kind = info.kind
        test = (metrics.get("test") or {}).get(kind, {})
        rows = [(label, test.get(key)) for key, label in METRIC_ROWS if key in test]
        yard = metrics.get("yardsticks") or {}
        yardsticks = [
            (name, (yard.get(name) or {}).get("roc_auc"))
            for name in ("recency", "oracle")
            if (yard.get(name) or {}).get("available")
        ]
        window = meta.get("training_window") or {}
        plots = [p for p in meta.get("plots") or [] if _plot_name_ok(p) and (info.path / p).exists()]
        return {
            "version": info.version,
            "kind": kind,
            "trained_at": _ts(meta.get("trained_at")),
            "feature_service": meta.get("feature_service"),
            "features": len(meta.get("features") or []),
            "threshold": meta.get("threshold"),
            "threshold_rule": meta.get("threshold_rule"),
            "metrics": rows,
            "yardsticks": yardsticks,
            "window": {
                "train_cutoffs": window.get("train_cutoffs") or [],
                "valid_cutoff": window.get("valid_cutoff"),
                "test_cutoff": window.get("test_cutoff"),
                "horizon_days": window.get("horizon_days"),
                "labels_observed_until": window.get("labels_observed_until"),
            },
            "rows": meta.get("rows") or {},
            "lineage": {
                "git sha": meta.get("git_sha"),
                "data hash": meta.get("data_hash"),
                "feature service": meta.get("feature_service"),
                "libraries": ", ".join(f"{k} {v}" for k, v in sorted((meta.get("libraries") or {}).items())),
            },
            "plots": plots,
        }

    def plot(self, version: str, name: str) -> bytes:
        """A plot file of a registered version (names checked; ``NotFound`` otherwise)."""
        from training.registry import VERSION_RE

        if not VERSION_RE.match(version) or not _plot_name_ok(name):
            raise NotFound(f"no plot {name!r} of {version!r}")
        path = self.layout.model_dir(version) / name
        try:
            return path.read_bytes()
        except OSError:
            raise NotFound(f"no plot {name!r} of {version!r}") from None

    # --- drift ------------------------------------------------------------------------------------------------
    def drift_context(self) -> dict[str, Any]:
        latest = _read_json(self.layout.drift_latest)
        days = partition_dates(self.layout.drift_dir)[-DRIFT_DAYS:]
        reports: list[tuple[dt.date, dict[str, Any]]] = []
        for d in days:
            report = _read_json(self.layout.drift(d) / DRIFT_REPORT_JSON)
            if isinstance(report, dict):
                reports.append((d, report))
        rows = []
        for d, r in reversed(reports):
            verdict = r.get("verdict") or {}
            rows.append(
                {
                    "day": d,
                    "drift": bool(verdict.get("drift_detected")),
                    "drifted": verdict.get("drifted_features") or [],
                    "prediction_psi": (r.get("prediction") or {}).get("psi"),
                    "model_version": r.get("model_version"),
                    "reason": verdict.get("reason"),
                    "html": (self.layout.drift(d) / DRIFT_REPORT_HTML).exists(),
                }
            )
        chart = None
        features_table = []
        if reports:
            chart_days = [d for d, _ in reports]
            psi: dict[str, list[float | None]] = {}
            for i, (_, r) in enumerate(reports):
                for name, f in (r.get("features") or {}).items():
                    psi.setdefault(name, [None] * len(reports))[i] = _num(f.get("psi"))
            peak = {n: max((v for v in vals if v is not None), default=0.0) for n, vals in psi.items()}
            top = sorted(psi, key=lambda n: (-peak[n], n))[:DRIFT_CHART_FEATURES]
            prediction = [_num((r.get("prediction") or {}).get("psi")) for _, r in reports]
            chart = line_chart(
                chart_days,
                [Series("prediction", prediction), *(Series(n, psi[n]) for n in top)],
                guides=[
                    Guide(float(self.settings.psi_warn), f"warn {self.settings.psi_warn}", "#ff7f0e"),
                    Guide(float(self.settings.psi_alert), f"alert {self.settings.psi_alert}", "#d62728"),
                ],
                title=f"PSI per day: prediction and the {len(top)} most shifted features",
                testid="psi-chart",
            )
            last = reports[-1][1].get("features") or {}
            for name in sorted(psi, key=lambda n: (-peak[n], n)):
                f = last.get(name) or {}
                features_table.append(
                    {
                        "name": name,
                        "words": feature_words(name),
                        "latest": psi[name][-1],
                        "peak": peak[name],
                        "level": f.get("psi_level"),
                        "drifted": bool(f.get("drifted")),
                    }
                )
        return {
            "latest": latest if isinstance(latest, dict) else None,
            "rows": rows,
            "chart": chart,
            "features": features_table,
            "psi_warn": self.settings.psi_warn,
            "psi_alert": self.settings.psi_alert,
        }

    def drift_file(self, relative: str) -> tuple[bytes, str]:
        """A report file under the drift dir: ``date=D/report.html`` or ``.json`` (also ``latest.json``).

        Path-checked: relative, no ``..``/empty/hidden parts, a known suffix, and (locally) still under
        the drift dir once symlinks are resolved. Anything else is :class:`NotFound`.
        """
        refused = NotFound(f"no drift report file {relative!r}")
        if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/"):
            raise refused
        parts = PurePosixPath(relative).parts
        if not parts or len(parts) > 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise refused
        if len(parts) == 2 and parse_partition(parts[0]) is None:
            raise refused
        suffix = PurePosixPath(parts[-1]).suffix
        if suffix not in SERVED_FILES:
            raise refused
        root = self.layout.drift_dir
        path = root.joinpath(*parts)
        if not is_remote(root):
            try:
                resolved = path.resolve(strict=True)
                if not resolved.is_relative_to(root.resolve(strict=True)) or not resolved.is_file():
                    raise refused
            except OSError:
                raise refused from None
        try:
            return path.read_bytes(), SERVED_FILES[suffix]
        except OSError:
            raise refused from None

    # --- daily runs --------------------------------------------------------------------------------------------
    def runs_context(self) -> dict[str, Any]:
        state = _read_json(self.layout.daily_state)
        if not isinstance(state, dict):
            return {"state": None, "path": str(self.layout.daily_state)}
        steps = state.get("steps") or {}
        rank = {name: i for i, name in enumerate(DAILY_STEPS)}  # unknown steps follow, by finish time
        ordered = sorted(steps.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[1].get("finished_at") or 0))
        last_outcomes = [
            {
                "step": name,
                "status": "failed" if s.get("failed") else "ok",
                "duration": _duration(s.get("duration_seconds")),
                "finished": _ts(s.get("finished_at")),
                "last_success": _ts(s.get("last_success")) or "never",
                "detail": s.get("detail"),
            }
            for name, s in ordered
        ]
        runs = []
        for run in reversed(state.get("runs") or []):
            if not isinstance(run, dict):
                continue
            run_steps = [
                {
                    "step": s.get("step"),
                    "status": "failed" if s.get("failed") else "ok",
                    "duration": _duration(s.get("duration_seconds")),
                    "finished": _ts(s.get("finished_at")),
                    "detail": s.get("detail"),
                }
                for s in run.get("steps") or []
                if isinstance(s, dict)
            ]
            failed = any(s["status"] == "failed" for s in run_steps)
            total = sum(float(s.get("duration_seconds") or 0) for s in run.get("steps") or [] if isinstance(s, dict))
            runs.append(
                {
                    "day": run.get("day"),
                    "started": _ts(run.get("started_at")),
                    "status": "failed" if failed else ("ok" if run_steps else "no steps"),
                    "duration": _duration(total),
                    "steps": run_steps,
                }
            )
        landing = [
            {"table": t, "day": s.get("day"), "missing": bool(s.get("missing")), "latest_day": s.get("latest_day")}
            for t, s in sorted((state.get("landing") or {}).items())
            if isinstance(s, dict)
        ]
        return {"state": state, "steps": last_outcomes, "runs": runs, "landing": landing}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _plot_name_ok(name: str) -> bool:
    from training.report import PLOTS

    return name in PLOTS.values()


def _gate_text(m: dict[str, Any]) -> str:
    metric = m.get("metric")
    if m.get("forced"):
        return "forced"
    cand, prod = m.get("candidate_score"), m.get("production_score")
    if metric and isinstance(cand, int | float):
        text = f"{metric} {cand:.4f}"
        if isinstance(prod, int | float):
            text += f" vs production {prod:.4f}"
        return text
    return ""
