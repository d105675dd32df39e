"""Delivery against a real HTTP receiver (tests.support.servers.http_receiver) that checks every
signature, dedupes on idempotency keys the way the README asks receivers to, fails some requests,
answers others too late or never: retries, dead letters, a SIGKILLed send resumed without a
duplicate contact; and the daily chain planning and exporting on a real scored site."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from churn.interventions import (
    CONTROL,
    DEAD_LETTER,
    EXPORTED,
    FAILED,
    HELD_OUT,
    PLANNED,
    SENT,
    TREATMENT,
    batch_key,
)
from churn.settings import Settings
from tests.support.env import REPO
from tests.support.servers import Received, http_receiver
from tests.support.settings import make_settings
from tests.support.sites import ServedSite, copy_site, synthetic_scores
from tests.support.tools import CHURN, cli_env, run_cli

DAY = dt.date(2026, 3, 2)
SECRET = "test-webhook-secret"


class Receiver:
    """A webhook receiver: verifies the signature with ``hmac.compare_digest``, remembers the keys
    it has acted on (a resent key is acknowledged, not acted on again) and follows ``script``:
    ``(nth distinct batch, attempt) -> "ok" | "fail" | "refuse" | "busy" | "slow" | "hold"``."""

    def __init__(self, script: Callable[[int, int], str], slow_s: float = 0.0) -> None:
        self.script = script
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.batches: list[str] = []
        self.attempts: Counter[str] = Counter()
        self.arrivals: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.keys_of: dict[str, list[str]] = {}
        self.bad: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, req: Received) -> int:
        headers = {k.lower(): v for k, v in req.headers.items()}
        signed = headers.get("x-churn-timestamp", "").encode() + b"." + req.body
        expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-churn-signature", "")):
            self.bad.append("signature")
            return 401
        body = json.loads(req.body)
        keys = [u["idempotency_key"] for u in body["users"]]
        bid = headers["idempotency-key"]
        if bid != body["batch_id"] or bid != batch_key(keys):
            self.bad.append(f"batch id {bid}")
        if abs(int(headers["x-churn-timestamp"]) - time.time()) > 300:
            self.bad.append("timestamp")
        with self.lock:
            if bid not in self.attempts:
                self.batches.append(bid)
                self.keys_of[bid] = keys
            self.attempts[bid] += 1
            self.arrivals.update(keys)
            what = self.script(self.batches.index(bid) + 1, self.attempts[bid])
        if what == "fail":
            return 500
        if what == "refuse":
            return 422
        if what == "busy":
            return 429
        if what == "slow":
            time.sleep(self.slow_s)  # the sender has given up by now; the batch is still acted on
        if what == "hold":
            self._accept(keys)  # acted on, but the answer never reaches the sender
            self.holding.set()
            self.release.wait(30)
            return 200
        self._accept(keys)
        return 200

    def _accept(self, keys: list[str]) -> None:
        with self.lock:
            for k in keys:
                if not self.accepted[k]:
                    self.accepted[k] = 1

    def batch(self, n: int) -> set[str]:
        return set(self.keys_of[self.batches[n - 1]])


def _fields(address: str, **extra: Any) -> dict[str, Any]:
    return {
        "intervention_sinks": "webhook",
        "intervention_webhook_url": f"http://{address}/hooks/churn",
        "intervention_webhook_secret": SECRET,
        "intervention_webhook_backoff_s": 0.01,
        "intervention_capacity": "support_outreach:30,discount_offer:40",
        **extra,
    }


def _planned(settings: Settings) -> tuple[set[str], set[str]]:
    """(treatment keys, control keys) of the day's plan, planned now."""
    from jobs.interventions.plan import plan, read_plan

    plan(settings, DAY)
    table = read_plan(settings, DAY)
    keys = {
        g: set(table.filter(pc.equal(table["group"], g))["idempotency_key"].to_pylist()) for g in (TREATMENT, CONTROL)
    }
    assert len(keys[TREATMENT]) == 70 and keys[CONTROL]
    return keys[TREATMENT], keys[CONTROL]


def _keys(settings: Settings, status: str) -> Counter[str]:
    from jobs.interventions.outbox import read_outbox

    outbox = read_outbox(settings, DAY, DAY)
    return Counter(outbox.filter(pc.equal(outbox["status"], status))["idempotency_key"].to_pylist())


