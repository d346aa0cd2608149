"""``Connection.close(timeout)`` in every state of a connection returns within its timeout
and leaves threads and socket descriptors exactly at their baseline (issue 14 case 2, 4):
connecting (TCP), upgrading, handshaking, sending a large frame to a peer that stopped
reading, backing off, up and idle. Servers are hostile loopback servers (tests/hostile.py).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, List, Optional, Union

import pytest

from simsync.config import ClientConfig
from simsync.transport import Channel, Connection, Link, State
from tests.hostile import HostileServer, Peer
from tests.leaks import leftovers, snapshot, wait_until

pytestmark = pytest.mark.timeout(60)

CONFIG = ClientConfig(connect_timeout=30.0, handshake_timeout=30.0, ping_interval=10.0,
                      dead_after=30.0, backoff_initial=0.01, backoff_max=0.1,
                      reconnect_budget=60.0, initial_connect_budget=60.0, close_timeout=3.0)
CLOSE_TIMEOUT = 2.0
SLACK = 1.0                     # a loaded 2-core machine
BIG = 16 * 1024 * 1024


class WaitingLink(Link):
    """Greets in its handshake and waits (up to the handshake timeout) for any reply."""

    name = "leaks"

    def __init__(self, url: str, greet: bool) -> None:
        self._url = url
        self._greet = greet
        self.handshaking = threading.Event()

    def url(self) -> str:
        return self._url

    def handshake(self, channel: Channel, attempt: int) -> None:
        if self._greet:
            channel.send("hello")
            self.handshaking.set()
            channel.recv(30.0)

    def on_frame(self, data: Union[str, bytes]) -> None:
        pass


class Case:
    """A server behaviour, whether the link greets, and when the state is reached."""

    def __init__(self, behaviour: Callable[[Peer], None], greet: bool = False,
                 accept: bool = True, backlog: int = 16, rcvbuf: Optional[int] = None) -> None:
        self.behaviour = behaviour
        self.greet = greet
        self.accept = accept
        self.backlog = backlog
        self.rcvbuf = rcvbuf


def answer_503(peer: Peer) -> None:
    peer.answer(503, headers=["Retry-After: 30"])
    peer.drain()


def upgrade_and_idle(peer: Peer) -> None:
    peer.upgrade()
    peer.idle()


#: Set by the "sending a large frame" server once the frame has started to arrive (so the
#: sender is inside its write), cleared by the test before it starts.
FRAME_ARRIVING = threading.Event()


def upgrade_read_a_little_then_idle(peer: Peer) -> None:
    peer.upgrade()
    if peer.sock.recv(65536):
        FRAME_ARRIVING.set()
    peer.idle()


def upgrade_and_drain(peer: Peer) -> None:
    peer.upgrade()
    peer.drain()


CASES = {
    "connecting": Case(Peer.idle, accept=False, backlog=0),
    "upgrading": Case(Peer.idle),
    "handshaking": Case(upgrade_and_idle, greet=True),
    "sending a large frame": Case(upgrade_read_a_little_then_idle, rcvbuf=4096),
    "backing off": Case(answer_503),
    "up": Case(upgrade_and_drain),
}


@pytest.mark.parametrize("state", list(CASES))
def test_close_in_every_state_returns_in_time_and_leaves_nothing(state: str) -> None:
    case = CASES[state]
    before = snapshot()
    fillers: List[socket.socket] = []
    server = HostileServer(case.behaviour, rcvbuf=case.rcvbuf, backlog=case.backlog,
                           accept=case.accept)
    sender: Optional[threading.Thread] = None
    FRAME_ARRIVING.clear()
    try:
        if state == "connecting":
            for _ in range(8):          # fill the accept queue: later SYNs are dropped
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", server.port))
                fillers.append(filler)
        link = WaitingLink(server.url(), case.greet)
        connection = Connection(link, CONFIG, "leak")
        connection.start()
        reached: Any
        if state == "connecting":
            reached = lambda: connection._sock is not None  # noqa: E731
        elif state == "upgrading":
            reached = lambda: server.connections == 1  # noqa: E731
        elif state == "handshaking":
            reached = link.handshaking.is_set
        elif state == "backing off":
            reached = lambda: connection.status.value.state is State.RECONNECTING  # noqa: E731
        else:
            reached = lambda: connection.status.value.state is State.UP  # noqa: E731
        assert wait_until(reached, 10), f"never reached {state}"
        if state == "sending a large frame":
            errors: List[BaseException] = []

            def send() -> None:
                try:
                    connection.send("x" * BIG)
                except Exception as exc:  # noqa: BLE001 - recorded for the test
                    errors.append(exc)
            sender = threading.Thread(target=send, name="test-big-send")
            sender.start()
            assert FRAME_ARRIVING.wait(10)
            assert sender.is_alive()
        began = time.monotonic()
        assert connection.close(CLOSE_TIMEOUT), "close() abandoned a thread"
        assert time.monotonic() - began < CLOSE_TIMEOUT + SLACK
        assert connection.status.value.state is State.CLOSED
        if sender is not None:
            sender.join(5)
            assert not sender.is_alive()
    finally:
        for filler in fillers:
            filler.close()
        server.stop()
    assert wait_until(lambda: not leftovers(before), 10), leftovers(before)
