"""The prediction API end to end: real online stores (SQLite and Redis), a trained production
model, real HTTP (uvicorn on a free loopback port) plus Litestar's TestClient for the rest.

One module-scoped site: a writable copy of ``small_store`` with the Feast objects applied,
materialized into SQLite and into Redis (db ``REDIS_DB``), and a model trained with few boosting
rounds and promoted (``tests.support.sites.build_served_site``). Redis comes from the ``redis_server``
fixture of ``tests/integration/conftest.py`` (fails when ``CI`` is set and none is reachable, else skips
with the reason).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from churn.schema import ALL_FEATURES, ENTITY_KEY, FEATURE_VIEWS
from churn.settings import Settings
from tests.support import sites
from tests.support.env import in_ci, require_tool
from tests.support.metrics import metric, metrics_of
from tests.support.servers import RedisProcess, create, free_port, live_server
from tests.support.settings import make_settings, redis_settings
from tests.support.sites import build_served_site, set_pointer

REDIS_DB = 12
ADMIN_TOKEN = "s3cret-admin-token"
MAX_BATCH = 50


# --- the site -------------------------------------------------------------------------------------
@dataclass
class Site:
    sqlite: Settings
    redis: Settings | None
    redis_reason: str
    version: str
    users: list[str]  # users with a feature row in the newest partition (materialized)
    last_date: str


@pytest.fixture(scope="module")
def site(small_store: Settings, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Site:
    from jobs.materialize import materialize

    root = tmp_path_factory.mktemp("api") / "data"
    common = dict(reference_sample_rows=300, max_batch_size=MAX_BATCH, admin_token=ADMIN_TOKEN)
    served = build_served_site(small_store, root, **common)

    on_redis, reason = None, ""
    try:
        server = request.getfixturevalue("redis_server")
    except pytest.skip.Exception as exc:  # no Redis: the Redis cases skip with this reason
        reason = str(exc)
    else:
        on_redis = redis_settings(root, server, REDIS_DB, **common)
        materialize(on_redis, full=True)

    return Site(served.settings, on_redis, reason, served.version, served.users, served.last_date)


def store_settings(site: Site, kind: str) -> Settings:
    if kind == "redis":
        if site.redis is None:
            if in_ci():
                pytest.fail(f"Redis needed in CI: {site.redis_reason}")
            pytest.skip(f"Redis unavailable: {site.redis_reason}")
        return site.redis
    return site.sqlite


def offline_rows(site: Site, users: list[str]) -> pd.DataFrame:
    """The newest offline feature row of each user, all views joined by name."""
    frame = None
    for view in FEATURE_VIEWS:
        df = pd.read_parquet(site.sqlite.features_dir / view / f"date={site.last_date}")
        df = df[[ENTITY_KEY, *FEATURE_VIEWS[view]]]
        frame = df if frame is None else frame.merge(df, on=ENTITY_KEY, how="outer")
    assert frame is not None
    return frame.set_index(ENTITY_KEY).loc[users].reset_index()


# --- servers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(site: Site) -> Iterator[Any]:
    """TestClient on the SQLite store (most error cases)."""
    from litestar.testing import TestClient

    with TestClient(create(site.sqlite, watch=False)) as c:
        yield c


# --- happy path ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "score_in_thread"), [("sqlite", "auto"), ("redis", "auto"), ("redis", "always"), ("redis", "never")]
)
def test_predict_over_http_equals_offline_computation(site: Site, kind: str, score_in_thread: str) -> None:
    import dataclasses

    from training.registry import ModelRegistry

    settings = dataclasses.replace(store_settings(site, kind), score_in_thread=score_in_thread)
    model = ModelRegistry(settings).load(site.version)
    users = site.users[:: max(1, len(site.users) // 12)][:12]
    offline = offline_rows(site, users)
    expected = model.predict_proba_frame(offline)
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in offline[model.features].to_dict("records")]
    factors = model.top_factors(rows, k=3)
    with live_server(create(settings, watch=False)) as base, httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/live").status_code == 200
        ready = http.get("/ready")
        assert ready.status_code == 200, ready.text
        for i, user in enumerate(users):
            r = http.post("/predict", json={"user_id": user})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["user_id"] == user and body["model_version"] == site.version
            assert body["churn_probability"] == pytest.approx(float(expected[i]), rel=1e-9, abs=1e-12)
            p = body["churn_probability"]
            tier = "high" if p >= settings.risk_high else "medium" if p >= settings.risk_medium else "low"
            assert body["risk_tier"] == tier
            assert body["recommended_action"] == settings.intervention_map[tier]
            assert body["will_churn"] == (p >= model.threshold)
            assert [f["feature"] for f in body["top_factors"]] == [f["feature"] for f in factors[i]]
            for got, want in zip(body["top_factors"], factors[i], strict=True):
                assert got["contribution"] == pytest.approx(want["contribution"], rel=1e-9)
                assert (
                    got["value"] == pytest.approx(want["value"]) if want["value"] is not None else got["value"] is None
                )
            assert 0 < body["feature_age_seconds"] and body["scored_at"].endswith("Z")
            assert r.headers["x-request-id"]
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["model"]["version"] == site.version
        assert health["online_store"] == {**health["online_store"], "status": "ok", "kind": kind}


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_batch_scores_in_one_call_and_reports_unknown_users_in_place(site: Site, kind: str) -> None:
    from litestar.testing import TestClient

    settings = store_settings(site, kind)
    users = [site.users[0], "no-such-user", site.users[1], site.users[0]]
    with TestClient(create(settings, watch=False)) as c:
        r = c.post("/predict/batch", json={"user_ids": users})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == 4 and body["errors"] == 1 and body["model_version"] == site.version
        assert [x["user_id"] for x in body["results"]] == users
        assert [x["status"] for x in body["results"]] == ["ok", "error", "ok", "ok"]
        assert body["results"][1]["status_code"] == 404 and "unknown user" in body["results"][1]["error"]
        single = c.post("/predict", json={"user_id": users[2]}).json()
        assert body["results"][2]["churn_probability"] == pytest.approx(single["churn_probability"], rel=1e-12)
        assert body["results"][0]["churn_probability"] == body["results"][3]["churn_probability"]
        # A batch of unknown users only is still a 200 with errors in place.
        r = c.post("/predict/batch", json={"user_ids": ["nobody-1", "nobody-2"]})
        assert r.status_code == 200 and r.json()["errors"] == 2


# --- client mistakes: never a 500 ------------------------------------------------------------------------
ERROR_CASES = [
    ("unknown user", "POST", "/predict", {"json": {"user_id": "no-such-user"}}, 404, "unknown user"),
    ("malformed JSON", "POST", "/predict", {"content": b'{"user_id": '}, 400, "malformed"),
    ("not JSON at all", "POST", "/predict", {"content": b"user_id=u1"}, 400, ""),
    ("empty body", "POST", "/predict", {"content": b""}, 400, "empty"),
    ("wrong type", "POST", "/predict", {"json": {"user_id": 42}}, 400, "Validation failed"),
    ("null id", "POST", "/predict", {"json": {"user_id": None}}, 400, "Validation failed"),
    ("empty id", "POST", "/predict", {"json": {"user_id": ""}}, 400, "Validation failed"),
    ("too long id", "POST", "/predict", {"json": {"user_id": "u" * 129}}, 400, "Validation failed"),
    ("array body", "POST", "/predict", {"json": ["u1"]}, 400, "Validation failed"),
    ("missing field", "POST", "/predict", {"json": {"user": "u1"}}, 400, "Validation failed"),
    ("oversized body", "POST", "/predict", {"content": b'{"user_id": "' + b"x" * 300_000 + b'"}'}, 413, ""),
    ("batch empty list", "POST", "/predict/batch", {"json": {"user_ids": []}}, 400, "Validation failed"),
    ("batch over limit", "POST", "/predict/batch", {"json": {"user_ids": ["u"] * (MAX_BATCH + 1)}}, 400, "Validation"),
    ("batch wrong type", "POST", "/predict/batch", {"json": {"user_ids": "u1"}}, 400, "Validation failed"),
    ("batch bad element", "POST", "/predict/batch", {"json": {"user_ids": ["u1", 3]}}, 400, "Validation failed"),
    ("unknown route", "GET", "/nope", {}, 404, "Not Found"),
    ("wrong method", "GET", "/predict", {}, 405, "Method Not Allowed"),
    ("admin without token", "POST", "/admin/reload", {}, 401, "bearer"),
    ("admin wrong token", "POST", "/admin/reload", {"headers": {"Authorization": "Bearer nope"}}, 401, "bearer"),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "kwargs", "status", "text"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_client_mistakes_get_4xx_json_with_a_message(client, case, method, path, kwargs, status, text) -> None:  # noqa: ANN001
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status_code"] == status and body["detail"]
    assert text.lower() in json.dumps(body).lower()
    assert body["request_id"] == r.headers["x-request-id"]


def test_admin_disabled_without_token_and_enabled_with_it(site: Site, client) -> None:  # noqa: ANN001
    from litestar.testing import TestClient

    with TestClient(create(make_settings(site.sqlite.data_dir), watch=False)) as c:
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 403 and "disabled" in r.json()["detail"]
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "success" and r.json()["version"] == site.version


def test_request_id_is_honoured_or_generated(client) -> None:  # noqa: ANN001
    r = client.get("/live", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/live").headers["x-request-id"]
    assert generated and generated != "abc-123"
    r = client.get("/live", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


def test_unexpected_errors_are_json_500_with_request_id(site: Site) -> None:
    from litestar.testing import TestClient

    class Broken:
        feature_names = list(ALL_FEATURES)

        def ping(self) -> bool:
            return True

        def read(self, user_ids):  # noqa: ANN001, ANN202
            raise ZeroDivisionError("boom")

        async def read_async(self, user_ids):  # noqa: ANN001, ANN202
            raise ZeroDivisionError("boom")

    with TestClient(create(site.sqlite, reader=Broken(), watch=False)) as c:
        r = c.post("/predict", json={"user_id": "u1"}, headers={"X-Request-ID": "req-500"})
        assert r.status_code == 500
        assert r.json()["request_id"] == "req-500" and "req-500" in r.json()["detail"]
        assert "boom" not in r.text  # no internals leak


def test_openapi_schema_is_exact(client) -> None:  # noqa: ANN001
    schema = client.get("/schema/openapi.json").json()
    comps = schema["components"]["schemas"]
    uid = comps["PredictRequest"]["properties"]["user_id"]
    assert uid["minLength"] == 1 and uid["maxLength"] == 128
    ids = comps["BatchPredictRequest"]["properties"]["user_ids"]
    assert ids["minItems"] == 1 and ids["maxItems"] == MAX_BATCH
    assert {"200", "400", "404", "413", "503"} <= set(schema["paths"]["/predict"]["post"]["responses"])
    assert set(comps["Prediction"]["required"]) >= {"churn_probability", "risk_tier", "top_factors", "model_version"}
    assert client.get("/schema").status_code == 200


def test_integral_factor_values_validate_against_the_schema(client) -> None:  # noqa: ANN001
    """A count such as ``logins_14d = 8`` is one JSON number: it must match exactly one branch of
    the factor value's ``oneOf`` (``int | float`` once made it match two, an invalid response)."""
    import jsonschema

    components = client.get("/schema/openapi.json").json()["components"]
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/Factor", "components": components})
    for value in (8, 8.5, "premium", None):
        assert not list(validator.iter_errors({"feature": "f", "value": value, "contribution": 0.1})), value


