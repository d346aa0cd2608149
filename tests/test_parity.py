"""Issue 17: attach from anywhere with a cursor, every PubSub kind end to end (with drops for
the kinds that replay), and watching the connection status."""
from __future__ import annotations

import collections
import pickle
import threading
from typing import Any, Callable, Dict, List

import pytest

import simsync
from simsync.localsim import Fault, LocalSimulator
from tests.support import FAST, START, client, drive, sim, slots, wait_for

pytestmark = pytest.mark.timeout(120)
__all__ = ["sim"]

SYSTEM = "11111111111111111111111111111111"
END = START + 19


def step_through(session: simsync.Session, until: int = 10**9) -> List[Any]:
    """Drive from the pause the user holds (or the start) to ``Completed`` or ``until``
    events; returns what was seen."""
    seen: List[Any] = []
    while len(seen) < until:
        event = session.next_event(15)
        seen.append(event)
        if isinstance(event, simsync.Completed):
            break
        if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
            session.send_continue(timeout=15)
    return seen


# ------------------------------------------------------------------ attach

@pytest.mark.parametrize("after", [3, 17, 40])
def test_attach_with_a_cursor_sees_every_later_event_exactly_once(sim: LocalSimulator,
                                                                   after: int) -> None:
    first = client(sim).start_session(start_slot=START, end_slot=END,
                                      disconnect_timeout_secs=60)
    first.subscribe_transactions([SYSTEM])
    seen = step_through(first, until=after)
    cursor = simsync.SessionCursor.from_json(first.cursor.to_json())
    assert pickle.loads(pickle.dumps(cursor)) == cursor
    sid = first.info.session_id
    # the process "dies": its sockets go away without a close (the server detaches)
    first._control.connection.close(2)
    for _, connection in first._inbox.subscriptions:
        connection.close(2)
    with client(sim).attach_session(sid, cursor) as second:
        seen += step_through(second)
    assert slots(seen) == sim.produced_slots(START, END)
    got = [e.signature for e in seen if isinstance(e, simsync.Transaction)]
    expected = [t.signature for t in sim.executed(sid) if SYSTEM in t.program_ids]
    assert got == expected
    assert isinstance(seen[-1], simsync.Completed)


def test_attach_without_a_cursor_replays_the_whole_record(sim: LocalSimulator) -> None:
    first = client(sim).start_session(start_slot=START, end_slot=END,
                                      disconnect_timeout_secs=60)
    head = step_through(first, until=12)
    sid = first.info.session_id
    first._control.connection.close(2)
    with client(sim).attach_session(sid) as second:
        replay = step_through(second)

    def history(events: List[Any]) -> List[Any]:
        return [e for e in events if not isinstance(e, simsync.ReadyForContinue)]

    # the whole record again, without the pauses the first process had answered
    assert history(replay)[:len(history(head))] == history(head)
    assert slots(replay) == sim.produced_slots(START, END)
    pauses = sum(isinstance(e, simsync.ReadyForContinue) for e in replay)
    assert pauses < sum(isinstance(e, simsync.ReadyForContinue) for e in head + replay)


def test_attach_to_an_unknown_session_is_a_create_error(sim: LocalSimulator) -> None:
    with pytest.raises(simsync.SessionCreateError, match="could not attach"):
        client(sim).attach_session("backtest_nope")


def test_a_cursor_of_another_session_is_refused(sim: LocalSimulator) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        cursor = session.cursor
    with pytest.raises(ValueError, match="belongs to session"):
        client(sim).attach_session("backtest_other", cursor)
    with pytest.raises(ValueError, match="not a simsync session cursor"):
        simsync.SessionCursor.from_json('{"version": 99}')


# ------------------------------------------------------------------ every kind

def first_wallet(server: LocalSimulator) -> str:
    return server.wallets[0]


KINDS: Dict[str, Callable[[simsync.Session, LocalSimulator], None]] = {
    "logs": lambda s, server: s.subscribe_logs(),
    "account": lambda s, server: s.subscribe_account(first_wallet(server)),
    "program": lambda s, server: s.subscribe_program(SYSTEM),
    "slots": lambda s, server: s.subscribe_slots(),
    "diffs by account": lambda s, server: s.subscribe_account_diffs(
        account_keys=[first_wallet(server)]),
}
TYPES = {"logs": simsync.Logs, "account": simsync.AccountUpdate,
         "program": simsync.ProgramAccountUpdate, "slots": simsync.SlotUpdate,
         "diffs by account": simsync.AccountDiff}


def stream(server: LocalSimulator, kind: str) -> List[Any]:
    with client(server).start_session(start_slot=START, end_slot=END,
                                      disconnect_timeout_secs=60) as session:
        KINDS[kind](session, server)
        events = drive(session)
    return [e for e in events if isinstance(e, TYPES[kind])]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_streams_typed_events_and_survives_drops(kind: str) -> None:
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        clean = stream(server, kind)
        assert clean, f"no {kind} events"
        server.faults.add(Fault("drop", channel="pubsub", after_frames=4, times=2))
        server.faults.add(Fault("drop", channel="pubsub", after_frames=2, how="rst",
                                on_connection=server.faults.connections("pubsub") + 3))
        dropped = stream(server, kind)
    if kind == "slots":         # not replayed: each slot at most once, in order
        got = [e.slot for e in dropped]
        assert got == sorted(set(got)) and set(got) <= {e.slot for e in clean}
    else:                       # replayed: each notification exactly once
        def keys(events: List[Any]) -> Any:
            return collections.Counter((e.slot, repr(e.dedup_key)) for e in events)
        assert keys(dropped) == keys(clean)


