"""Interventions: the rules that decide who is contacted, recorded and held out, written once.

Selection (``jobs/interventions/plan.py``), delivery (``jobs/interventions/send.py``) and the
effect report all agree on what is defined here: the campaign period a day belongs to, who is in
a campaign's control group (a stable hash, so the same user stays held out for the whole period
whatever their score does), the idempotency key of a contact, the outbox statuses and the schemas
of the plan and the outbox. Standard library, numpy and pyarrow only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from churn.policies import NO_ACTION

if TYPE_CHECKING:
    from churn.settings import Settings

# --- outbox statuses -----------------------------------------------------------------------------
PLANNED = "planned"
"""Selected for contact by the plan (treatment); not yet delivered."""
HELD_OUT = "held_out"
"""In the control group: recorded by the plan, never contacted."""
SENT = "sent"
"""Accepted by the webhook (a 2xx answer)."""
EXPORTED = "exported"
"""Written to the day's CRM export file."""
FAILED = "failed"
"""One delivery attempt failed (retried unless it was the last)."""
DEAD_LETTER = "dead_letter"
"""Given up on: a refusal (4xx) or every retry failed. Never retried by a later send."""
SUPPRESSED = "suppressed"
"""Planned, then suppressed (opted out) before delivery: not contacted."""

CONTACTED: tuple[str, ...] = (SENT, EXPORTED)
"""Statuses meaning the user was contacted."""
FINAL: tuple[str, ...] = (SENT, EXPORTED, DEAD_LETTER, SUPPRESSED)
"""Statuses a resumed send never revisits for the same key and sink."""
RECORDED: tuple[str, ...] = (SENT, EXPORTED, HELD_OUT)
"""Statuses that start a cooldown: contacted, or held out in the contact's place, so the control
group is drawn under the same cooldown as the users it is compared with."""

TREATMENT = "treatment"
CONTROL = "control"

SINK_WEBHOOK = "webhook"
SINK_EXPORT = "export"
SINKS: tuple[str, ...] = (SINK_WEBHOOK, SINK_EXPORT)

EPOCH = dt.date(1970, 1, 1)

PLAN_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("user_id", pa.string()),
        ("action", pa.string()),
        ("tier", pa.string()),
        ("churn_probability", pa.float64()),
        ("group", pa.string()),
        ("campaign", pa.string()),
        ("idempotency_key", pa.string()),
    ]
)

OUTBOX_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("user_id", pa.string()),
        ("action", pa.string()),
        ("group", pa.string()),
        ("campaign", pa.string()),
        ("idempotency_key", pa.string()),
        ("status", pa.string()),
        ("sink", pa.string()),
        ("attempt", pa.int32()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("detail", pa.string()),
    ]
)

SUPPRESSION_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("reason", pa.string()), ("added_at", pa.timestamp("us", tz="UTC"))]
)

SIGNATURE_HEADER = "X-Churn-Signature"
TIMESTAMP_HEADER = "X-Churn-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def campaign_of(day: dt.date, campaign_days: int) -> str:
    """The campaign period ``day`` falls in: periods of ``campaign_days`` counted from 1970-01-01."""
    return f"c{(day - EPOCH).days // int(campaign_days)}"


def campaign_bounds(campaign: str, campaign_days: int) -> tuple[dt.date, dt.date]:
    """First and last day of a campaign period."""
    start = EPOCH + dt.timedelta(days=int(campaign.removeprefix("c")) * int(campaign_days))
    return start, start + dt.timedelta(days=int(campaign_days) - 1)


def _unit(text: str) -> float:
    """A uniform number in [0, 1) from a string, the same on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def in_control(user_id: str, action: str, campaign: str, share: float) -> bool:
    """Whether the user is held out of ``action`` for the whole of ``campaign``."""
    return _unit(f"{user_id}|{action}|{campaign}") < share


def idempotency_key(user_id: str, action: str, day: dt.date) -> str:
    """One contact's key: the same user, action and day always get the same key, so a receiver
    that remembers keys never acts twice on a resent delivery."""
    return hashlib.sha256(f"{user_id}|{action}|{day.isoformat()}".encode()).hexdigest()[:32]


def batch_key(keys: Iterable[str]) -> str:
    """A webhook batch's ``Idempotency-Key``: derived from its users' keys, so a resent batch keeps it."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Churn-Signature`` value: ``sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``.

    The timestamp is signed with the body, so a receiver that refuses old timestamps also refuses
    a captured request replayed later; a resend by the platform carries a fresh one.
    """
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def contactable_actions(actions: Iterable[str]) -> list[str]:
    """The actions that mean contacting someone (every one but ``none``), sorted."""
    return sorted({a for a in actions if a and a != NO_ACTION})


@dataclass(frozen=True)
class InterventionPolicy:
    """Who may be contacted for an action on a day (see ``jobs/interventions/plan.py``)."""

    capacity: dict[str, int]
    """Action → most users contacted per day; an action not listed has no cap."""
    cooldown_days: int
    control_share: float
    campaign_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> InterventionPolicy:
        return cls(
            capacity=settings.intervention_capacities,
            cooldown_days=int(settings.intervention_cooldown_days),
            control_share=float(settings.intervention_control_share),
            campaign_days=int(settings.intervention_campaign_days),
        )

    def campaign(self, day: dt.date) -> str:
        return campaign_of(day, self.campaign_days)

    def cap(self, action: str) -> int | None:
        return self.capacity.get(action)
