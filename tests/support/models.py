"""Synthetic training sets: real (tiny) models in unit tests without Feast or a feature build."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from churn.schema import ALL_FEATURES, CATEGORICAL_FEATURES
from training.dataset import TrainingSet

CUTOFFS = [dt.date(2026, 1, 1) + dt.timedelta(days=14 * i) for i in range(4)]
LEVELS = {
    "plan": ["free", "basic", "premium"],
    "country": ["US", "GB", "IN"],
    "acquisition_channel": ["organic", "paid_ads"],
    "device": ["mobile", "desktop"],
}


def synthetic_set(seed: int = 0, n: int = 400, noisy_train: bool = False) -> TrainingSet:
    """Churn driven by recency and plan; ``noisy_train`` shuffles the training labels (a bad model)."""
    rng = np.random.default_rng(seed)
    frames = []
    for c in CUTOFFS:
        df = pd.DataFrame({f: rng.gamma(2.0, 5.0, n) for f in ALL_FEATURES if f not in CATEGORICAL_FEATURES})
        for f in CATEGORICAL_FEATURES:
            df[f] = rng.choice(LEVELS[f], n).astype(object)
        df.loc[rng.random(n) < 0.05, "country"] = None
        df.loc[rng.random(n) < 0.1, "days_since_last_payment"] = np.nan
        logit = 0.25 * (df["days_since_last_activity"] - 10) + np.where(df["plan"] == "free", 1.0, -0.5)
        df["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
        if noisy_train and c in CUTOFFS[:2]:
            df["churned"] = rng.permutation(df["churned"].to_numpy())
        df.insert(0, "user_id", [f"u{i:05d}" for i in range(n)])
        df.insert(1, "cutoff", c)
        frames.append(df)
    frame = pd.concat(frames, ignore_index=True)
    return TrainingSet(frame, list(ALL_FEATURES), list(CATEGORICAL_FEATURES), CUTOFFS)
