"""Public event logs for the model-quality benchmark, fetched at run time and never committed.

* **shop**: the "simple online shop" click log shipped inside the PyPI wheel ``retentioneering``
  (``user_id, event, timestamp``). The wheel is downloaded once with ``pip download --no-deps`` and
  the CSV is read straight out of the zip: nothing is installed.
* **churnsim**: ChurnSim, the churn simulator of ``fightchurn`` (model ``socialnet7``), whose
  churn is driven by the utility of each behaviour. It needs dependencies that clash with ours, so
  it lives in its own throwaway venv; it writes to PostgreSQL, so it runs in a database created for
  it and dropped afterwards; its events and subscriptions are exported to Parquet.

Everything is cached outside the repository (default ``~/.cache/churn-platform/datasets``); a
second run reuses the cached files. Loaders return the logs with their *original* dates;
:func:`shift_to_yesterday` moves a log so that it ends yesterday (UTC), which the import's
freshness and future-timestamp gates expect.

    .venv/bin/python benchmarks/public_logs.py shop churnsim     # fetch/simulate and summarise
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DEFAULT_CACHE = Path.home() / ".cache" / "churn-platform" / "datasets"

SHOP_WHEEL = ("retentioneering", "3.3.0")
SHOP_MEMBER = "retentioneering/datasets/data/simple-onlineshop.csv"

CHURNSIM_WHEEL = ("fightchurn", "1.2.0")
CHURNSIM_MODEL = "socialnet7"  # also the PostgreSQL schema ChurnSim writes into
CHURNSIM_DATABASE = "churnsim_bench"


@dataclass(frozen=True)
class EventLog:
    """One public log in our raw vocabulary's shape, before any event map is applied.

    ``events``: user_id (str), event_ts (UTC), event_type (the log's own names).
    ``payments``: user_id, payment_ts, amount, status, plan, or ``None`` when the log has none.
    """

    name: str
    events: pd.DataFrame
    payments: pd.DataFrame | None = None


def _wheel(name: str, version: str, cache: Path) -> Path:
    """The cached wheel, downloaded with pip (no dependencies, no install) on first use."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{name}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                f"{name}=={version}",
                "-d",
                str(cache),
            ],
            check=True,
        )
        found = sorted(cache.glob(pattern))
    if not found:
        raise FileNotFoundError(f"pip download left no {pattern} in {cache}")
    return found[0]


def load_shop(cache: Path = DEFAULT_CACHE) -> EventLog:
    """The online-shop click log, read from the retentioneering wheel without installing it."""
    with zipfile.ZipFile(_wheel(*SHOP_WHEEL, cache)) as z, z.open(SHOP_MEMBER) as f:
        raw = pd.read_csv(f)
    events = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "event_ts": pd.to_datetime(raw["timestamp"], utc=True),
            "event_type": raw["event"].astype(str),
        }
    )
    return EventLog("shop", events.sort_values("event_ts", kind="stable").reset_index(drop=True))


# --- ChurnSim -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnSimConfig:
    """The simulation run; every field is part of the cache key, so a change re-simulates."""

    customers: int = 3000
    start: dt.date = dt.date(2020, 1, 1)
    months: int = 8
    seed: int = 42
    parallel: int = 2
    db_host: str = "127.0.0.1"
    db_user: str = "postgres"

    @property
    def end(self) -> dt.date:
        month = self.start.month - 1 + self.months
        return dt.date(self.start.year + month // 12, month % 12 + 1, self.start.day)

    @property
    def key(self) -> str:
        return f"churnsim-{CHURNSIM_MODEL}-c{self.customers}-{self.start}-m{self.months}-s{self.seed}"


def _churnsim_venv(cache: Path) -> Path:
    """Python of the throwaway venv holding fightchurn (its pins clash with ours)."""
    venv = cache.parent / "fightchurn-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import fightchurn.churnsim.churnsim"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    wheel = _wheel(*CHURNSIM_WHEEL, cache)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True)
    return python


def _connect(cfg: ChurnSimConfig, database: str):  # noqa: ANN202 - psycopg connection
    import psycopg

    return psycopg.connect(host=cfg.db_host, user=cfg.db_user, dbname=database, autocommit=True)


def _recreate_database(cfg: ChurnSimConfig, drop_only: bool = False) -> None:
    """A database of its own, so the simulation can never touch anyone else's tables."""
    with _connect(cfg, "postgres") as con:
        con.execute(f"DROP DATABASE IF EXISTS {CHURNSIM_DATABASE} WITH (FORCE)")
        if not drop_only:
            con.execute(f"CREATE DATABASE {CHURNSIM_DATABASE}")


def _simulate(cfg: ChurnSimConfig, python: Path, workdir: Path) -> None:
    """Run ChurnSim's own entry point; it reads its connection from CHURN_DB* variables.

    TMPDIR is private because ChurnSim keeps its customer-id counter and lock in the temp dir.
    """
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CHURN_DB": CHURNSIM_DATABASE,
        "CHURN_DB_HOST": cfg.db_host,
        "CHURN_DB_USER": cfg.db_user,
        "CHURN_DB_PASS": "unused-trust-auth",
        "CHURN_OUT_DIR": str(workdir / "out"),
        "TMPDIR": str(tmp),
    }
    overrides = [
        f"model={CHURNSIM_MODEL}",
        f"init_customers={cfg.customers}",
        f"start_date={cfg.start}",
        f"end_date={cfg.end}",
        f"random_seed={cfg.seed}",
        f"n_parallel={cfg.parallel}",
        "force=true",
    ]
    log = workdir / "churnsim.log"
    with log.open("w") as out:
        code = subprocess.run(
            [str(python), "-m", "fightchurn.churnsim.churnsim", *overrides],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        ).returncode
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"ChurnSim exited {code}; end of {log}:\n{tail}")


