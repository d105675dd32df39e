"""Drift outputs: report.json, report.html (a plot per drifted feature), metrics.prom, latest.json.

``<drift_dir>/date=D/`` is written as one directory (temp dir -> validate -> rename), so a rerun
replaces the previous day's outputs whole and a failed run leaves them untouched.
``<drift_dir>/latest.json`` (the verdict the retrain job reads) is replaced atomically after the
date directory, and only when D is not older than the date it already holds, so backfilling an
old day never hides the newest verdict.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from churn.io import atomic_dir, write_json_atomic
from churn.layout import DRIFT_METRICS, DRIFT_REPORT_HTML, DRIFT_REPORT_JSON
from churn.settings import Settings
from jobs.drift.detect import PREDICTION_COLUMN, DriftResult, FeatureResult
from jobs.drift.psi import PsiResult

RULE = (
    "feature drifted: psi >= psi_alert OR p_value < corrected_p_value (KS for numeric, chi-squared "
    "for categorical, alibi-detect TabularDrift with the given correction; numeric NaNs dropped "
    "before KS, counted in the PSI missing bin). drift_detected: any feature drifted OR prediction "
    "psi >= psi_alert."
)


def date_dir(settings: Settings, date: dt.date) -> Path:
    return settings.layout.drift(date)


def _f(x: float) -> float | None:
    """JSON has no NaN/inf."""
    return float(x) if np.isfinite(x) else None


def _bins(psi: PsiResult) -> dict[str, Any]:
    return {
        "labels": psi.labels,
        "reference": [round(float(v), 6) for v in psi.ref_share],
        "current": [round(float(v), 6) for v in psi.cur_share],
    }


def build_report(result: DriftResult, generated_at: dt.datetime) -> dict[str, Any]:
    inp = result.inputs
    features: dict[str, Any] = {}
    for r in result.features:
        features[r.name] = {
            "type": r.kind,
            "test": r.test,
            "psi": _f(r.psi.psi),
            "psi_level": r.psi_level,
            "p_value": _f(r.p_value),
            "statistic": _f(r.statistic),
            "drifted": r.drifted,
            "reasons": r.reasons,
            "missing_share": {"reference": r.psi.missing_ref, "current": r.psi.missing_cur},
            "bins": _bins(r.psi),
            **({"unseen_categories": r.unseen_categories} if r.kind == "categorical" else {}),
        }
    return {
        "date": inp.date.isoformat(),
        "generated_at": generated_at.isoformat(),
        "model_version": inp.model_version,
        "rows": {"reference": len(inp.reference), "current": len(inp.current)},
        "inputs": {"reference": str(inp.reference_path), "current": str(inp.current_path)},
        "thresholds": result.thresholds,
        "rule": RULE,
        "features": features,
        "prediction": {
            "column": PREDICTION_COLUMN,
            "psi": _f(result.prediction_psi.psi),
            "psi_level": result.prediction_psi_level,
            "p_value": _f(result.prediction_p_value),
            "bins": _bins(result.prediction_psi),
        },
        "verdict": {
            "drift_detected": result.drift_detected,
            "drifted_features": result.drifted_features,
            "psi_alert_features": result.psi_alert_features,
            "psi_warn_features": result.psi_warn_features,
            "prediction_psi_alert": result.prediction_psi_level == "alert",
            "alibi_is_drift": result.alibi_is_drift,
            "reason": result.reason,
        },
    }


# --- plots ------------------------------------------------------------------------------------------
def _plot_png(name: str, psi: PsiResult, values: tuple[np.ndarray, np.ndarray] | None, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if values is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.6), squeeze=False)
    ax_bins = axes[0][-1]
    if values is not None:
        ax = axes[0][0]
        a, b = (v[~np.isnan(v)] for v in values)
        both = np.concatenate([a, b]) if a.size + b.size else np.zeros(1)
        lo, hi = np.quantile(both, [0.005, 0.995])
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, 41)
        for arr, label, color in ((a, "reference", "#4c72b0"), (b, "current", "#dd8452")):
            if arr.size:
                w = np.full(arr.size, 1.0 / arr.size)
                ax.hist(np.clip(arr, lo, hi), bins=edges, weights=w, alpha=0.55, label=label, color=color)
        ax.set_title("histogram (share of rows, 0.5-99.5% range)", fontsize=9)
        ax.set_xlabel(name)
        ax.legend(fontsize=8)
    x = np.arange(len(psi.labels))
    ax_bins.bar(x - 0.2, psi.ref_share, width=0.4, label="reference", color="#4c72b0")
    ax_bins.bar(x + 0.2, psi.cur_share, width=0.4, label="current", color="#dd8452")
    ax_bins.set_xticks(x, psi.labels, rotation=45, ha="right", fontsize=7)
    ax_bins.set_title("PSI bins (share of rows)", fontsize=9)
    ax_bins.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def render_html(report: dict[str, Any], result: DriftResult) -> str:
    v = report["verdict"]
    esc = html.escape
    status = "DRIFT DETECTED" if v["drift_detected"] else "no drift"
    color = "#c0392b" if v["drift_detected"] else "#27ae60"
    rows = []
    for name, f in sorted(report["features"].items(), key=lambda kv: -(kv[1]["psi"] or 0)):
        lvl = f["psi_level"]
        rows.append(
            f"<tr class='{lvl}{' drifted' if f['drifted'] else ''}'><td>{esc(name)}</td><td>{f['type']}</td>"
            f"<td>{_fmt(f['psi'], '.4f')}</td><td>{lvl}</td><td>{f['test']}</td>"
            f"<td>{_fmt(f['p_value'], '.3g')}</td>"
            f"<td>{f['missing_share']['reference']:.2%} / {f['missing_share']['current']:.2%}</td>"
            f"<td>{'yes' if f['drifted'] else ''}</td><td>{esc('; '.join(f['reasons']))}</td></tr>"
        )
    by_name: dict[str, FeatureResult] = {r.name: r for r in result.features}
    plots = []
    p = report["prediction"]
    to_plot = [(n, by_name[n]) for n in v["drifted_features"]]
    for name, r in to_plot:
        title = f"{name}: PSI {r.psi.psi:.3f} ({r.psi_level}), {r.test} p = {r.p_value:.3g}"
        png = _plot_png(name, r.psi, result.numeric_values.get(name), title)
        extra = ""
        if r.unseen_categories:
            extra = f"<p>categories unseen in the reference: {esc(', '.join(r.unseen_categories))}</p>"
        plots.append(f"<h3>{esc(name)}</h3>{extra}<img alt='{esc(name)}' src='data:image/png;base64,{png}'>")
    pred_png = _plot_png(
        PREDICTION_COLUMN,
        result.prediction_psi,
        result.numeric_values.get(PREDICTION_COLUMN),
        f"{PREDICTION_COLUMN}: PSI {result.prediction_psi.psi:.3f} ({result.prediction_psi_level})",
    )
    t = report["thresholds"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift report {esc(report["date"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.banner {{ padding: .8em 1em; color: #fff; background: {color}; font-size: 1.2em; border-radius: 4px; }}
table {{ border-collapse: collapse; font-size: .9em; }}
td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: left; }}
tr.warn td {{ background: #fff6d6; }} tr.alert td, tr.drifted td {{ background: #fbe0dc; }}
code {{ background: #f3f3f3; padding: 0 .2em; }}
</style></head><body>
<h1>Drift report for {esc(report["date"])}</h1>
<div class="banner">{status}: {esc(v["reason"])}</div>
<p>Model <code>{esc(report["model_version"])}</code>; reference rows {report["rows"]["reference"]:,},
current rows {report["rows"]["current"]:,}; generated {esc(report["generated_at"])}.</p>
<p>Thresholds: PSI warn {t["psi_warn"]}, alert {t["psi_alert"]}; tests at p = {t["p_value"]}
with {esc(str(t["correction"]))} correction (per-feature cut-off {t["corrected_p_value"]:.3g}).</p>
<p>Rule: {esc(report["rule"])}</p>
<h2>Prediction ({PREDICTION_COLUMN})</h2>
<p>PSI {_fmt(p["psi"], ".4f")} ({p["psi_level"]}); KS p = {_fmt(p["p_value"], ".3g")} (information only).</p>
<img alt="prediction" src="data:image/png;base64,{pred_png}">
<h2>Drifted features ({len(v["drifted_features"])})</h2>
{"".join(plots) or "<p>none</p>"}
<h2>All features</h2>
<table><thead><tr><th>feature</th><th>type</th><th>PSI</th><th>level</th><th>test</th><th>p-value</th>
<th>missing ref / cur</th><th>drifted</th><th>why</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
</body></html>
"""