# --- metrics -------------------------------------------------------------------------------------------
def test_metrics_increase_as_expected(site: Site, client) -> None:  # noqa: ANN001
    before = metrics_of(client.get("/metrics").text)
    n = 5
    for user in site.users[:n]:
        assert client.post("/predict", json={"user_id": user}).status_code == 200
    assert client.post("/predict", json={"user_id": "no-such-user"}).status_code == 404
    assert client.post("/predict", content=b"{").status_code == 400
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    after = metrics_of(r.text)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    req = "churn_http_requests_total"
    assert delta(req, route="/predict", method="POST", status="200") == n
    assert delta(req, route="/predict", method="POST", status="404") == 1
    assert delta(req, route="/predict", method="POST", status="400") == 1
    assert delta("churn_http_request_duration_seconds_count", route="/predict", method="POST") == n + 2
    assert sum(delta("churn_predictions_total", tier=t) for t in ("low", "medium", "high")) == n
    assert delta("churn_prediction_probability_count") == n
    assert delta("churn_online_read_seconds_count") == n + 1
    assert delta("churn_feature_age_seconds_count") == n
    assert delta("churn_online_read_errors_total") == 0
    assert (
        metric(after, "churn_model_info", version=site.version, kind=client.app.state.services.holder.current.kind) == 1
    )
    assert 0 < metric(after, "churn_model_age_seconds") < 86400
    assert metric(after, "churn_model_reload_total", result="success") >= 1
    # Fine-grained latency buckets below 10 ms.
    les = {dict(k[1]).get("le") for k in after if k[0] == "churn_http_request_duration_seconds_bucket"}
    assert {"0.001", "0.0025", "0.005", "0.0075", "0.01"} <= les


