"""Benchmark: the drift job on 1M current rows vs a 20k-row reference (every feature of every view).

Generates synthetic Parquet in a temporary data dir, then times ``run_drift`` end to end (the
isolated interpreter's start-up and the alibi-detect import included), exactly as ``churn drift``
runs it. One feature is shifted so the report also renders a plot.

    .venv/bin/python benchmarks/drift.py [--rows 1000000] [--reference-rows 20000] [--no-shift]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from churn.schema import CATEGORICAL_FEATURES, FEATURE_VIEWS
from churn.settings import Settings
from jobs.drift.launch import run_drift

DAY = dt.date(2024, 3, 1)
VERSION = "bench-version"
SHIFTED = "minutes_30d"
CATEGORIES = {
    "plan": ["free", "basic", "premium"],
    "country": ["US", "IN", "DE", "BR", "GB", "FR", "NG", "MX"],
    "acquisition_channel": ["organic", "ads", "referral", "partner"],
    "device": ["web", "ios", "android"],
}


def synthetic(n: int, seed: int, shift: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for view in FEATURE_VIEWS.values():
        for name, typ in view.items():
            if name in CATEGORICAL_FEATURES:
                cols[name] = pa.array(rng.choice(CATEGORIES[name], n), pa.string())
            elif pa.types.is_integer(typ):
                cols[name] = rng.poisson(3.0, n).astype("int64")
            else:
                x = rng.gamma(2.0, 30.0, n)
                x[rng.random(n) < 0.1] = np.nan
                cols[name] = x
    if shift:
        cols[SHIFTED] = cols[SHIFTED] * 1.5
    cols["churn_probability"] = rng.beta(2.0, 5.0, n)
    return pa.table(cols)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--reference-rows", type=int, default=20_000)
    p.add_argument("--no-shift", action="store_true")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="churn-bench-drift-") as tmp:
        settings = Settings.from_env(env={"CHURN_DATA_DIR": tmp})
        vdir = settings.models_dir / VERSION
        vdir.mkdir(parents=True)
        features = [c for view in FEATURE_VIEWS.values() for c in view]
        meta = {"version": VERSION, "features": features, "categorical_features": list(CATEGORICAL_FEATURES)}
        (vdir / "metadata.json").write_text(json.dumps(meta))
        pq.write_table(synthetic(args.reference_rows, seed=1), vdir / "reference.parquet")
        (settings.registry_root / "production").write_text(VERSION)
        cur = settings.predictions_dir / f"date={DAY.isoformat()}" / "scored_features.parquet"
        cur.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        pq.write_table(synthetic(args.rows, seed=2, shift=not args.no_shift), cur)
        gen_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        code = run_drift(settings, DAY, exit_zero=True)
        seconds = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"drift job failed with exit status {code}")
        report = json.loads((settings.drift_dir / f"date={DAY.isoformat()}" / "report.json").read_text())

    result = {
        "current_rows": args.rows,
        "reference_rows": args.reference_rows,
        "features": len(features),
        "seconds": round(seconds, 2),
        "rows_per_second": round(args.rows / seconds),
        "drifted_features": report["verdict"]["drifted_features"],
        "generate_seconds": round(gen_s, 2),
    }
    print(
        f"drift: {args.rows:,} current rows x {len(features)} features vs {args.reference_rows:,} reference: "
        f"{seconds:.1f}s end to end ({args.rows / seconds:,.0f} rows/s); "
        f"drifted: {result['drifted_features']}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
