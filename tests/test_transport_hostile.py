"""``Connection`` against hostile servers on loopback (tests/hostile.py): blocked sends, a
trickled upgrade, stuck connects, wrong URLs, close codes, malformed frames, a plain server
behind a wss URL, a closed port, a crashing keepalive (issue 14, issue 11 items 2 and 3).

Every test has a hard deadline (a hang is a failure) and measures nothing but bounds that are
part of the contract (``close(timeout)``), with slack for a loaded machine.
"""
from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from typing import Any, Iterator, List, Union

import pytest

import simsync
from simsync.config import ClientConfig
from simsync.control import ControlLink
from simsync.protocol import CreateSessionParams
from simsync.subscriptions import SubscriptionLink, SubscriptionSpec
from simsync.transport import Channel, Connection, Fatal, Link, State, Transient
from tests.hostile import HostileServer, Peer
from tests.leaks import wait_until
from tests.support import START, closed_port, sim

pytestmark = pytest.mark.timeout(60)
__all__ = ["sim"]

SECRET = "sk-hostile-5e1d0c9b8a7f"
CONFIG = ClientConfig(connect_timeout=2.0, handshake_timeout=5.0, ping_interval=0.3,
                      dead_after=1.5, backoff_initial=0.01, backoff_max=0.1,
                      reconnect_budget=20.0, initial_connect_budget=10.0, stable_after=60.0,
                      close_timeout=3.0)
BIG = 16 * 1024 * 1024        # more than loopback's socket buffers can absorb


class ProbeLink(Link):
    """A link of the tests: optionally greets and waits for one reply in its handshake,
    collects every routed frame, and may crash in ``holding_back`` (the keepalive calls it)."""

    name = "probe"

    def __init__(self, url: str, greet: bool = False, crash_keepalive: bool = False) -> None:
        self._url = url
        self._greet = greet
        self._crash_keepalive = crash_keepalive
        self.headers = [f"X-API-Key: {SECRET}"]
        self.frames: queue.Queue[Union[str, bytes]] = queue.Queue()
        self.greeted: List[Union[str, bytes]] = []
        self.up = False

    def url(self) -> str:
        return self._url

    def handshake(self, channel: Channel, attempt: int) -> None:
        if self._greet:
            channel.send("hello")
            self.greeted.append(channel.recv(5.0))
        self.up = True

    def on_frame(self, data: Union[str, bytes]) -> None:
        self.frames.put(data)

    def holding_back(self) -> bool:
        if self._crash_keepalive and self.up:
            raise RuntimeError("bug in the keepalive's link hook")
        return False


@pytest.fixture
def started() -> Iterator[List[Connection]]:
    """Connections a test starts; each is closed (and must close cleanly) afterwards."""
    connections: List[Connection] = []
    yield connections
    for connection in connections:
        assert connection.close(5), "close() had to abandon a thread"


def start(started: List[Connection], link: Link, config: ClientConfig = CONFIG) -> Connection:
    connection = Connection(link, config, "t")
    started.append(connection)
    connection.start()
    return connection


def reason(connection: Connection) -> str:
    return connection.status.value.reason or ""


def upgrade_then(then: Any) -> Any:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        then(peer)
    return behaviour


def send_in_thread(connection: Connection, text: str) -> queue.Queue[BaseException]:
    """Runs ``connection.send(text)`` on a thread; the queue gets what it raised (or None)."""
    out: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            connection.send(text)
            out.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.put(exc)
    threading.Thread(target=run, name="test-sender", daemon=True).start()
    return out


# ------------------------------------------------------------------ blocked sends (1, 2, 9)