# --- hot reload ------------------------------------------------------------------------------------------
@pytest.fixture
def registry_settings(site: Site) -> Iterator[Settings]:
    """The SQLite settings with a fast pointer poll; restores the production pointer afterwards."""
    settings = make_settings(
        site.sqlite.data_dir, reload_interval_s=0.1, admin_token=ADMIN_TOKEN, max_batch_size=MAX_BATCH
    )
    yield settings
    set_pointer(settings, site.version)


def test_hot_reload_swaps_under_concurrent_requests_without_failures(site: Site, registry_settings: Settings) -> None:
    from training.registry import ModelRegistry

    def flip_kind(meta: dict) -> None:  # the other model of the version: different predictions
        meta["kind"] = "lightgbm" if meta["kind"] == "logreg" else "logreg"

    v2 = sites.clone_version(registry_settings, site.version, "a0a0a0", edit=flip_kind)
    seen: dict[str, int] = {}
    failures: list[str] = []
    stop = threading.Event()

    with live_server(create(registry_settings)) as base:

        def hammer() -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        r = http.post("/predict", json={"user_id": site.users[i % len(site.users)]})
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                    else:
                        v = r.json()["model_version"]
                        seen[v] = seen.get(v, 0) + 1

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        ModelRegistry(registry_settings).promote(v2, force=True, reason="test hot reload")
        deadline = time.monotonic() + 15
        while seen.get(v2, 0) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(10)
        m = metrics_of(httpx.get(base + "/metrics").text)
        health = httpx.get(base + "/health").json()

    assert not failures, failures[:5]
    assert seen.get(site.version, 0) > 0 and seen.get(v2, 0) >= 20, seen
    assert metric(m, "churn_model_reload_total", result="success") == 2  # startup + the swap
    assert metric(m, "churn_model_info", version=v2, kind=health["model"]["kind"]) == 1
    assert health["model"]["version"] == v2 and health["model"]["last_reload"]["previous_version"] == site.version


