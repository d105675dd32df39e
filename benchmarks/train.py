"""Training benchmarks: training-set build (labels + Feast point-in-time retrieval) and model fit.

* **dataset**: generates a synthetic site (``jobs.ingest.generate_store`` +
  ``jobs.aggregate.build_features``), applies the Feast objects and times
  ``training.dataset.build_training_set`` (DuckDB labels + ``get_historical_features`` with the
  settings' feature service). Rows ≈ eligible users × weekly cutoffs over the generated history.
* **fit**: LightGBM (fixed ``--rounds``, the production parameters, ``TRAIN_THREADS`` threads)
  and the logistic baseline on synthetic feature frames with the real column contract, at each
  ``--fit-rows`` size (train rows; validation = 25 % more).

    .venv/bin/python benchmarks/train.py --dataset-users 50000 --fit-rows 100000 1000000
    .venv/bin/python benchmarks/train.py --skip-dataset --fit-rows 100000
    .venv/bin/python benchmarks/train.py --dataset-users 20000 --engines duckdb,spark --fit-rows

Results are printed and written to ``benchmarks/out/train.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LEVELS = {
    "plan": ["free", "basic", "premium"],
    "country": ["IN", "US", "GB", "DE", "BR", "NG"],
    "acquisition_channel": ["organic", "paid_ads", "referral", "social"],
    "device": ["desktop", "mobile", "tablet"],
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_dataset(
    users: int, days: int, keep: Path | None, engines: tuple[str, ...] = ("duckdb",), spark_conf: str = ""
) -> list[dict]:
    """The training set of one generated site, once per engine (``CHURN_ENGINE``), same data; with
    more than one engine, also whether their frames are equal."""
    import dataclasses

    import pandas as pd

    from churn.settings import Settings
    from feature_repo.store import apply
    from jobs.aggregate import build_features
    from jobs.ingest import generate_store
    from training.dataset import build_training_set

    root = keep or Path(tempfile.mkdtemp(prefix="bench-train-"))
    base = Settings.from_env(env={"CHURN_DATA_DIR": str(root), "CHURN_FRESHNESS_MAX_HOURS": "0"})
    t = time.perf_counter()
    if not (base.features_dir / "profile").exists():
        generate_store(base, users=users, days=days, seed=11, end_date=dt.date(2026, 1, 1))
        build_features(base)
    prep = time.perf_counter() - t
    results, frames = [], {}
    for engine in engines:
        settings = dataclasses.replace(base, engine=engine, spark_conf=spark_conf)
        apply(settings)  # the views' sources follow the engine
        t = time.perf_counter()
        ts = build_training_set(settings)
        seconds = time.perf_counter() - t
        frames[engine] = ts.frame
        results.append(
            {
                "part": "dataset",
                "engine": engine,
                "users": users,
                "days": days,
                "rows": len(ts.frame),
                "cutoffs": len(ts.cutoffs),
                "seconds": seconds,
                "rows_per_s": len(ts.frame) / seconds,
                "prepare_data_s": prep,
                "peak_rss_mb": _rss_mb(),
                "data_dir": str(root),
            }
        )
    if len(frames) > 1:
        first, *others = frames.values()
        same = True
        for other in others:
            try:
                pd.testing.assert_frame_equal(first, other[list(first.columns)])
            except AssertionError:
                same = False
        for r in results:
            r["engines_equal"] = same
    apply(base)
    return results


def synthetic_frame(n: int, cutoff: dt.date, seed: int):  # noqa: ANN201 - pandas.DataFrame
    import numpy as np
    import pandas as pd

    from churn.schema import ALL_FEATURES, CATEGORICAL_FEATURES

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f: rng.gamma(2.0, 5.0, n) for f in ALL_FEATURES if f not in CATEGORICAL_FEATURES})
    for f in CATEGORICAL_FEATURES:
        df[f] = np.array(LEVELS[f], dtype=object)[rng.integers(0, len(LEVELS[f]), n)]
    df.loc[rng.random(n) < 0.1, "days_since_last_payment"] = np.nan
    logit = (
        0.2 * (df["days_since_last_activity"] - 10)
        - 0.05 * df["logins_30d"]
        + np.where(df["plan"] == "free", 0.8, -0.4)
    )
    df["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    df["cutoff"] = cutoff
    return df


def bench_fit(rows: int, rounds: int, baseline: bool) -> dict:
    from churn.schema import ALL_FEATURES, CATEGORICAL_FEATURES
    from training.fit import TRAIN_THREADS, fit_baseline, fit_lightgbm

    train = synthetic_frame(rows, dt.date(2026, 1, 1), 1)
    valid = synthetic_frame(max(1, rows // 4), dt.date(2026, 1, 15), 2)
    feats, cats = list(ALL_FEATURES), list(CATEGORICAL_FEATURES)
    t = time.perf_counter()
    fitted = fit_lightgbm(train, valid, feats, cats, seed=42, max_rounds=rounds, early_stopping=rounds + 1)
    lgb_s = time.perf_counter() - t
    out = {
        "part": "fit",
        "train_rows": rows,
        "valid_rows": len(valid),
        "rounds": fitted.info["rounds_run"],
        "threads": TRAIN_THREADS,
        "lightgbm_s": lgb_s,
        "lightgbm_rows_per_s": rows / lgb_s,
    }
    if baseline:
        t = time.perf_counter()
        fit_baseline(train, feats, cats, seed=42)
        out["logreg_s"] = time.perf_counter() - t
    t = time.perf_counter()
    fitted.model.predict_proba_frame(valid)
    out["score_valid_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = _rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset-users", type=int, default=50_000)
    ap.add_argument("--dataset-days", type=int, default=120)
    ap.add_argument("--keep-data", type=Path, default=None, help="Reuse/keep the generated site here.")
    ap.add_argument("--skip-dataset", action="store_true")
    ap.add_argument(
        "--engines", default="duckdb", help="training-set engines to time on the same site, e.g. duckdb,spark"
    )
    ap.add_argument(
        "--spark-conf",
        default="spark.driver.memory=6g",
        help="CHURN_SPARK_CONF of the spark engine (local mode: the driver is the only JVM)",
    )
    ap.add_argument("--fit-rows", type=int, nargs="*", default=[100_000, 1_000_000], help="none: no fit")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    results = []
    if not args.skip_dataset:
        engines = tuple(e for e in args.engines.split(",") if e)
        for r in bench_dataset(args.dataset_users, args.dataset_days, args.keep_data, engines, args.spark_conf):
            equal = "" if "engines_equal" not in r else f"; engines' frames equal: {r['engines_equal']}"
            print(
                f"dataset ({r['engine']}): {r['rows']:,} rows ({r['users']:,} users, {r['cutoffs']} cutoffs) "
                f"in {r['seconds']:.1f}s = {r['rows_per_s']:,.0f} rows/s "
                f"(data prep {r['prepare_data_s']:.0f}s, peak RSS {r['peak_rss_mb']:.0f} MB{equal})",
                flush=True,
            )
            results.append(r)
    for n in args.fit_rows:
        r = bench_fit(n, args.rounds, not args.no_baseline)
        base = f", logreg {r['logreg_s']:.1f}s" if "logreg_s" in r else ""
        print(
            f"fit: {n:,} train rows, {r['rounds']} rounds × {r['threads']} threads: "
            f"LightGBM {r['lightgbm_s']:.1f}s "
            f"({r['lightgbm_rows_per_s']:,.0f} rows/s){base}; scoring {r['valid_rows']:,} rows "
            f"{r['score_valid_s']:.2f}s (peak RSS {r['peak_rss_mb']:.0f} MB)",
            flush=True,
        )
        results.append(r)
    out = ROOT / "benchmarks" / "out" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
