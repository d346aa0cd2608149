"""Issue 28, the session's own edges: fork, a helper and its own pause, close after
``Completed``, a failed attach, the interpreter's exit. Every test runs against the local
simulator (or the fault proxy in front of it) on loopback; the exit tests in a child
process."""
from __future__ import annotations

import os
from typing import Any, Callable, List

import pytest

import simsync
from simsync.localsim import LocalSimulator
from tests.support import START, client, sim

pytestmark = pytest.mark.timeout(120)
__all__ = ["sim"]


def first_pause(session: simsync.Session, timeout: float = 20) -> List[Any]:
    seen: List[Any] = []
    while not seen or not isinstance(seen[-1], (simsync.ReadyForContinue, simsync.Paused)):
        seen.append(session.next_event(timeout))
    return seen


# ------------------------------------------------------------------ 6: fork

def _in_forked_child(probe: Callable[[], Any]) -> str:
    """Run ``probe`` in a forked child; returns the name of what it raised (or "returned")."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: report, never return
        try:
            try:
                probe()
                outcome = "returned"
            except BaseException as exc:            # noqa: BLE001 - reported to the parent
                outcome = type(exc).__name__
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        chunks = []
        while True:
            chunk = os.read(read_end, 256)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_a_forked_child_cannot_use_the_session_its_rpc_or_subscriptions(
        sim: LocalSimulator) -> None:
    """In a forked child every use of the session — its ``SessionRpc`` taken before the fork
    included — raises ``ForkedSessionError`` without touching the parent's connections; the
    parent's session, RPC pool and subscription work on after each child."""
    with client(sim).start_session(start_slot=START, end_slot=START + 5) as session:
        session.subscribe_transactions(["11111111111111111111111111111111"])
        first_pause(session)
        rpc = session.rpc
        slot = rpc.get_slot()                      # the pool now holds a live connection
        probes: List[Callable[[], Any]] = [
            rpc.get_slot, lambda: rpc.call("getSlot"), lambda: rpc.get_balance(
                "11111111111111111111111111111111"),
            lambda: session.rpc, lambda: session.next_event(0.1), session.send_continue,
            lambda: session.subscribe_slots(), lambda: session.cursor,
            lambda: session.info, lambda: session.status, session.close,
        ]
        for probe in probes:
            assert _in_forked_child(probe) == "ForkedSessionError"
            assert rpc.get_slot() == slot           # the parent's pool is intact
        session.send_continue(advance_count=10)
        seen: List[Any] = []
        while not seen or not isinstance(seen[-1], simsync.Completed):
            seen.append(session.next_event(20))
        assert any(isinstance(event, simsync.Transaction) for event in seen)


def test_a_session_rpc_in_a_multiprocessing_fork_worker_raises(sim: LocalSimulator) -> None:
    """The same through ``multiprocessing``'s fork context (a worker's usual start)."""
    import multiprocessing

    with client(sim).start_session(start_slot=START, end_slot=START + 5) as session:
        first_pause(session)
        rpc = session.rpc
        rpc.get_slot()
        context = multiprocessing.get_context("fork")
        results = context.SimpleQueue()

        def worker() -> None:
            try:
                rpc.get_slot()
                results.put("returned")
            except simsync.SimsyncError as exc:
                results.put(type(exc).__name__)

        process = context.Process(target=worker)
        process.start()
        process.join(30)
        assert process.exitcode == 0
        assert results.get() == "ForkedSessionError"
        results.close()
        rpc.get_slot()
