"""The operator console over HTTP (Litestar's TestClient on the real app): every page with data and on
an empty data dir, the at-risk table's paging, sorting, filters and CSV checked against the scored
Parquet read independently (pandas), bad parameters → 400, the user lookup, access (off → 404, token),
and the drift file route's path checks.

The site is the session fixture ``scored_site`` (``tests/integration/conftest.py``): the shared served
site scored by the real batch job on three days, with drift reports and a daily run recorded.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn.settings import Settings
from tests.support.servers import create
from tests.support.settings import make_settings
from tests.support.sites import ScoredSite

TOKEN = "console-test-token-0123456789"
ROW_USER = re.compile(r'<tr data-user="([^"]+)" data-testid="at-risk-row">')


# --- fixtures ------------------------------------------------------------------------------------------
def client_for(settings: Settings) -> Any:
    from litestar.testing import TestClient

    return TestClient(create(settings, watch=False))


@pytest.fixture(scope="module")
def site(scored_site: ScoredSite) -> ScoredSite:
    return scored_site


@pytest.fixture(scope="module")
def client(site: ScoredSite) -> Iterator[Any]:
    with client_for(dataclasses.replace(site.settings, console="on")) as c:
        yield c


@pytest.fixture(scope="module")
def expected(site: ScoredSite) -> pd.DataFrame:
    """The newest day's scores joined with plan and country, read independently of the console."""
    day = site.days[-1]
    preds = pd.read_parquet(site.settings.layout.predictions(day) / "predictions.parquet")
    users = pd.read_parquet(site.settings.layout.users_file, columns=["user_id", "plan", "country"])
    return preds.merge(users, on="user_id", how="left")


def rows_of(html: str) -> list[str]:
    return ROW_USER.findall(html)


def total_of(html: str) -> int:
    m = re.search(r'data-testid="at-risk"[^>]*data-total="(\d+)"', html)
    assert m, html[:2000]
    return int(m.group(1))


def ordered(frame: pd.DataFrame, col: str, direction: str) -> list[str]:
    """user_ids in the console's order: the column (tiers low < medium < high), nulls last, then user_id."""
    key = frame[col].map({"low": 0, "medium": 1, "high": 2}) if col == "risk_tier" else frame[col]
    f = frame.assign(_k=key)
    if col == "user_id":
        return f.sort_values("user_id", ascending=direction == "asc")["user_id"].tolist()
    # stable two-pass sort: user_id ascending, then the key in the wanted direction (nulls last)
    f = f.sort_values("user_id", kind="stable")
    f = f.sort_values("_k", ascending=direction == "asc", kind="stable", na_position="last")
    return f["user_id"].tolist()


# --- pages with data ---------------------------------------------------------------------------------------
def test_every_page_renders_the_site(client: Any, site: ScoredSite, expected: pd.DataFrame) -> None:
    day = site.days[-1].isoformat()
    r = client.get("/console")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f'data-testid="scoring-day">{day}<' in r.text and total_of(r.text) == len(expected)
    assert 'id="filters"' in r.text and 'id="apply"' in r.text and 'id="lookup"' in r.text
    assert client.get("/console/at-risk").text.count('data-testid="at-risk-row"') == min(50, len(expected))

    model = client.get("/console/model")
    assert model.status_code == 200 and site.version in model.text
    assert 'id="model-history"' in model.text and 'data-action="promote"' in model.text
    plots = re.findall(r'src="(/console/model/plots/[^"]+)"', model.text)
    assert plots, "the registry stores the report's plots: the card shows them"
    img = client.get(plots[0])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"

    drift = client.get("/console/drift")
    assert drift.status_code == 200
    assert 'data-testid="drift-verdict" data-drift="true"' in drift.text  # tenure_days PSI 0.3 >= alert
    assert 'data-testid="psi-chart"' in drift.text and "<svg" in drift.text
    for d in site.days:
        assert f'href="/console/drift/files/date={d}/report.html"' in drift.text

    runs = client.get("/console/runs")
    assert runs.status_code == 200
    assert 'data-testid="run" data-status="failed"' in runs.text and "drift environment missing" in runs.text
    assert '<tr data-step="score" data-status="ok">' in runs.text


