"""Online-store reads (both backends): by-name features, unknown vs missing, freshness, timeouts."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from churn.errors import OnlineStoreUnavailable
from churn.schema import ALL_FEATURES
from feature_repo.online import OnlineStore, online_store
from tests.support.settings import make_settings


def _check_reader(env):
    reader = online_store(env.settings)
    assert reader.name == env.settings.online_store
    _check_async_equals_sync(reader, env)
    assert reader.ping()
    import pyarrow.parquet as pq

    users = (
        pq.read_table(env.settings.features_dir / "engagement" / f"date={env.end}")
        .column("user_id")
        .to_pylist()
    )
    res = reader.read([users[0], "ghost-user", users[1]])
    by = res.by_user()
    assert [u.user_id for u in res] == [users[0], "ghost-user", users[1]]
    known = by[users[0]]
    assert known.known and set(known.features) == set(ALL_FEATURES)
    assert known.feature_age_seconds is not None and known.feature_age_seconds > 0
    ghost = by["ghost-user"]
    assert not ghost.known and ghost.feature_age_seconds is None
    assert all(v is None for v in ghost.features.values()) and sorted(ghost.missing) == sorted(ALL_FEATURES)
    # known user with a missing value: null values are reported as missing, row still known
    for u in res:
        if u.known:
            assert set(u.missing) == {k for k, v in u.features.items() if v is None}


def _users(env, n: int) -> list[str]:
    import pyarrow.parquet as pq

    ids = pq.read_table(env.settings.features_dir / "engagement" / f"date={env.end}").column("user_id").to_pylist()
    return ids[:n]


def _check_async_equals_sync(reader: OnlineStore, env) -> None:
    """The API's awaited read returns exactly what the blocking read does (one user and many)."""

    for ids in (_users(env, 1), [*_users(env, 25), "ghost-user"]):
        want = reader.read(ids).users

        async def both(ids=ids):  # noqa: ANN202
            try:
                return await reader.read_async(ids)
            finally:
                await reader.aclose()

        got = asyncio.run(both()).users
        assert [(u.user_id, u.known, u.features, u.missing, u.event_timestamps) for u in got] == [
            (u.user_id, u.known, u.features, u.missing, u.event_timestamps) for u in want
        ]


def test_reader_sqlite(sqlite_env):
    _check_reader(sqlite_env)


@pytest.mark.redis
def test_reader_redis(redis_env):
    _check_reader(redis_env)


def _reader_at(env, port: int, timeout_ms: int) -> OnlineStore:
    """A reader of ``env``'s feature registry whose Redis is whatever listens on ``port``."""
    return online_store(
        make_settings(
            env.settings.data_dir,
            online_store="redis",
            redis_url=f"redis://127.0.0.1:{port}/0",
            online_timeout_ms=timeout_ms,
        )
    )


@pytest.mark.redis
def test_dead_redis_fails_fast(redis_env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    reader = _reader_at(redis_env, port, timeout_ms=200)
    t0 = time.perf_counter()
    with pytest.raises(OnlineStoreUnavailable):
        reader.read(["u0000001"])
    with pytest.raises(OnlineStoreUnavailable):
        reader.ping()
    with pytest.raises(OnlineStoreUnavailable):
        asyncio.run(reader.read_async(["u0000001"]))
    assert time.perf_counter() - t0 < 3


@pytest.mark.redis
def test_a_killed_pooled_connection_costs_one_reconnect_not_an_error(redis_env):
    """Redis dropped our idle connections (restart, CLIENT KILL, a frozen server's backlog): the
    next read retries once on a fresh connection instead of failing the request."""
    import redis

    reader = online_store(redis_env.settings)
    user = _users(redis_env, 1)
    assert reader.read(user).users[0].known  # the blocking client's pool holds a connection too

    async def scenario() -> tuple[bool, bool]:
        try:
            first = (await reader.read_async(user)).users[0].known
            admin = redis.Redis.from_url(redis_env.settings.redis_url, socket_timeout=5)
            killed = admin.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 2  # our pooled connections (asyncio and blocking) among them
            second = (await reader.read_async(user)).users[0].known
            return first, second
        finally:
            await reader.aclose()

    assert asyncio.run(scenario()) == (True, True)
    assert reader.read(user).users[0].known and reader.ping()  # the blocking client too


@pytest.mark.redis
def test_a_bulk_write_reads_every_reply_and_raises_on_an_error_reply(redis_env):
    """The bulk writer reads replies off the socket in bulk: every command of a pipelined write
    runs and is answered (replies spanning several reads included), and an error reply among them
    raises Redis's own message, not a miscount."""
    import redis
    from redis.exceptions import ResponseError

    from feature_repo.feast_adapter import resp_bulk

    prefix = f"churn-test:{uuid.uuid4().hex}"
    admin = redis.Redis.from_url(redis_env.settings.redis_url, socket_timeout=5)
    writer = online_store(redis_env.settings)

    def hset(key: str, field: bytes) -> bytes:
        return b"*4\r\n$4\r\nHSET\r\n" + resp_bulk(key.encode()) + resp_bulk(field) + resp_bulk(b"v")

    try:
        many = [hset(f"{prefix}:h", b"f%d" % i) for i in range(30_000)]  # replies longer than one read
        writer.pipeline_commands = len(many)
        writer.send(many)
        assert admin.hlen(f"{prefix}:h") == len(many)
        admin.set(f"{prefix}:s", "a string, not a hash")
        writer.pipeline_commands = 3
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            writer.send([hset(f"{prefix}:h2", b"a"), hset(f"{prefix}:s", b"b"), hset(f"{prefix}:h2", b"c")])
        assert admin.hkeys(f"{prefix}:h2") == [b"a", b"c"]  # the commands around the error ran
        writer.send([hset(f"{prefix}:h2", b"d")])  # and the writer still writes
        assert admin.hlen(f"{prefix}:h2") == 3
    finally:
        admin.delete(f"{prefix}:h", f"{prefix}:h2", f"{prefix}:s")
        writer.close()


@pytest.mark.redis
def test_hung_redis_async_read_times_out_without_blocking_the_loop(redis_env, tmp_path):
    """A store that accepts connections but never answers: the awaited read gives up at the
    timeout, and the event loop keeps running other work meanwhile (the API's /live, other users)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # accepts (kernel backlog), never replies
        reader = _reader_at(redis_env, server.getsockname()[1], timeout_ms=300)

        async def scenario() -> tuple[int, float]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            t0 = time.perf_counter()
            with pytest.raises(OnlineStoreUnavailable):
                await reader.read_async(["u0000001"])
            elapsed = time.perf_counter() - t0
            task.cancel()
            await reader.aclose()
            return ticks, elapsed

        ticks, elapsed = asyncio.run(scenario())
    assert 0.25 <= elapsed < 3
    assert ticks >= 10  # the loop ran other work while the read waited


def test_missing_registry_is_clear(tmp_path):
    store = online_store(make_settings(tmp_path / "empty"))
    with pytest.raises(OnlineStoreUnavailable, match="feature registry not readable"):
        store.connect()
    with pytest.raises(OnlineStoreUnavailable):
        store.read(["u0000001"])