def test_webhook_retries_signs_dedupes_and_dead_letters(tmp_path: Path) -> None:
    from jobs.interventions.outbox import read_outbox
    from jobs.interventions.send import send

    script = {(2, 1): "fail", (3, 1): "slow", (5, 1): "fail", (5, 2): "fail", (5, 3): "fail", (5, 4): "fail"}
    script |= {(7, 1): "refuse", (8, 1): "busy"}
    receiver = Receiver(lambda n, attempt: script.get((n, attempt), "ok"), slow_s=2.5)
    with http_receiver(respond=receiver) as (address, received):
        settings = make_settings(
            tmp_path / "data",
            **_fields(address, intervention_webhook_batch=7, intervention_webhook_retries=3),
            intervention_webhook_timeout_s=1.5,
        )
        synthetic_scores(settings, DAY, 600)
        treatment, control = _planned(settings)
        result = send(settings, DAY)
        assert not receiver.bad
        assert {r.path for r in received} == {"/hooks/churn"} and {r.method for r in received} == {"POST"}

        dead = receiver.batch(5) | receiver.batch(7)
        assert len(receiver.batches) == 11  # 30 + 40 users in batches of 7
        assert receiver.attempts[receiver.batches[1]] == 2  # a 500, then accepted
        assert receiver.attempts[receiver.batches[2]] == 2  # too slow, resent, deduped by key
        assert receiver.attempts[receiver.batches[4]] == 4  # 1 + 3 retries, then dead-lettered
        assert receiver.attempts[receiver.batches[6]] == 1  # a refusal is not retried
        assert receiver.attempts[receiver.batches[7]] == 2  # 429 is retried
        assert set(receiver.accepted) == treatment - dead
        assert set(receiver.accepted.values()) == {1}  # acted on once per user, whatever arrived
        assert {k for k, n in receiver.arrivals.items() if n > 1} == receiver.batch(2) | receiver.batch(3) | (
            receiver.batch(5) | receiver.batch(8)
        )
        assert not control & set(receiver.arrivals)  # the control group is never contacted
        assert (result.sent, result.dead_letter) == (70 - len(dead), len(dead))

        assert _keys(settings, SENT) == Counter(treatment - dead)
        assert _keys(settings, DEAD_LETTER) == Counter(dead)
        outbox = read_outbox(settings, DAY, DAY)
        failed = outbox.filter(pc.equal(outbox["status"], FAILED))
        k5 = next(iter(receiver.batch(5)))
        assert sorted(failed.filter(pc.equal(failed["idempotency_key"], k5))["attempt"].to_pylist()) == [1, 2, 3, 4]
        detail = outbox.filter(pc.equal(outbox["status"], DEAD_LETTER))["detail"].to_pylist()
        assert any("HTTP 422" in d for d in detail) and any("gave up after 4 attempts" in d for d in detail)
        assert any("no answer within 1.5s" in d for d in failed["detail"].to_pylist())

        # A second send delivers nothing again: sent and dead-lettered keys are final.
        arrived = len(received)
        again = send(settings, DAY)
        assert len(received) == arrived and again.already == 70 and again.sent == 0


def test_a_killed_send_resumes_without_contacting_anyone_twice(tmp_path: Path) -> None:
    from jobs.interventions.send import send

    receiver = Receiver(lambda n, attempt: "hold" if (n, attempt) == (4, 1) else "ok")
    with http_receiver(respond=receiver) as (address, _):
        fields = _fields(address, intervention_webhook_batch=5, intervention_webhook_timeout_s=30)
        settings = make_settings(tmp_path / "data", **fields)
        synthetic_scores(settings, DAY, 600)
        treatment, control = _planned(settings)
        env = cli_env(settings, **{f"CHURN_{k.upper()}": str(v) for k, v in fields.items()})
        proc = subprocess.Popen(
            [str(CHURN), "interventions", "send", "--date", DAY.isoformat()],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert receiver.holding.wait(60), "the send never reached the fourth batch"
            proc.send_signal(signal.SIGKILL)  # mid-request: batch 4 acted on, its answer never read
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
            receiver.release.set()
        assert proc.returncode == -signal.SIGKILL
        done_before = set(_keys(settings, SENT))
        assert done_before == receiver.batch(1) | receiver.batch(2) | receiver.batch(3)

        result = send(settings, DAY)
        assert result.sent == 70 - len(done_before) and result.already == len(done_before)
        assert set(receiver.accepted) == treatment and set(receiver.accepted.values()) == {1}
        resent = {k for k, n in receiver.arrivals.items() if n > 1}
        assert resent == receiver.batch(4)  # only the batch in flight at the kill came twice...
        assert receiver.attempts[receiver.batches[3]] == 2  # ...under the same Idempotency-Key
        assert _keys(settings, SENT) == Counter(treatment)  # one SENT record per user
        assert not control & set(receiver.arrivals)


def test_daily_plans_and_exports_the_scored_day(shared_site: ServedSite, tmp_path: Path) -> None:
    from jobs.daily import daily

    settings = copy_site(shared_site.settings, tmp_path / "data", reference_sample_rows=300)
    day = dt.date.fromisoformat(shared_site.last_date)
    result = daily(settings, day, first="score", last="interventions")
    assert result.steps == ["score", "interventions"]
    plan_path = settings.layout.intervention_plan(day)
    assert plan_path.exists()
    exports = sorted(p.name for p in settings.layout.exports(day).iterdir())
    assert exports and all(name.endswith(".csv") for name in exports)
    assert _outbox_statuses(settings, day) >= {PLANNED, EXPORTED}
    assert HELD_OUT in _outbox_statuses(settings, day) or settings.intervention_control_share == 0

    # The CLI: a rerun delivers nothing twice; bad settings are one clear line.
    proc = run_cli(settings, "interventions", "send", "--date", day.isoformat())
    assert proc.returncode == 0, proc.stderr
    assert "already delivered" in proc.stdout and "exported 0 " in proc.stdout
    proc = run_cli(settings, "interventions", "suppress", "u1", "u2", "--reason", "opted out")
    assert proc.returncode == 0 and "suppressed 2 new users" in proc.stdout, proc.stdout + proc.stderr
    proc = run_cli(
        settings,
        "interventions",
        "plan",
        "--date",
        day.isoformat(),
        CHURN_INTERVENTION_CONTROL_SHARE="0.7",
        CHURN_INTERVENTION_SINKS="webhook",
    )
    assert proc.returncode == 1
    assert "CHURN_INTERVENTION_CONTROL_SHARE 0.7 is outside [0, 0.5]" in proc.stderr
    assert "CHURN_INTERVENTION_WEBHOOK_SECRET is missing" in proc.stderr


def _outbox_statuses(settings: Settings, day: dt.date) -> set[str]:
    from jobs.interventions.outbox import read_outbox

    return set(read_outbox(settings, day, day)["status"].to_pylist())