def _copy_out(con, sql: str) -> pd.DataFrame:  # noqa: ANN001
    """A query's rows through COPY (far faster than row fetches for millions of events)."""
    buf = io.BytesIO()
    with con.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT CSV, HEADER)") as copy:
        for block in copy:
            buf.write(block)
    buf.seek(0)
    return pd.read_csv(buf)


def _export(cfg: ChurnSimConfig, out: Path) -> None:
    """Events with their type names, and subscriptions as one payment per billing period.

    Both are cut at the simulation's end date: ChurnSim finishes each customer's current month
    past it, so a month-long tail would thin out for reasons that are not churn.
    """
    schema = CHURNSIM_MODEL
    with _connect(cfg, CHURNSIM_DATABASE) as con:
        events = _copy_out(
            con,
            f"SELECT e.account_id, e.event_time, t.event_type_name FROM {schema}.event e "
            f"JOIN {schema}.event_type t USING (event_type_id) WHERE e.event_time < '{cfg.end}'",
        )
        subs = _copy_out(
            con,
            f"SELECT account_id, product, start_date, end_date, mrr, bill_period_months "
            f"FROM {schema}.subscription WHERE start_date < '{cfg.end}'",
        )
    events = pd.DataFrame(
        {
            "user_id": events["account_id"].astype(str),
            "event_ts": pd.to_datetime(events["event_time"]).dt.tz_localize("UTC"),
            "event_type": events["event_type_name"].astype(str),
        }
    ).sort_values(["event_ts", "user_id"], kind="stable")
    payments = pd.DataFrame(
        {
            "user_id": subs["account_id"].astype(str),
            "payment_ts": pd.to_datetime(subs["start_date"]).dt.tz_localize("UTC"),
            "amount": subs["mrr"].astype(float) * subs["bill_period_months"].astype(float),
            "status": "succeeded",
            "plan": subs["product"].astype(str),
        }
    ).sort_values(["payment_ts", "user_id"], kind="stable")
    out.mkdir(parents=True, exist_ok=True)
    events.to_parquet(out / "events.parquet", index=False)
    payments.to_parquet(out / "payments.parquet", index=False)


def load_churnsim(cache: Path = DEFAULT_CACHE, cfg: ChurnSimConfig | None = None) -> EventLog:
    """ChurnSim's socialnet7 log, simulated once per configuration and then read from the cache."""
    cfg = cfg or ChurnSimConfig()
    out = cache / cfg.key
    if not (out / "events.parquet").exists():
        python = _churnsim_venv(cache)
        workdir = cache / f".work-{cfg.key}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        _recreate_database(cfg)
        try:
            _simulate(cfg, python, workdir)
            _export(cfg, out.with_name(f".tmp-{cfg.key}"))
            shutil.rmtree(out, ignore_errors=True)
            out.with_name(f".tmp-{cfg.key}").rename(out)
        finally:
            _recreate_database(cfg, drop_only=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return EventLog(
        "churnsim",
        pd.read_parquet(out / "events.parquet"),
        pd.read_parquet(out / "payments.parquet"),
    )


# --- shared --------------------------------------------------------------------------------------


def shift_to_yesterday(log: EventLog, today: dt.date | None = None) -> EventLog:
    """Move every timestamp by the same whole number of days so the last event falls yesterday.

    Whole days keep weekdays' hours intact and day partitions aligned; the import's gates reject
    future events and stale batches, so a 2020 log must be brought up to date first.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    last = log.events["event_ts"].max().date()
    delta = pd.Timedelta(days=(today - dt.timedelta(days=1) - last).days)
    events = log.events.assign(event_ts=log.events["event_ts"] + delta)
    payments = None
    if log.payments is not None:
        payments = log.payments.assign(payment_ts=log.payments["payment_ts"] + delta)
        payments = payments[payments["payment_ts"] < pd.Timestamp(today, tz="UTC")]
    return EventLog(log.name, events, payments)


def load(name: str, cache: Path = DEFAULT_CACHE, churnsim: ChurnSimConfig | None = None) -> EventLog:
    """One log by name (``shop`` or ``churnsim``), with its original dates."""
    if name == "shop":
        return load_shop(cache)
    if name == "churnsim":
        return load_churnsim(cache, churnsim)
    raise ValueError(f"unknown public log {name!r}")


LOG_NAMES = ("shop", "churnsim")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="*", default=list(LOG_NAMES), choices=list(LOG_NAMES))
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--churnsim-customers", type=int, default=ChurnSimConfig.customers)
    ap.add_argument("--churnsim-months", type=int, default=ChurnSimConfig.months)
    ap.add_argument("--seed", type=int, default=ChurnSimConfig.seed)
    a = ap.parse_args()
    cfg = ChurnSimConfig(customers=a.churnsim_customers, months=a.churnsim_months, seed=a.seed)
    for name in a.logs:
        t0 = time.perf_counter()
        log = load(name, a.cache, cfg)
        ev = log.events
        print(
            f"{name}: {ev['user_id'].nunique():,} users, {len(ev):,} events, "
            f"{ev['event_type'].nunique()} types, {ev['event_ts'].min():%Y-%m-%d}..{ev['event_ts'].max():%Y-%m-%d}, "
            f"payments {0 if log.payments is None else len(log.payments):,} ({time.perf_counter() - t0:.1f}s)"
        )


if __name__ == "__main__":
    main()