def test_a_send_the_peer_stopped_reading_declares_the_connection_dead(
        started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        if peer.server.connections == 1:
            peer.idle()                 # reads nothing, answers no ping
        else:
            peer.drain()
    with HostileServer(behaviour, rcvbuf=4096) as server:
        connection = start(started, ProbeLink(server.url()))
        assert connection.status.wait_for({State.UP}, 10).state is State.UP
        outcome = send_in_thread(connection, "x" * BIG)
        error = outcome.get(timeout=20)
        assert isinstance(error, Transient)
        assert "timed out" in str(error) or "aborted" in str(error)
        assert wait_until(lambda: server.connections == 2
                          and connection.status.value.state is State.UP, 20)
        assert connection.status.value.reconnects == 1


def test_the_keepalive_detects_a_dead_peer_while_a_send_is_blocked(
        started: List[Connection]) -> None:
    """The peer keeps the socket open and stops reading; the user's send stays blocked in
    the kernel; the keepalive (which never waits for the send) still declares it dead."""
    config = CONFIG.replace(dead_after=1.0, ping_interval=0.2)
    with HostileServer(upgrade_then(Peer.idle), rcvbuf=4096) as server:
        connection = start(started, ProbeLink(server.url()), config)
        assert connection.status.wait_for({State.UP}, 10).state is State.UP
        outcome = send_in_thread(connection, "x" * BIG)
        assert wait_until(lambda: server.connections >= 2, 20)
        assert isinstance(outcome.get(timeout=10), Transient)


def test_close_returns_within_its_timeout_while_a_send_is_blocked(
        started: List[Connection]) -> None:
    reading = threading.Event()

    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        peer.sock.recv(65536)           # the frame has started to arrive, then nothing more
        reading.set()
        peer.idle()
    config = CONFIG.replace(dead_after=60.0, ping_interval=30.0)
    with HostileServer(behaviour, rcvbuf=4096) as server:
        connection = Connection(ProbeLink(server.url()), config, "t")
        connection.start()
        assert connection.status.wait_for({State.UP}, 10).state is State.UP
        outcome = send_in_thread(connection, "x" * BIG)
        assert reading.wait(10)
        began = time.monotonic()
        assert connection.close(2.0)
        assert time.monotonic() - began < 2.0 + 1.0
        assert isinstance(outcome.get(timeout=5), Transient)
        assert connection.status.value.state is State.CLOSED


# ------------------------------------------------------------------ connect bounds (3, 4)

def test_a_trickled_upgrade_is_bounded_by_connect_timeout(started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        peer.trickle(peer.upgrade_response(), 0.5)
    config = CONFIG.replace(connect_timeout=1.0, initial_connect_budget=2.5)
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()), config)
        status = connection.status.wait_for({State.FAILED}, 20)
        assert status.state is State.FAILED
        assert "during the WebSocket upgrade" in reason(connection)
        assert "connect_timeout=1s" in reason(connection) or "budget" in reason(connection)
        assert server.url() in reason(connection)


def test_the_budget_bounds_an_attempt_in_progress(started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        peer.trickle(peer.upgrade_response(), 0.5)
    config = CONFIG.replace(connect_timeout=30.0, initial_connect_budget=1.5)
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()), config)
        began = time.monotonic()
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert time.monotonic() - began < 15       # not the 30 s connect_timeout
        assert "budget ran out" in reason(connection)


@pytest.mark.parametrize("stage", ["upgrade", "tcp"])
def test_close_during_a_stuck_connect_returns_at_once(stage: str) -> None:
    """``upgrade``: the server accepts TCP and never answers the upgrade; ``tcp``: the
    listener never accepts and its backlog is full, so the TCP connect itself hangs."""
    fillers: List[socket.socket] = []
    server = HostileServer(Peer.idle, backlog=0, accept=(stage == "upgrade"))
    try:
        if stage == "tcp":
            for _ in range(8):          # fill the accept queue; later SYNs are dropped
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", server.port))
                fillers.append(filler)
        connection = Connection(ProbeLink(server.url()), CONFIG.replace(connect_timeout=30.0,
                                initial_connect_budget=60.0), "t")
        connection.start()
        if stage == "upgrade":
            assert wait_until(lambda: server.connections == 1, 10)
        else:
            assert wait_until(lambda: connection._sock is not None, 10)
        began = time.monotonic()
        assert connection.close(3.0)
        assert time.monotonic() - began < 0.5 + 0.5      # 0.5 s, plus a loaded machine
        assert connection.status.value.state is State.CLOSED
    finally:
        for filler in fillers:
            filler.close()
        server.stop()


# ------------------------------------------------------------------ upgrade answers (5)

@pytest.mark.parametrize("status", [400, 404, 405, 200, 500, 301])
def test_a_wrong_url_fails_at_once_naming_status_and_url(
        status: int, started: List[Connection]) -> None:
    with HostileServer(lambda peer: peer.answer(status, headers=["Location: /elsewhere"])
                       ) as server:
        connection = start(started, ProbeLink(server.url()))
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert server.connections == 1
        text = reason(connection)
        assert server.url() in text and SECRET not in text
        if status != 301:
            assert f"HTTP {status}" in text
            assert isinstance(connection.failure, Fatal)
            assert connection.failure.http_status == status
        else:
            assert "redirect" in text


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_are_fatal(status: int, started: List[Connection]) -> None:
    with HostileServer(lambda peer: peer.answer(status)) as server:
        connection = start(started, ProbeLink(server.url()))
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert server.connections == 1
        assert f"credentials (HTTP {status})" in reason(connection)
        assert SECRET not in reason(connection)


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_upgrade_answers_are_retried(status: int, started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        if peer.server.connections <= 2:
            peer.answer(status)
        else:
            peer.upgrade()
            peer.drain()
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()))
        assert wait_until(lambda: connection.status.value.state is State.UP, 20)
        assert server.connections == 3


