"""Where everything lives in the data directory: every path and partition, known here only.

Daily data is partitioned Hive-style as ``<root>/date=YYYY-MM-DD/``; that pattern, the file names
inside the partitions and the registry's files are defined once below, and every job, the API and
the drift environment ask this module instead of building paths by hand. Standard library only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

PARTITION_KEY = "date"
PARTITION_GLOB = f"{PARTITION_KEY}=*"
_PARTITION_RE = re.compile(rf"^{PARTITION_KEY}=(\d{{4}}-\d{{2}}-\d{{2}})$")

# Raw tables, and the tables a feature view is stored in.
RAW_USERS_FILE = "users.parquet"
ORACLE_TABLE = "oracle"
"""Synthetic data only: the generator's true churn probability per user, one partition per day."""
PART_FILE = "part-0.parquet"
# Batch scoring outputs (one directory per scoring date).
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_PARQUET = "predictions.parquet"
SCORED_FEATURES = "scored_features.parquet"
# Drift outputs, and the Prometheus textfiles the jobs leave for the API to re-export.
DRIFT_REPORT_JSON = "report.json"
DRIFT_REPORT_HTML = "report.html"
DRIFT_METRICS = "metrics.prom"
INTERVENTION_METRICS = "metrics.prom"
SCORING_METRICS = "metrics.prom"
DAILY_METRICS = "metrics.prom"
# Interventions: the day's plan, the append-only outbox, CRM exports, the suppression list.
INTERVENTION_PLAN = "plan.parquet"
SUPPRESSION_FILE = "suppression.parquet"
INTERVENTIONS_LOCK = "interventions.lock"
# The landing prefix: what upstream delivers, one folder per table and delivery day.
LANDING_TABLES = ("events", "payments", "users")
LANDING_IMPORTED = "_imported"


MICROS_PER_DAY = 86_400_000_000


def day_sql(ts: str) -> str:
    """The SQL for the UTC date of TIMESTAMPTZ ``ts``: the day partition its row belongs to.

    From its epoch microseconds, not ``CAST(ts AS DATE)``: DuckDB casts through ICU's calendar for
    every row, the slowest part of reading a build's tens of millions of events. Spark runs it too
    (``jobs.spark_sql`` maps ``epoch_us`` to ``unix_micros``).
    """
    return f"CAST(DATE '1970-01-01' + CAST(epoch_us({ts}) // {MICROS_PER_DAY} AS INTEGER) AS DATE)"


def partition_name(day: dt.date) -> str:
    """The directory name of one day's partition."""
    return f"{PARTITION_KEY}={day.isoformat()}"


def parse_partition(name: str) -> dt.date | None:
    """The day of a partition directory name, ``None`` for anything else (``.tmp-*``, files)."""
    m = _PARTITION_RE.match(name)
    return dt.date.fromisoformat(m.group(1)) if m else None


def partition_dir(root: Path, day: dt.date) -> Path:
    return root / partition_name(day)


def partition_dates(root: Path) -> list[dt.date]:
    """Dates of the partitions under ``root``, sorted; an absent root has none."""
    if not root.exists():
        return []
    return sorted(d for p in root.iterdir() if (d := parse_partition(p.name)) is not None)


def partition_files(root: Path, days: list[dt.date] | set[dt.date]) -> list[Path]:
    """The Parquet files of the given days' partitions that exist, in date order."""
    return [f for d in sorted(days) for f in sorted(partition_dir(root, d).glob("*.parquet"))]


def partitions_glob(root: Path | str) -> str:
    """A glob over every partition's Parquet files; ``date=*`` keeps ``.tmp-*`` siblings out."""
    return f"{root}/{PARTITION_GLOB}/*.parquet"


