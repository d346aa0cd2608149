"""The network fault proxy, on the wire: each fault measurably happens, switching while
connections are live works, and it carries the simsync client to the local simulator."""
from __future__ import annotations

import errno
import socket
import socketserver
import threading
import time
from typing import Iterator, List, Tuple

import pytest

import simsync
from simsync.localsim import LocalSimulator
from simsync.localsim.history import SYSTEM_PROGRAM_ID
from simsync.localsim.netproxy import FaultProxy
from simsync.localsim.testing import Control, method_of
from tests.leaks import wait_until
from tests.support import FAST, START, drive, slots

pytestmark = pytest.mark.timeout(60)
WAIT = 10.0
#: How long a negative check ("nothing arrives") watches the socket.
QUIET = 0.3


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; notes how each connection ended (``eof`` or ``reset``)."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.endings: List[str] = []
        self.received = 0
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="echo-server")

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self.server_address[:2]
        return str(host), int(port)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(WAIT)


class EchoHandler(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    self.server.endings.append("eof")
                    return
                self.server.received += len(data)
                sock.sendall(data)
        except ConnectionResetError:
            self.server.endings.append("reset")


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=echo.address) as running:
        yield running


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int, timeout: float = WAIT) -> List[bytes]:
    """The chunks ``recv`` returned until ``n`` bytes came."""
    sock.settimeout(timeout)
    chunks: List[bytes] = []
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise AssertionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return chunks


def quiet(sock: socket.socket) -> bool:
    """True when nothing (no byte and no FIN) arrives within ``QUIET`` seconds."""
    sock.settimeout(QUIET)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except socket.timeout:
        return True
    return False


def test_forwards_both_ways_and_records_each_connection(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 400            # 102,400 bytes
    with connect(proxy) as a, connect(proxy) as b:
        a.sendall(payload)
        assert b"".join(recv_exactly(a, len(payload))) == payload
        b.sendall(b"ping")
        assert b"".join(recv_exactly(b, 4)) == b"ping"
    assert wait_until(lambda: not proxy.open_connections(), WAIT)
    first, second = proxy.connections()
    assert (first.index, first.bytes_up, first.bytes_down) == (1, len(payload), len(payload))
    assert (second.index, second.bytes_up, second.bytes_down) == (2, 4, 4)
    assert first.reset is None and not first.open


def test_a_peer_fin_is_forwarded_as_a_fin(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"bye")
        assert b"".join(recv_exactly(sock, 3)) == b"bye"
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(WAIT)
        assert sock.recv(1) == b""               # the echo server saw EOF and closed
    assert wait_until(lambda: echo.endings == ["eof"], WAIT)


@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_latency_delays_each_direction(proxy: FaultProxy, direction: str) -> None:
    latency = 0.25
    proxy.set_latency(latency, direction)
    with connect(proxy) as sock:
        began = time.monotonic()
        sock.sendall(b"x" * 10)
        recv_exactly(sock, 10)
        elapsed = time.monotonic() - began
        assert elapsed >= latency * (2 if direction == "both" else 1)
        proxy.set_latency(0.0)                   # switched off on the live connection
        began = time.monotonic()
        sock.sendall(b"y")
        recv_exactly(sock, 1)
        assert time.monotonic() - began < elapsed


def test_bandwidth_cap_holds_the_rate_down(proxy: FaultProxy) -> None:
    rate = 200_000.0                             # bytes/s, both directions
    size = 100_000
    proxy.set_bandwidth(rate, "down")
    with connect(proxy) as sock:
        began = time.monotonic()
        sock.sendall(b"z" * size)
        recv_exactly(sock, size)
        elapsed = time.monotonic() - began
    measured = size / elapsed
    print(f"bandwidth cap {rate:.0f} B/s: measured {measured:.0f} B/s")
    assert measured <= rate * 1.25               # a cap: never (much) faster


def test_slicing_forwards_pieces_and_switches_off_live(proxy: FaultProxy) -> None:
    message = b"hello, sliced world"            # 19 bytes
    proxy.set_slicing(5, pause=30.0, direction="down")
    with connect(proxy) as sock:
        sock.sendall(message)
        assert b"".join(recv_exactly(sock, 5)) == message[:5]
        assert quiet(sock), "the next piece came before its pause"
        assert proxy.connections()[0].bytes_down == 5
        proxy.set_slicing(None)                  # the rest flows at once
        assert b"".join(recv_exactly(sock, len(message) - 5, timeout=5.0)) == message[5:]


def test_slicing_with_short_pauses_writes_every_piece_separately(proxy: FaultProxy) -> None:
    message = bytes(range(100))
    proxy.set_slicing(7, pause=0.005, direction="down")
    with connect(proxy) as sock:
        sock.sendall(message)
        chunks = recv_exactly(sock, len(message))
    assert b"".join(chunks) == message
    assert wait_until(lambda: proxy.connections()[0].bytes_down == 100, WAIT)
    assert proxy.connections()[0].writes_down >= 15          # ceil(100 / 7)
    assert max(len(c) for c in chunks) <= 7 * 4              # receiver may merge a few
    assert len(chunks) >= 4


@pytest.mark.parametrize("direction", ["up", "down"])
def test_blackhole_holds_bytes_without_closing(proxy: FaultProxy, echo: EchoServer,
                                               direction: str) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"before")
        recv_exactly(sock, 6)
        proxy.blackhole(direction)
        sock.sendall(b"held")
        assert quiet(sock), "bytes or a FIN crossed a blackhole"
        assert proxy.connections()[0].open
        assert echo.received == (6 if direction == "up" else 10)
        proxy.release()
        assert b"".join(recv_exactly(sock, 4)) == b"held"     # nothing was dropped