def test_retry_after_is_honoured(started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        if peer.server.connections == 1:
            peer.answer(503, headers=["Retry-After: 1"])
        else:
            peer.upgrade()
            peer.drain()
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()))
        assert wait_until(lambda: connection.status.value.state is State.UP, 20)
        assert server.times[1] - server.times[0] >= 0.9


def test_a_retry_after_beyond_the_budget_gives_up_at_once(started: List[Connection]) -> None:
    with HostileServer(lambda peer: peer.answer(503, headers=["Retry-After: 120"])) as server:
        connection = start(started, ProbeLink(server.url()),
                           CONFIG.replace(initial_connect_budget=5.0))
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert server.connections == 1
        assert "HTTP 503" in reason(connection) and "Retry-After 120s" in reason(connection)


# ------------------------------------------------------------------ close codes (6)

@pytest.mark.parametrize("code", [1003, 1007, 1008, 1009, 4000, 4321, 4999])
def test_fatal_close_codes_end_the_connection_naming_code_and_reason(
        code: int, started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        peer.send_close(code, "too much of it")
        peer.drain()
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()))
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert str(code) in reason(connection) and "too much of it" in reason(connection)
        assert isinstance(connection.failure, Fatal)
        assert connection.failure.close_code == code
        assert connection.failure.close_reason == "too much of it"
        assert server.connections == 1


@pytest.mark.parametrize("code", [1001, 1006, 1011, 1012, 1013])
def test_transient_close_codes_reconnect(code: int, started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        if peer.server.connections == 1:
            if code != 1006:            # 1006: the connection ends without a close frame
                peer.send_close(code, "later")
            return
        peer.drain()
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()))
        assert wait_until(lambda: server.connections == 2
                          and connection.status.value.state is State.UP, 20)
        assert connection.status.value.reconnects == 1


def test_a_transient_close_code_is_named_when_the_budget_runs_out(
        started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        peer.send_close(1013, "busy")
        peer.drain()
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()),
                           CONFIG.replace(reconnect_budget=1.0))
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert "gave up reconnecting" in reason(connection)
        assert "1013 (try again later): 'busy'" in reason(connection)
        assert server.connections >= 2


# ------------------------------------------------------------------ malformed frames (7)

