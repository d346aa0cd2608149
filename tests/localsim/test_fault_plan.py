"""Every fault of the plan, checked on the wire with raw clients (websocket-client, requests,
plain sockets; never simsync's client): the fault happened exactly as specified, on the
connection it names, and it is in the plan's record."""
from __future__ import annotations

import base64
import errno
import json
import socket
import threading
import time
from typing import Any, Dict, List, Optional

import base58
import pytest
import requests
import websocket
from solders.transaction import VersionedTransaction

from simsync.localsim import Fault, FaultPlan, LocalSimulator, parse_fault
from simsync.localsim.faults import ACTIONS, FATAL_ERRORS
from simsync.localsim.testing import START, Control, wait_for

pytestmark = pytest.mark.timeout(30)


def _create(c: Control, end: int = START + 10, window: int = 30) -> Dict[str, Any]:
    c.send("createBacktestSession", {"startSlot": START, "endSlot": end,
                                     "disconnectTimeoutSecs": window})
    return c.recv()


def _reset(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionResetError) or getattr(exc, "errno", None) == errno.ECONNRESET


def _read_error(c: Control, timeout: float = 10.0) -> Optional[BaseException]:
    """Read until the connection ends; the exception it ended with (None: a clean end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if c.recv_text(timeout) == "":
                return None
        except websocket.WebSocketConnectionClosedException:
            return None
        except OSError as exc:  # ConnectionResetError included
            return exc
    raise AssertionError("the connection did not end")


def _upgrade_request(port: int, path: str = "/backtest") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


# ----------------------------------------------------------------------------- spec parsing


def test_parse_fault_reads_every_field_type() -> None:
    fault = parse_fault("drop:after_frames=5,how=rst,on_connection=2,channel=pubsub")
    assert fault == Fault("drop", channel="pubsub", after_frames=5, how="rst", on_connection=2)
    assert parse_fault("refuse:status=429,retry_after=3").retry_after == 3
    assert parse_fault("heartbeat:interval_secs=0.5,timeout_secs=1").interval_secs == 0.5
    assert parse_fault("rpc_delay:delay_secs=1").channel == "rpc"  # the action's only channel
    for bad in ("nope", "drop:after_frames=x", "drop:colour=red", "drop:how=sideways",
                "close:close_code=1006", "refuse:status=1000", "fragment"):
        with pytest.raises(ValueError):
            parse_fault(bad)


# ----------------------------------------------------------------------------- breaks


def test_drop_with_rst_gives_econnreset(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("drop", after_frames=2, how="rst"))
    c = clients["control"](sim)
    _create(c)
    c.recv()
    exc = _read_error(c)
    assert exc is not None and _reset(exc), repr(exc)
    assert sim.faults.fired_on("drop") == [1]


def test_drop_with_fin_ends_cleanly(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("drop", after_frames=2))
    c = clients["control"](sim)
    _create(c)
    c.recv()
    assert _read_error(c) is None


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 1009, 1011, 4000, 4999])
def test_close_with_code_and_reason(sim: LocalSimulator, clients, code: int) -> None:
    sim.faults.add(Fault("close", after_frames=1, close_code=code, close_reason=f"bye {code}"))
    c = clients["control"](sim)
    _create(c)
    c.ws.settimeout(10)
    opcode, data = c.ws.recv_data(control_frame=True)
    while opcode != websocket.ABNF.OPCODE_CLOSE:
        opcode, data = c.ws.recv_data(control_frame=True)
    assert int.from_bytes(data[:2], "big") == code
    assert data[2:].decode() == f"bye {code}"


@pytest.mark.timeout(60)
def test_stop_reading_blocks_a_large_send_while_the_server_writes(sim: LocalSimulator,
                                                                  clients) -> None:
    sim.faults.add(Fault("stop_reading", at="after_session_created"))
    c = clients["control"](sim)
    assert _create(c)["method"] == "sessionCreated"
    assert c.until("readyForContinue")  # the server still writes after it stopped reading
    done = threading.Event()
    failed: List[BaseException] = []

    def big_send() -> None:
        try:
            c.ws.sock.settimeout(None)
            c.ws.send(json.dumps({"method": "continue", "params": {"x": "y" * (4 << 20)}}))
            done.set()
        except OSError as exc:
            failed.append(exc)

    sender = threading.Thread(target=big_send, name="big-send")
    sender.start()
    try:
        assert not done.wait(2.0), "a 4 MB send completed although the server stopped reading"
    finally:
        c.ws.sock.shutdown(socket.SHUT_RDWR)  # unblock the sender
        sender.join(10)
    assert not sender.is_alive() and not done.is_set()
    assert sim.faults.fired_on("stop_reading") == [1]


# ----------------------------------------------------------------------------- frames


def test_invalid_utf8_text_frame(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("invalid_utf8", after_frames=1))
    ws = websocket.create_connection(sim.url, timeout=10, skip_utf8_validation=True)
    try:
        ws.send(json.dumps({"method": "createBacktestSession",
                            "params": {"startSlot": START, "endSlot": START + 3}}))
        first = ws.recv_frame()
        assert json.loads(first.data)["method"] == "sessionCreated"
        bad = ws.recv_frame()
        assert bad.opcode == websocket.ABNF.OPCODE_TEXT and bad.fin == 1
        with pytest.raises(UnicodeDecodeError):
            bad.data.decode("utf-8")
    finally:
        ws.close()
        ws.shutdown()  # close() skips it after a server close


def test_binary_frames_carry_the_protocol(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("binary", after_frames=1))
    ws = websocket.create_connection(sim.url, timeout=10)
    try:
        ws.send(json.dumps({"method": "createBacktestSession",
                            "params": {"startSlot": START, "endSlot": START + 3}}))
        assert ws.recv_frame().opcode == websocket.ABNF.OPCODE_TEXT  # before the fault
        frames = [ws.recv_frame() for _ in range(3)]
        assert {f.opcode for f in frames} == {websocket.ABNF.OPCODE_BINARY}
        assert all("method" in json.loads(f.data.decode()) for f in frames)
    finally:
        ws.close()
        ws.shutdown()  # close() skips it after a server close


def test_oversize_frame_has_the_given_size(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("oversize", after_frames=1, size=3 << 20))
    c = clients["control"](sim)
    _create(c)
    big = c.recv_text()
    assert len(big.encode()) == 3 << 20
    assert json.loads(big)["method"] == "padding"
    assert c.recv()["method"] == "status"  # the protocol goes on after it


def test_fragmented_frames(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("fragment", size=7))
    ws = websocket.create_connection(sim.url, timeout=10)
    try:
        ws.send(json.dumps({"method": "createBacktestSession",
                            "params": {"startSlot": START, "endSlot": START + 3}}))
        pieces = [ws.recv_frame()]
        while not pieces[-1].fin:
            pieces.append(ws.recv_frame())
        assert len(pieces) > 2
        assert pieces[0].opcode == websocket.ABNF.OPCODE_TEXT
        assert {p.opcode for p in pieces[1:]} == {websocket.ABNF.OPCODE_CONT}
        assert all(len(p.data) <= 7 for p in pieces)
        assert json.loads(b"".join(p.data for p in pieces))["method"] == "sessionCreated"
    finally:
        ws.close()
        ws.shutdown()  # close() skips it after a server close


def test_duplicate_notifications(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("duplicate", channel="pubsub"))
    c = clients["control"](sim)
    sid = c.create(end=START + 4)
    p = clients["pubsub"](sim, sid)
    ack = p.subscribe("transactionSubscribe", {}, {})
    while c.step()[-1]["method"] != "completed":
        pass
    msgs = p.until_complete(ack["result"])
    notes = [json.dumps(m) for m in msgs if m.get("method") == "transactionNotification"]
    assert notes and notes[0::2] == notes[1::2]  # each one twice, back to back
    assert len(notes) == 2 * len(sim.executed(sid))


# ----------------------------------------------------------------------------- upgrade


@pytest.mark.parametrize("status", [200, 400, 404, 429, 502, 503])
def test_refuse_upgrade_with_status(sim: LocalSimulator, status: int) -> None:
    sim.faults.add(Fault("refuse", status=status, retry_after=7 if status == 429 else None))
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(sim.url, timeout=10)
    assert info.value.status_code == status
    headers = info.value.resp_headers or {}
    assert (headers.get("retry-after") == "7") == (status == 429)
    websocket.create_connection(sim.url, timeout=10).close()  # spent: the next one works


def test_silent_upgrade_never_answers(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("silent"))
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as sock:
        sock.sendall(_upgrade_request(sim.port))
        wait_for(lambda: sim.faults.fired_on("silent") == [1], what="the fault")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)


def test_trickled_upgrade_arrives_byte_by_byte(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("trickle_upgrade", interval_secs=0.01))
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as sock:
        sock.sendall(_upgrade_request(sim.port))
        chunks = []
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response  # RFC 6455
    assert response.endswith(b"\r\n\r\n")
    assert len(chunks) >= len(response) // 2  # one byte at a time (a few may coalesce)


def test_trickled_upgrade_outlasts_a_short_connect_timeout(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("trickle_upgrade", interval_secs=1.0))
    with pytest.raises((websocket.WebSocketTimeoutException, socket.timeout)):
        websocket.create_connection(sim.url, timeout=0.5)


# ----------------------------------------------------------------------------- K-th connection


@pytest.mark.parametrize("k", [1, 2, 3])
def test_fault_on_the_kth_connection_of_one_session(sim: LocalSimulator, clients,
                                                    k: int) -> None:
    """One session over three control connections (create, attach, attach); an RST drop
    after the first frame hits exactly the K-th."""
    sim.faults.add(Fault("drop", how="rst", after_frames=1, on_connection=k))
    ended: List[Optional[BaseException]] = []
    sid = ""
    for n in (1, 2, 3):
        c = clients["control"](sim)
        if n == 1:
            sid = _create(c)["params"]["session_id"]
        else:
            c.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
            assert c.recv()["method"] == "sessionAttached"
        if n == k:
            ended.append(_read_error(c))
        else:
            assert c.recv()  # a second frame: this connection was not broken
            c.close()
            wait_for(lambda sid=sid: not sim.session_info(sid)["attached"], what="detached")
    assert len(ended) == 1 and ended[0] is not None and _reset(ended[0])
    assert sim.faults.fired_on("drop") == [k]
    assert sim.faults.connections("control") == 3


def test_two_faults_a_drop_during_the_reattach_of_a_drop(sim: LocalSimulator,
                                                         clients) -> None:
    sim.faults.add(Fault("drop", after_frames=3, on_connection=1))
    sim.faults.add(Fault("drop", how="rst", at="after_session_attached", on_connection=2))
    c = clients["control"](sim)
    sid = _create(c)["params"]["session_id"]
    assert _read_error(c) is None
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c2.recv()["method"] == "sessionAttached"
    exc = _read_error(c2)
    assert exc is not None and _reset(exc)
    c3 = clients["control"](sim)
    c3.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c3.recv()["method"] == "sessionAttached"
    assert c3.until("readyForContinue")
    assert [(f.action, f.connection, f.trigger) for f in sim.faults.history] == [
        ("drop", 1, "after_frames=3"), ("drop", 2, "at=after_session_attached")]


# ----------------------------------------------------------------------------- session


def test_non_fatal_error_at_a_slot(sim: LocalSimulator, clients) -> None:
    slot = sim.produced_slots(START + 1, START + 10)[0]
    sim.faults.add(Fault("error", slot=slot))
    c = clients["control"](sim)
    c.create(end=START + 10)
    c.step()  # executes START
    frames = c.step()  # executes slot
    errors = [f for f in frames if f["method"] == "error"]
    assert errors == [{"method": "error",
                       "params": {"simulationError": {"error": "injected by the fault plan"}}}]
    assert frames[-1]["method"] == "readyForContinue"  # the step went on
    assert sim.faults.history[0].trigger == f"slot={slot}"


def test_fatal_error_at_a_slot_ends_the_session(sim: LocalSimulator, clients) -> None:
    assert "advanceSlotFailed" in FATAL_ERRORS
    sim.faults.add(Fault("error", slot=START, error="advanceSlotFailed"))
    c = clients["control"](sim)
    sid = c.create(end=START + 10)
    c.send("continue", {"advanceCount": 1})
    frames = c.until("error")
    assert frames[-1]["params"] == {"advanceSlotFailed": {"slot": START,
                                                          "error": "injected by the fault plan"}}
    wait_for(lambda: sim.session_info(sid)["state"] == "failed", what="failed")
    c.send("continue", {"advanceCount": 1})
    assert "invalidRequest" in c.recv()["params"]  # nothing more runs


def test_rejected_step_is_answered_with_the_error_then_the_pause(sim: LocalSimulator,
                                                                 clients) -> None:
    sim.faults.add(Fault("reject_step", step=2, error="invalidRequest"))
    c = clients["control"](sim)
    sid = c.create(end=START + 10)
    c.step()
    slot = sim.session_info(sid)["slot"]
    c.send("continue", {"advanceCount": 1})
    assert c.recv()["params"] == {"invalidRequest": {"error": "injected by the fault plan"}}
    assert c.recv()["method"] == "readyForContinue"  # the pause again
    assert sim.session_info(sid)["slot"] == slot  # nothing executed
    assert c.step()[-1]["method"] == "readyForContinue"  # step 3 runs


@pytest.mark.parametrize("mode,expected", [("default", True), ("never", False)])
def test_reannounce_rule_when_the_client_had_the_pause(sim: LocalSimulator, clients,
                                                       mode: str, expected: bool) -> None:
    if mode != "default":
        sim.faults.add(Fault("reannounce", mode=mode))
    c = clients["control"](sim)
    sid = c.create(end=START + 10, disconnectTimeoutSecs=30)
    last = c.frames[-1]["seqId"]  # the client had the pause
    c.close()
    wait_for(lambda: not sim.session_info(sid)["attached"], what="detached")
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": last})
    assert c2.recv()["method"] == "sessionAttached"
    c2.send("resumeAttachedSession")
    assert c2.recv() == {"method": "success"}
    c2.send("continue", {"advanceCount": 1})
    first = c2.recv()
    assert (first == {"seqId": last + 1, "method": "readyForContinue"}) == expected
    if not expected:
        assert first["method"] == "status"


@pytest.mark.parametrize("point", ["before_session_created", "before_session_attached"])
def test_slow_handshake_reply_after_the_request_was_processed(sim: LocalSimulator, clients,
                                                              point: str) -> None:
    c = clients["control"](sim)
    if point == "before_session_attached":
        sid = c.create(end=START + 5, disconnectTimeoutSecs=30)
        c.close()
        wait_for(lambda: not sim.session_info(sid)["attached"], what="detached")
    sim.faults.add(Fault("slow_reply", at=point, delay_secs=1.5))
    c2 = clients["control"](sim)
    if point == "before_session_created":
        c2.send("createBacktestSession", {"startSlot": START, "endSlot": START + 5})
        wait_for(lambda: sim.session_ids(), what="the session to exist")  # processed…
    else:
        c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
        wait_for(lambda: sim.session_info(sid)["attached"], what="attached")
    with pytest.raises(websocket.WebSocketTimeoutException):
        c2.recv(timeout=0.3)  # …but not answered yet
    reply = c2.recv(timeout=10)
    assert reply["method"] == ("sessionCreated" if point == "before_session_created"
                               else "sessionAttached")


def test_slow_subscribe_ack(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    sim.faults.add(Fault("slow_reply", channel="pubsub", at="before_subscribe_ack",
                         delay_secs=1.5))
    p = clients["pubsub"](sim, sid)
    p.ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "slotSubscribe", "params": []}))
    with pytest.raises(websocket.WebSocketTimeoutException):
        p.recv(timeout=0.3)
    assert p.recv()["result"] == 1


def test_expire_detach_destroys_the_session_at_the_drop(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("expire_detach"))
    c = clients["control"](sim)
    sid = c.create(end=START + 5, disconnectTimeoutSecs=600)
    c.close()
    wait_for(lambda: sid not in sim.session_ids(), what="the session to be destroyed")
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    assert c2.recv()["params"] == {"sessionNotFound": {"session_id": sid}}


# ----------------------------------------------------------------------------- liveness


@pytest.mark.timeout(20)
def test_heartbeat_drops_a_peer_that_does_not_answer(sim: LocalSimulator) -> None:
    interval, timeout = 0.3, 1.0
    sim.faults.add(Fault("heartbeat", interval_secs=interval, timeout_secs=timeout))
    ws = websocket.create_connection(sim.url, timeout=10)
    try:
        opened = time.monotonic()
        raw = b""
        while True:  # read the raw socket: websocket-client never sees (or answers) the ping
            chunk = ws.sock.recv(4096)
            if not chunk:
                break
            raw += chunk
        elapsed = time.monotonic() - opened
    finally:
        ws.close()
        ws.shutdown()  # close() skips it after a server close
    assert raw[:1] == b"\x89"  # a ping frame came first
    assert elapsed <= interval + timeout + 1.0
    assert [f.trigger for f in sim.faults.history] == ["open", "heartbeat timeout"]


@pytest.mark.timeout(20)
def test_heartbeat_keeps_a_peer_that_answers(sim: LocalSimulator) -> None:
    sim.faults.add(Fault("heartbeat", interval_secs=0.2, timeout_secs=0.5))
    ws = websocket.create_connection(sim.url, timeout=10)
    try:
        pings = 0
        while pings < 5:  # recv_data answers each ping with a pong
            opcode, _ = ws.recv_data(control_frame=True)
            pings += opcode == websocket.ABNF.OPCODE_PING
        assert ws.connected
    finally:
        ws.close()
        ws.shutdown()  # close() skips it after a server close
    assert "heartbeat timeout" not in [f.trigger for f in sim.faults.history]


# ----------------------------------------------------------------------------- data plane


def _all_transactions(sim: LocalSimulator, clients, config: Dict[str, Any],
                      end: int = START + 6) -> List[Dict[str, Any]]:
    c = clients["control"](sim)
    sid = c.create(end=end)
    p = clients["pubsub"](sim, sid)
    ack = p.subscribe("transactionSubscribe", {}, config)
    while c.step()[-1]["method"] != "completed":
        pass
    return [m["params"]["result"] for m in p.until_complete(ack["result"])
            if m.get("method") == "transactionNotification"]


@pytest.mark.parametrize("encoding", ["json", "jsonParsed", "base58", "base64", None])
def test_transaction_notification_forms(sim: LocalSimulator, clients,
                                        encoding: Optional[str]) -> None:
    config = {} if encoding is None else {"encoding": encoding}
    results = _all_transactions(sim, clients, config)
    assert results
    for result in results:
        assert "signature" not in result  # the standard form has no top-level signature
        tx = result["transaction"]
        if encoding in ("json", "jsonParsed"):
            assert set(tx) == {"signatures", "message"}
            keys = tx["message"]["accountKeys"]
            if encoding == "jsonParsed":
                assert set(keys[0]) == {"pubkey", "signer", "writable", "source"}
                assert keys[0]["signer"] and keys[0]["writable"]
                assert all("programId" in ix for ix in tx["message"]["instructions"])
            else:
                assert all(isinstance(k, str) for k in keys)
                assert "header" in tx["message"]
        else:
            data, form = tx
            assert form == (encoding or "base64")
            raw = base58.b58decode(data) if form == "base58" else base64.b64decode(data)
            VersionedTransaction.from_bytes(raw)


def test_every_encoding_names_the_same_signatures(sim: LocalSimulator, clients) -> None:
    def signatures(encoding: str) -> List[str]:
        out = []
        for result in _all_transactions(sim, clients, {"encoding": encoding}):
            tx = result["transaction"]
            if isinstance(tx, dict):
                out.append(tx["signatures"][0])
            else:
                raw = base58.b58decode(tx[0]) if tx[1] == "base58" else base64.b64decode(tx[0])
                out.append(str(VersionedTransaction.from_bytes(raw).signatures[0]))
        return out
    forms = {enc: signatures(enc) for enc in ("json", "jsonParsed", "base58", "base64")}
    assert forms["json"] and len(set(forms["json"])) == len(forms["json"])
    assert forms["json"] == forms["jsonParsed"] == forms["base58"] == forms["base64"]


def test_signature_field_setting_adds_the_legacy_field(sim: LocalSimulator, clients) -> None:
    sim.faults.add(Fault("signature_field"))
    results = _all_transactions(sim, clients, {"encoding": "json"})
    assert results and all(r["signature"] == r["transaction"]["signatures"][0] for r in results)


def test_replay_window_knob(make_sim, clients) -> None:
    sim = make_sim(faults=FaultPlan([Fault("replay_window", slots=3)]))
    c = clients["control"](sim)
    sid = c.create(end=START + 12)
    while c.step()[-1]["method"] != "completed":
        pass
    p2 = clients["pubsub"](sim, sid)
    ack2 = p2.subscribe("slotSubscribe", None, {"replayFromSlot": START})
    replayed = [m["params"]["result"]["slot"] for m in p2.until_complete(ack2["result"])
                if m.get("method") == "slotNotification"]
    assert replayed == sim.produced_slots(START, START + 12)[-3:]


def test_replay_window_default_is_100_slots(sim: LocalSimulator) -> None:
    assert FaultPlan().replay_slots() == 100


def test_late_notifications_come_after_the_control_pause(make_sim, clients) -> None:
    """With a 1 s slot delay the pause normally follows the slot's notifications by 1 s;
    held, they follow the pause, so the pause is already buffered when they arrive."""
    sim = make_sim(slot_delay=1.0)
    sim.faults.add(Fault("late_notifications", slot=START))
    c = clients["control"](sim)
    sid = c.create(end=START + 6)
    p = clients["pubsub"](sim, sid)
    assert p.subscribe("transactionSubscribe", {}, {})["result"] == 1
    c.send("continue", {"advanceCount": 1})
    first = p.recv()
    assert first["params"]["result"]["slot"] == START
    assert c.until("readyForContinue", timeout=0.3)  # already there: no waiting for it
    assert sim.faults.fired_on("late_notifications") == [None]


# ----------------------------------------------------------------------------- rpc


def _rpc_url(sim: LocalSimulator, clients) -> str:
    c = clients["control"](sim)
    return f"{sim.http_url}/backtest/{c.create(end=START + 3)}"


_SLOT = {"jsonrpc": "2.0", "id": 1, "method": "getSlot", "params": []}


def _post(url: str, timeout: Any = 10) -> requests.Response:
    with requests.Session() as http:
        return http.post(url, json=_SLOT, timeout=timeout, headers={"Connection": "close"})


def test_rpc_delay(sim: LocalSimulator, clients) -> None:
    url = _rpc_url(sim, clients)
    sim.faults.add(Fault("rpc_delay", delay_secs=2.0))
    with pytest.raises(requests.ReadTimeout):
        _post(url, timeout=(5, 0.3))
    assert _post(url).json()["result"] == START  # spent
    assert sim.faults.fired_on("rpc_delay") == [1]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_rpc_http_5xx(sim: LocalSimulator, clients, status: int) -> None:
    url = _rpc_url(sim, clients)
    sim.faults.add(Fault("rpc_status", status=status, on_connection=2))
    assert _post(url).status_code == 200
    assert _post(url).status_code == status
    assert _post(url).status_code == 200
    assert sim.faults.fired_on("rpc_status") == [2]


def test_rpc_non_json_body(sim: LocalSimulator, clients) -> None:
    url = _rpc_url(sim, clients)
    sim.faults.add(Fault("rpc_non_json"))
    resp = _post(url)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        json.loads(resp.text)


@pytest.mark.parametrize("part", ["headers", "body"])
def test_rpc_trickled_response(sim: LocalSimulator, clients, part: str) -> None:
    url = _rpc_url(sim, clients)
    sim.faults.add(Fault("rpc_trickle", part=part, interval_secs=0.005))
    body = json.dumps(_SLOT).encode()
    path = url.split(str(sim.port), 1)[1]
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{sim.port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(payload)["result"] == START
    trickled = len(head) if part == "headers" else len(payload)
    assert len(chunks) >= trickled // 2  # one byte at a time (a few may coalesce)


# ----------------------------------------------------------------------------- coverage


def test_every_action_has_a_wire_test_here() -> None:
    with open(__file__, encoding="utf-8") as source:
        text = source.read()
    missing = [a for a in ACTIONS if f'"{a}"' not in text and a not in (
        "stall", "malformed", "unknown_method", "delay")]  # covered in test_faults_http.py
    assert missing == []


# ----------------------------------------------------------------------------- named points


def test_point_mid_create_is_between_two_session_created(make_sim, clients) -> None:
    sim = make_sim(bundle_size=20, bundles=2)
    sim.faults.add(Fault("drop", at="mid_create"))
    c = clients["control"](sim)
    c.send("createBacktestSession", {"startSlot": START, "endSlot": START + 39,
                                     "parallel": True, "disconnectTimeoutSecs": 30})
    assert c.recv()["method"] == "sessionCreated"
    assert _read_error(c) is None  # the second sessionCreated never came
    assert len(sim.session_ids()) == 2  # both exist on the server


def test_point_after_resume_success(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 5, disconnectTimeoutSecs=30)
    c.close()
    wait_for(lambda: not sim.session_info(sid)["attached"], what="detached")
    sim.faults.add(Fault("drop", how="rst", at="after_resume_success"))
    c2 = clients["control"](sim)
    c2.send("attachBacktestSession", {"session_id": sid, "last_sequence": None})
    c2.until("readyForContinue")
    c2.send("resumeAttachedSession")
    assert c2.recv() == {"method": "success"}
    exc = _read_error(c2)
    assert exc is not None and _reset(exc)
    assert sim.faults.history[-1].trigger == "at=after_resume_success"


def test_point_after_subscribe_ack(sim: LocalSimulator, clients) -> None:
    c = clients["control"](sim)
    sid = c.create(end=START + 5)
    sim.faults.add(Fault("drop", channel="pubsub", at="after_subscribe_ack"))
    p = clients["pubsub"](sim, sid)
    assert p.subscribe("slotSubscribe")["result"] == 1
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        p.recv()
    assert sim.faults.fired_on("drop", "pubsub") == [1]