def test_blackhole_holds_a_fin_too(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        proxy.blackhole("up")
        sock.shutdown(socket.SHUT_WR)
        assert quiet(sock)
        assert echo.endings == []
        proxy.release()
        sock.settimeout(WAIT)
        assert sock.recv(1) == b""
    assert wait_until(lambda: echo.endings == ["eof"], WAIT)


def test_timed_blackhole_releases_itself(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        proxy.blackhole("both", duration=0.4)
        began = time.monotonic()
        sock.sendall(b"later")
        assert b"".join(recv_exactly(sock, 5)) == b"later"
        assert time.monotonic() - began >= 0.35


def test_reset_client_side_gives_econnreset(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"a")
        recv_exactly(sock, 1)
        assert proxy.reset(side="client") == 1
        sock.settimeout(WAIT)
        with pytest.raises(ConnectionResetError) as info:
            sock.recv(1)
        assert info.value.errno == errno.ECONNRESET
        # the upstream side stays open until the proxy closes
        assert echo.endings == []
        assert proxy.connections()[0].reset == "client"


def test_reset_upstream_side_resets_the_server(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"a")
        recv_exactly(sock, 1)
        proxy.reset(side="upstream")
        assert wait_until(lambda: echo.endings == ["reset"], WAIT)
        assert quiet(sock)                       # the client side is left open


def test_reset_only_the_kth_connection(proxy: FaultProxy) -> None:
    socks = [connect(proxy) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(b"q")
            recv_exactly(sock, 1)
        assert proxy.reset(side="both", connection=2) == 1
        socks[1].settimeout(WAIT)
        with pytest.raises(ConnectionResetError):
            socks[1].recv(1)
        for sock in (socks[0], socks[2]):
            sock.sendall(b"still")
            assert b"".join(recv_exactly(sock, 5)) == b"still"
        assert [c.reset for c in proxy.connections()] == [None, "both", None]
    finally:
        for sock in socks:
            sock.close()


def test_armed_reset_fires_mid_stream_after_n_bytes(proxy: FaultProxy) -> None:
    proxy.reset_after(10, side="client", direction="down")
    with connect(proxy) as sock:
        sock.sendall(b"0123456789abcdefghij")
        sock.settimeout(WAIT)
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                chunk = sock.recv(100)
                assert chunk, "a FIN instead of a reset"
                got += chunk
        assert got == b"0123456789"
    assert proxy.armed_resets() == 0


def test_upstream_down_resets_the_client() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))             # bound, never listening: refused, and the
        port = spare.getsockname()[1]            # port cannot be taken by anyone else
        with FaultProxy(upstream=("127.0.0.1", port)) as proxy:
            with pytest.raises(ConnectionResetError), connect(proxy) as sock:
                sock.settimeout(WAIT)           # reset at once, or on the first read
                sock.recv(1)
            assert wait_until(lambda: proxy.connections()
                              and proxy.connections()[0].upstream_failed, WAIT)


def test_url_rewrites_host_and_port(proxy: FaultProxy, echo: EchoServer) -> None:
    port = echo.address[1]
    assert proxy.url(f"ws://127.0.0.1:{port}/backtest") == \
        f"ws://127.0.0.1:{proxy.port}/backtest"
    assert proxy.url(f"http://localhost:{port}/backtest/abc?x=1") == \
        f"http://127.0.0.1:{proxy.port}/backtest/abc?x=1"
    with pytest.raises(ValueError):
        proxy.url("ws://127.0.0.1:1/backtest")


def test_setters_reject_nonsense(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        proxy.set_latency(-1)
    with pytest.raises(ValueError):
        proxy.set_bandwidth(0)
    with pytest.raises(ValueError):
        proxy.set_slicing(0)
    with pytest.raises(ValueError):
        proxy.blackhole("sideways")
    with pytest.raises(ValueError):
        proxy.reset(side="middle")


# ------------------------------------------------------------- through the local simulator

@pytest.fixture
def sim() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=100, bundles=2) as server:
        yield server


@pytest.fixture
def sim_proxy(sim: LocalSimulator) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=("127.0.0.1", sim.port)) as running:
        yield running


