"""Helpers shared by the API tests: a real uvicorn server on a free loopback port, metric parsing."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from churn.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread on a free 127.0.0.1 port."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(15)


def create(settings: Settings, **kwargs: Any):
    from service.app import create_app

    return create_app(settings, **kwargs)


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition text → {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def build_served_site(small_store: Settings, root, **settings_fields: Any) -> tuple[Settings, str, list[str], str]:
    """Copy the session's small store to ``root``, apply, materialize, train + promote a quick model.

    Returns (settings, production version, users of the newest feature partition, its date).
    """
    import shutil

    import pandas as pd

    from churn import feature_store as cfs
    from churn.schema import ENTITY_KEY
    from jobs.materialize import materialize
    from tests.conftest import make_settings
    from training.train import run_training

    shutil.copytree(small_store.data_dir, root)
    settings = make_settings(root, reference_sample_rows=300, **settings_fields)
    store = cfs.get_store(settings)
    cfs.apply(settings, store)
    materialize(settings, store=store)
    result = run_training(settings, promote=True, max_rounds=30, early_stopping=10)
    assert result.promotion is not None, result.promotion_error
    newest = sorted((root / "features" / "profile").glob("date=*"))[-1]
    users = sorted(pd.read_parquet(newest, columns=[ENTITY_KEY])[ENTITY_KEY])
    return settings, result.version, users, newest.name.split("=")[1]
