"""Model rollout end to end over real HTTP: shadow scoring, A/B challenger, prediction log, compare.

One module-scoped site (SQLite online store, a small LightGBM promoted to production). Shadow and
challenger versions are clones of the production version serving its logistic baseline instead
(``kind=logreg``: same features, different predictions).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pandas as pd
import pytest

from churn.settings import Settings
from tests.support.metrics import metric, metrics_of
from tests.support.servers import create, live_server
from tests.support.sites import build_served_site, clone_version


@dataclasses.dataclass
class Site:
    settings: Settings
    version: str
    users: list[str]


@pytest.fixture(scope="module")
def site(small_store: Settings, tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("rollout") / "data"
    settings, version, users, _ = build_served_site(
        small_store, root, reload_interval_s=0.1, prediction_log_flush_s=0.2
    )
    return Site(settings, version, users)


@pytest.fixture
def clean_rollout(site: Site) -> Iterator[None]:
    """Each test starts with no stages and an empty prediction log."""
    for path in (site.settings.layout.stages_file, site.settings.prediction_log_dir):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    yield


def logreg_clone(site: Site, suffix: str) -> str:
    return clone_version(site.settings, site.version, suffix, edit=lambda m: m.update(kind="logreg"))


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def stable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("scored_at", "feature_age_seconds")}  # clock-dependent


class Boom:
    """A model whose scoring raises (loaded fine, fails at request time)."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

        return fail


