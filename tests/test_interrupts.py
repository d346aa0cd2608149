"""Issue 15: an interrupt (Ctrl-C) at any blocking point, ``close()`` from a signal handler,
and a close while a call blocks leave no simsync thread, no socket (the autouse guard checks
both) and no session on the server."""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable, Iterator

import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.support import FAST, START, client, sim, wait_for

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")]
__all__ = ["sim"]

SYSTEM = "11111111111111111111111111111111"
END = START + 9


@pytest.fixture
def interrupt_soon() -> Iterator[Callable[[float], None]]:
    """``interrupt(after)``: raise ``KeyboardInterrupt`` in the main thread ``after`` seconds
    from now, as Ctrl-C does (SIGUSR1: pytest-timeout owns SIGALRM)."""
    timers = []

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, handler)

    def interrupt(after: float) -> None:
        timer = threading.Timer(after, os.kill, (os.getpid(), signal.SIGUSR1))
        timers.append(timer)
        timer.start()

    yield interrupt
    for timer in timers:
        timer.cancel()
        timer.join()
    signal.signal(signal.SIGUSR1, previous)


def no_live_server_session(sim: LocalSimulator) -> None:
    wait_for(lambda: all(sim.session_info(sid) is None
                         or sim.session_info(sid)["state"] in ("closed", "completed")
                         for sid in sim.session_ids()),
             what="no live session on the server")


def test_ctrl_c_during_start_session(sim: LocalSimulator,
                                     interrupt_soon: Callable[[float], None]) -> None:
    sim.faults.add(Fault("stall", after_frames=0))          # the create is never answered
    interrupt_soon(0.3)
    with pytest.raises(KeyboardInterrupt):
        client(sim).start_session(start_slot=START, end_slot=END, disconnect_timeout_secs=60)
    no_live_server_session(sim)


def test_ctrl_c_during_start_parallel(interrupt_soon: Callable[[float], None]) -> None:
    with LocalSimulator(bundle_size=3, bundles=8) as sim:
        sim.faults.add(Fault("stall", after_frames=2))      # between two sessionCreated
        interrupt_soon(0.3)
        with pytest.raises(KeyboardInterrupt):
            client(sim).start_parallel(start_slot=START, end_slot=START + 10,
                                       disconnect_timeout_secs=60)


def test_ctrl_c_during_subscribe(sim: LocalSimulator,
                                 interrupt_soon: Callable[[float], None]) -> None:
    session = client(sim).start_session(start_slot=START, end_slot=END,
                                        disconnect_timeout_secs=60)
    with session:
        sim.faults.refuse_connects(10**6, "pubsub")
        interrupt_soon(0.3)
        with pytest.raises(KeyboardInterrupt):
            session.subscribe_transactions([SYSTEM])
    no_live_server_session(sim)


def test_ctrl_c_during_send_continue(sim: LocalSimulator,
                                     interrupt_soon: Callable[[float], None]) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        sim.faults.refuse_connects(10**6, "pubsub")
        connection = session._inbox.subscriptions[0][1]
        connection.abort()                                  # the step waits for it
        wait_for(lambda: connection.status.value.state is simsync.State.RECONNECTING)
        interrupt_soon(0.3)
        with pytest.raises(KeyboardInterrupt):
            session.send_continue(timeout=30)
    no_live_server_session(sim)


def test_ctrl_c_during_close(sim: LocalSimulator,
                             interrupt_soon: Callable[[float], None]) -> None:
    session = client(sim, FAST.replace(close_timeout=10)).start_session(
        start_slot=START, end_slot=END, disconnect_timeout_secs=60)
    while not isinstance(session.next_event(10), simsync.ReadyForContinue):
        pass
    sim.faults.add(Fault("stall", after_frames=0))
    sim.faults.refuse_connects(10**6)
    session._control.connection.abort()                     # close waits on a dead link
    interrupt_soon(0.1)
    try:
        session.close()
    except KeyboardInterrupt:
        session.close()             # a second close finishes what the first began


@pytest.mark.parametrize("run", range(10))
def test_close_from_a_signal_handler_while_polling(sim: LocalSimulator, run: int) -> None:
    session = client(sim).start_session(start_slot=START, end_slot=START + 99,
                                        disconnect_timeout_secs=60)
    previous = signal.signal(signal.SIGUSR1, lambda *_: session.close())
    timer = threading.Timer(0.05 + run * 0.02, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(simsync.SessionClosed):
            for _ in range(10**7):
                try:
                    event = session.next_event(0)
                except simsync.EventTimeout:
                    continue
                if isinstance(event, simsync.ReadyForContinue):
                    session.send_continue(timeout=10)
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGUSR1, previous)
        session.close()
    no_live_server_session(sim)


def test_close_while_reconnecting_closes_the_server_session(sim: LocalSimulator) -> None:
    config = FAST.replace(backoff_initial=5.0, backoff_max=5.0)
    session = client(sim, config).start_session(start_slot=START, end_slot=END,
                                                disconnect_timeout_secs=600)
    sid = session.info.session_id
    session._control.connection.abort()          # then a backoff sleep of up to 5 s
    wait_for(lambda: session.status.state is simsync.State.RECONNECTING)
    began = time.monotonic()
    session.close(timeout=3)
    assert time.monotonic() - began < 4
    # told the server on a fresh connection: gone now, not after its 600 s detach window
    wait_for(lambda: sim.session_info(sid) is None
             or sim.session_info(sid)["state"] == "closed", timeout=5)


@pytest.mark.parametrize("how", ["close", "read Completed"])
def test_a_drop_after_completed_still_closes_the_server_session(sim: LocalSimulator,
                                                                 how: str) -> None:
    """``completed`` arrived, then the control connection died before the close: the link
    does not reconnect (nothing more is expected), but the server still holds the session
    for its detach window, so closing attaches on a fresh connection and closes it (found by
    the model-based test: ``close_mid_step`` left a completed session live)."""
    session = client(sim).start_session(start_slot=START, end_slot=START + 1,
                                        disconnect_timeout_secs=600)
    sid = session.info.session_id
    while not isinstance(session.next_event(10), simsync.ReadyForContinue):
        pass
    session.send_continue(advance_count=5, timeout=10)
    wait_for(lambda: session._control.link.gate.completed, what="completed arrived")
    session._control.connection.abort()
    wait_for(lambda: session.status.final, what="the link ended")
    assert sim.session_info(sid) is not None, "the server session outlives the drop"
    began = time.monotonic()
    if how == "close":
        session.close(timeout=3)
    else:
        while not isinstance(session.next_event(10), simsync.Completed):
            pass
    assert time.monotonic() - began < 4
    wait_for(lambda: sim.session_info(sid) is None
             or sim.session_info(sid)["state"] == "closed", timeout=5,
             what="the server session closed, not left for its 600 s detach window")
    session.close()