def test_websocket_frames_survive_one_byte_slicing(sim: LocalSimulator,
                                                   sim_proxy: FaultProxy) -> None:
    sim_proxy.set_slicing(1)
    control = Control(sim_proxy.url(sim.url))
    try:
        session_id = control.create(START, START + 5)
        frames = control.step()
        assert method_of(frames[-1]) == "readyForContinue"
    finally:
        control.close()
    assert sim_proxy.connections()[0].writes_down == sim_proxy.connections()[0].bytes_down
    assert session_id.startswith("backtest_")


def test_client_control_rpc_and_pubsub_all_go_through_the_proxy(
        sim: LocalSimulator, sim_proxy: FaultProxy) -> None:
    client = simsync.Client(sim_proxy.url(sim.url), config=FAST)
    with client.start_session(start_slot=START, end_slot=START + 6,
                              disconnect_timeout_secs=30) as session:
        session.subscribe_transactions([SYSTEM_PROGRAM_ID])
        assert session.rpc.get_slot() == START
        events = drive(session)
        session_id = session.info.session_id
    netloc = f"127.0.0.1:{sim_proxy.port}"
    seen = sim.requests_seen()
    assert {r.channel for r in seen} >= {"control", "pubsub", "rpc"}
    assert {r.host for r in seen} == {netloc}     # the client resolved every URL via the proxy
    assert len(sim_proxy.connections()) == sim.stats.connections_accepted + sum(
        1 for r in seen if r.channel == "rpc")
    expected = [t.signature for t in sim.executed(session_id)
                if SYSTEM_PROGRAM_ID in t.program_ids]
    assert [e.signature for e in events if isinstance(e, simsync.Transaction)] == expected
    assert slots(events) == sim.produced_slots(START, START + 6)


def test_client_recovers_from_a_proxy_reset_and_a_timed_blackhole(
        sim: LocalSimulator, sim_proxy: FaultProxy) -> None:
    client = simsync.Client(sim_proxy.url(sim.url), config=FAST)
    end = START + 12
    seen: List[object] = []

    def at(event: object) -> None:
        if isinstance(event, simsync.ReadyForContinue):
            pauses = sum(1 for e in seen if isinstance(e, simsync.ReadyForContinue))
            if pauses == 2:
                sim_proxy.reset(side="client")
            elif pauses == 4:
                sim_proxy.blackhole("down", duration=FAST.dead_after * 2)
        seen.append(event)

    with client.start_session(start_slot=START, end_slot=end,
                              disconnect_timeout_secs=30) as session:
        events = drive(session, on_event=at)
    assert slots(events) == sim.produced_slots(START, end)
    assert isinstance(events[-1], simsync.Completed)
    assert sum(1 for c in sim_proxy.connections() if c.reset) == 1
    assert sim.stats.control_connections >= 3
