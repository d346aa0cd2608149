"""Network edges (issue 23; issue 27 item 4): typed failures, hostile JSON-RPC bodies, rate
limits, handshake violations, the first connect's budget, one trust store, one proxy policy
and name resolution inside the deadline, against real sockets on loopback: the local
simulator and its fault plan, hostile servers (tests/hostile.py), a local TLS server with a
test CA (trustme), a small HTTP CONNECT proxy written here, a resolver slowed in-process."""
from __future__ import annotations

import contextlib
import email.utils
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Union
from urllib.parse import urlsplit

import pytest

import simsync
from simsync.errors import RpcError
from simsync.localsim import SYSTEM_PROGRAM_ID, Fault, FaultPlan, LocalSimulator
from simsync.rpc import SessionRpc
from simsync.transport import Channel, Connection, Fatal, Link, State
from tests.hostile import HostileServer, Peer
from tests.support import FAST, START, client, closed_port, drive

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
    with HostileServer(lambda peer: peer.answer(status, "Refused")) as server, \
            pytest.raises(simsync.SessionCreateError) as info:
        simsync.Client(server.url(), config=FAST).start_session(start_slot=START, end_slot=END)
    assert info.value.http_status == status
    assert info.value.close_code is None


def test_a_fatal_close_on_create_carries_code_and_reason() -> None:
    def behaviour(peer: Peer) -> None:
        peer.upgrade()
        peer.recv_text()                                    # createBacktestSession
        peer.send_close(4003, "key revoked")
        peer.drain()
    with HostileServer(behaviour) as server, pytest.raises(simsync.SessionCreateError) as info:
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
    with LocalSimulator(bundle_size=100, bundles=4, faults=plan) as server, \
            client(server).start_session(start_slot=START, end_slot=END) as session, \
            pytest.raises(simsync.SubscriptionFailed) as info:
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


# ------------------------------------------------------------------ 23.6 hostile JSON on RPC

RPC_CONFIG = simsync.ClientConfig(rpc_timeout=5.0, backoff_initial=0.01, backoff_max=0.1)


def http_answer(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}"
            "Connection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def serve(answers: List[bytes]) -> HostileServer:
    """An HTTP server answering its k-th connection with ``answers[k]`` (the last repeats)."""
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        peer.sock.sendall(answers[min(peer.server.connections, len(answers)) - 1])
        peer.sock.shutdown(socket.SHUT_WR)
        peer.drain()
    return HostileServer(behaviour)


def rpc_for(server: HostileServer, config: simsync.ClientConfig = RPC_CONFIG) -> SessionRpc:
    return SessionRpc(f"http://127.0.0.1:{server.port}/backtest/s", config)


def reply(result: str) -> bytes:
    return ('{"jsonrpc":"2.0","id":1,"result":' + result + "}").encode()


