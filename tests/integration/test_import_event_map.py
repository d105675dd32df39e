"""Importing a site's own event log: event maps, unmapped types, users inferred from activity.

Real files and DuckDB end to end (``jobs.ingest.import_batch`` and ``churn data import`` through
typer's CliRunner): a rejected batch changes nothing, a re-import adds nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from churn.errors import DataError, IngestError
from churn.settings import Settings
from jobs.ingest import import_batch
from tests.support.settings import make_settings

AS_OF = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SITE_MAP = "sign_in=login,page_open=course_view,play=video_watch,quiz_try=quiz_attempt"


def _ts(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True))


def site_events() -> pd.DataFrame:
    """A site's own export: its own column and event names, two types it never documented."""
    return pd.DataFrame(
        {
            "uid": ["ann", "ann", "ann", "bob", "bob", "bob", "cy"],
            "timestamp": _ts(
                "2026-02-01T09:00:00Z",
                "2026-02-01T09:05:00Z",
                "2026-02-03T10:00:00Z",
                "2026-02-02T12:00:00Z",
                "2026-02-02T12:10:00Z",
                "2026-02-02T12:20:00Z",
                "2026-02-05T08:00:00Z",
            ),
            "action": ["sign_in", "play", "hover", "sign_in", "page_open", "clicked", "clicked"],
            "minutes": [None, 12.5, None, None, None, None, None],
        }
    )


def site_payments() -> pd.DataFrame:
    """No plan column; bob paid before his first event."""
    return pd.DataFrame(
        {
            "customer_id": ["bob"],
            "paid_at": _ts("2026-01-30T08:00:00Z"),
            "amount": [19.0],
            "status": ["succeeded"],
        }
    )


def write(folder: Path, name: str, df: pd.DataFrame) -> Path:
    path = folder / name
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def stored(settings: Settings, table: str) -> pd.DataFrame:
    root = settings.raw_dir / table
    if not root.exists():
        return pd.DataFrame()
    return pd.read_parquet(root).drop(columns=["date"], errors="ignore")


