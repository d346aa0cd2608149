"""Issue 28 edges fixed on the lead's branch: ParallelSession.events() honours drain_timeout."""
from __future__ import annotations

import time
from typing import Iterator

import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.support import FAST, START

pytestmark = pytest.mark.timeout(120)
SYSTEM = "11111111111111111111111111111111"


@pytest.fixture
def sim2() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=10, bundles=4) as server:
        yield server


def test_events_fails_a_completed_held_behind_a_silent_subscription(sim2: LocalSimulator
                                                                     ) -> None:
    """A stalled PubSub socket (open, answering nothing) holds back one sub-session's
    ``Completed``: ``events()`` raises ``SubscriptionFailed`` after ``drain_timeout``, as
    ``sub.next_event()`` does, instead of waiting for ``dead_after`` (60 s here)."""
    config = FAST.replace(ping_interval=30.0, dead_after=60.0, drain_timeout=1.0)
    stall = sim2.faults.add(Fault("stall", channel="pubsub", after_frames=3, times=1))
    client = simsync.Client(sim2.url, config=config)
    with client.start_parallel(start_slot=START, end_slot=START + 19,
                               disconnect_timeout_secs=60) as batch:
        for sub in batch.sub_sessions:
            sub.subscribe_transactions([SYSTEM])
        began = time.monotonic()
        with pytest.raises(simsync.SubscriptionFailed, match="incomplete"):
            for sub, event in batch.events(timeout=30):
                if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                    sub.send_continue(advance_count=20, timeout=30)
        assert stall.fired == 1
        assert time.monotonic() - began < 20, "events() waited past drain_timeout"
