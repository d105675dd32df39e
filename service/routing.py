"""Which arm serves a user while a challenger is staged: a stable hash of the user id.

A user must land in the same arm on every request (and in every API worker and pod) for the A/B
comparison to mean anything, so the position is a keyed blake2b of ``salt + user_id``, never
Python's per-process randomised ``hash()``. The salt is the experiment: a new salt reshuffles the
users, the same salt with a larger share only moves users into the challenger arm.
"""

from __future__ import annotations

import hashlib

PRODUCTION = "production"
CHALLENGER = "challenger"
SHADOW = "shadow"
ARMS = (PRODUCTION, CHALLENGER)
_HASH_SCALE = float(2**64)


def bucket(user_id: str, salt: str) -> float:
    """A stable position of ``user_id`` in [0, 1) for this experiment (``salt``)."""
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def assign_arm(user_id: str, share: float, salt: str) -> str:
    """``"challenger"`` for the ``share`` of users whose bucket falls below it, else ``"production"``."""
    if share <= 0.0:
        return PRODUCTION
    return CHALLENGER if bucket(user_id, salt) < share else PRODUCTION
