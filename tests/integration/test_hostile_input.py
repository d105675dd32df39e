"""Hostile input: the API fuzzed from its own OpenAPI schema (schemathesis), oversized / nested /
non-UTF-8 / injection-looking requests, and the admin token check.

Runs against the real app over real HTTP (uvicorn in a thread on 127.0.0.1, SQLite online store,
a trained production model) on the session fixture ``shared_site`` (also used by ``test_faults.py``).
The server lives in this process, so its memory is this process's RSS: the hostile requests must leave
it bounded.
"""

from __future__ import annotations

import gc
import hmac
import inspect
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from tests.support.metrics import metric, metrics_of
from tests.support.servers import create, live_server
from tests.support.settings import make_settings
from tests.support.sites import SHARED_SITE_ADMIN_TOKEN, SHARED_SITE_MAX_BATCH, ServedSite

Site = ServedSite
ADMIN_TOKEN = SHARED_SITE_ADMIN_TOKEN
MAX_BATCH = SHARED_SITE_MAX_BATCH

MAX_EXAMPLES = 60  # per operation and generation mode (derandomized: the same cases every run)
BODY_OPERATIONS = ("POST /predict", "POST /predict/batch")
RSS_BOUND = 150 * 1024 * 1024  # growth allowed over all hostile requests (~100 MB of bodies offered)


@pytest.fixture(scope="module")
def site(shared_site: Site) -> Site:
    return shared_site


@pytest.fixture(scope="module")
def base(site: Site) -> Iterator[str]:
    settings = make_settings(site.root, max_batch_size=MAX_BATCH, admin_token=ADMIN_TOKEN, online_timeout_ms=500)
    with live_server(create(settings, watch=False)) as url:
        yield url


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as c:
        yield c