def test_a_signature_subscription_delivers_once_and_ends(sim: LocalSimulator) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        events = step_through(session, until=40)
        signature = next(e.signature for e in events if isinstance(e, simsync.Transaction))
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        session.subscribe_signature(signature)
        events = drive(session)
    results = [e for e in events if isinstance(e, simsync.SignatureResult)]
    assert len(results) == 1 and results[0].err is None


# ------------------------------------------------------------------ status

def test_status_changes_yield_every_transition(sim: LocalSimulator) -> None:
    with client(sim).start_session(start_slot=START, end_slot=END,
                                   disconnect_timeout_secs=60) as session:
        seen: List[simsync.ConnectionStatus] = []
        watcher = threading.Thread(target=lambda: seen.extend(session.status_changes(10)))
        watcher.start()
        wait_for(lambda: watcher.is_alive())
        session.next_event(10)
        session._control.connection.abort()
        status = session.wait_for_status(simsync.State.RECONNECTING, timeout=10)
        assert status.state in (simsync.State.RECONNECTING, simsync.State.UP)
        assert session.wait_for_status(simsync.State.UP, timeout=10).reconnects == 1
        drive(session)
        watcher.join(10)
    states = [s.state for s in seen]
    assert states[:2] == [simsync.State.RECONNECTING, simsync.State.UP]
    assert states[-1] is simsync.State.CLOSED and not watcher.is_alive()


# ------------------------------------------------------------------ compression

def transactions_of(server: LocalSimulator, config: simsync.ClientConfig) -> List[str]:
    with client(server, config).start_session(start_slot=START, end_slot=END,
                                              disconnect_timeout_secs=60) as session:
        session.subscribe_transactions([SYSTEM])
        return [e.signature for e in drive(session) if isinstance(e, simsync.Transaction)]


def test_zstd_notifications_arrive_exactly_once_across_drops_and_a_corrupt_frame() -> None:
    zstd = FAST.replace(pubsub_compression="zstd")
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        plain = transactions_of(server, FAST)
        compressed = transactions_of(server, zstd)
        pubsub = [r for r in server.requests_seen() if r.websocket]
        assert compressed == plain and plain
        # each reconnect starts a new context; a corrupt frame fails only its connection
        base = server.faults.connections("pubsub")
        server.faults.add(Fault("drop", channel="pubsub", after_frames=5,
                                on_connection=base + 1))
        server.faults.add(Fault("malformed", channel="pubsub", after_frames=3,
                                on_connection=base + 2))
        assert transactions_of(server, zstd) == plain
        assert server.faults.connections("pubsub") >= base + 3
        assert pubsub


def test_compression_needs_a_known_codec() -> None:
    with pytest.raises(ValueError, match="pubsub_compression"):
        FAST.replace(pubsub_compression="gzip")


# ------------------------------------------------------------------ heartbeat, slow user

def test_a_slow_consumer_keeps_a_heartbeat_server_calm_and_loses_nothing() -> None:
    """The subscription reader waits on the user (a full mailbox) and cannot read the
    server's pings; its unsolicited pongs keep the connection, so nothing is replayed
    from a slot the window no longer holds."""
    config = FAST.replace(max_buffered_events=2, slow_consumer_timeout=30)
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        plain = transactions_of(server, FAST)
        server.faults.add(Fault("heartbeat", channel="pubsub", interval_secs=0.2,
                                timeout_secs=0.5, times=0))
        with client(server, config).start_session(start_slot=START, end_slot=END,
                                                  disconnect_timeout_secs=60) as session:
            session.subscribe_transactions([SYSTEM])
            seen: List[Any] = []
            slow = 0
            for event in session.events():
                seen.append(event)
                if isinstance(event, simsync.ReadyForContinue):
                    session.send_continue(advance_count=30, timeout=15)
                elif isinstance(event, simsync.Transaction) and slow < 3:
                    # a slow user: the reader holds back past the heartbeat's timeout
                    slow += 1
                    threading.Event().wait(1.0)
        got = [e.signature for e in seen if isinstance(e, simsync.Transaction)]
        assert got == plain
        assert server.faults.fired_on("heartbeat")          # the heartbeat ran ...
        assert not [f for f in server.faults.history        # ... and never dropped it
                    if f.trigger == "heartbeat timeout"]


# ------------------------------------------------------------------ coordination

def test_independent_sessions_sharing_a_coordinator_reconnect_one_at_a_time() -> None:
    coordinator = simsync.ReconnectCoordinator(quick_attempts=1)
    with LocalSimulator(bundle_size=100, bundles=4) as server:
        plain = transactions_of(server, FAST)
        sessions = [client(server).start_session(start_slot=START, end_slot=END,
                                                 disconnect_timeout_secs=60,
                                                 coordinator=coordinator)
                    for _ in range(3)]
        try:
            for session in sessions:
                session.subscribe_transactions([SYSTEM])
            server.faults.add(Fault("drop", channel="pubsub", after_frames=3, times=3))
            server.faults.refuse_connects(6, channel="pubsub")
            results: List[List[str]] = [[] for _ in sessions]

            def run(index: int) -> None:
                results[index] = [e.signature for e in drive(sessions[index])
                                  if isinstance(e, simsync.Transaction)]

            threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        finally:
            for session in sessions:
                session.close()
    assert results == [plain, plain, plain]
    assert coordinator.turns_taken > 0 and coordinator.most_in_turn == 1