@dataclass(frozen=True)
class DataLayout:
    """The data directory's map; ``Settings.layout`` builds it from ``data_dir``/``registry_dir``."""

    data_dir: Path
    registry_dir: Path | None = None
    scratch_dir: Path | None = None
    """Node-local folder for what must be real files (Feast's repo); defaults to ``data_dir``."""

    # --- raw data ----------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    def raw_table(self, table: str) -> Path:
        """``users`` is one file's folder; ``events``/``payments`` are partitioned by day."""
        return self.raw_dir / table

    @property
    def users_file(self) -> Path:
        return self.raw_table("users") / RAW_USERS_FILE

    def raw_partition(self, table: str, day: dt.date) -> Path:
        return partition_dir(self.raw_table(table), day)

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    # --- landing (deliveries waiting to be imported) --------------------------------------------
    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    def landing_table(self, table: str) -> Path:
        """``landing/<table>/``, holding one ``date=D`` folder per delivery day."""
        return self.landing_dir / table

    def landing(self, table: str, day: dt.date) -> Path:
        """``landing/<table>/date=D/``: the files delivered for the daily run of ``day``."""
        return partition_dir(self.landing_table(table), day)

    def landing_manifest(self, day: dt.date) -> Path:
        """What was imported from day D's landing folders (``landing/_imported/date=D.json``)."""
        return self.landing_dir / LANDING_IMPORTED / f"{partition_name(day)}.json"

    # --- features ------------------------------------------------------------------------------
    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    def feature_view_dir(self, view: str) -> Path:
        return self.features_dir / view

    def feature_partition(self, view: str, day: dt.date) -> Path:
        return partition_dir(self.feature_view_dir(view), day)

    @property
    def feast_dir(self) -> Path:
        """Feast's repo files (``feature_store.yaml``, file registry, SQLite online store): local."""
        return (self.scratch_dir or self.data_dir) / "feast"

    @property
    def duckdb_spill_root(self) -> Path:
        """Where a batch step's DuckDB spills what exceeds its memory limit (each connection into a
        folder of its own, ``churn.storage.duckdb_connect``): node-local, like Feast's files."""
        return self.scratch_dir or self.data_dir

    # --- model registry ---------------------------------------------------------------------------
    @property
    def registry_root(self) -> Path:
        return self.registry_dir or self.data_dir / "registry"

    @property
    def models_dir(self) -> Path:
        return self.registry_root / "models"

    def model_dir(self, version: str) -> Path:
        return self.models_dir / version

    @property
    def production_pointer(self) -> Path:
        return self.registry_root / "production"

    @property
    def audit_log(self) -> Path:
        return self.registry_root / "audit.log"

    @property
    def production_history(self) -> Path:
        return self.registry_root / "history.json"

    @property
    def stages_file(self) -> Path:
        return self.registry_root / "stages.json"

    @property
    def comparison_latest(self) -> Path:
        """The last production-vs-candidate comparison (``churn models compare``, the daily chain)."""
        return self.registry_root / "comparison.json"

    @property
    def retrain_log(self) -> Path:
        return self.registry_root / "retrain.log"

    # --- daily outputs ------------------------------------------------------------------------------
    @property
    def predictions_dir(self) -> Path:
        return self.data_dir / "predictions"

    def predictions(self, day: dt.date) -> Path:
        return partition_dir(self.predictions_dir, day)

    @property
    def scoring_metrics(self) -> Path:
        """The last batch scoring's metrics (one file, replaced by each run)."""
        return self.predictions_dir / SCORING_METRICS

    @property
    def drift_dir(self) -> Path:
        return self.data_dir / "drift"

    def drift(self, day: dt.date) -> Path:
        return partition_dir(self.drift_dir, day)

    @property
    def drift_latest(self) -> Path:
        return self.drift_dir / "latest.json"

    @property
    def monitor_dir(self) -> Path:
        return self.data_dir / "monitor"

    def monitor(self, day: dt.date) -> Path:
        return partition_dir(self.monitor_dir, day)

    @property
    def monitor_latest(self) -> Path:
        return self.monitor_dir / "latest.json"

    @property
    def daily_dir(self) -> Path:
        return self.data_dir / "daily"

    @property
    def daily_metrics(self) -> Path:
        """The daily run's step metrics as a Prometheus textfile (when no Pushgateway is set)."""
        return self.daily_dir / DAILY_METRICS

    @property
    def daily_state(self) -> Path:
        """Each daily step's last outcome, kept so every push and textfile carries every step."""
        return self.daily_dir / "steps.json"

    # --- interventions --------------------------------------------------------------------------
    @property
    def interventions_dir(self) -> Path:
        return self.data_dir / "interventions"

    @property
    def intervention_plans_dir(self) -> Path:
        return self.interventions_dir / "plan"

    def intervention_plan(self, day: dt.date) -> Path:
        """``interventions/plan/date=D/plan.parquet``: whom to contact (and hold out) on D."""
        return partition_dir(self.intervention_plans_dir, day) / INTERVENTION_PLAN

    @property
    def outbox_dir(self) -> Path:
        return self.interventions_dir / "outbox"

    def outbox(self, day: dt.date) -> Path:
        """``interventions/outbox/date=D/``: one new Parquet object per append, never rewritten."""
        return partition_dir(self.outbox_dir, day)

    @property
    def exports_dir(self) -> Path:
        return self.interventions_dir / "exports"

    def exports(self, day: dt.date) -> Path:
        return partition_dir(self.exports_dir, day)

    def export_file(self, day: dt.date, action: str, fmt: str) -> Path:
        """``interventions/exports/date=D/<action>.csv|.parquet``: one CRM upload per action and day."""
        return self.exports(day) / f"{action}.{fmt}"

    @property
    def suppression_file(self) -> Path:
        """``interventions/suppression.parquet``: users never to contact (replaced whole on change)."""
        return self.interventions_dir / SUPPRESSION_FILE

    @property
    def intervention_reports_dir(self) -> Path:
        """``interventions/reports/``: one folder per ``--since``, plus ``latest.json``."""
        return self.interventions_dir / "reports"

    def intervention_report(self, since: dt.date) -> Path:
        """``interventions/reports/since=D/``: report.json, report.html, metrics.prom."""
        return self.intervention_reports_dir / f"since={since.isoformat()}"

    @property
    def intervention_reports_latest(self) -> Path:
        """Names the newest report (by matured labels): what /metrics and the Pushgateway carry."""
        return self.intervention_reports_dir / "latest.json"

    @property
    def interventions_lock(self) -> Path:
        """Held while planning, sending or suppressing, so two runs never deliver the same day."""
        return self.interventions_dir / INTERVENTIONS_LOCK

    @property
    def prediction_log_dir(self) -> Path:
        return self.data_dir / "prediction_log"

    def prediction_log(self, day: dt.date) -> Path:
        return partition_dir(self.prediction_log_dir, day)