def snapshot(settings: Settings) -> dict[str, bytes]:
    return {str(p.relative_to(settings.data_dir)): p.read_bytes() for p in settings.data_dir.rglob("*") if p.is_file()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write(tmp_path, "events.csv", site_events())


def test_inline_map_with_unmapped_as_activity(settings: Settings, log: Path) -> None:
    res = import_batch(settings, events=log, event_map=SITE_MAP, unmapped="activity", as_of=AS_OF)
    events = stored(settings, "events").sort_values("event_ts")
    assert events.event_type.tolist() == [
        "login", "video_watch", "login", "course_view", "activity", "activity", "activity"
    ]  # fmt: skip
    assert res.accepted["events"] == 7
    assert res.event_types.mapped == {"sign_in": 2, "play": 1, "page_open": 1}
    assert res.event_types.unmapped == {"hover": 1, "clicked": 2}
    text = res.render()
    assert "'sign_in' → login (2)" in text
    assert "unmapped event types kept as activity: 'clicked' (2), 'hover' (1)" in text


@pytest.mark.parametrize(
    "name,text",
    [
        ("map.yaml", "sign_in: login\npage_open: course_view\nplay: video_watch\nhover: activity\nclicked: activity\n"),
        ("map.yml", "event_map:\n  sign_in: login\n  page_open: course_view\n  play: video_watch\n"
                    "  hover: activity\n  clicked: activity\n"),
        ("map.csv", "source,canonical\nsign_in,login\npage_open,course_view\nplay,video_watch\n"
                    "hover,activity\nclicked,activity\n"),
    ],
)  # fmt: skip
def test_map_files(settings: Settings, log: Path, tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    res = import_batch(settings, events=log, event_map=tmp_path / name, as_of=AS_OF)  # nothing unmapped
    assert res.event_types.unmapped == {}
    counts = stored(settings, "events").event_type.value_counts().to_dict()
    assert counts == {"login": 2, "video_watch": 1, "course_view": 1, "activity": 3}


@pytest.mark.parametrize("max_case", [200, 0], ids=["case", "join"])
def test_both_rewrite_paths_and_quoted_names(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_case: int
) -> None:
    monkeypatch.setattr("jobs.ingest.MAX_CASE_BRANCHES", max_case)
    events = site_events().assign(action=["it's me", "play", "x'); DROP TABLE t; --", "login", "a,b", "play", "play"])
    (tmp_path / "map.csv").write_text('source,canonical\n"it\'s me",login\nplay,video_watch\n"a,b",course_view\n')
    res = import_batch(settings, events=write(tmp_path, "q.parquet", events), event_map=tmp_path / "map.csv",
                       unmapped="activity", as_of=AS_OF)  # fmt: skip
    assert res.event_types.mapped == {"it's me": 1, "play": 3, "a,b": 1}
    counts = stored(settings, "events").event_type.value_counts().to_dict()
    assert counts == {"video_watch": 3, "login": 2, "course_view": 1, "activity": 1}


def test_unmapped_types_are_refused_with_each_type_and_count(settings: Settings, log: Path) -> None:
    first = write(log.parent, "first.csv", site_events().iloc[:2])
    import_batch(settings, events=first, event_map=SITE_MAP, as_of=AS_OF)
    before = snapshot(settings)
    with pytest.raises(IngestError) as err:
        import_batch(settings, events=log, event_map=SITE_MAP, as_of=AS_OF)
    msg = str(err.value)
    assert "3 events of 2 unmapped event types: 'clicked' (2), 'hover' (1)" in msg and "\n" not in msg
    assert "--unmapped activity" in msg
    failed = {c.check for c in err.value.report.failures}
    assert failed == {"event_type_values"}
    assert snapshot(settings) == before  # not even the inferred users were stored


def test_a_target_that_is_not_canonical_is_refused(settings: Settings, log: Path, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"not canonical event types: sign_in=signin \(canonical: login, "):
        import_batch(settings, events=log, event_map="sign_in=signin", as_of=AS_OF)
    (tmp_path / "bad.yaml").write_text("play: watch\n")
    with pytest.raises(DataError, match="play=watch"):
        import_batch(settings, events=log, event_map=tmp_path / "bad.yaml", as_of=AS_OF)
    assert not settings.raw_dir.exists()


def test_users_inferred_from_first_event_or_payment(settings: Settings, log: Path) -> None:
    res = import_batch(
        settings,
        events=log,
        payments=write(log.parent, "payments.csv", site_payments()),
        event_map=SITE_MAP,
        unmapped="activity",
        as_of=AS_OF,
    )
    assert res.inferred_users == 3
    assert "users inferred from activity: 3 (signup = first event or payment;" in res.render()
    users = stored(settings, "users").set_index("user_id").sort_index()
    assert users.signup_ts.to_dict() == {
        "ann": pd.Timestamp("2026-02-01T09:00:00Z"),
        "bob": pd.Timestamp("2026-01-30T08:00:00Z"),  # his payment came before his first event
        "cy": pd.Timestamp("2026-02-05T08:00:00Z"),
    }
    assert (users[["plan", "country", "acquisition_channel", "device"]] == "unknown").all().all()
    assert stored(settings, "payments").plan.tolist() == ["unknown"]  # a log without plans


def test_reimport_is_idempotent_and_known_users_are_not_reinferred(settings: Settings, log: Path) -> None:
    first = import_batch(settings, events=log, event_map=SITE_MAP, unmapped="activity", as_of=AS_OF)
    users, events = stored(settings, "users"), stored(settings, "events")
    again = import_batch(settings, events=log, event_map=SITE_MAP, unmapped="activity", as_of=AS_OF)
    assert (first.inferred_users, again.inferred_users) == (3, 0)
    pd.testing.assert_frame_equal(stored(settings, "users"), users)
    assert len(stored(settings, "events")) == len(events) == 7


def test_a_batch_spanning_days_merges_each_day_once(settings: Settings, log: Path, tmp_path: Path) -> None:
    """Partitions are written in one pass: days the batch does not touch keep their files byte for
    byte, a touched day holds its stored rows plus the new ones once, one file per day, no leftovers."""
    import_batch(settings, events=log, event_map=SITE_MAP, unmapped="activity", as_of=AS_OF)
    events_root = settings.raw_dir / "events"
    untouched = {p: p.read_bytes() for p in events_root.glob("date=2026-02-0[35]/*.parquet")}
    assert len(untouched) == 2
    later = pd.DataFrame(
        {
            "uid": ["ann", "bob", "ann"],
            "timestamp": _ts("2026-02-01T09:00:00Z", "2026-02-02T18:00:00Z", "2026-02-07T07:00:00Z"),
            "action": ["sign_in", "sign_in", "sign_in"],  # ann's first row is already stored
            "minutes": [None, None, None],
        }
    )
    import_batch(settings, events=write(tmp_path, "later.parquet", later), event_map=SITE_MAP, as_of=AS_OF)
    per_day = {p.name: sorted(f.name for f in p.iterdir()) for p in events_root.iterdir()}
    assert per_day == {f"date=2026-02-0{d}": ["part-0.parquet"] for d in (1, 2, 3, 5, 7)}
    assert {p: p.read_bytes() for p in untouched} == untouched
    days = pd.read_parquet(events_root)
    assert (pd.to_datetime(days["event_ts"]).dt.date.astype(str) == days["date"].astype(str).str[:10]).all()
    assert days.groupby(days["date"].astype(str)).size().to_dict() == {
        "2026-02-01": 2, "2026-02-02": 4, "2026-02-03": 1, "2026-02-05": 1, "2026-02-07": 1,
    }  # fmt: skip
    assert not list(settings.data_dir.rglob(".tmp-*"))


def test_users_from_a_file_or_an_earlier_import_are_not_inferred(settings: Settings, tmp_path: Path) -> None:
    users = pd.DataFrame(
        {
            "user_id": ["ann"],
            "signup_ts": _ts("2026-01-15T00:00:00Z"),
            "plan": ["premium"],
            "country": ["DE"],
            "acquisition_channel": ["ads"],
            "device": ["ios"],
        }
    )
    events = site_events().query("uid in ['ann', 'bob']")
    res = import_batch(
        settings,
        users=write(tmp_path, "users.parquet", users),
        events=write(tmp_path, "e1.csv", events),
        event_map=SITE_MAP,
        unmapped="activity",
        as_of=AS_OF,
    )
    assert res.inferred_users == 1  # bob; ann is in the batch's users file
    later = pd.DataFrame(
        {"uid": ["ann", "bob", "dee"], "timestamp": _ts("2026-02-10T00:00:00Z", "2026-02-10T01:00:00Z",
                                                       "2026-02-11T00:00:00Z"), "action": ["login"] * 3}
    )  # fmt: skip
    res = import_batch(settings, events=write(tmp_path, "e2.csv", later), as_of=AS_OF)
    assert res.inferred_users == 1  # dee only: ann and bob are stored
    stored_users = stored(settings, "users").set_index("user_id")
    assert stored_users.loc["ann", "plan"] == "premium" and stored_users.loc["ann", "country"] == "DE"
    assert stored_users.loc["bob", "signup_ts"] == pd.Timestamp("2026-02-02T12:00:00Z")  # not re-inferred
    assert sorted(stored_users.index) == ["ann", "bob", "dee"]


def test_no_infer_users_keeps_the_unknown_user_gate(settings: Settings, log: Path) -> None:
    with pytest.raises(IngestError) as err:
        import_batch(settings, events=log, event_map=SITE_MAP, unmapped="activity", infer_users=False, as_of=AS_OF)
    assert {c.check for c in err.value.report.failures} == {"unknown_user"}
    assert not settings.raw_dir.exists()


def test_quarantine_still_sets_bad_rows_aside(settings: Settings, log: Path) -> None:
    events = site_events()
    events.loc[1, "minutes"] = -4.0
    res = import_batch(
        settings,
        events=write(log.parent, "mixed.csv", events),
        event_map=SITE_MAP,
        quarantine=True,
        as_of=AS_OF,
    )
    assert res.accepted["events"] == 3 and res.quarantined["events"] == 4
    bad = pd.read_parquet(res.quarantine_dir / "events.parquet")
    assert bad.groupby("reason").size().to_dict() == {"event_type_values": 3, "negative_minutes": 1}
    assert set(bad.query("reason == 'event_type_values'").event_type) == {"hover", "clicked"}
    report = json.loads((res.quarantine_dir / "report.json").read_text())
    assert not report["passed"]
    assert "unmapped event types quarantined: 'clicked' (2), 'hover' (1)" in res.render()
    assert sorted(stored(settings, "events").event_type) == ["course_view", "login", "login"]


def test_activity_counts_as_activity_in_no_typed_count(settings: Settings, log: Path) -> None:
    """The promise of ``--unmapped activity``, through the feature build: ann's Feb 3 holds only an
    ``activity`` event, so it is an active day and her last activity, but no login/view/quiz/completion."""
    from jobs.aggregate import build_features

    import_batch(settings, events=log, event_map=SITE_MAP, unmapped="activity", as_of=AS_OF)
    day = dt.date(2026, 2, 4)
    build_features(settings, start_date=day, end_date=day)
    features = settings.features_dir
    eng = pd.read_parquet(features / "engagement" / f"date={day}").set_index("user_id")
    rec = pd.read_parquet(features / "recency" / f"date={day}").set_index("user_id")
    ann = eng.loc["ann"]
    assert ann.active_days_7d == 2 and ann.logins_7d == 1
    assert (ann.course_views_7d, ann.quiz_attempts_7d, ann.completions_7d) == (0, 0, 0)
    assert rec.loc["ann", "days_since_last_activity"] == pytest.approx(14 / 24, abs=1e-3)  # Feb 3 10:00
    assert rec.loc["ann", "days_since_last_login"] == pytest.approx(3 - 9 / 24, abs=1e-3)  # Feb 1 09:00


def test_cli_import_with_event_map(settings: Settings, log: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from churn.settings import get_settings
    from cli.main import app

    env = {"CHURN_DATA_DIR": str(settings.data_dir), "CHURN_FRESHNESS_MAX_HOURS": "0"}
    base = ["data", "import", "--events", str(log), "--as-of", AS_OF.isoformat()]

    def run(*args: str):
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, base + list(args), env=env)
        finally:
            get_settings.cache_clear()

    res = run("--event-map", SITE_MAP)
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'clicked' (2), 'hover' (1)" in errors[0], res.output
    assert not settings.raw_dir.exists()

    res = run("--event-map", "sign_in=signin")
    assert res.exit_code == 1 and "error: event map targets that are not canonical" in res.output, res.output

    (tmp_path / "map.yaml").write_text("event_map:\n  sign_in: login\n  page_open: course_view\n  play: video_watch\n")
    res = run("--event-map", str(tmp_path / "map.yaml"), "--unmapped", "activity")
    assert res.exit_code == 0, res.output
    assert "users inferred from activity: 3" in res.output
    assert "inferred_users=3" in res.output and "'events': 7" in res.output
    assert len(stored(settings, "events")) == 7