def test_factors_are_in_plain_words(client: Any, expected: pd.DataFrame) -> None:
    from service.console.factors import phrase

    top = expected.sort_values(["churn_probability", "user_id"], ascending=[False, True]).iloc[0]
    html = client.get("/console/at-risk?size=1").text
    assert rows_of(html) == [top["user_id"]]
    text = phrase(top["factor_1"], top["factor_1_value"])
    assert text and "_" not in text.split(":")[0]
    assert f'<li data-feature="{top["factor_1"]}">{text}</li>' in html


# --- paging -----------------------------------------------------------------------------------------------
def test_pages_partition_the_table(client: Any, expected: pd.DataFrame) -> None:
    size, n = 40, len(expected)
    pages = -(-n // size)
    seen: list[str] = []
    for page in range(1, pages + 1):
        html = client.get(f"/console/at-risk?size={size}&page={page}").text
        got = rows_of(html)
        assert len(got) == (size if page < pages else n - size * (pages - 1))
        assert ('class="page-prev"' in html) == (page > 1)
        assert ('class="page-next"' in html) == (page < pages)
        seen += got
    assert seen == ordered(expected, "churn_probability", "desc")
    beyond = client.get(f"/console/at-risk?size={size}&page={pages + 1}")
    assert beyond.status_code == 200 and rows_of(beyond.text) == [] and 'class="page-next"' not in beyond.text


@pytest.mark.parametrize(
    "query",
    ["page=0", "page=-3", "page=abc", "size=0", "size=501", "size=many", "sort=bogus", "sort=churn_probability;DROP",
     "dir=sideways", "tier=extreme", "plan=platinum", "country=XX", "action=send_flowers", "tier=high'%20OR%20'1'='1"],
)  # fmt: skip
def test_bad_parameters_are_a_400_page(client: Any, query: str) -> None:
    for path in ("/console/at-risk", "/console/at-risk.csv"):
        if path.endswith(".csv") and query.startswith(("page", "size")):
            continue  # the CSV is the whole filter: no paging parameters
        r = client.get(f"{path}?{query}")
        assert r.status_code == 400, (path, query, r.text[:500])
        assert r.headers["content-type"].startswith("text/html")
        assert 'data-testid="error" data-status="400"' in r.text
        assert re.search(r'<p id="error-message">\S', r.text)


# --- sorting and filters -------------------------------------------------------------------------------------
@pytest.mark.parametrize("col", ["churn_probability", "user_id", "risk_tier", "recommended_action", "plan", "country"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sorting_matches_an_independent_sort(client: Any, expected: pd.DataFrame, col: str, direction: str) -> None:
    html = client.get(f"/console/at-risk?sort={col}&dir={direction}&size=500").text
    assert f'data-sort="{col}" data-dir="{direction}"' in html
    assert rows_of(html) == ordered(expected, col, direction)[:500]


def test_sort_headers_link_to_the_other_direction(client: Any) -> None:
    html = client.get("/console/at-risk?sort=churn_probability&dir=desc").text
    link = re.search(r'<a class="sort active" data-col="churn_probability"[^>]*href="([^"]+)"', html)
    assert link and "dir=asc" in link.group(1)
    assert re.search(r'<a class="sort" data-col="user_id"[^>]*href="[^"]*sort=user_id&amp;dir=asc', html)


def test_filters_match_an_independent_filter(client: Any, expected: pd.DataFrame) -> None:
    plan, country = expected["plan"].mode()[0], expected["country"].mode()[0]
    tier = expected["risk_tier"].mode()[0]
    action = expected["recommended_action"].mode()[0]
    cases = [
        ({"tier": tier}, expected["risk_tier"] == tier),
        ({"plan": plan}, expected["plan"] == plan),
        ({"plan": plan, "country": country}, (expected["plan"] == plan) & (expected["country"] == country)),
        (
            {"action": action, "tier": tier},
            (expected["recommended_action"] == action) & (expected["risk_tier"] == tier),
        ),
    ]
    for params, mask in cases:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        html = client.get(f"/console/at-risk?{query}&size=500&sort=user_id&dir=asc").text
        want = sorted(expected.loc[mask, "user_id"])
        assert total_of(html) == len(want), params
        assert rows_of(html) == want[:500], params
        for k, v in params.items():  # the form shows the filter in force
            assert re.search(rf'<select name="{k}"[^>]*>.*?<option value="{re.escape(v)}" selected>', html, re.S)
    empty = client.get("/console/at-risk?tier=high&tier=&plan=").text  # "any" is an empty value
    assert total_of(empty) >= 0


def test_csv_is_the_current_filter(client: Any, expected: pd.DataFrame) -> None:
    tier = expected["risk_tier"].mode()[0]
    r = client.get(f"/console/at-risk.csv?tier={tier}&sort=churn_probability&dir=asc")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"] and ".csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    want = expected[expected["risk_tier"] == tier]
    assert [row["user_id"] for row in rows] == ordered(want, "churn_probability", "asc")
    assert {"plan", "country", "factor_1", "recommended_action"} <= set(rows[0])
    by_id = want.set_index("user_id")
    for row in rows[:20]:
        assert row["plan"] == by_id.loc[row["user_id"], "plan"]
        assert float(row["churn_probability"]) == pytest.approx(by_id.loc[row["user_id"], "churn_probability"])
    everyone = list(csv.DictReader(io.StringIO(client.get("/console/at-risk.csv").text)))
    assert len(everyone) == len(expected)
    none = client.get("/console/at-risk.csv?plan=" + expected["plan"].mode()[0] + "&tier=high&action=none")
    assert none.status_code == 200 and none.text.splitlines()[0].startswith("user_id,")


# --- lookup ---------------------------------------------------------------------------------------------------
def test_lookup_shows_a_live_prediction_and_daily_scores(client: Any, site: ScoredSite, expected: pd.DataFrame) -> None:
    user = expected.sort_values("churn_probability").iloc[-1]["user_id"]
    r = client.get(f"/console/users?user_id={user}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/console/users/{user}"
    page = client.get(f"/console/users/{user}")
    assert page.status_code == 200
    live = client.post("/predict", json={"user_id": user}).json()
    m = re.search(r'data-testid="live-probability"[^>]* data-value="([0-9.eE-]+)"', page.text)
    assert m and float(m.group(1)) == pytest.approx(live["churn_probability"])
    days = re.findall(r'<tr data-day="(\d{4}-\d{2}-\d{2})">', page.text)
    history = [
        d for d in site.days
        if user in set(pd.read_parquet(site.settings.layout.predictions(d) / "predictions.parquet")["user_id"])
    ]  # fmt: skip
    assert sorted(days) == [d.isoformat() for d in history] and history
    assert 'id="features"' in page.text and 'data-feature="days_since_last_activity"' in page.text
    assert 'data-testid="user-scores-chart"' in page.text


def test_lookup_is_read_only(client: Any, expected: pd.DataFrame) -> None:
    from tests.support.metrics import metric, metrics_of

    user = expected["user_id"].iloc[0]
    before = metrics_of(client.get("/metrics").text)
    assert client.get(f"/console/users/{user}").status_code == 200
    after = metrics_of(client.get("/metrics").text)
    for tier in ("low", "medium", "high"):
        name = "churn_predictions_total"
        assert metric(after, name, tier=tier) == metric(before, name, tier=tier)


def test_unknown_user_is_a_404_page(client: Any) -> None:
    r = client.get("/console/users/nobody-here")
    assert r.status_code == 404 and 'data-status="404"' in r.text and "nobody-here" in r.text
    assert client.get("/console/users?user_id=").status_code == 400
    assert client.get("/console/users/" + "x" * 200).status_code == 400


# --- access ---------------------------------------------------------------------------------------------------
def test_console_off_is_404_everywhere(site: ScoredSite) -> None:
    assert site.settings.console == "off"  # the default
    with client_for(site.settings) as c:
        for path in ("/console", "/console/at-risk", "/console/at-risk.csv", "/console/model", "/console/drift",
                     "/console/runs", "/console/users/u0000001", "/console/login?token=x",
                     "/console/static/console.css", "/console/drift/files/latest.json"):  # fmt: skip
            assert c.get(path, follow_redirects=False).status_code == 404, path
        assert c.get("/live").status_code == 200


def test_token_is_required_when_set(site: ScoredSite) -> None:
    settings = dataclasses.replace(site.settings, console="on", console_token=TOKEN)
    with client_for(settings) as c:
        for path in ("/console", "/console/model", "/console/at-risk.csv", "/console/drift/files/latest.json"):
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer")
        login_page = c.get("/console")
        assert 'id="login"' in login_page.text and 'name="token"' in login_page.text
        assert c.get("/console/static/console.css").status_code == 200  # the 401 page's stylesheet
        assert c.get("/console", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/console", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get(f"/console/login?token={TOKEN}x", follow_redirects=False).status_code == 401
        assert "churn_console" not in c.cookies
        r = c.get(f"/console/login?token={TOKEN}&next=https://evil.example/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console"
        cookie = c.cookies.get("churn_console")
        assert cookie and TOKEN not in cookie
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/console").status_code == 200
        assert c.get("/console/model").status_code == 200
        c.cookies.set("churn_console", "forged")
        assert c.get("/console/model").status_code == 401


# --- drift report files -----------------------------------------------------------------------------------------
def test_drift_report_files_are_served(client: Any, site: ScoredSite) -> None:
    day = site.days[-1]
    r = client.get(f"/console/drift/files/date={day}/report.html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f"Drift report {day}" in r.text and "default-src 'none'" in r.headers["content-security-policy"]
    latest = client.get("/console/drift/files/latest.json")
    assert latest.status_code == 200 and latest.json()["date"] == day.isoformat()


@pytest.mark.parametrize(
    "path",
    [
        "..%2Fregistry%2Fproduction",
        "%2E%2E%2Fregistry%2Faudit.log",
        "date=2026-10-30%2F..%2F..%2Fregistry%2Fproduction",
        "%2Fetc%2Fpasswd",
        "..%5C..%5Cregistry%5Cproduction",
        "date=x/report.html",
        "date=2026-10-30/metrics.prom",
        ".hidden.json",
        "date=2026-10-30/report.html%00.json",
        "a/b/c.html",
    ],
)
def test_drift_file_route_refuses_anything_else(client: Any, site: ScoredSite, path: str) -> None:
    r = client.get(f"/console/drift/files/{path}")
    assert r.status_code in (400, 404), (path, r.status_code)
    assert site.version not in r.text and "root:" not in r.text


def test_drift_file_route_refuses_a_symlink_out_of_the_drift_dir(site: ScoredSite, tmp_path: Path) -> None:
    from tests.support.sites import copy_site

    settings = copy_site(site.root, tmp_path / "data", symlinks=True, console="on")
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": true}')
    (settings.layout.drift_dir / "escape.json").symlink_to(secret)
    with client_for(settings) as c:
        assert c.get("/console/drift/files/escape.json").status_code == 404
        assert c.get("/console/drift/files/latest.json").status_code == 200


# --- empty data dir ------------------------------------------------------------------------------------------------
def test_every_page_on_an_empty_data_dir_says_what_to_run(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "empty", console="on")
    with client_for(settings) as c:
        for path, needle in (
            ("/console", "churn score"),
            ("/console/at-risk?sort=plan&dir=asc&page=3", "churn daily"),
            ("/console/model", "churn train --promote"),
            ("/console/drift", "churn drift"),
            ("/console/runs", "churn daily"),
        ):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            assert 'data-testid="empty-state"' in r.text and needle in r.text, path
        assert c.get("/console/at-risk?page=0").status_code == 400
        assert c.get("/console/at-risk?sort=bogus").status_code == 400
        assert c.get("/console/at-risk.csv").status_code == 404
        assert c.get("/console/users/u0000001").status_code in (404, 200)
        assert c.get("/console/users/u0000001").status_code < 500


def test_runs_page_without_kept_runs_says_so(site: ScoredSite, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", console="on")
    state = json.loads(site.settings.layout.daily_state.read_text())
    state.pop("runs")
    settings.layout.daily_state.parent.mkdir(parents=True)
    settings.layout.daily_state.write_text(json.dumps(state))
    with client_for(settings) as c:
        html = c.get("/console/runs").text
        assert 'data-testid="runs-not-kept"' in html and '<tr data-step="score" data-status="ok">' in html


def test_console_work_runs_at_background_priority(client: Any) -> None:
    """Pages are built (DuckDB included: it runs in the calling thread) by niced threads, so an
    operator refreshing never takes a core from /predict; the event loop keeps its priority."""
    import os
    import threading

    from service.console.controllers import CONSOLE_NICE

    assert client.get("/console/at-risk?sort=plan&dir=asc").status_code == 200
    workers = [t for t in threading.enumerate() if t.name.startswith("console")]
    assert workers, [t.name for t in threading.enumerate()]
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert base < CONSOLE_NICE
    assert {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in workers} == {CONSOLE_NICE}


def test_scoring_day_is_the_newest_partition(client: Any, site: ScoredSite) -> None:
    assert site.days == sorted(site.days) and len(site.days) == 3
    assert site.days[-1] - site.days[0] == dt.timedelta(days=2)
    assert f">{site.days[-1]}<" in client.get("/console").text


# --- the kept comparison ----------------------------------------------------------------------------------------
def _kept_comparison(settings: Settings, shadow: str) -> None:
    from jobs.compare import (
        Agreement,
        ArmPerformance,
        CandidateComparison,
        ComparisonReport,
        LabelCoverage,
        Recommendation,
        StageSummary,
        save,
    )

    promote = Recommendation(
        "promote", "ROC-AUC 0.8100 vs production 0.7000 (+0.1100)", f"churn models promote {shadow}"
    )
    candidate = CandidateComparison(
        arm="shadow",
        version=shadow,
        records=1200,
        agreement=Agreement(1150, 0.61, 0.23, 0.08),
        performance=ArmPerformance(900, 0.3, 0.81, 0.6),
        production_performance=ArmPerformance(900, 0.3, 0.70, 0.5),
        recommendation=promote,
    )
    report = ComparisonReport(
        since=dt.date(2026, 3, 1),
        until=dt.date(2026, 4, 2),
        records=2400,
        stages=StageSummary(shadow, None, 0.0),
        recommendation=promote,
        labels=LabelCoverage(("2026-03-01",), ("2026-04-02",)),
        candidates=(candidate,),
    )
    save(settings, report)


def test_model_page_shows_the_kept_comparison_and_when_it_is_stale(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", console="on")
    with client_for(settings) as c:
        assert 'data-testid="no-comparison"' in c.get("/console/model").text
        settings.layout.stages_file.parent.mkdir(parents=True, exist_ok=True)
        settings.layout.stages_file.write_text(
            json.dumps({"shadow": {"version": "sh-v", "since": "2026-03-01T00:00:00"}})
        )
        _kept_comparison(settings, "sh-v")
        html = c.get("/console/model").text
        row = re.search(r'<tr data-candidate="shadow:sh-v" data-action="promote">(.*?)</tr>', html, re.S)
        assert row, html
        assert ">1150<" in row.group(1) and "0.610" in row.group(1) and "23.0%" in row.group(1)
        assert "0.8100 (900)" in row.group(1) and "0.7000 (900)" in row.group(1)
        assert "churn models promote sh-v" in row.group(1)
        assert "Stale" not in html and "2026-03-01 … 2026-04-02" in html
        # the stage changed after the comparison: still shown, flagged
        settings.layout.stages_file.write_text(json.dumps({"challenger": {"version": "ch-v", "share": 0.2}}))
        html = c.get("/console/model").text
        assert "<strong>Stale:</strong>" in html and 'data-candidate="shadow:sh-v"' in html
        # a damaged file is an empty state, never a 500
        for text in ("{not json", json.dumps({"candidates": {"x": {"agreement": {"spearman": "high"}}}}), "[]"):
            settings.layout.comparison_latest.write_text(text)
            r = c.get("/console/model")
            assert r.status_code == 200, r.text[:500]