def test_refused_models_do_not_replace_the_serving_one(site: Site, registry_settings: Settings) -> None:
    from litestar.testing import TestClient

    corrupt = sites.clone_version(registry_settings, site.version, "bad000", corrupt=True)

    def other_service(meta: dict) -> None:
        meta["feature_service"] = "churn_v0"

    wrong_fs = sites.clone_version(registry_settings, site.version, "bad001", edit=other_service)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create(registry_settings)) as c:
        user = site.users[0]
        before = c.post("/predict", json={"user_id": user}).json()
        # 1. the watcher sees a pointer to a corrupt model
        set_pointer(registry_settings, corrupt)
        deadline = time.monotonic() + 10
        while metric(metrics_of(c.get("/metrics").text), "churn_model_reload_total", result="failed") < 1:
            assert time.monotonic() < deadline, "watcher did not try the new pointer"
            time.sleep(0.05)
        r = c.post("/predict", json={"user_id": user})
        assert r.status_code == 200 and r.json()["model_version"] == site.version
        assert r.json()["churn_probability"] == before["churn_probability"]
        health = c.get("/health").json()
        assert health["status"] == "degraded" and "corrupt" in health["model"]["detail"]
        assert c.get("/ready").status_code == 200  # still serving the old model
        # 2. admin reload of a model built for another feature service → refused (409)
        set_pointer(registry_settings, wrong_fs)
        r = c.post("/admin/reload", headers=auth)
        assert r.status_code == 409 and r.json()["result"] == "failed" and "feature service" in r.json()["detail"]
        # 3. a pointer to a version that does not exist
        set_pointer(registry_settings, "20990101T000000Z-ffffff")
        r = c.post("/admin/reload", headers=auth)
        assert r.status_code == 409 and "not found" in r.json()["detail"]
        assert c.post("/predict", json={"user_id": user}).json()["model_version"] == site.version
        m = metrics_of(c.get("/metrics").text)
        # 3 refusals at least; the watcher may also notice steps 2 and 3's pointer changes before the
        # admin call does and refuse them once more: that race is fine, a success is not.
        assert metric(m, "churn_model_reload_total", result="failed") >= 3
        assert metric(m, "churn_model_reload_total", result="success") == 1  # the startup load only
        assert metric(m, "churn_model_info", version=site.version, kind=c.app.state.services.holder.current.kind) == 1
        # 4. back to the good version: accepted again
        set_pointer(registry_settings, site.version)
        r = c.post("/admin/reload", headers=auth)
        assert r.status_code == 200 and r.json()["result"] == "success"
        assert c.get("/health").json()["status"] == "ok"


