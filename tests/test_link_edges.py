"""Issue 28, the control link's edges: close() bounded while another thread's write is
stuck, close() during a re-attach, one deadline per handshake reply, the lost-step probe on
both links (and its safety on a slow link), a parallel create dropped midway. Every test
runs on loopback: the local simulator and its fault plan, or a small hostile server."""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import List, Optional

import pytest

import simsync
from tests.hostile import HostileServer, Peer
from tests.support import START, wait_for

pytestmark = pytest.mark.timeout(120)

SESSION = "backtest_0199d3c2-5b1e-7a4c-9f1e-2b7c6d5e4f30"


def created_frame(seq: int = 1) -> str:
    return json.dumps({"seqId": seq, "method": "sessionCreated", "params": {
        "session_id": SESSION, "rpc_endpoint": f"/backtest/{SESSION}"}})


def ready_frame(seq: int) -> str:
    return json.dumps({"seqId": seq, "method": "readyForContinue"})


def waiting_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is, right now, inside a call of ``function`` (its stack)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


# ------------------------------------------------------------------ 8: bounded close writes

def test_close_is_bounded_while_the_users_thread_is_stuck_writing_a_big_step() -> None:
    """The peer stops reading after the first pause; the user's thread is stuck in
    ``send_continue`` writing a step of many transactions. ``close(timeout=2)`` from
    another thread never waits behind that write: it returns within its timeout, and the
    user's thread and every internal thread have ended."""
    stuck = threading.Event()

    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        if "createBacktestSession" not in peer.recv_text():
            peer.drain()
            return
        peer.send_text(created_frame())
        peer.send_text(ready_frame(2))
        stuck.set()
        peer.idle()                     # reads nothing more, answers no ping

    config = simsync.ClientConfig(connect_timeout=2.0, handshake_timeout=5.0,
                                  ping_interval=15.0, dead_after=20.0, close_timeout=5.0,
                                  backoff_initial=0.01, backoff_max=0.1)
    transactions = [bytes([index % 251]) * 12_000 for index in range(500)]   # ~8 MB on the wire
    outcome: List[Optional[BaseException]] = []
    with HostileServer(behaviour, rcvbuf=4096) as server:
        session = simsync.Client(server.url(), config=config).start_session(
            start_slot=START, end_slot=START + 10)
        try:
            assert isinstance(session.next_event(10), simsync.ReadyForContinue)

            def step() -> None:
                try:
                    session.send_continue(transactions=transactions)
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - handed to the test
                    outcome.append(exc)
            user = threading.Thread(target=step, name="test-user-step", daemon=True)
            user.start()
            assert stuck.wait(10)
            # the step's write has filled the socket buffers and waits on the socket
            wait_for(lambda: waiting_in(user, "_wait_send"), 20, "the step's write stuck")
            began = time.monotonic()
            session.close(timeout=2.0)
            took = time.monotonic() - began
        finally:
            session.close(timeout=2.0)
        user.join(5)
        assert not user.is_alive()
    assert outcome, "send_continue returned (its write was cut by the close)"
    assert took < 3.0, f"close(timeout=2) took {took:.1f}s"
