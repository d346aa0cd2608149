"""``rpc_timeout`` bounds a whole HTTP call (issue 14 case 8) and ``Client.available_ranges``
retries transient failures within ``initial_connect_budget`` (issue 11 item 2), against
hostile HTTP servers on loopback (tests/hostile.py)."""
from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import pytest

import simsync
from simsync.config import ClientConfig
from simsync.errors import RpcError
from simsync.rpc import SessionRpc
from tests.hostile import HostileServer, Peer

pytestmark = pytest.mark.timeout(60)

CONFIG = ClientConfig(rpc_timeout=1.0, initial_connect_budget=5.0, backoff_initial=0.01,
                      backoff_max=0.1)
RANGES = (Path(__file__).parent / "golden" / "available-ranges.json").read_bytes()
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "result": 400000001}).encode()


def headers_for(body: bytes, status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()


def rpc_call(server: HostileServer) -> RpcError:
    rpc = SessionRpc(f"http://127.0.0.1:{server.port}/backtest/s", CONFIG)
    try:
        began = time.monotonic()
        with pytest.raises(RpcError) as info:
            rpc.get_slot()
        assert time.monotonic() - began < 1.0 + 4.0      # not a byte-paced 13 s
        return info.value
    finally:
        rpc.close()


def test_a_trickled_body_is_cut_at_rpc_timeout() -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        peer.sock.sendall(headers_for(BODY))
        peer.trickle(BODY, 0.3)
    with HostileServer(behaviour) as server:
        error = rpc_call(server)
    assert "rpc_timeout=1s ran out while reading the response body" in str(error)


def test_trickled_headers_are_cut_at_rpc_timeout() -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        peer.trickle(headers_for(BODY) + BODY, 0.3)
    with HostileServer(behaviour) as server:
        error = rpc_call(server)
    assert "rpc_timeout=1s ran out while waiting for the response headers" in str(error)


def test_a_silent_server_is_cut_at_rpc_timeout() -> None:
    with HostileServer(Peer.idle) as server:
        error = rpc_call(server)
    assert "rpc_timeout=1s ran out while waiting for the response headers" in str(error)


def test_a_prompt_answer_still_works_after_a_cut_call() -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        if peer.server.connections == 1:
            peer.idle()
        else:
            peer.sock.sendall(headers_for(BODY) + BODY)
            peer.drain()
    with HostileServer(behaviour) as server:
        rpc_call(server)
        rpc = SessionRpc(f"http://127.0.0.1:{server.port}/backtest/s", CONFIG)
        try:
            assert rpc.get_slot() == 400000001
        finally:
            rpc.close()


# ------------------------------------------------------------------ available_ranges

def test_available_ranges_retries_transient_answers(caplog: pytest.LogCaptureFixture) -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        if peer.server.connections <= 2:
            peer.sock.sendall(headers_for(b"", "503 Busy"))
        else:
            peer.sock.sendall(headers_for(RANGES) + RANGES)
        peer.drain()
    caplog.set_level(logging.INFO, logger="simsync")
    with HostileServer(behaviour) as server:
        ranges = simsync.Client(server.url(), config=CONFIG).available_ranges()
        assert ranges and ranges[0].bundle_start_slot == 400000000
        assert server.connections == 3
    retries = [r.levelno for r in caplog.records
               if "failed (attempt" in r.getMessage() and "HTTP 503" in r.getMessage()]
    assert retries == [logging.WARNING, logging.INFO]   # one WARNING, then INFO (#27.4)


def test_available_ranges_gives_up_naming_url_and_cause() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = CONFIG.replace(initial_connect_budget=1.0)
    with pytest.raises(RpcError) as info:
        simsync.Client(f"ws://127.0.0.1:{port}", api_key="sk-never-shown",
                       config=config).available_ranges()
    text = str(info.value)
    assert f"http://127.0.0.1:{port}/available-ranges" in text
    assert "initial_connect_budget=1s" in text and "ConnectionError" in text
    assert "sk-never-shown" not in text


def test_available_ranges_fails_at_once_on_a_wrong_url() -> None:
    def behaviour(peer: Peer) -> None:
        peer.read_request()
        peer.sock.sendall(headers_for(b"", "404 Not Found"))
        peer.drain()
    with HostileServer(behaviour) as server:
        with pytest.raises(RpcError, match="HTTP 404") as info:
            simsync.Client(server.url(), config=CONFIG).available_ranges()
        assert info.value.http_status == 404
        assert server.connections == 1
