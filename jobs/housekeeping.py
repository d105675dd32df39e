"""Housekeeping: bound what the data volume keeps (``churn housekeeping``, last step of the daily loop).

Two things grow without it: the prediction log (one partition per day, every served and shadow
prediction) and ``.tmp-*`` leftovers of writers killed mid-write (never partial data under a final
name, but dead bytes). Prediction-log days older than ``CHURN_PREDICTION_LOG_RETENTION_DAYS`` are
removed whole: the partition is first renamed to a ``.tmp-`` sibling, so a reader lists a day
completely or not at all. Temp leftovers go once older than ``CHURN_TMP_MAX_AGE_HOURS``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from churn.io import TMP_PREFIX, clean_tmp, remove_tree
from churn.layout import partition_dates, partition_dir
from churn.settings import Settings
from churn.storage import is_remote


@dataclass
class HousekeepingResult:
    date: dt.date
    pruned_days: list[str] = field(default_factory=list)
    tmp_removed: int = 0

    def summary(self) -> str:
        days = f"{len(self.pruned_days)} prediction-log day(s) pruned" + (
            f" ({self.pruned_days[0]}..{self.pruned_days[-1]})" if self.pruned_days else ""
        )
        return f"housekeeping {self.date}: {days}, {self.tmp_removed} stale temp file(s) removed"


def prune_prediction_log(root: Path, today: dt.date, retention_days: int) -> list[str]:
    """Delete ``date=D`` partitions with D < today - retention_days; returns the days removed."""
    if retention_days <= 0 or not root.exists():
        return []
    oldest_kept = today - dt.timedelta(days=retention_days)
    removed = []
    for day in partition_dates(root):  # anything not named like a partition is not ours: left alone
        if day >= oldest_kept:
            continue
        part = partition_dir(root, day)
        if is_remote(part):  # no rename on object storage: a day past retention is read by no one
            remove_tree(part)
        else:
            doomed = part.with_name(f"{TMP_PREFIX}prune-{part.name}")
            os.replace(part, doomed)  # readers now see the whole day or none of it
            shutil.rmtree(doomed, ignore_errors=True)
        removed.append(day.isoformat())
    return removed


def housekeeping(settings: Settings, today: dt.date | None = None) -> HousekeepingResult:
    today = today or dt.datetime.now(dt.UTC).date()
    result = HousekeepingResult(today)
    result.pruned_days = prune_prediction_log(
        settings.prediction_log_dir, today, int(settings.prediction_log_retention_days)
    )
    max_age_s = max(float(settings.tmp_max_age_hours), 0.0) * 3600.0
    roots = {str(r): r for r in (settings.data_dir, settings.registry_root)}  # the registry may lie inside
    for root in roots.values():
        result.tmp_removed += clean_tmp(root, older_than_s=max_age_s)
    return result
