"""One typed settings object for the whole platform.

Every tunable (paths, store URLs, thresholds) lives here and is read from ``CHURN_*``
environment variables with documented defaults. Nothing else in the code base reads the
environment: modules receive a ``Settings`` instance (or call :func:`get_settings`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints
from urllib.parse import quote, unquote, urlparse

from churn.errors import SettingsError
from churn.layout import DataLayout
from churn.storage import DataPath, data_path, is_remote

PREFIX = "CHURN_"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _default_feature_repo() -> Path:
    # Located, not imported: the feature repo sits a layer above this core package.
    spec = importlib.util.find_spec("feature_repo")
    if spec is None or not spec.submodule_search_locations:
        return _PACKAGE_ROOT / "feature_repo"
    return Path(next(iter(spec.submodule_search_locations)))


def _default_data_dir() -> Path:
    # A source checkout keeps its data next to the code (git-ignored `data/`), so every
    # command agrees on it from any working directory; an installed package uses ./data.
    if (_PACKAGE_ROOT / "pyproject.toml").exists():
        return _PACKAGE_ROOT / "data"
    return Path.cwd() / "data"


OnlineStore = Literal["sqlite", "redis"]

REDIS_URL_FORMS = (
    "redis://[[user]:password@]host[:port][/db]",
    "rediss://... (TLS)",
    "host:port",
    "host:port,db=N[,username=U][,password=P][,ssl=true]",
)
"""What ``CHURN_REDIS_URL`` accepts: redis-py's URLs and Feast's own connection strings."""
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
_FEAST_OPTIONS = ("db", "username", "password", "ssl")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _redacted(value: str) -> str:
    """``value`` with any password replaced by ``***`` (error messages end up in logs)."""
    value = re.sub(r"(?i)(password=)[^,]*", r"\1***", value)
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:)[^@]*@", r"\1***@", value)


def _bad_redis_url(value: str, why: str) -> SettingsError:
    forms = "; ".join(REDIS_URL_FORMS)
    return SettingsError(f"{PREFIX}REDIS_URL {_redacted(value)!r}: {why}; expected one of: {forms}")


def normalise_redis_url(value: str) -> str:
    """Any accepted Redis address as a ``redis://`` or ``rediss://`` URL (the one form used inside).

    ``host:port`` and Feast's ``host:port,db=N,password=...,ssl=true`` are rewritten to the URL they
    mean (user name and password percent-encoded); URLs are checked and kept as given. Anything else
    raises :class:`~churn.errors.SettingsError` naming the accepted forms.
    """
    text = value.strip()
    if "://" in text:
        u = urlparse(text)
        if u.scheme.lower() not in ("redis", "rediss"):
            raise _bad_redis_url(value, f"unsupported scheme {u.scheme!r}")
        try:
            port = u.port
        except ValueError:
            raise _bad_redis_url(value, "the port is not a number") from None
        if not u.hostname:
            raise _bad_redis_url(value, "no host")
        if port is not None and not 0 < port < 65536:
            raise _bad_redis_url(value, f"port {port} out of range")
        db = u.path.strip("/")
        if db and not db.isdigit():
            raise _bad_redis_url(value, f"the database {db!r} is not a number")
        return text
    head, *options = text.split(",")
    m = _HOST_PORT.match(head.strip())
    if not m:
        raise _bad_redis_url(value, "not a URL and not host:port")
    host, port = m.group("host"), int(m.group("port"))
    if not 0 < port < 65536:
        raise _bad_redis_url(value, f"port {port} out of range")
    opts: dict[str, str] = {}
    for item in options:
        key, sep, val = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _FEAST_OPTIONS:
            raise _bad_redis_url(value, f"unknown option {item.strip()!r} (known: {', '.join(_FEAST_OPTIONS)})")
        opts[key] = val if key in ("username", "password") else val.strip()
    db = opts.get("db", "0")
    if not db.isdigit():
        raise _bad_redis_url(value, f"db={db!r} is not a number")
    ssl = opts.get("ssl", "false").lower()
    if ssl not in _TRUE | _FALSE:
        raise _bad_redis_url(value, f"ssl={ssl!r} is not true or false")
    auth = ""
    if "username" in opts or "password" in opts:
        auth = quote(opts.get("username", ""), safe="")
        if "password" in opts:
            auth += ":" + quote(opts["password"], safe="")
        auth += "@"
    return f"{'rediss' if ssl in _TRUE else 'redis'}://{auth}{host}:{port}/{int(db)}"


@dataclass(frozen=True)
class Settings:
    """Platform configuration. Field ``foo_bar`` is read from ``CHURN_FOO_BAR``."""

    # --- paths -------------------------------------------------------------------------
    data_dir: DataPath = field(default_factory=_default_data_dir)
    """Root of every output (raw data, features, registry, predictions, drift): a local folder or
    ``s3://bucket/prefix`` (``churn.storage``)."""
    feature_repo: Path = field(default_factory=_default_feature_repo)
    """Feast repository with the feature definitions."""
    registry_dir: DataPath | None = None
    """Model registry root; defaults to ``<data_dir>/registry`` (a local folder or ``s3://``)."""
    s3_endpoint_url: str = ""
    """S3 API endpoint for ``s3://`` data dirs (MinIO, Ceph, moto); empty: AWS (or ``AWS_ENDPOINT_URL``).
    Credentials come the standard AWS way (environment, profile, web identity), never from here."""
    local_dir: Path | None = None
    """Node-local scratch for what must be a real file (Feast's repo files, staging); defaults to
    ``<data_dir>`` for a local data dir and to a temporary folder for an object-store one."""
    pushgateway_url: str = ""
    """Prometheus Pushgateway (``host:port`` or URL) the daily run pushes its step metrics to; empty:
    the metrics stay in textfiles under the data dir."""
    namespace: str = ""
    """The Kubernetes namespace of this deployment (the chart sets it from the pod's own): the daily
    run pushes its metrics grouped by it, so environments sharing one Pushgateway stay apart and
    alerts tell them apart by their ``namespace`` label."""

    # --- feature store -----------------------------------------------------------------
    online_store: OnlineStore = "sqlite"
    """``sqlite`` (embedded default) or ``redis`` (production)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """``redis://``/``rediss://`` URL, ``host:port`` or Feast's ``host:port,db=N,password=...,ssl=true``;
    always held as a URL (:func:`normalise_redis_url`), anything else is refused here."""
    feast_registry_url: str = ""
    """Empty: file registry under the data dir. ``postgresql+psycopg://...``: Feast SQL registry."""
    feature_service: str = "churn_v2"
    engine: Literal["duckdb", "spark"] = "duckdb"
    """Where the batch steps run: ``duckdb`` in this process; ``spark`` on ``spark_master`` (pyspark
    and a Java runtime needed): the daily aggregation as Spark SQL translated from the same
    statements, and the point-in-time training set from Feast's Spark offline store, over the same
    daily Parquet partitions. Materialization reads the partitions either engine wrote."""
    spark_master: str = "local[2]"
    """``local[N]`` runs Spark inside the job; a cluster's master URL (``spark://…``, ``k8s://…``)
    sends the same join there, by configuration only."""
    spark_conf: str = ""
    """Extra Spark settings, ``key=value,key=value`` (executor sizes, object-storage credentials)."""
    online_timeout_ms: int = 500
    """Timeout for every online-store call, so a dead store fails fast instead of hanging."""
    materialize_batch_rows: int = 100_000
    duckdb_memory_limit: str = ""
    """DuckDB's ``memory_limit`` for the batch steps (``8GB``, ``512MiB``); past it DuckDB spills
    into the node-local scratch folder instead of growing. Empty: DuckDB's own default, a share
    of the memory it sees (in a container, the container's limit), which leaves the step's Python
    side less room than a limit chosen for the pod."""

    # --- data & labels -----------------------------------------------------------------
    scope_days: int = 60
    """A user keeps getting a daily feature row until this many days after their last activity."""
    build_chunk_days: int = 31
    """A feature build longer than this many dates (a site's first, over its history) runs span by
    span, each carrying the running totals of the one before: memory bounded by a span, same rows.
    0 builds everything in one pass."""
    churn_horizon_days: int = 30
    """Churned at T = no activity in (T, T + horizon]."""
    active_days: int = 30
    """Batch scoring covers users active within this many days of the scoring date."""
    freshness_max_hours: int = 48
    """Validation: newest event may be at most this old relative to the batch's end (0 disables)."""
    landing_quarantine: bool = False
    """``churn daily``'s ingest step: keep a landing batch's good rows and set bad ones aside (as
    ``churn data import --quarantine``) instead of rejecting the whole day."""
    landing_event_map: str = ""
    """The ingest step's ``--event-map`` (inline ``source=canonical,...`` or a YAML/CSV file)."""
    landing_unmapped: Literal["refuse", "activity"] = "refuse"
    """The ingest step's ``--unmapped``: event types neither mapped nor canonical."""

    # --- training & registry -----------------------------------------------------------
    seed: int = 42
    cutoff_step_days: int = 7
    """Training cutoffs lie this many days apart, back over the whole history the store holds."""
    min_history_days: int = 30
    """A cutoff needs this many days of events before it, so its rolling windows are filled: keep
    it at least the longest feature window the feature service uses."""
    max_training_rows: int = 2_000_000
    """Row budget of the training split: whole cutoffs are kept newest first while they fit (the
    newest alone is sampled down if it does not); 0 = no budget."""
    n_cutoffs: int = 0
    """Optional cap on the number of TRAINING cutoffs (newest kept); 0 = as many as the history
    and the row budget allow. Validation and test are always one cutoff each."""
    lgb_search_rows: int = 60_000
    """The LightGBM configuration search fits on a seeded sample of at most this many training
    rows; the winner is refitted on the whole training split (0 = search on all rows)."""
    promotion_metric: str = "roc_auc"
    promotion_min_gain: float = 0.0
    threshold_rule: Literal["best_f1", "capacity"] = "best_f1"
    capacity_share: float = 0.10
    reference_sample_rows: int = 20_000

    # --- serving ------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = 8000
    workers: int = 1
    max_batch_size: int = 1000
    max_body_bytes: int = 256 * 1024
    admin_token: str = ""
    """Bearer token for /admin endpoints; empty disables them (403)."""
    reload_interval_s: float = 5.0
    console: Literal["off", "on"] = "off"
    """The operator console at ``/console`` (read-only HTML pages: at-risk learners, user lookup,
    model, drift, daily runs); ``off``: every ``/console`` path is a 404."""
    console_token: str = field(default="", repr=False)
    """When set, the console requires it: ``Authorization: Bearer`` or the cookie ``/console/login?token=``
    sets (from the Secret in a cluster). Empty: no token asked (keep the console off where that matters)."""
    score_in_thread: Literal["auto", "always", "never"] = "auto"
    """Where /predict runs the model after its (asynchronous) online read: ``auto`` scores on the
    event loop a model whose one-user cost, measured when it is loaded, is within
    ``score_inline_max_ms`` (the hand-off to a thread costs more than it saves), and in a worker
    thread a model that would hold the loop longer (SHAP grows with the trees; LightGBM releases
    the GIL); ``always`` / ``never`` force one or the other (README has the measured costs).
    Batches always score in a thread."""
    score_inline_max_ms: float = 1.0
    risk_medium: float = 0.3
    risk_high: float = 0.6
    interventions: str = "high:support_outreach,medium:discount_offer,low:none"
    """Risk tier → recommended action (``none``: nobody is contacted for that tier)."""

    # --- interventions (churn interventions plan | send) -------------------------------
    intervention_capacity: str = "support_outreach:200,discount_offer:1000"
    """``action:N,...``: at most N users contacted per day for the action, the riskiest first; an
    action of the tier map not listed has no cap. Naming an action the tier map does not use is refused."""
    intervention_cooldown_days: int = 14
    """A user contacted (or held out) for an action is not selected for it again for this many days."""
    intervention_control_share: float = 0.1
    """Share of each action's eligible users held out as the control group (recorded, never
    contacted), in [0, 0.5]; chosen by a stable hash of user, action and campaign period."""
    intervention_campaign_days: int = 28
    """Length of a campaign period: the control group stays the same within one."""
    intervention_sinks: str = "export"
    """Where ``churn interventions send`` delivers: a comma list of ``webhook`` and ``export``."""
    intervention_export_format: Literal["csv", "parquet"] = "csv"
    """File format of the per-action CRM exports."""
    intervention_webhook_url: str = ""
    """The receiver's ``http(s)://`` URL (required by the ``webhook`` sink; from the Secret)."""
    intervention_webhook_secret: str = field(default="", repr=False)
    """HMAC-SHA256 key signing every webhook body (required by the ``webhook`` sink; from the Secret)."""
    intervention_webhook_batch: int = 100
    """Users per webhook request."""
    intervention_webhook_timeout_s: float = 10.0
    """Per-request timeout; a timeout is retried like a 5xx."""
    intervention_webhook_retries: int = 5
    """Retries of a batch after a 5xx, 408, 429, timeout or connection error before it is dead-lettered."""
    intervention_webhook_backoff_s: float = 1.0
    """Wait before the first retry, doubled for each further one."""
    prediction_log: bool = True
    """Log every served and shadow prediction to ``<data_dir>/prediction_log`` (Parquet, append-only)."""
    prediction_log_flush_s: float = 5.0
    """The prediction log's writer thread flushes buffered records at least this often..."""
    prediction_log_max_records: int = 5000
    """...or as soon as this many records are buffered (one Parquet file per flush)."""
    prediction_log_retention_days: int = 90
    """``churn housekeeping`` deletes prediction-log days older than this (0 keeps all). Keep it above
    ``churn_horizon_days``: ``churn rollout compare`` joins predictions with labels that mature then."""
    tmp_max_age_hours: float = 6.0
    """``churn housekeeping`` removes ``.tmp-*`` leftovers of killed writers older than this; younger
    ones may belong to a writer still running in another pod (0: remove all, only when none can run)."""
    shadow_queue_size: int = 2000
    """Pending shadow scorings; when full (shadow slower than traffic) new ones are dropped and counted."""

    # --- monitoring & retraining -------------------------------------------------------
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    drift_p_value: float = 0.05
    drift_correction: Literal["bonferroni", "fdr"] = "bonferroni"
    """Multiple-testing correction alibi-detect applies across features."""
    psi_bins: int = 10
    """Quantile bins taken from the reference sample for PSI."""
    drift_python: Path | None = None
    """Python of the isolated alibi-detect environment; defaults to ``<checkout>/.venv-drift``."""
    max_model_age_days: int = 7
    performance_drop_margin: float = 0.05

    def __post_init__(self) -> None:
        # The one place a Redis address is parsed: everything downstream sees a redis(s):// URL.
        object.__setattr__(self, "redis_url", normalise_redis_url(self.redis_url))
        # Refused here rather than at send time: a misconfigured sink would otherwise surface only
        # after the plan was written, in the middle of the night's chain.
        problems = self._intervention_problems()
        if problems:
            raise SettingsError("intervention settings refused: " + "; ".join(problems))
        bad = _parse_pairs(self.spark_conf)[1]
        if bad:
            raise SettingsError(f"{PREFIX}SPARK_CONF: {', '.join(map(repr, bad))} is not key=value")
        if self.duckdb_memory_limit and not _MEMORY_SIZE.fullmatch(self.duckdb_memory_limit):
            raise SettingsError(
                f"{PREFIX}DUCKDB_MEMORY_LIMIT {self.duckdb_memory_limit!r} is not a size such as 8GB or 512MiB"
            )

    @property
    def duckdb_config(self) -> dict[str, str]:
        """What every batch step's DuckDB connection is opened with: where it spills (node-local
        scratch, not the working directory, which a pod's read-only root refuses) and its memory."""
        config = {"temp_directory": str(self.layout.duckdb_spill_root)}
        if self.duckdb_memory_limit:
            config["memory_limit"] = self.duckdb_memory_limit
        return config

    # --- derived paths (the map itself is churn.layout; these forward to it) ------------
    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir, self.registry_dir, self.scratch_dir)

    @property
    def remote(self) -> bool:
        """The data directory is on object storage."""
        return is_remote(self.data_dir)

    @property
    def scratch_dir(self) -> Path:
        """Node-local room for real files: the data dir itself when it is local."""
        if self.local_dir is not None:
            return self.local_dir
        if not self.remote:
            return self.data_dir
        return Path(tempfile.gettempdir()) / "churn-platform"

    @property
    def raw_dir(self) -> Path:
        return self.layout.raw_dir

    @property
    def quarantine_dir(self) -> Path:
        return self.layout.quarantine_dir

    @property
    def features_dir(self) -> Path:
        return self.layout.features_dir

    @property
    def feast_dir(self) -> Path:
        return self.layout.feast_dir

    @property
    def models_dir(self) -> Path:
        return self.layout.models_dir

    @property
    def registry_root(self) -> Path:
        return self.layout.registry_root

    @property
    def predictions_dir(self) -> Path:
        return self.layout.predictions_dir

    @property
    def drift_dir(self) -> Path:
        return self.layout.drift_dir

    @property
    def monitor_dir(self) -> Path:
        return self.layout.monitor_dir

    @property
    def prediction_log_dir(self) -> Path:
        return self.layout.prediction_log_dir

    @property
    def drift_python_path(self) -> Path:
        return self.drift_python or _PACKAGE_ROOT / ".venv-drift" / "bin" / "python"

    @property
    def redis_connection_string(self) -> str:
        """Feast's Redis store wants ``host:port,db=N,password=...`` rather than a URL."""
        u = urlparse(self.redis_url)
        parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"]
        db = (u.path or "/0").strip("/") or "0"
        parts.append(f"db={db}")
        if u.username:
            parts.append(f"username={unquote(u.username)}")
        if u.password:
            parts.append(f"password={unquote(u.password)}")
        if u.scheme.lower() == "rediss":
            parts.append("ssl=true")
        return ",".join(parts)

    @property
    def intervention_map(self) -> dict[str, str]:
        pairs = (item.split(":", 1) for item in self.interventions.split(",") if ":" in item)
        return {k.strip(): v.strip() for k, v in pairs}

    @property
    def intervention_capacities(self) -> dict[str, int]:
        """``intervention_capacity`` parsed (checked when the settings were built)."""
        return _parse_capacity(self.intervention_capacity)[0]

    @property
    def spark_conf_items(self) -> dict[str, str]:
        """``spark_conf`` parsed (checked when the settings were built)."""
        return _parse_pairs(self.spark_conf)[0]

    @property
    def intervention_sink_list(self) -> list[str]:
        return [s.strip() for s in self.intervention_sinks.split(",") if s.strip()]

    def _intervention_problems(self) -> list[str]:
        """Everything wrong with the intervention settings, each naming its variable."""
        problems: list[str] = []
        used = sorted({a for a in self.intervention_map.values() if a and a != "none"})
        capacity, bad = _parse_capacity(self.intervention_capacity)
        problems += [f"{PREFIX}INTERVENTION_CAPACITY {item!r} is not action:N with N >= 0" for item in bad]
        for action in sorted(set(capacity) - set(used)):
            problems.append(
                f"{PREFIX}INTERVENTION_CAPACITY names unknown action {action!r} "
                f"({PREFIX}INTERVENTIONS uses: {', '.join(used) or 'none'})"
            )
        share = self.intervention_control_share
        if not 0.0 <= share <= 0.5:
            problems.append(f"{PREFIX}INTERVENTION_CONTROL_SHARE {share} is outside [0, 0.5]")
        if self.intervention_cooldown_days < 0:
            problems.append(f"{PREFIX}INTERVENTION_COOLDOWN_DAYS must be >= 0")
        if self.intervention_campaign_days < 1:
            problems.append(f"{PREFIX}INTERVENTION_CAMPAIGN_DAYS must be >= 1")
        sinks = self.intervention_sink_list
        unknown = [s for s in sinks if s not in _INTERVENTION_SINKS]
        if unknown or not sinks:
            problems.append(
                f"{PREFIX}INTERVENTION_SINKS {self.intervention_sinks!r}: expected a comma list of "
                f"{', '.join(_INTERVENTION_SINKS)}"
            )
        if "webhook" in sinks:
            url = urlparse(self.intervention_webhook_url)
            if url.scheme not in ("http", "https") or not url.netloc:
                problems.append(
                    f"{PREFIX}INTERVENTION_WEBHOOK_URL must be an http(s):// URL when "
                    f"{PREFIX}INTERVENTION_SINKS includes webhook"
                )
            if not self.intervention_webhook_secret:
                problems.append(
                    f"{PREFIX}INTERVENTION_WEBHOOK_SECRET is missing: the webhook sink signs every "
                    "request with it (set it in the Secret)"
                )
        if self.intervention_webhook_batch < 1:
            problems.append(f"{PREFIX}INTERVENTION_WEBHOOK_BATCH must be >= 1")
        if self.intervention_webhook_retries < 0:
            problems.append(f"{PREFIX}INTERVENTION_WEBHOOK_RETRIES must be >= 0")
        if self.intervention_webhook_timeout_s <= 0:
            problems.append(f"{PREFIX}INTERVENTION_WEBHOOK_TIMEOUT_S must be > 0")
        if self.intervention_webhook_backoff_s < 0:
            problems.append(f"{PREFIX}INTERVENTION_WEBHOOK_BACKOFF_S must be >= 0")
        return problems

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``CHURN_*`` variables (``env`` defaults to ``os.environ``)."""
        env = dict(os.environ if env is None else env)
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            if f.name in _STORAGE_FIELDS:
                endpoint = overrides.get("s3_endpoint_url", env.get(PREFIX + "S3_ENDPOINT_URL", ""))
                values[f.name] = data_path(raw, endpoint)
            else:
                values[f.name] = _coerce(f.name, raw, hints[f.name])
        values.update(overrides)
        return cls(**values)

    def as_env(self) -> dict[str, str]:
        """The settings as ``CHURN_*`` variables, to hand to a child process (e.g. the drift env)."""
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[PREFIX + f.name.upper()] = str(v)
        return out


_INTERVENTION_SINKS = ("webhook", "export")


def _split_items(text: str, sep: str) -> list[tuple[str, str, str | None]]:
    """``key<sep>value,...`` → ``(item, key, value)`` per non-empty item; ``value`` is None when
    the item has no key or no separator."""
    out: list[tuple[str, str, str | None]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, found, value = item.partition(sep)
        ok = bool(found) and bool(key.strip())
        out.append((item, key.strip(), value.strip() if ok else None))
    return out


def _parse_pairs(text: str) -> tuple[dict[str, str], list[str]]:
    """``key=value,...`` → ({key: value}, the items that are not ``key=value``)."""
    items = _split_items(text, "=")
    return {k: v for _, k, v in items if v is not None}, [i for i, _, v in items if v is None]


def _parse_capacity(text: str) -> tuple[dict[str, int], list[str]]:
    """``action:N,...`` → ({action: N}, the items that are not ``action:N``)."""
    items = _split_items(text, ":")
    good = [(k, v) for _, k, v in items if v is not None and v.isdigit()]
    return {k: int(v) for k, v in good}, [i for i, _, v in items if v is None or not v.isdigit()]


_MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B)", re.IGNORECASE)
"""The sizes DuckDB's ``memory_limit`` takes."""

_STORAGE_FIELDS = {"data_dir", "registry_dir"}
"""Fields that may name object storage (``s3://``) as well as a local folder."""


def _coerce(name: str, raw: str, hint: Any) -> Any:
    args = [a for a in get_args(hint) if a is not type(None)]
    if hint is Path or Path in args:
        return Path(raw).expanduser().resolve()
    if hint is int:
        return int(raw)
    if hint is float:
        return float(raw)
    if hint is bool:
        return raw.lower() in {"1", "true", "yes", "on"}
    if args and all(isinstance(a, str) for a in args):  # Literal[...]
        if raw not in args:
            raise ValueError(f"{PREFIX}{name.upper()} must be one of {args}, got {raw!r}")
        return raw
    return raw


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests build their own with ``Settings.from_env(env=...)``."""
    return Settings.from_env()
