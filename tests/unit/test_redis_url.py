"""``CHURN_REDIS_URL`` accepts what users type: redis-py's URLs and Feast's own connection strings,
normalised once in ``Settings``; anything else is refused when the settings are built."""

from __future__ import annotations

import pytest

from churn.errors import ChurnError, SettingsError
from churn.settings import REDIS_URL_FORMS, Settings


def _settings(url: str) -> Settings:
    return Settings.from_env(env={"CHURN_REDIS_URL": url})


@pytest.mark.parametrize(
    ("typed", "url", "feast"),
    [
        # Feast's own host:port: used to become db=6379 ("DB index is out of range")
        ("redis:6379", "redis://redis:6379/0", "redis:6379,db=0"),
        ("127.0.0.1:6380", "redis://127.0.0.1:6380/0", "127.0.0.1:6380,db=0"),
        (
            "cache:6380,db=2,password=s3cr=t@x,ssl=true",
            "rediss://:s3cr%3Dt%40x@cache:6380/2",
            "cache:6380,db=2,password=s3cr=t@x,ssl=true",
        ),
        ("cache:6380,db=3,username=app,ssl=false", "redis://app@cache:6380/3", "cache:6380,db=3,username=app"),
        ("redis://cache:6380/2", "redis://cache:6380/2", "cache:6380,db=2"),
        ("redis://cache", "redis://cache", "cache:6379,db=0"),
        (
            "rediss://app:pw@cache:6390/1",
            "rediss://app:pw@cache:6390/1",
            "cache:6390,db=1,username=app,password=pw,ssl=true",
        ),
    ],
)
def test_accepted_forms_become_one_url(typed: str, url: str, feast: str) -> None:
    s = _settings(typed)
    assert s.redis_url == url
    assert s.redis_connection_string == feast
    # The normal form is a fixed point: children get it back through as_env().
    assert Settings.from_env(env=s.as_env()).redis_url == url


def test_normalised_url_is_what_redis_py_reads() -> None:
    import redis

    kwargs = redis.Redis.from_url(
        _settings("cache:6380,db=2,password=p@ss:/w").redis_url
    ).connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("cache", 6380, 2, "p@ss:/w")


def test_overrides_are_normalised_too() -> None:
    assert Settings.from_env(env={}, redis_url="cache:1").redis_url == "redis://cache:1/0"
    assert Settings(redis_url="cache:1,db=4").redis_url == "redis://cache:1/4"


@pytest.mark.parametrize(
    "typed",
    [
        "cache",  # no port
        "",
        "http://cache:6379",
        "unix:///tmp/redis.sock",
        "redis://cache:port/0",
        "redis://cache/zero",
        "redis://:6379/0",
        "cache:99999",
        "cache:6379,db=two",
        "cache:6379,database=2",
        "cache:6379,ssl=maybe",
        "cache:6379,password",
    ],
)
def test_anything_else_is_refused_naming_the_forms(typed: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings(redis_url=typed)
    assert isinstance(info.value, ChurnError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert "CHURN_REDIS_URL" in message
    assert all(form in message for form in REDIS_URL_FORMS)


@pytest.mark.parametrize("typed", ["redis://app:hunter2@cache:x/0", "cache:6379,password=hunter2,db=x"])
def test_refusals_do_not_print_the_password(typed: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings(redis_url=typed)
    assert "hunter2" not in str(info.value)
