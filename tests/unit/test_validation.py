"""Each validation gate gets one bad-input case; a rejected batch leaves the store untouched."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from jobs.ingest import IngestError, import_batch
from tests.conftest import make_settings

AS_OF = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _users(**over):
    df = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "signup_ts": pd.to_datetime(["2026-01-01T10:00:00Z", "2026-01-05T10:00:00Z"]),
            "plan": ["free", "basic"],
            "country": ["IN", "US"],
            "acquisition_channel": ["organic", "referral"],
            "device": ["mobile", "desktop"],
        }
    )
    return df.assign(**over)


def _events(**over):
    df = pd.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "event_ts": pd.to_datetime(
                ["2026-02-01T09:00:00Z", "2026-02-01T09:05:00Z", "2026-02-02T12:00:00Z"]
            ),
            "event_type": ["login", "video_watch", "login"],
            "course_id": [None, "c1", None],
            "minutes": [None, 12.5, None],
        }
    )
    return df.assign(**over)


def _payments(**over):
    df = pd.DataFrame(
        {
            "user_id": ["b"],
            "payment_ts": pd.to_datetime(["2026-02-05T08:00:00Z"]),
            "amount": [19.0],
            "status": ["succeeded"],
            "plan": ["basic"],
        }
    )
    return df.assign(**over)


def _write(tmp, name, df, fmt="parquet"):
    path = tmp / f"{name}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


@pytest.fixture
def store(tmp_path):
    """A data dir holding one good accepted batch."""
    settings = make_settings(tmp_path / "data")
    import_batch(
        settings,
        users=_write(tmp_path, "u0", _users()),
        events=_write(tmp_path, "e0", _events()),
        payments=_write(tmp_path, "p0", _payments()),
        as_of=AS_OF,
    )
    return settings


def _snapshot(settings):
    return {p.relative_to(settings.raw_dir): p.read_bytes() for p in settings.raw_dir.rglob("*.parquet")}


BAD_EVENT_CASES = {
    "required_nulls": dict(user_id=["a", None, "b"]),
    "event_type_values": dict(event_type=["login", "teleport", "login"]),
    "negative_minutes": dict(minutes=[None, -3.0, None]),
    "future_timestamp": dict(
        event_ts=pd.to_datetime(["2026-02-01T09:00:00Z", "2026-02-01T09:05:00Z", "2027-01-01T00:00:00Z"])
    ),
    "unknown_user": dict(user_id=["a", "a", "zzz"]),
    "before_signup": dict(
        event_ts=pd.to_datetime(["2026-02-01T09:00:00Z", "2026-02-01T09:05:00Z", "2026-01-02T00:00:00Z"])
    ),
    "duplicates": dict(
        event_ts=pd.to_datetime(["2026-02-01T09:00:00Z", "2026-02-01T09:00:00Z", "2026-02-02T12:00:00Z"]),
        event_type=["login", "login", "login"],
        course_id=[None, None, None],
    ),
}


@pytest.mark.parametrize("check", sorted(BAD_EVENT_CASES))
def test_each_event_gate_rejects_and_keeps_the_store(store, tmp_path, check):
    before = _snapshot(store)
    bad = _write(tmp_path, f"bad_{check}", _events(**BAD_EVENT_CASES[check]))
    with pytest.raises(IngestError) as err:
        import_batch(store, events=bad, as_of=AS_OF)
    failed = {c.check for c in err.value.report.failures if c.table == "events"}
    assert check in failed
    assert err.value.report.failures[0].examples or not err.value.report.failures[0].row_level
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    "check,frame",
    [
        ("negative_amount", _payments(amount=[-5.0])),
        ("status_values", _payments(status=["maybe"])),
        ("unknown_user", _payments(user_id=["nobody"])),
    ],
)
def test_payment_gates(store, tmp_path, check, frame):
    before = _snapshot(store)
    with pytest.raises(IngestError) as err:
        import_batch(
            store,
            events=_write(tmp_path, "ev", _events()),
            payments=_write(tmp_path, "pay", frame),
            as_of=AS_OF,
        )
    assert check in {c.check for c in err.value.report.failures if c.table == "payments"}
    assert _snapshot(store) == before


def test_user_gates(store, tmp_path):
    with pytest.raises(IngestError) as err:
        import_batch(
            store,
            users=_write(tmp_path, "uu", _users(user_id=["a", "a"], plan=["free", "gold"])),
            events=_write(tmp_path, "ev", _events()),
            as_of=AS_OF,
        )
    failed = {c.check for c in err.value.report.failures if c.table == "users"}
    assert {"duplicates", "plan_values"} <= failed


def test_empty_batch_rejected(store, tmp_path):
    with pytest.raises(IngestError) as err:
        import_batch(store, events=_write(tmp_path, "empty", _events().iloc[0:0]), as_of=AS_OF)
    assert "non_empty" in {c.check for c in err.value.report.failures}


def test_schema_and_types_rejected(store, tmp_path):
    with pytest.raises(IngestError) as err:
        import_batch(
            store, events=_write(tmp_path, "noc", _events().drop(columns=["event_type"])), as_of=AS_OF
        )
    assert "schema" in {c.check for c in err.value.report.failures}
    wrong = _events().astype({"minutes": object})
    wrong.loc[1, "minutes"] = "a lot"
    with pytest.raises(IngestError) as err:
        import_batch(store, events=_write(tmp_path, "typ", wrong, "csv"), as_of=AS_OF)
    assert "types" in {c.check for c in err.value.report.failures}


def test_freshness_gate(tmp_path):
    settings = make_settings(tmp_path / "d", freshness_max_hours=24)
    with pytest.raises(IngestError) as err:
        import_batch(
            settings,
            users=_write(tmp_path, "u", _users()),
            events=_write(tmp_path, "e", _events()),
            as_of=AS_OF,
        )
    assert "freshness" in {c.check for c in err.value.report.failures}


def test_quarantine_keeps_good_rows_and_sets_bad_ones_aside(store, tmp_path):
    events = pd.concat(
        [_events(), _events(user_id=["ghost"] * 3, event_ts=_events().event_ts + pd.Timedelta(days=3))]
    )
    res = import_batch(store, events=_write(tmp_path, "mixed", events), quarantine=True, as_of=AS_OF)
    assert res.accepted["events"] == 3 and res.quarantined["events"] == 3
    bad = pd.read_parquet(res.quarantine_dir / "events.parquet")
    assert set(bad.reason) == {"unknown_user"}
    assert (res.quarantine_dir / "report.json").exists()


def test_import_merges_csv_with_alternate_column_names(store, tmp_path):
    new = _events().rename(columns={"user_id": "customer_id", "event_ts": "timestamp"})
    new["timestamp"] = new["timestamp"] + pd.Timedelta(days=10)
    import_batch(store, events=_write(tmp_path, "alt", new, "csv"), as_of=AS_OF)
    all_events = pd.read_parquet(store.raw_dir / "events")
    assert len(all_events) == 6
    # importing the same batch again adds nothing (idempotent merge)
    import_batch(store, events=_write(tmp_path, "alt2", new, "csv"), as_of=AS_OF)
    assert len(pd.read_parquet(store.raw_dir / "events")) == 6