def test_starts_without_a_production_model(site: Site, tmp_path: Path) -> None:
    from litestar.testing import TestClient

    # Same Feast registry and online store, but an empty model registry.
    settings = make_settings(site.sqlite.data_dir, registry_dir=str(tmp_path / "empty-registry"))
    with TestClient(create(settings, watch=False)) as c:
        assert c.get("/live").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and "no production model" in r.json()["reasons"][0]
        r = c.post("/predict", json={"user_id": site.users[0]})
        assert r.status_code == 503
        assert r.json()["detail"] == "no production model: run churn train --promote"
        assert c.post("/predict/batch", json={"user_ids": site.users[:2]}).status_code == 503
        assert c.get("/health").json()["model"]["status"] == "down"


# --- the online store going away ----------------------------------------------------------------------
def test_ready_follows_the_online_store(site: Site) -> None:
    require_tool("redis-server", "cannot stop/start a private Redis")
    port = free_port()
    private_redis = RedisProcess(port)
    settings = make_settings(
        site.sqlite.data_dir, online_store="redis", redis_url=f"redis://127.0.0.1:{port}/0", online_timeout_ms=300
    )
    with private_redis, live_server(create(settings, watch=False)) as base:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/ready").status_code == 200
            assert http.post("/predict", json={"user_id": "anyone"}).status_code == 404  # empty store
        private_redis.stop()
        with httpx.Client(base_url=base, timeout=10) as http:
            r = http.post("/predict", json={"user_id": site.users[0]})
            assert r.status_code == 503 and "online store unavailable" in r.json()["detail"]
            r = http.get("/ready")
            assert r.status_code == 503 and "online store unreachable" in " ".join(r.json()["reasons"])
            assert http.get("/health").json()["online_store"]["status"] == "down"
            assert http.get("/live").status_code == 200
            errors = metric(metrics_of(http.get("/metrics").text), "churn_online_read_errors_total")
            assert errors >= 1
        with private_redis, httpx.Client(base_url=base, timeout=10) as http:
            deadline = time.monotonic() + 10
            while http.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "/ready did not recover"
                time.sleep(0.1)
            assert http.post("/predict", json={"user_id": "anyone"}).status_code == 404