HOSTILE_BODIES = {
    "nested": b"[" * 200_000 + b"]" * 200_000,
    "nested-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "nested-result": reply("[" * 990 + "]" * 990),
    "long-int": reply("9" * 50_000),
    "not-utf8": b'{"jsonrpc":"2.0","id":1,"result":"\xff\xfe"}',
    "nan": reply("NaN"),
    "truncated": b'{"jsonrpc":"2.0","id":1,"res',
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_an_undecodable_rpc_body_is_an_rpc_error_naming_the_method(name: str) -> None:
    with serve([http_answer(HOSTILE_BODIES[name])]) as server, rpc_for(server) as rpc, \
            pytest.raises(RpcError) as info:
        rpc.get_slot()
    assert str(info.value).startswith("getSlot: "), str(info.value)
    assert len(str(info.value)) < 600


def test_a_nested_reply_names_why() -> None:
    with serve([http_answer(HOSTILE_BODIES["nested"])]) as server, rpc_for(server) as rpc, \
            pytest.raises(RpcError, match="getSlot: response is not JSON .nested too deeply"):
        rpc.get_slot()


@pytest.mark.parametrize("raw", [b"HTTP/1.1 abc\r\n\r\n", b"SMTP ready\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_a_server_that_breaks_http_is_an_rpc_error(raw: bytes) -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        peer.sock.sendall(raw)
        peer.sock.shutdown(socket.SHUT_WR)
        peer.drain()
    with HostileServer(behaviour) as server, rpc_for(server) as rpc, \
            pytest.raises(RpcError, match="^getSlot: "):
        rpc.get_slot()


# ------------------------------------------------------------------ 23.7 rate limits

def test_a_429_carries_retry_after_in_seconds() -> None:
    answer = http_answer(b"slow down", "429 Too Many Requests", "Retry-After: 7\r\n")
    with serve([answer]) as server, rpc_for(server) as rpc, pytest.raises(RpcError) as info:
        rpc.get_slot()
    assert info.value.http_status == 429 and info.value.retry_after == 7.0
    assert "Retry-After 7s" in str(info.value)


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    answer = http_answer(b"", "503 Busy", f"Retry-After: {when}\r\n")
    with serve([answer]) as server, rpc_for(server) as rpc, pytest.raises(RpcError) as info:
        rpc.get_balance("11111111111111111111111111111111")
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


def test_retries_are_off_by_default() -> None:
    busy = http_answer(b"", "503 Busy", "Retry-After: 0\r\n")
    with serve([busy, http_answer(reply("5"))]) as server, rpc_for(server) as rpc:
        with pytest.raises(RpcError):
            rpc.get_slot()
        assert server.connections == 1


def test_a_read_is_retried_honouring_retry_after() -> None:
    busy = http_answer(b"", "429 Too Many Requests", "Retry-After: 1\r\n")
    config = RPC_CONFIG.replace(rpc_retries=2)
    with serve([busy, http_answer(reply("5"))]) as server, rpc_for(server, config) as rpc:
        assert rpc.get_slot() == 5
        assert server.connections == 2
        assert server.times[1] - server.times[0] >= 0.9


def test_a_read_gives_up_after_rpc_retries() -> None:
    busy = http_answer(b"", "503 Busy", "Retry-After: 0\r\n")
    config = RPC_CONFIG.replace(rpc_retries=2)
    with serve([busy]) as server, rpc_for(server, config) as rpc:
        with pytest.raises(RpcError) as info:
            rpc.simulate_transaction(b"\x01" * 64)
        assert server.connections == 3
    assert info.value.http_status == 503


def test_a_retry_after_beyond_rpc_timeout_is_not_waited_for() -> None:
    busy = http_answer(b"", "429 Too Many Requests", "Retry-After: 600\r\n")
    config = RPC_CONFIG.replace(rpc_retries=3)
    with serve([busy]) as server, rpc_for(server, config) as rpc:
        began = time.monotonic()
        with pytest.raises(RpcError) as info:
            rpc.get_slot()
        assert time.monotonic() - began < 5.0
        assert server.connections == 1
    assert info.value.retry_after == 600.0


@pytest.mark.parametrize("write", ["send_transaction", "modify_accounts", "requestAirdrop"])
def test_writes_are_never_retried(write: str) -> None:
    busy = http_answer(b"", "503 Busy", "Retry-After: 0\r\n")
    config = RPC_CONFIG.replace(rpc_retries=3)
    with serve([busy, http_answer(reply('"x"'))]) as server, rpc_for(server, config) as rpc:
        with pytest.raises(RpcError):
            if write == "send_transaction":
                rpc.send_transaction(b"\x01" * 64)
            elif write == "modify_accounts":
                rpc.modify_accounts({})
            else:
                rpc.call(write, ["11111111111111111111111111111111", 1])
        assert server.connections == 1


# ------------------------------------------------------------------ 23.4 handshake violations

class QuietLink(Link):
    """A link with no handshake of its own: up once upgraded."""

    name = "quiet"

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url

    def handshake(self, channel: Channel, attempt: int) -> None:
        pass

    def on_frame(self, data: Union[str, bytes]) -> None:
        pass


WS_CONFIG = simsync.ClientConfig(connect_timeout=2.0, ping_interval=0.3, dead_after=1.5,
                                 backoff_initial=0.01, backoff_max=0.1, reconnect_budget=60.0,
                                 stable_after=60.0, close_timeout=3.0)
VIOLATIONS = {
    "extension": lambda peer: peer.upgrade_response().replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
    "subprotocol": lambda peer: peer.upgrade_response().replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n"),
    "bad-accept": lambda peer: peer.upgrade_response().replace(
        peer.accept_key().encode(), b"dGhlIHNhbXBsZSBub25jZQ=="),
}
REASONS = {"extension": "permessage-deflate", "subprotocol": "a subprotocol",
           "bad-accept": "Sec-WebSocket-Accept"}


@pytest.mark.parametrize("reconnect", [False, True], ids=["first", "reconnect"])
@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_a_handshake_violation_fails_at_once(violation: str, reconnect: bool) -> None:
    def behaviour(peer: Peer) -> None:
        if reconnect and peer.server.connections == 1:
            peer.upgrade()
            peer.send_frame(0x8, b"")        # close without a code: transient, reconnect
            peer.drain()
            return
        peer.read_request()
        peer.sock.sendall(VIOLATIONS[violation](peer))
        peer.drain()
    with HostileServer(behaviour) as server:
        connection = Connection(QuietLink(server.url()), WS_CONFIG, "t")
        connection.start()
        try:
            began = time.monotonic()
            status = connection.status.wait_for({State.FAILED}, 30)
            assert status.state is State.FAILED, status
            assert time.monotonic() - began < 10
            assert server.connections == (2 if reconnect else 1)
            assert isinstance(connection.failure, Fatal)
            assert REASONS[violation] in str(status.reason), status.reason
        finally:
            assert connection.close(5)


# ------------------------------------------------------------------ 27.4 the first connect

def test_a_dead_port_fails_within_seconds_by_default_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="simsync")
    url = f"ws://127.0.0.1:{closed_port()}/backtest"
    began = time.monotonic()
    with pytest.raises(simsync.SessionCreateError) as info:
        simsync.Client(url).start_session(start_slot=START, end_slot=END)
    elapsed = time.monotonic() - began
    assert elapsed < 5.0 + 5.0, elapsed             # the default budget (5 s) plus slack
    assert url in str(info.value) and "refused" in str(info.value)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    retries = [r for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert len(retries) > 1                          # the retries are there, at INFO


def test_an_unknown_host_fails_within_seconds_by_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "sim.unknown.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    began = time.monotonic()
    with pytest.raises(simsync.SessionCreateError) as info:
        simsync.Client("ws://sim.unknown.test/backtest").start_session(start_slot=START,
                                                                      end_slot=END)
    assert time.monotonic() - began < 5.0 + 5.0
    assert "sim.unknown.test" in str(info.value)
    assert "Name or service not known" in str(info.value)


# ------------------------------------------------------------------ 23.2 resolution in the deadline

SLOW_HOST = "slow.sim.test"


class SlowResolver:
    """``socket.getaddrinfo`` made slow in-process for ``SLOW_HOST`` (20 s, or until the test
    ends); every other name resolves as usual. ``entered`` is set once a lookup began."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == SLOW_HOST:
            self.entered.set()
            self.release.wait(20)
            return self._real("127.0.0.1", port, *args, **kwargs)
        return self._real(host, port, *args, **kwargs)


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowResolver]:
    resolver = SlowResolver(monkeypatch)
    yield resolver
    resolver.release.set()          # the abandoned lookup ends by itself (see netpolicy)


def test_rpc_timeout_bounds_name_resolution_and_names_it(slow: SlowResolver) -> None:
    config = RPC_CONFIG.replace(rpc_timeout=2.0)
    with SessionRpc(f"http://{SLOW_HOST}:{closed_port()}/backtest/s", config) as rpc:
        began = time.monotonic()
        with pytest.raises(RpcError) as info:
            rpc.get_slot()
        elapsed = time.monotonic() - began
    assert 1.5 < elapsed < 2.0 + 3.0, elapsed
    assert f"ran out while resolving {SLOW_HOST}" in str(info.value), str(info.value)


def test_connect_timeout_bounds_name_resolution_and_names_it(slow: SlowResolver) -> None:
    config = FAST.replace(connect_timeout=2.0, initial_connect_budget=2.0)
    began = time.monotonic()
    with pytest.raises(simsync.SessionCreateError) as info:
        simsync.Client(f"ws://{SLOW_HOST}:{closed_port()}/backtest",
                       config=config).start_session(start_slot=START, end_slot=END)
    elapsed = time.monotonic() - began
    assert elapsed < 2.0 + 3.0, elapsed
    assert f"resolving {SLOW_HOST}" in str(info.value), str(info.value)


def test_close_never_waits_on_a_lookup(slow: SlowResolver) -> None:
    connection = Connection(QuietLink(f"ws://{SLOW_HOST}:1/backtest"), WS_CONFIG, "t")
    connection.start()
    assert slow.entered.wait(10)
    began = time.monotonic()
    assert connection.close(2.0), "close() abandoned a thread"
    assert time.monotonic() - began < 2.0
    assert connection.status.value.state is State.CLOSED


# ------------------------------------------------------------------ 23.3 one proxy policy

class ConnectProxy:
    """A small HTTP proxy on 127.0.0.1 (one thread per connection): ``CONNECT host:port``
    tunnels, an absolute-form request (``POST http://host/path``) is forwarded; ``refuse``
    answers 403 to everything. ``seen`` lists each request line's method and target."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.seen: List[str] = []
        self._threads: List[threading.Thread] = []
        self._sockets: List[socket.socket] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="test-proxy")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client_sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._sockets.append(client_sock)
            self._spawn(self._serve, client_sock)

    def _serve(self, client_sock: socket.socket) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head:
                chunk = client_sock.recv(65536)
                if not chunk:
                    return
                head += chunk
            line, _, rest = head.partition(b"\r\n")
            method, target, version = line.decode("latin-1").split(" ", 2)
            self.seen.append(f"{method} {target}")
            if self.refuse:
                client_sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
                self._sockets.append(upstream)
                client_sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pending = b""
            else:
                parts = urlsplit(target)
                upstream = socket.create_connection((parts.hostname, parts.port or 80))
                self._sockets.append(upstream)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                pending = f"{method} {path} {version}\r\n".encode() + rest
            upstream.sendall(pending)
            self._spawn(self._pipe, upstream, client_sock)
            self._pipe(client_sock, upstream)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in list(self._threads):
            thread.join(5)


def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def run_through(server: LocalSimulator, config: simsync.ClientConfig) -> None:
    the_client = simsync.Client(server.url, config=config)
    assert the_client.available_ranges()
    with the_client.start_session(start_slot=START, end_slot=END) as session:
        session.subscribe_transactions([SYSTEM_PROGRAM_ID])
        assert session.rpc.get_slot() >= START
        drive(session)


@pytest.mark.parametrize("how", ["environment", "config"])
def test_every_channel_goes_through_the_proxy(sim: LocalSimulator, how: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_environment(monkeypatch)
    with ConnectProxy() as proxy:
        config = FAST
        if how == "environment":
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        else:
            config = FAST.replace(proxy=proxy.url)
        run_through(sim, config)
        seen = list(proxy.seen)
    host = f"127.0.0.1:{urlsplit(sim.url).port}"
    assert f"CONNECT {host}" in seen                       # control and PubSub tunnel
    assert sum(line == f"CONNECT {host}" for line in seen) >= 2
    assert any(line.startswith(f"GET http://{host}/available-ranges") for line in seen)
    assert any(line.startswith(f"POST http://{host}/backtest/") for line in seen)


def test_proxy_none_connects_directly_whatever_the_environment(
        sim: LocalSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_environment(monkeypatch)
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("HTTPS_PROXY", dead)
    run_through(sim, FAST.replace(proxy=None))


def test_no_proxy_is_honoured_on_every_channel(sim: LocalSimulator,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_environment(monkeypatch)
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    run_through(sim, FAST)


def test_a_refusing_proxy_fails_the_create_at_once_naming_the_proxy(
        sim: LocalSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_environment(monkeypatch)
    with ConnectProxy(refuse=True) as proxy:
        began = time.monotonic()
        with pytest.raises(simsync.SessionCreateError) as info:
            simsync.Client(sim.url, config=FAST.replace(proxy=proxy.url)).start_session(
                start_slot=START, end_slot=END)
        assert time.monotonic() - began < 3.0
        assert len(proxy.seen) == 1                            # not retried
    text = str(info.value)
    assert proxy.url in text and "403" in text, text
    assert "the server at" not in text


def test_a_dead_proxy_fails_http_at_once_naming_the_proxy(
        sim: LocalSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_environment(monkeypatch)
    dead = f"http://127.0.0.1:{closed_port()}"
    config = FAST.replace(proxy=dead)
    began = time.monotonic()
    with pytest.raises(RpcError) as ranges:
        simsync.Client(sim.url, config=config).available_ranges()
    with SessionRpc(f"{sim.http_url}/backtest/s", config) as rpc, \
            pytest.raises(RpcError) as call:
        rpc.get_slot()
    with pytest.raises(RpcError) as usage:
        simsync.Client(sim.url, config=config).usage()
    assert time.monotonic() - began < 3.0
    for failure in (ranges.value, call.value, usage.value):
        assert dead in str(failure) and "proxy" in str(failure), str(failure)


def test_a_dead_proxy_fails_the_create_naming_the_proxy(
        sim: LocalSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy_environment(monkeypatch)
    dead = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(simsync.SessionCreateError) as info:
        simsync.Client(sim.url, config=FAST.replace(proxy=dead, initial_connect_budget=1.0)
                       ).start_session(start_slot=START, end_slot=END)
    assert f"the proxy {dead}" in str(info.value), str(info.value)


def test_the_cli_connect_timeout_bounds_a_dead_first_connect() -> None:
    simsync_command = Path(sys.executable).with_name("simsync")
    began = time.monotonic()
    done = subprocess.run([str(simsync_command), "ranges", "--url",
                           f"ws://127.0.0.1:{closed_port()}", "--connect-timeout", "1"],
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    assert "initial_connect_budget=1s" in done.stderr
    assert elapsed < 1.0 + 8.0, elapsed              # interpreter start-up on a loaded box
    assert done.stderr.count("WARNING") <= 1, done.stderr
