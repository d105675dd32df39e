"""Each validation gate gets one bad-input case; a rejected batch leaves the store untouched."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from jobs.ingest import IngestError, import_batch
from tests.support.settings import make_settings

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
        import_batch(store, events=bad, as_of=AS_OF, infer_users=False)  # unknown_user: strict mode
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
            infer_users=False,
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
    res = import_batch(
        store, events=_write(tmp_path, "mixed", events), quarantine=True, as_of=AS_OF, infer_users=False
    )
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


# --- event maps and allowed values --------------------------------------------------------------
def test_allowed_values_live_in_one_place_and_accept_unknown_and_activity():
    from churn.schema import CANONICAL_EVENT_TYPES, GENERIC_EVENT_TYPE, PLANS
    from jobs.validation import ALLOWED_VALUES, ROW_RULES, UNKNOWN

    assert ALLOWED_VALUES[("users", "plan")] == (*PLANS, UNKNOWN)
    assert ALLOWED_VALUES[("events", "event_type")] == CANONICAL_EVENT_TYPES
    assert GENERIC_EVENT_TYPE in CANONICAL_EVENT_TYPES
    rules = {(t, name): pred for t, rs in ROW_RULES.items() for name, pred, _ in rs}
    assert f"'{UNKNOWN}'" in rules[("users", "plan_values")]
    assert f"'{GENERIC_EVENT_TYPE}'" in rules[("events", "event_type_values")]


def test_unknown_plan_and_generic_activity_pass_the_gates(store, tmp_path):
    res = import_batch(
        store,
        users=_write(tmp_path, "uk", _users(user_id=["c", "d"], plan=["unknown", "premium"])),
        events=_write(tmp_path, "act", _events(user_id=["c", "c", "d"], event_type=["activity"] * 3)),
        as_of=AS_OF,
    )
    assert res.report.passed and res.accepted == {"users": 2, "events": 3}


def test_bad_value_check_names_each_value_with_its_count(store, tmp_path):
    bad = _events(event_type=["teleport", "teleport", "jump"])
    with pytest.raises(IngestError) as err:
        import_batch(store, events=_write(tmp_path, "tp", bad), as_of=AS_OF)
    check = next(c for c in err.value.report.failures if c.check == "event_type_values")
    assert "'teleport' (2), 'jump' (1)" in check.message
    assert "'teleport' (2), 'jump' (1)" in str(err.value) and "--unmapped activity" in str(err.value)


def test_inline_event_map_and_canonical_names_map_to_themselves():
    from jobs.event_map import EventMap

    m = EventMap.from_spec(" sign_in=login, page_open = course_view,")
    assert dict(m.mapping) == {"sign_in": "login", "page_open": "course_view"}
    assert m.target("sign_in") == "login" and m.target("logout") == "logout"
    assert m.target("clicked") is None  # refused by default
    assert EventMap.from_spec(None, "activity").target("clicked") == "activity"
    res = m.resolve({"sign_in": 5, "login": 2, "clicked": 3, None: 1})
    assert res.translation == {"sign_in": "login"} and res.mapped == {"sign_in": 5}
    assert res.unmapped == {"clicked": 3}
    kept = EventMap(m.mapping, "activity").resolve({"clicked": 3, "activity": 4})
    assert kept.translation == {"clicked": "activity"} and kept.unmapped == {"clicked": 3}


@pytest.mark.parametrize(
    "name,text",
    [
        ("flat.yaml", "sign_in: login\npage_open: course_view\n"),
        ("nested.yml", "event_map:\n  sign_in: login\n  page_open: course_view\n"),
        ("header.csv", "source,canonical\nsign_in,login\npage_open, course_view\n"),
        ("bare.csv", "sign_in,login\n\npage_open,course_view\n"),
    ],
)
def test_event_map_files(tmp_path, name, text):
    from jobs.event_map import EventMap

    (tmp_path / name).write_text(text)
    assert dict(EventMap.from_spec(tmp_path / name).mapping) == {"sign_in": "login", "page_open": "course_view"}
    assert dict(EventMap.from_spec(str(tmp_path / name)).mapping) == {"sign_in": "login", "page_open": "course_view"}


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("sign_in=signin", "not canonical event types: sign_in=signin"),
        ("sign_in=login,tap=click", "tap=click"),
        ("sign_in", "is not source=canonical"),
        ("=login", "empty source name"),
        ("a=login,a=logout", "mapped twice"),
        ("nowhere.yaml", "no such file"),
    ],
)
def test_bad_event_maps_are_one_clear_error(tmp_path, spec, needle):
    from churn.errors import DataError
    from jobs.event_map import EventMap, EventMapError

    with pytest.raises(EventMapError, match=needle) as err:
        EventMap.from_spec(str(tmp_path / spec) if spec.endswith(".yaml") else spec)
    assert isinstance(err.value, DataError) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name,text,needle",
    [
        ("target.yaml", "sign_in: signin\n", "not canonical"),
        ("list.yaml", "- sign_in\n- login\n", "expected a mapping"),
        ("broken.yaml", "a: [b\n", "not valid YAML"),
        ("wide.csv", "source,canonical\nsign_in,login,extra\n", "two columns"),
        ("target.csv", "sign_in,signin\n", "not canonical"),
    ],
)
def test_bad_event_map_files(tmp_path, name, text, needle):
    from jobs.event_map import EventMap, EventMapError

    (tmp_path / name).write_text(text)
    with pytest.raises(EventMapError, match=needle):
        EventMap.from_spec(tmp_path / name)


def test_unmapped_policy_is_checked():
    from jobs.event_map import EventMap, EventMapError

    with pytest.raises(EventMapError, match="refuse, activity"):
        EventMap({}, "drop")
