"""Benchmark: ``churn score`` end to end at 1M active users (target: < 30 s on 2 cores).

Synthesizes one day of feature partitions (every view of ``churn.schema.FEATURE_VIEWS``, exact
schema, 1M active users + some idle ones the activity filter must drop) in a temporary data dir,
registers a LightGBM model trained on a sample of those rows as the production model (a real
registry version folder, loaded through ``ChurnModel.load`` like in production), then times
``jobs.score.score`` — partition read + join (DuckDB), encoding, probabilities, SHAP top factors,
CSV + 2 Parquet files and the atomic swap — and prints users/s.

    .venv/bin/python benchmarks/score.py [--users 1000000] [--idle 100000] [--trees 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from churn.schema import CATEGORICAL_FEATURES, FEATURE_VIEWS, feature_table_schema
from churn.settings import Settings

DAY = dt.date(2026, 3, 1)
VERSION = "20260301T000000Z-be0c00"
CATEGORIES = {
    "plan": ["free", "basic", "premium"],
    "country": ["US", "IN", "DE", "BR", "GB", "FR", "NG", "MX"],
    "acquisition_channel": ["organic", "ads", "referral", "partner"],
    "device": ["web", "ios", "android"],
}


def synthesize(n_active: int, n_idle: int, seed: int = 0) -> dict[str, pa.Table]:
    """One partition per view: realistic-ish distributions, NaNs where the real tables have them."""
    rng = np.random.default_rng(seed)
    n = n_active + n_idle
    ids = pa.array([f"u{i:08d}" for i in rng.permutation(n)], pa.string())
    ts = pa.repeat(
        pa.scalar(dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=dt.UTC), pa.timestamp("us", "UTC")), n
    )
    created = pa.repeat(pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", "UTC")), n)
    recency = np.concatenate([rng.exponential(6.0, n_active).clip(0, 30), rng.uniform(30.5, 60, n_idle)])
    engagement = np.exp(-recency / 10.0)  # idle users are less engaged
    tables: dict[str, pa.Table] = {}
    for view, columns in FEATURE_VIEWS.items():
        cols: dict[str, pa.Array] = {"user_id": ids, "event_timestamp": ts, "created": created}
        for name, typ in columns.items():
            if name in CATEGORICAL_FEATURES:
                values = np.array(CATEGORIES[name], dtype=object)[rng.integers(0, len(CATEGORIES[name]), n)]
                cols[name] = pa.array(values, pa.string())
            elif name == "days_since_last_activity":
                cols[name] = pa.array(np.round(recency, 4))
            elif name.startswith("days_since"):
                x = np.round(recency + rng.exponential(5.0, n), 4)
                missing = rng.random(n) < 0.2
                if pa.types.is_integer(typ):  # whole days (e.g. since the first active day)
                    cols[name] = pa.array(np.floor(x).astype("int64"), typ, mask=missing)
                else:
                    x[missing] = np.nan
                    cols[name] = pa.array(x, pa.float64(), from_pandas=True)
            elif pa.types.is_integer(typ):
                cols[name] = pa.array(rng.poisson(1 + 6 * engagement).astype("int64"))
            else:
                x = rng.gamma(2.0, 30.0, n) * engagement
                x[rng.random(n) < 0.05] = np.nan
                cols[name] = pa.array(x, pa.float64(), from_pandas=True)
        tables[view] = pa.table(cols, schema=feature_table_schema(view))
    return tables


def write_partitions(settings: Settings, tables: dict[str, pa.Table]) -> None:
    for view, table in tables.items():
        part = settings.features_dir / view / f"date={DAY.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / "part-0.parquet", compression="zstd")


def register_model(settings: Settings, tables: dict[str, pa.Table], sample: int, trees: int) -> None:
    """Train LightGBM on a sample (synthetic label tied to recency/engagement) and make it production.

    Written in the registry's version-folder layout so that ``score`` loads it exactly like a
    production model (``ModelRegistry.load_production`` → ``ChurnModel.load`` + smoke test).
    """
    import lightgbm as lgb

    from churn.storage import sha256
    from training.model import ChurnModel, category_index, encode_frame

    features = [c for cols in FEATURE_VIEWS.values() for c in cols]
    joined = tables["engagement"].select(["user_id"])
    for view, table in tables.items():
        for name in FEATURE_VIEWS[view]:
            joined = joined.append_column(name, table[name])
    frame = joined.slice(0, sample).to_pandas()
    cat_index = category_index(CATEGORIES)
    X = encode_frame(frame, features, cat_index)
    rng = np.random.default_rng(1)
    logit = 0.12 * frame["days_since_last_activity"].to_numpy() - 0.05 * frame["logins_30d"].to_numpy() - 0.5
    y = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)
    cats = [features.index(c) for c in CATEGORICAL_FEATURES]
    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "verbose": -1,
        "num_threads": 2,
        "seed": 1,
    }
    booster = lgb.train(
        params, lgb.Dataset(X, y, feature_name=features, categorical_feature=cats), num_boost_round=trees
    )
    vdir = settings.models_dir / VERSION
    vdir.mkdir(parents=True)
    booster.save_model(str(vdir / "model.txt"))
    meta = {
        "version": VERSION,
        "kind": "lightgbm",
        "features": features,
        "categorical_features": list(CATEGORICAL_FEATURES),
        "feature_service": settings.feature_service,
        "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        "models": {
            "lightgbm": {
                "model_file": "model.txt",
                "categories": CATEGORIES,
                "threshold": 0.5,
                "files": {"model.txt": sha256(vdir / "model.txt")},
            }
        },
    }
    model = ChurnModel(
        version=VERSION,
        kind="lightgbm",
        features=features,
        categorical_features=list(CATEGORICAL_FEATURES),
        categories=CATEGORIES,
        threshold=0.5,
        calibration=None,
        metadata=meta,
        booster=booster,
    )
    meta["models"]["lightgbm"]["smoke"] = model.smoke_record(frame)
    (vdir / "metadata.json").write_text(json.dumps(meta, default=str))
    (settings.registry_root / "production").write_text(VERSION + "\n")


def _production_model(settings: Settings):
    """Through the registry when it exists (as ``churn score`` does), else the version folder directly."""
    try:
        from training.registry import ModelRegistry
    except ModuleNotFoundError:
        from training.model import ChurnModel

        return ChurnModel.load(settings.models_dir / VERSION)
    return ModelRegistry(settings).load_production()


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1_000_000, help="active users (all get scored)")
    p.add_argument("--idle", type=int, default=100_000, help="extra idle users the filter must drop")
    p.add_argument("--trees", type=int, default=300, help="boosting rounds of the benchmark model")
    p.add_argument("--sample", type=int, default=50_000, help="rows to train the benchmark model on")
    args = p.parse_args(argv)

    from jobs.score import score

    with tempfile.TemporaryDirectory(prefix="churn-bench-score-") as tmp:
        settings = Settings.from_env(env={"CHURN_DATA_DIR": tmp})
        t0 = time.perf_counter()
        tables = synthesize(args.users, args.idle)
        write_partitions(settings, tables)
        register_model(settings, tables, args.sample, args.trees)
        del tables
        setup_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        res = score(settings, DAY, model=_production_model(settings))
        seconds = time.perf_counter() - t0
        out = res.out_dir
        sizes = {f.name: f.stat().st_size for f in out.iterdir()}
        rows = pq.read_metadata(out / "predictions.parquet").num_rows
    if rows != args.users:
        raise SystemExit(f"scored {rows} users, expected {args.users}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "users": args.users,
        "idle_users_dropped": args.idle,
        "trees": args.trees,
        "cpus": len(os.sched_getaffinity(0)),
        "seconds": round(seconds, 2),
        "users_per_second": round(args.users / seconds),
        "peak_rss_mb": round(peak_mb),
        "output_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()},
        "setup_seconds": round(setup_s, 1),
    }
    print(
        f"score: {args.users:,} active users (+{args.idle:,} idle dropped), {args.trees}-tree LightGBM, "
        f"{result['cpus']} cpus: {seconds:.1f}s end to end = {args.users / seconds:,.0f} users/s; "
        f"peak RSS {peak_mb:,.0f} MB"
    )
    out_dir = Path(__file__).parent / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "score.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