def test_a_text_frame_that_is_not_utf8_is_skipped_in_the_read_loop(
        started: List[Connection], caplog: pytest.LogCaptureFixture) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        peer.send_raw_text(b"\xff")
        peer.send_text("after")
        peer.drain()
    caplog.set_level(logging.WARNING, logger="simsync")
    with HostileServer(behaviour) as server:
        link = ProbeLink(server.url())
        connection = start(started, link)
        assert link.frames.get(timeout=10) == "after"
        assert connection.status.value.state is State.UP
        assert server.connections == 1
    assert any("malformed" in r.getMessage() and "UTF-8" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


def test_a_text_frame_that_is_not_utf8_is_skipped_during_the_handshake(
        started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        assert peer.recv_text() == "hello"
        peer.send_raw_text(b"\xff")
        peer.send_text("ready")
        peer.drain()
    with HostileServer(behaviour) as server:
        link = ProbeLink(server.url(), greet=True)
        connection = start(started, link)
        assert connection.status.wait_for({State.UP}, 10).state is State.UP
        assert link.greeted == ["ready"]
        assert server.connections == 1


SESSION = "backtest_0199d3c2-5b1e-7a4c-9f1e-2b7c6d5e4f30"


def test_control_link_survives_bad_bytes_before_and_after_session_created(
        started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        assert "createBacktestSession" in peer.recv_text()
        peer.send_raw_text(b"\xff")
        peer.send_text(json.dumps({"method": "sessionCreated", "params": {
            "session_id": SESSION, "rpc_endpoint": f"/backtest/{SESSION}"}}))
        peer.send_raw_text(b"\xff\xfe")
        peer.send_text(json.dumps({"method": "slotNotification", "params": START}))
        peer.drain()
    events: queue.Queue[Any] = queue.Queue()
    with HostileServer(behaviour) as server:
        link = ControlLink(server.url(), None, CreateSessionParams(START, START + 5), CONFIG,
                           lambda event, seq=None: events.put(event))
        connection = start(started, link)
        assert isinstance(events.get(timeout=10), simsync.Slot)
        assert link.info is not None and link.info.session_id == SESSION
        assert connection.status.value.state is State.UP
        assert server.connections == 1


def test_pubsub_link_survives_bad_bytes_before_and_after_its_ack(
        started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        request = json.loads(peer.recv_text())
        peer.send_raw_text(b"\xff")
        peer.send_text(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": 5}))
        peer.send_raw_text(b"\xc3\x28")
        peer.send_text(json.dumps({"jsonrpc": "2.0", "method": "subscriptionComplete",
                                   "params": {"subscription": 5}}))
        peer.drain()
    finished = threading.Event()
    with HostileServer(behaviour) as server:
        spec = SubscriptionSpec("transactionSubscribe",
                                {"programIds": ["11111111111111111111111111111111"]})
        link = SubscriptionLink(f"http://127.0.0.1:{server.port}/backtest/{SESSION}", spec,
                                CONFIG, lambda event: None, finished.set, START,
                                lambda: START)
        connection = start(started, link)
        assert finished.wait(10)
        assert connection.status.wait_for({State.CLOSED}, 10).state is State.CLOSED
        assert connection.failure is None
        assert server.connections == 1


# ------------------------------------------------------------------ liveness (10)

def test_a_half_open_connection_is_detected_and_replaced(
        started: List[Connection], caplog: pytest.LogCaptureFixture) -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        if peer.server.connections == 1:
            peer.idle()
        else:
            peer.drain()
    caplog.set_level(logging.WARNING, logger="simsync")
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url()))
        assert wait_until(lambda: server.connections == 2
                          and connection.status.value.state is State.UP, 20)
    assert any("nothing received" in r.getMessage() for r in caplog.records)


def test_a_crash_in_the_keepalive_fails_the_connection_with_its_cause(
        started: List[Connection]) -> None:
    with HostileServer(upgrade_then(Peer.drain)) as server:
        connection = start(started, ProbeLink(server.url(), crash_keepalive=True))
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert "internal error in the probe keepalive" in reason(connection)
        assert "bug in the keepalive's link hook" in reason(connection)
        assert isinstance(connection.failure, RuntimeError)


# ------------------------------------------------------------------ issue 11 items 2 and 3

def test_tls_against_a_plain_server_fails_at_once_with_a_ws_hint(
        started: List[Connection]) -> None:
    def behaviour(peer: Peer) -> None:
        peer.sock.recv(4096)                                 # a TLS ClientHello
        peer.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with HostileServer(behaviour) as server:
        connection = start(started, ProbeLink(server.url("wss")))
        assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
        assert server.connections == 1
        assert "does not speak TLS" in reason(connection)
        assert server.url("ws") in reason(connection)


def test_a_bare_host_and_port_against_the_local_simulator_hints_at_ws(sim: Any) -> None:
    bare = sim.url.split("://", 1)[1].split("/", 1)[0]       # 127.0.0.1:PORT
    with pytest.raises(simsync.SessionCreateError, match="use ws://") as info:
        simsync.Client(bare, config=CONFIG).start_session(start_slot=START, end_slot=START)
    assert f"ws://{bare}/backtest" in str(info.value)


def test_the_first_connection_has_its_own_budget_and_names_url_and_cause(
        started: List[Connection], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="simsync")
    url = f"ws://127.0.0.1:{closed_port()}/backtest"
    connection = start(started, ProbeLink(url),
                       CONFIG.replace(initial_connect_budget=1.0, reconnect_budget=600.0))
    assert connection.status.wait_for({State.FAILED}, 20).state is State.FAILED
    text = reason(connection)
    assert f"could not connect to {url} within initial_connect_budget=1s" in text
    assert "last cause" in text and "refused" in text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"connecting to {url} failed (attempt 1)" in w and "refused" in w
               for w in warnings)


def test_start_session_against_a_closed_port_names_url_and_cause() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/backtest"
    config = CONFIG.replace(initial_connect_budget=1.0, reconnect_budget=600.0)
    with pytest.raises(simsync.SessionCreateError) as info:
        simsync.Client(url, api_key=SECRET, config=config).start_session(
            start_slot=START, end_slot=START)
    assert url in str(info.value) and "refused" in str(info.value)
    assert SECRET not in str(info.value)


# ------------------------------------------------------------------ what the user sees

def test_start_session_against_a_wrong_url_fails_at_once_naming_status_and_url() -> None:
    with HostileServer(lambda peer: peer.answer(404, "Not Found")) as server:
        with pytest.raises(simsync.SessionCreateError) as info:
            simsync.Client(server.url(), api_key=SECRET, config=CONFIG).start_session(
                start_slot=START, end_slot=START)
        assert server.connections == 1
    text = str(info.value)
    assert "HTTP 404 Not Found" in text and server.url() in text and SECRET not in text


def test_start_session_closed_with_a_fatal_code_names_code_and_reason() -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        peer.recv_text()                                    # createBacktestSession
        peer.send_close(1009, "step too large")
        peer.drain()
    with HostileServer(behaviour) as server:
        with pytest.raises(simsync.SessionCreateError) as info:
            simsync.Client(server.url(), config=CONFIG).start_session(start_slot=START,
                                                                      end_slot=START)
        assert server.connections == 1
    assert "1009 (message too big): 'step too large'" in str(info.value)
