"""The operator console's pure parts: feature names in plain words, and the at-risk SQL built only from
whitelists (sort columns, directions, filter values bound as parameters)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from churn.schema import ALL_FEATURES
from service.console.factors import feature_words, format_value, phrase
from service.console.queries import (
    FILTERS,
    MAX_PAGE_SIZE,
    SORTS,
    AtRiskQuery,
    BadQuery,
    FilterOptions,
    Sources,
    count_sql,
    export_sql,
    order_by,
    page_sql,
    parse_query,
)

OPTIONS = FilterOptions(
    actions=("support_outreach", "discount_offer", "none"), plans=("free", "basic"), countries=("US", "DE")
)
SRC = Sources(
    Path("/data/predictions/date=2026-11-01/predictions.parquet"),
    Path("/data/raw/users/users.parquet"),
    frozenset({"user_id", "churn_probability", "risk_tier", "recommended_action", "factor_1", "factor_1_value"}),
)


# --- plain words ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("days_since_last_activity", "23.0", "days since last activity: 23"),
        ("days_since_last_activity", 23, "days since last activity: 23"),
        ("logins_30d", "0", "logins in the last 30 days: 0"),
        ("minutes_7d", "12.3456", "learning minutes in the last 7 days: 12.35"),
        ("spend_lifetime", "1234.5", "amount spent ever: 1,234.5"),
        ("payments_failed_30d", "2", "failed payments in the last 30 days: 2"),
        ("minutes_ratio_7d_30d", "0.5", "learning minutes: last 7 days vs last 30 days (ratio): 0.5"),
        ("plan", "free", "plan: free"),
        ("tenure_days", None, "days since sign-up: missing"),
        ("overdue_ratio", "nan", "current gap vs typical gap: missing"),
        ("brand_new_feature_x", "7", "brand new feature x: 7"),
    ],
)
def test_factor_phrases(name: str, value: object, text: str) -> None:
    assert phrase(name, value) == text


def test_every_feature_has_words_without_underscores() -> None:
    for name in ALL_FEATURES:
        words = feature_words(name)
        assert words and "_" not in words, name


def test_empty_factor_slot_and_odd_values() -> None:
    assert phrase(None, "3") is None and phrase("", "3") is None
    assert format_value(float("inf")) == "∞" and format_value(True) == "yes" and format_value("  ") == "missing"
    assert format_value(0.004) == "0.004" and format_value(-2.0) == "-2"


# --- parameters -------------------------------------------------------------------------------------------------
def test_parse_query_defaults_and_empty_filters() -> None:
    q = parse_query(OPTIONS, tier="", plan=None)
    assert q == AtRiskQuery() and q.filters == {} and q.offset == 0 and not q.needs_users
    q = parse_query(OPTIONS, page=3, size=20, sort="plan", direction="ASC", tier="high", country="DE")
    assert (q.offset, q.direction, q.filters) == (40, "asc", {"tier": "high", "country": "DE"}) and q.needs_users


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"page": 0}, "page must be at least 1"),
        ({"size": 0}, "size must be between 1 and"),
        ({"size": MAX_PAGE_SIZE + 1}, "size must be between 1 and"),
        ({"sort": "churn_probability; DROP TABLE x"}, "unknown sort column"),
        ({"sort": "factor_1"}, "unknown sort column"),
        ({"direction": "sideways"}, "unknown sort direction"),
        ({"tier": "extreme"}, "unknown tier 'extreme'"),
        ({"plan": "free' OR '1'='1"}, "unknown plan"),
        ({"country": "FR"}, "unknown country 'FR': one of US, DE"),
        ({"action": "call"}, "unknown action"),
        ({"colour": "red"}, "unknown filter 'colour'"),
    ],
)
def test_parse_query_refuses_anything_off_the_whitelists(kwargs: dict, message: str) -> None:
    with pytest.raises(BadQuery, match=re.escape(message)):
        parse_query(OPTIONS, **kwargs)


def test_filters_without_values_to_choose_from_are_refused() -> None:
    with pytest.raises(BadQuery, match="none available"):
        parse_query(FilterOptions(), plan="free")


# --- SQL --------------------------------------------------------------------------------------------------------
def test_page_sql_binds_values_and_orders_by_whitelisted_expressions_only() -> None:
    q = parse_query(OPTIONS, page=2, size=25, sort="churn_probability", direction="desc", tier="high", action="none")
    sql, params = page_sql(q, SRC)
    assert params == ["high", "none", 25, 25]
    assert "p.risk_tier = ?" in sql and "p.recommended_action = ?" in sql and "'high'" not in sql
    assert sql.endswith("ORDER BY p.churn_probability DESC NULLS LAST, p.user_id ASC LIMIT ? OFFSET ?")
    assert "JOIN" not in sql  # no plan/country in the filter or the sort: the users table is not joined
    assert "NULL AS factor_2" in sql and "p.factor_1 AS factor_1" in sql  # absent columns are NULL


def test_users_table_is_joined_only_when_needed() -> None:
    by_plan = parse_query(OPTIONS, sort="plan")
    assert "LEFT JOIN" in page_sql(by_plan, SRC)[0] and "LEFT JOIN" not in count_sql(by_plan, SRC)[0]
    filtered = parse_query(OPTIONS, plan="free", country="US")
    sql, params = count_sql(filtered, SRC)
    assert "LEFT JOIN" in sql and "u.plan = ?" in sql and "u.country = ?" in sql and params == ["free", "US"]
    sql, params = export_sql(parse_query(OPTIONS, tier="low"), SRC)
    assert "LEFT JOIN" in sql and "LIMIT" not in sql and params == ["low"]
    no_users = Sources(SRC.predictions, None, SRC.columns)
    with pytest.raises(BadQuery, match="no users table"):
        page_sql(by_plan, no_users)
    assert "JOIN" not in export_sql(AtRiskQuery(), no_users)[0]


@pytest.mark.parametrize("col", sorted(SORTS))
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_order_by_is_built_from_the_whitelist(col: str, direction: str) -> None:
    clause = order_by(AtRiskQuery(sort=col, direction=direction))
    assert clause.startswith(f" ORDER BY {SORTS[col]} {direction.upper()} NULLS LAST")
    assert clause.count("user_id") == 1  # the tie-break, or the sort column itself


def test_order_by_refuses_a_query_built_around_the_parser() -> None:
    for q in (AtRiskQuery(sort="1; DROP TABLE users"), AtRiskQuery(direction="desc; --")):
        with pytest.raises(BadQuery):
            order_by(q)


def test_paths_are_quoted_as_sql_literals() -> None:
    src = Sources(Path("/data/it's/predictions.parquet"), None, frozenset())
    sql, _ = page_sql(AtRiskQuery(), src)
    assert "read_parquet('/data/it''s/predictions.parquet')" in sql


def test_params_round_trip_for_links() -> None:
    q = parse_query(OPTIONS, page=2, size=25, sort="user_id", direction="asc", tier="high")
    assert q.params(page=3) == {"page": "3", "size": "25", "sort": "user_id", "dir": "asc", "tier": "high"}
    assert "page" not in q.params(page=None, size=None) and set(FILTERS) >= set(q.filters)
