"""The bulk writer's reply reader on a socket pair: what Redis's one-line replies can look like."""

from __future__ import annotations

import socket

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feature_repo.online.redis import read_line_replies


@pytest.fixture
def pair():
    ours, redis_side = socket.socketpair()
    ours.settimeout(0.2)
    yield ours, redis_side
    ours.close()
    redis_side.close()


def test_integer_replies_are_counted_negative_ones_included(pair) -> None:
    ours, redis_side = pair
    redis_side.sendall(b":1\r\n:0\r\n:-1\r\n")
    read_line_replies(ours, 3)


def test_an_error_reply_raises_its_message_after_every_reply_is_read(pair) -> None:
    ours, redis_side = pair
    redis_side.sendall(b":1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n:1\r\n")
    with pytest.raises(ResponseError, match="^WRONGTYPE Operation"):
        read_line_replies(ours, 3)
    redis_side.sendall(b"-ERR first\r\n")
    with pytest.raises(ResponseError, match="^ERR first$"):
        read_line_replies(ours, 1)


def test_more_replies_than_commands_means_out_of_step(pair) -> None:
    ours, redis_side = pair
    redis_side.sendall(b":1\r\n:1\r\n")
    with pytest.raises(RedisConnectionError, match="out of step"):
        read_line_replies(ours, 1)


def test_a_silent_or_closed_server_raises_redis_errors(pair) -> None:
    ours, redis_side = pair
    redis_side.sendall(b":1\r\n")
    with pytest.raises(RedisTimeoutError):
        read_line_replies(ours, 2)
    redis_side.close()
    with pytest.raises(RedisConnectionError, match="closed"):
        read_line_replies(ours, 1)