def read_log(settings: Settings) -> pd.DataFrame:
    files = sorted(settings.prediction_log_dir.rglob("part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_shadow_never_changes_responses_and_is_logged(site: Site, clean_rollout: None) -> None:
    from jobs.compare import compare
    from training.registry import ModelRegistry

    settings = site.settings
    shadow_version = logreg_clone(site, "5ad0e1")
    users = site.users[:: max(1, len(site.users) // 24)][:24]
    app = create(settings, watch=True)
    rollout = app.state.services.rollout

    def predict_all(http: httpx.Client, tag: str) -> dict[str, dict[str, Any]]:
        def one(u: str) -> tuple[str, dict[str, Any]]:
            r = http.post("/predict", json={"user_id": u}, headers={"X-Request-ID": f"{tag}-{u}"})
            assert r.status_code == 200, r.text
            return u, r.json()

        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(one, users))

    with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        without = predict_all(http, "plain")
        ModelRegistry(settings).set_stage(shadow_version, "shadow", reason="test")
        wait_for(lambda: rollout.current.shadow is not None)  # the watcher picked stages.json up
        with_shadow = predict_all(http, "shadow")
        assert rollout.drain()
        # a shadow that raises on every call
        cur = rollout.current
        rollout.current = dataclasses.replace(cur, shadow=dataclasses.replace(cur.shadow, model=Boom()))
        with_broken = predict_all(http, "broken")
        assert rollout.drain()
        m = metrics_of(http.get("/metrics").text)
        health = http.get("/health")
        assert health.status_code == 200
    # the app's lifespan has ended: queued shadow work drained, prediction log flushed

    for u in users:
        assert stable(with_shadow[u]) == stable(without[u]) == stable(with_broken[u])
        assert without[u]["arm"] == "production" and without[u]["model_version"] == site.version
    assert metric(m, "churn_shadow_errors_total", version=shadow_version) == len(users)
    assert metric(m, "churn_predictions_by_arm_total", version=shadow_version, arm="shadow") == len(users)
    assert metric(m, "churn_predictions_by_arm_total", version=site.version, arm="production") == 3 * len(users)
    assert metric(m, "churn_http_requests_total", route="/predict", method="POST", status="200") == 3 * len(users)
    assert metric(m, "churn_shadow_prediction_seconds_count") >= 1

    log = read_log(settings)
    served = log[log["kind"] == "served"]
    shadow = log[log["kind"] == "shadow"]
    assert len(served) == 3 * len(users) and set(served["arm"]) == {"production"}
    assert len(shadow) == len(users) and set(shadow["model_version"]) == {shadow_version}
    assert set(shadow["request_id"]) == {f"shadow-{u}" for u in users}  # paired with the served request
    pairs = shadow.merge(served, on="request_id", suffixes=("_shadow", "_prod"))
    assert (pairs["feature_hash_shadow"] == pairs["feature_hash_prod"]).all()
    assert pairs["feature_hash_prod"].notna().all()
    # the production probability in the log is what the client got
    got = {f"shadow-{u}": with_shadow[u]["churn_probability"] for u in users}
    assert all(abs(got[r] - p) < 1e-12 for r, p in zip(pairs["request_id"], pairs["probability_prod"], strict=True))

    report = compare(settings, dt.datetime.now(dt.UTC).date())
    cand = report.candidate("shadow", shadow_version)
    assert cand.agreement.users == len(users) and cand.agreement.spearman is not None
    assert report.recommendation.action == "keep"  # labels of today's predictions are not mature


def test_challenger_gets_its_share_of_users_stably(site: Site, clean_rollout: None) -> None:
    from litestar.testing import TestClient

    from service.routing import assign_arm
    from training.registry import ModelRegistry

    settings = site.settings
    challenger = logreg_clone(site, "c4a11e")
    ModelRegistry(settings).set_stage(challenger, "challenger", share=0.5)
    users = site.users[:60]
    expected = {u: assign_arm(u, 0.5, challenger) for u in users}
    assert 10 < list(expected.values()).count("challenger") < 50

    app = create(settings, watch=False)
    with TestClient(app) as client:
        rollout = app.state.services.rollout
        assert rollout.current.challenger is not None and rollout.current.share == 0.5
        for _ in range(2):  # the same user always gets the same arm
            for u in users:
                body = client.post("/predict", json={"user_id": u}).json()
                assert body["arm"] == expected[u], u
                assert body["model_version"] == (challenger if expected[u] == "challenger" else site.version)
        batch = client.post("/predict/batch", json={"user_ids": users[:40]}).json()
        assert batch["model_version"] == site.version
        for item in batch["results"]:
            assert item["arm"] == expected[item["user_id"]]
            assert item["model_version"] == (challenger if item["arm"] == "challenger" else site.version)
        single = {u: client.post("/predict", json={"user_id": u}).json() for u in users[:40]}
        for item in batch["results"]:  # batch and single scoring agree per arm
            assert abs(item["churn_probability"] - single[item["user_id"]]["churn_probability"]) < 1e-9
        # a challenger that raises at request time: production serves, nobody sees an error
        cur = rollout.current
        rollout.current = dataclasses.replace(cur, challenger=dataclasses.replace(cur.challenger, model=Boom()))
        for u in users[:20]:
            r = client.post("/predict", json={"user_id": u})
            assert r.status_code == 200 and r.json()["arm"] == "production"
        rollout.current = cur
        assert rollout.drain()
        m = metrics_of(client.get("/metrics").text)
    n_ch = list(expected.values()).count("challenger")
    assert metric(m, "churn_predictions_by_arm_total", version=challenger, arm="challenger") == 2 * n_ch + 2 * sum(
        expected[u] == "challenger" for u in users[:40]
    )
    assert metric(m, "churn_challenger_errors_total", version=challenger) == sum(
        expected[u] == "challenger" for u in users[:20]
    )
    log = read_log(settings)
    ch_served = log[(log["kind"] == "served") & (log["arm"] == "challenger")]
    counterpart = log[(log["kind"] == "shadow") & (log["arm"] == "production")]
    # every challenger-served request was also scored by production, off the critical path
    assert set(ch_served["request_id"]) <= set(counterpart["request_id"])
    assert set(counterpart["model_version"]) == {site.version}


def test_admin_reload_applies_staged_rollout_at_once(site: Site, clean_rollout: None) -> None:
    from litestar.testing import TestClient

    from training.registry import ModelRegistry

    settings = dataclasses.replace(site.settings, admin_token="rollout-admin", reload_interval_s=3600.0)
    app = create(settings, watch=False)  # no watcher: only the admin call can apply the stage
    with TestClient(app) as client:
        rollout = app.state.services.rollout
        assert rollout.current.challenger is None
        challenger = logreg_clone(site, "ad1e0d")
        ModelRegistry(settings).set_stage(challenger, "challenger", share=0.25)
        assert rollout.current.challenger is None
        r = client.post("/admin/reload", headers={"Authorization": "Bearer rollout-admin"})
        assert r.status_code == 200, r.text
        assert rollout.current.challenger is not None and rollout.current.challenger.version == challenger
        assert rollout.current.share == 0.25
        info = metrics_of(client.get("/metrics").text)
        assert metric(info, "churn_rollout_info", challenger=challenger, shadow="none", share="0.25") == 1


def test_stage_and_compare_commands(site: Site, clean_rollout: None) -> None:
    from typer.testing import CliRunner

    from churn.settings import get_settings
    from cli.main import app

    shadow = logreg_clone(site, "c0ffee")
    broken = clone_version(site.settings, site.version, "dead00", corrupt=True)
    env = {k: v for k, v in site.settings.as_env().items() if v != ""}
    runner = CliRunner()

    def run(*args: str) -> Any:
        get_settings.cache_clear()
        try:
            return runner.invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    res = run("models", "stage", shadow, "--shadow", "--reason", "cli test")
    assert res.exit_code == 0, res.output
    assert f"shadow -> {shadow}" in res.output
    res = run("models", "stage", shadow, "--challenger", "0.25")
    assert res.exit_code == 0 and "25% of users" in res.output, res.output
    res = run("models", "stage", broken, "--shadow")
    assert res.exit_code != 0 and "refusing" in res.output, res.output
    res = run("models", "stage", site.version, "--challenger", "0.5")
    assert res.exit_code != 0 and "production" in res.output
    res = run("models", "stage", shadow)  # no rollout option: the legacy named slot is gone
    assert res.exit_code != 0 and "exactly one" in res.output, res.output
    res = run("models", "stage", shadow, "--stage", "staging")
    assert res.exit_code != 0, res.output
    res = run("models", "list")
    assert res.exit_code == 0 and f"C {shadow}" in res.output and f"* {site.version}" in res.output
    res = run("models", "stage", shadow, "--clear")
    assert res.exit_code == 0 and "shadow -> none; challenger -> none" in res.output, res.output
    res = run("models", "compare", "--since", "2026-01-01")
    assert res.exit_code == 0 and "recommendation: keep" in res.output, res.output
    res = run("models", "compare", "--since", "2026-01-01", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["recommendation"]["action"] == "keep", res.output
    from training.registry import ModelRegistry

    audit = [e for e in ModelRegistry(site.settings).audit_entries() if e["action"].startswith("stage:")]
    assert [e["action"] for e in audit][-3:] == ["stage:shadow", "stage:challenger", "stage:clear"]