# =====================================================================================================
# Schema-driven fuzzing
# =====================================================================================================
def test_fuzz_every_operation_from_its_openapi_schema(base: str, http: httpx.Client) -> None:
    """Positive and negative cases for every operation: no 5xx, every response (status code, content
    type, headers, body) as the schema declares, invalid input rejected, valid input accepted."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hsettings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        positive_data_acceptance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    raw = http.get("/schema/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    common = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    checks = {
        GenerationMode.POSITIVE: [*common, positive_data_acceptance],
        GenerationMode.NEGATIVE: [*common, negative_data_rejection],
    }
    statuses: Counter[tuple[str, str, int]] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /predict",
        "POST /predict/batch",
        "GET /ready",
        "GET /health",
        "GET /live",
        "GET /metrics",
        "POST /admin/reload",
    }

    def runner(op: Any, mode: Any, session: Any) -> Any:
        @hsettings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=base, session=session, timeout=10)
            statuses[(op.label, mode.value, response.status_code)] += 1
            case.validate_response(response, checks=checks[mode])

        return run

    import requests

    with requests.Session() as session:
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    runner(op, mode, session)()
                except Unsatisfiable:  # no input to make invalid (GET /live, POST /admin/reload...)
                    assert mode is GenerationMode.NEGATIVE and op.label not in BODY_OPERATIONS, op.label
    total = sum(statuses.values())
    print(f"schemathesis: {total} cases over {len(operations)} operations")
    for key, n in sorted(statuses.items()):
        print(f"  {key[0]:<24} {key[1]:<8} {key[2]} x{n}")
    assert not [k for k in statuses if k[2] >= 500]
    assert total >= len(operations) * 10
    # the fuzzer reached the interesting outcomes, not just 400s
    seen = {(k[0], k[2]) for k in statuses}
    assert {("POST /predict", 404), ("POST /predict", 400), ("POST /predict/batch", 200)} <= seen, seen


# =====================================================================================================
# Hand-made hostile requests
# =====================================================================================================
INJECTION_IDS = [
    "' OR '1'='1",
    "u0000001'; DROP TABLE churn_v1_recency; --",
    '" OR ""="',
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "u0000001\r\nX-Injected: yes",
    "u0000001\nSET x 1",
    "*",
    "u*",
    "{{7*7}}",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "%00",
    "u0000001\x00",
    "\x00" * 10,
    " ",
    "\t\n",
    "ユーザー",
    "😀" * 32,
    "\u202eu0000001",
    "Ω" * 128,  # 128 characters, 256 bytes
    "x" * 128,
]


def _post(http: httpx.Client, path: str, content: bytes, **headers: str) -> httpx.Response:
    return http.post(path, content=content, headers={"content-type": "application/json", **headers})


def test_injection_looking_user_ids_are_just_unknown_users(site: Site, http: httpx.Client) -> None:
    real = site.users[0]
    before = http.post("/predict", json={"user_id": real}).json()
    for uid in INJECTION_IDS:
        r = http.post("/predict", json={"user_id": uid})
        assert r.status_code == 404, (uid, r.status_code, r.text)
        assert r.json()["status_code"] == 404
    r = http.post("/predict/batch", json={"user_ids": [*INJECTION_IDS, real]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == len(INJECTION_IDS) and body["results"][-1]["status"] == "ok"
    assert [x["user_id"] for x in body["results"]] == [*INJECTION_IDS, real]  # echoed back exactly
    # too long, or not a string at all → 400
    for bad in ["x" * 129, "Ω" * 129, "x" * 100_000, 1, None, ["u1"], {"$ne": ""}]:
        r = http.post("/predict", json={"user_id": bad})
        assert r.status_code in (400, 413), (str(bad)[:20], r.status_code)
    # lone surrogates and raw control bytes inside JSON strings
    for raw in [b'{"user_id": "\\ud800"}', b'{"user_id": "\\udfff\\ud800"}', b'{"user_id": "a\\u0000b"}']:
        r = _post(http, "/predict", raw)
        assert r.status_code in (400, 404), (raw, r.status_code, r.text)
    after = http.post("/predict", json={"user_id": real}).json()
    assert after["churn_probability"] == before["churn_probability"]  # the store is untouched


def test_oversized_nested_and_non_utf8_bodies_get_4xx_with_bounded_memory(site: Site, base: str) -> None:
    proc = psutil.Process()
    gc.collect()
    rss_before = proc.memory_info().rss
    ten_mb = b'{"user_id": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    ids = [f"u{i:07d}" for i in range(200_000)]
    cases: list[tuple[str, str, bytes, set[int]]] = [
        ("10 MB body", "/predict", ten_mb, {413}),
        ("10 MB batch", "/predict/batch", ten_mb, {413}),
        ("200k-id batch (2.8 MB)", "/predict/batch", json.dumps({"user_ids": ids}).encode(), {413}),
        (
            "batch just under the body limit, over max_batch_size",
            "/predict/batch",
            json.dumps({"user_ids": ids[:18_000]}).encode(),
            {400},
        ),
        (
            "batch of max_batch_size + 1",
            "/predict/batch",
            json.dumps({"user_ids": ids[: MAX_BATCH + 1]}).encode(),
            {400},
        ),
        ("nested arrays 100k deep", "/predict", b"[" * 100_000 + b"]" * 100_000, {400}),
        ("nested objects 40k deep", "/predict", b'{"a":' * 40_000 + b"1" + b"}" * 40_000, {400}),
        ("nested inside user_id", "/predict", b'{"user_id": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", {400}),
        ("nested in batch", "/predict/batch", b'{"user_ids": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", {400}),
        ("non-UTF-8 bytes", "/predict", b'{"user_id": "\xff\xfe\xfa"}', {400}),
        ("latin-1 body", "/predict", '{"user_id": "é"}'.encode("latin-1"), {400}),
        ("UTF-16 body", "/predict", '{"user_id": "u1"}'.encode("utf-16"), {400}),
        ("binary garbage", "/predict", bytes(range(256)) * 100, {400}),
        ("truncated JSON", "/predict", b'{"user_id": "u00', {400}),
        ("empty body", "/predict", b"", {400}),
        ("JSON null", "/predict", b"null", {400}),
        ("huge number", "/predict", b'{"user_id": 1' + b"0" * 100_000 + b"}", {400}),
        ("duplicate keys", "/predict", b'{"user_id": "a", "user_id": "b"}', {400, 404}),
        ("unknown field", "/predict", b'{"user_id": "a", "admin": true}', {400}),
    ]
    with httpx.Client(base_url=base, timeout=30) as http:
        for _round in range(3):  # repeated: a leak would grow with every round
            for name, path, body, expected in cases:
                r = _post(http, path, body)
                assert r.status_code in expected, (name, r.status_code, r.text[:300])
                assert r.json()["status_code"] == r.status_code, name

            # the same 10 MB streamed without Content-Length (chunked): still refused early
            def chunks() -> Iterator[bytes]:
                yield b'{"user_id": "'
                for _ in range(160):
                    yield b"x" * 65_536
                yield b'"}'

            try:
                r = http.post("/predict", content=chunks(), headers={"content-type": "application/json"})
                assert r.status_code == 413, r.text[:200]
            except httpx.TransportError:
                pass  # the server answered 413 and closed the connection while we were still sending
            # wrong content types
            r = http.post(
                "/predict", content=b"user_id=u1", headers={"content-type": "application/x-www-form-urlencoded"}
            )
            assert 400 <= r.status_code < 500, r.status_code
        assert http.get("/ready").status_code == 200  # still healthy
        m = metrics_of(http.get("/metrics").text)
    assert not [
        k for k, v in m.items() if k[0] == "churn_http_requests_total" and dict(k[1])["status"].startswith("5") and v
    ]
    del ten_mb, ids, cases
    gc.collect()
    grown = proc.memory_info().rss - rss_before
    print(f"RSS growth after ~{3 * 21} hostile requests (3 x ~33 MB of bodies offered): {grown / 2**20:.1f} MiB")
    assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.0f} MiB"


def test_hostile_headers(http: httpx.Client) -> None:
    r = http.get("/live", headers={"X-Request-ID": "a" * 10_000})
    assert r.status_code == 200 and len(r.headers["x-request-id"]) <= 128
    r = http.get("/live", headers={"X-Request-ID": "bad\x7fid"})
    assert r.status_code == 400 or r.headers["x-request-id"] != "bad\x7fid"  # h11 refuses the byte
    r = http.post("/predict", json={"user_id": "u1"}, headers={"content-type": "text/plain"})
    assert 400 <= r.status_code < 500 or r.status_code == 404
    r = http.get("/predict/../../etc/passwd")
    assert r.status_code in (404, 405)
    r = http.request("DELETE", "/predict")
    assert r.status_code == 405


# =====================================================================================================
# Admin token
# =====================================================================================================
def test_admin_token_check_is_constant_time() -> None:
    from service import controllers

    src = inspect.getsource(controllers.build_handlers)
    body = src[src.index("async def admin_reload") :]
    assert "hmac.compare_digest(" in body
    assert "== admin_token" not in body and "admin_token ==" not in body and "!= admin_token" not in body
    assert controllers.hmac is hmac


@pytest.mark.parametrize(
    ("case", "headers", "status"),
    [
        ("no header", {}, 401),
        ("empty header", {"Authorization": ""}, 401),
        ("scheme only", {"Authorization": "Bearer"}, 401),
        ("wrong token", {"Authorization": "Bearer nope"}, 401),
        ("prefix of the token", {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}, 401),
        ("token plus a byte", {"Authorization": f"Bearer {ADMIN_TOKEN}x"}, 401),
        ("other case", {"Authorization": f"Bearer {ADMIN_TOKEN.upper()}"}, 401),
        ("basic scheme", {"Authorization": f"Basic {ADMIN_TOKEN}"}, 401),
        ("token without scheme", {"Authorization": ADMIN_TOKEN}, 401),
        ("token in another header", {"X-Admin-Token": ADMIN_TOKEN}, 401),
        ("non-ASCII token", {"Authorization": "Bearer \xe9\xe9\xe9".encode("latin-1")}, 401),
        ("huge token", {"Authorization": "Bearer " + "a" * 60_000}, 401),
        ("right token", {"Authorization": f"Bearer {ADMIN_TOKEN}"}, 200),
        ("lower-case scheme", {"Authorization": f"bearer {ADMIN_TOKEN}"}, 200),
    ],
)
def test_admin_reload_requires_the_exact_token(http: httpx.Client, case: str, headers: dict, status: int) -> None:
    before = metric(metrics_of(http.get("/metrics").text), "churn_model_reload_total", result="success")
    r = http.post("/admin/reload", headers=headers)
    assert r.status_code == status, (case, r.status_code, r.text[:200])
    after = metric(metrics_of(http.get("/metrics").text), "churn_model_reload_total", result="success")
    if status == 401:
        assert r.headers["www-authenticate"].lower().startswith("bearer")
        assert ADMIN_TOKEN not in r.text
        assert after == before  # nothing was reloaded
    else:
        assert r.json()["result"] == "success" and after == before + 1


def test_admin_token_in_query_string_is_not_accepted(http: httpx.Client) -> None:
    r = http.post("/admin/reload", params={"token": ADMIN_TOKEN, "access_token": ADMIN_TOKEN})
    assert r.status_code == 401
