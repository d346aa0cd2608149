"""The simulator's security knobs: TLS (``ssl_context``), the request record
(``requests_seen``) and an ``rpc_endpoint`` on another host name (``rpc_endpoint_host``)."""
from __future__ import annotations

import json
import ssl
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
import requests
import trustme
import websocket

from simsync.localsim import LocalSimulator
from simsync.localsim.testing import START, TIMEOUT, http_get

pytestmark = pytest.mark.timeout(60)

MakeSim = Callable[..., LocalSimulator]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[ssl.SSLContext, str]]:
    """A server context with a certificate for 127.0.0.1 and localhost, and its CA's PEM."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    yield server, str(pem)


def ws_connect(url: str, ca: str = "", header: Any = None) -> websocket.WebSocket:
    sslopt = {"ca_certs": ca} if ca else {}
    return websocket.create_connection(url, timeout=TIMEOUT, sslopt=sslopt, header=header or [])


def recv_json(ws: websocket.WebSocket) -> Dict[str, Any]:
    return dict(json.loads(ws.recv()))


def create(ws: websocket.WebSocket, **extra: Any) -> Dict[str, Any]:
    """Create a session; return the ``sessionCreated`` params (after its first pause)."""
    ws.send(json.dumps({"method": "createBacktestSession",
                        "params": {"startSlot": START, "endSlot": START + 5, **extra}}))
    created = recv_json(ws)
    assert created["method"] == "sessionCreated", created
    while recv_json(ws).get("method") != "readyForContinue":
        pass
    return dict(created["params"])


def post_rpc(url: str, verify: Any = True) -> Dict[str, Any]:
    with requests.Session() as http:
        reply = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
                          timeout=TIMEOUT, verify=verify, headers={"Connection": "close"})
        return dict(reply.json())


def close(ws: websocket.WebSocket) -> None:
    ws.close()
    ws.shutdown()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------------- TLS

def test_ssl_context_serves_wss_and_https_end_to_end(make_sim: MakeSim,
                                                     tls: Tuple[ssl.SSLContext, str]) -> None:
    context, ca = tls
    sim = make_sim(ssl_context=context)
    assert sim.url == f"wss://127.0.0.1:{sim.port}/backtest"
    assert sim.http_url == f"https://127.0.0.1:{sim.port}"
    assert http_get(sim.http_url + "/health", verify=ca).text == "ok"
    control = ws_connect(sim.url, ca)
    try:
        params = create(control)
        assert params["rpc_endpoint"] == f"/backtest/{params['session_id']}"
        endpoint = sim.http_url + params["rpc_endpoint"]
        assert post_rpc(endpoint, verify=ca)["result"] >= START
        pubsub = ws_connect(endpoint.replace("https://", "wss://"), ca)
        try:
            pubsub.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "slotSubscribe"}))
            assert isinstance(recv_json(pubsub)["result"], int)
        finally:
            close(pubsub)
    finally:
        close(control)


def test_tls_simulator_refuses_unverified_and_plaintext_clients(
        make_sim: MakeSim, tls: Tuple[ssl.SSLContext, str]) -> None:
    sim = make_sim(ssl_context=tls[0])
    with pytest.raises(ssl.SSLCertVerificationError):
        ws_connect(sim.url)                          # the default trust store lacks the CA
    with pytest.raises(requests.exceptions.SSLError):
        http_get(sim.http_url + "/health")
    with pytest.raises((websocket.WebSocketException, OSError)):
        ws_connect(sim.url.replace("wss://", "ws://"))  # plaintext on the TLS port


def test_plain_simulator_is_unchanged(make_sim: MakeSim) -> None:
    sim = make_sim()
    assert sim.url.startswith("ws://") and sim.http_url.startswith("http://")
    assert http_get(sim.http_url + "/health").text == "ok"


# ----------------------------------------------------------------------- request record

def test_requests_seen_records_names_and_key_presence_never_values(make_sim: MakeSim) -> None:
    secret = "knob-secret-key-42"
    sim = make_sim(api_key=secret)
    control = ws_connect(sim.url, header=[f"X-API-Key: {secret}", "X-Trace: t-1"])
    try:
        params = create(control)
        endpoint = sim.http_url + params["rpc_endpoint"]
        post_rpc(endpoint)
        pubsub = ws_connect(endpoint.replace("http://", "ws://"))
        close(pubsub)
    finally:
        close(control)
    assert http_get(sim.http_url + "/available-ranges",
                    headers={"X-API-Key": secret}).status_code == 200
    assert http_get(sim.http_url + "/health").status_code == 200
    with pytest.raises(websocket.WebSocketBadStatusException):
        ws_connect(sim.url, header=["X-API-Key: wrong-key"])       # refused: still recorded

    seen = sim.requests_seen()
    assert [(r.channel, r.method, r.api_key_present, r.websocket) for r in seen] == [
        ("control", "GET", True, True),
        ("rpc", "POST", False, False),
        ("pubsub", "GET", False, True),
        ("ranges", "GET", True, False),
        ("other", "GET", False, False),
        ("control", "GET", True, True),
    ]
    first = seen[0]
    assert first.path == "/backtest" and first.host == f"127.0.0.1:{sim.port}"
    assert {"X-API-Key", "X-Trace", "Upgrade"} <= set(first.header_names)
    assert seen[1].path == params["rpc_endpoint"]
    everything = repr(seen)
    assert secret not in everything and "wrong-key" not in everything and "t-1" not in everything
    sim.clear_requests_seen()
    assert sim.requests_seen() == []


# ------------------------------------------------------------------- foreign rpc host

def test_rpc_endpoint_host_makes_an_absolute_endpoint_on_that_host(make_sim: MakeSim) -> None:
    sim = make_sim(rpc_endpoint_host="localhost")
    control = ws_connect(sim.url)                    # ws://127.0.0.1:PORT/backtest
    try:
        params = create(control, disconnectTimeoutSecs=30)
    finally:
        close(control)
    session_id = params["session_id"]
    endpoint = f"http://localhost:{sim.port}/backtest/{session_id}"
    assert params["rpc_endpoint"] == endpoint
    assert post_rpc(endpoint)["result"] >= START
    assert sim.requests_seen()[-1].host == f"localhost:{sim.port}"

    again = ws_connect(sim.url)                      # a re-attach names the same endpoint
    try:
        again.send(json.dumps({"method": "attachBacktestSession",
                               "params": {"session_id": session_id, "last_sequence": None}}))
        attached = recv_json(again)
        assert attached["method"] == "sessionAttached"
        assert attached["params"]["rpc_endpoint"] == endpoint
    finally:
        close(again)


def test_rpc_endpoint_host_in_parallel_and_with_tls(make_sim: MakeSim,
                                                    tls: Tuple[ssl.SSLContext, str]) -> None:
    sim = make_sim(rpc_endpoint_host="localhost", ssl_context=tls[0], bundle_size=5)
    control = ws_connect(sim.url, tls[1])
    try:
        control.send(json.dumps({"method": "createBacktestSession", "params": {
            "startSlot": START, "endSlot": START + 9, "parallel": True}}))
        created = []
        while True:
            frame = recv_json(control)
            if frame["method"] == "sessionsCreatedV2":
                break
            if frame["method"] == "sessionCreated":
                created.append(frame["params"])
    finally:
        close(control)
    assert len(created) == 2
    for params in created:
        assert params["rpc_endpoint"] == (f"https://localhost:{sim.port}/backtest/"
                                          f"{params['session_id']}")


def test_without_rpc_endpoint_host_the_endpoint_stays_a_path(make_sim: MakeSim) -> None:
    sim = make_sim()
    control = ws_connect(sim.url)
    try:
        params = create(control)
    finally:
        close(control)
    assert params["rpc_endpoint"] == f"/backtest/{params['session_id']}"