# --- metrics --------------------------------------------------------------------------------------
def write_metrics(path: Path, report: dict[str, Any], run_ts: float) -> None:
    """Prometheus text exposition (node-exporter textfile collector format)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    psi = Gauge(
        "churn_feature_psi",
        "Population stability index of a feature vs the reference.",
        ["feature"],
        registry=reg,
    )
    pv = Gauge(
        "churn_drift_pvalue",
        "Drift test p-value of a feature (KS numeric, chi2 categorical).",
        ["feature"],
        registry=reg,
    )
    for name, f in report["features"].items():
        psi.labels(feature=name).set(f["psi"] if f["psi"] is not None else float("nan"))
        pv.labels(feature=name).set(f["p_value"] if f["p_value"] is not None else float("nan"))
    Gauge(
        "churn_prediction_psi", "PSI of the predicted churn probability vs the reference.", registry=reg
    ).set(report["prediction"]["psi"] or 0.0)
    Gauge("churn_drift_detected", "1 if the last drift run detected drift, else 0.", registry=reg).set(
        1 if report["verdict"]["drift_detected"] else 0
    )
    Gauge(
        "churn_drift_last_run_timestamp_seconds", "Unix time of the last completed drift run.", registry=reg
    ).set(run_ts)
    write_to_textfile(str(path), reg)


# --- writing --------------------------------------------------------------------------------------
def _validate(tmp: Path) -> None:
    for name in (DRIFT_REPORT_JSON, DRIFT_REPORT_HTML, DRIFT_METRICS):
        if not (tmp / name).is_file() or (tmp / name).stat().st_size == 0:
            raise RuntimeError(f"drift output {name} was not written")
    json.loads((tmp / DRIFT_REPORT_JSON).read_text())


def _latest_date(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["date"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: replace it


def write_outputs(settings: Settings, result: DriftResult) -> tuple[Path, dict[str, Any], bool]:
    """Write the date directory, then latest.json; returns (date dir, report, latest updated)."""
    now = time.time()
    report = build_report(result, dt.datetime.fromtimestamp(now, dt.UTC))
    page = render_html(report, result)
    final = date_dir(settings, result.inputs.date)
    with atomic_dir(final, validate=_validate) as tmp:
        (tmp / DRIFT_REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        (tmp / DRIFT_REPORT_HTML).write_text(page)
        write_metrics(tmp / DRIFT_METRICS, report, now)

    latest_path = settings.layout.drift_latest
    previous = _latest_date(latest_path)
    updated = previous is None or previous <= report["date"]
    if updated:
        v = report["verdict"]
        write_json_atomic(
            latest_path,
            {
                "date": report["date"],
                "drift_detected": v["drift_detected"],
                "drifted_features": v["drifted_features"],
                "psi_alert_features": v["psi_alert_features"],
                "prediction_psi": report["prediction"]["psi"],
                "model_version": report["model_version"],
                "reason": v["reason"],
                "report": str(final / DRIFT_REPORT_JSON),
                "generated_at": report["generated_at"],
            },
        )
    return final, report, updated
