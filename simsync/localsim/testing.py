"""Wire-level test clients for the local simulator (plain `websocket-client` and `requests`).

Independent of the simsync client on purpose: tests drive the simulator with these to check the
server against PROTOCOL.md by hand. Everything is blocking and runs in the caller's thread.
"""
from __future__ import annotations

import base64
import json
import time
from typing import Any, Callable, Dict, List, Optional

import requests
import websocket

TIMEOUT = 10.0
START = 400_000_000


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


class Control:
    """A control-channel client on one WebSocket."""

    def __init__(self, url: str, api_key: Optional[str] = None) -> None:
        header = [f"X-API-Key: {api_key}"] if api_key else []
        self.ws = websocket.create_connection(url, header=header, timeout=TIMEOUT)
        self.frames: List[Dict[str, Any]] = []

    def send(self, method: str, params: Any = None) -> None:
        body: Dict[str, Any] = {"method": method}
        if params is not None:
            body["params"] = params
        self.ws.send(json.dumps(body))

    def send_raw(self, text: str) -> None:
        self.ws.send(text)

    def recv(self, timeout: float = TIMEOUT) -> Dict[str, Any]:
        self.ws.settimeout(timeout)
        text = self.ws.recv()
        if not text:
            raise ConnectionError("connection closed")
        frame: Dict[str, Any] = json.loads(text)
        self.frames.append(frame)
        return frame

    def recv_text(self, timeout: float = TIMEOUT) -> str:
        self.ws.settimeout(timeout)
        return str(self.ws.recv())

    def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """True when the next thing on the socket is its end (close frame or TCP close)."""
        try:
            return self.recv_text(timeout) == ""
        except websocket.WebSocketConnectionClosedException:
            return True

    def until(self, *methods: str, timeout: float = TIMEOUT) -> List[Dict[str, Any]]:
        """Frames up to and including the first whose (unwrapped) method is in ``methods``."""
        got = []
        while True:
            frame = self.recv(timeout)
            got.append(frame)
            if method_of(frame) in methods:
                return got

    def create(self, start: int = START, end: int = START + 10, **extra: Any) -> str:
        """Create a session and read up to its first pause; return the session id."""
        self.send("createBacktestSession", {"startSlot": start, "endSlot": end, **extra})
        first = self.recv()
        assert first["method"] == "sessionCreated", first
        self.until("readyForContinue")
        return str(first["params"]["session_id"])

    def step(self, **params: Any) -> List[Dict[str, Any]]:
        self.send("continue", params or {"advanceCount": 1})
        return self.until("readyForContinue", "completed", "paused")

    def close(self) -> None:
        self.ws.close()
        self.ws.shutdown()  # type: ignore[no-untyped-call]  # close() skips it after a server close


def method_of(frame: Dict[str, Any]) -> str:
    if frame.get("method") == "sessionEventV2":
        return str(frame["params"]["event"]["method"])
    return str(frame.get("method"))


def slots_of(frames: List[Dict[str, Any]]) -> List[int]:
    return [int(f["params"]) for f in frames if f.get("method") == "slotNotification"]


class PubSub:
    """A PubSub client on one WebSocket."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=TIMEOUT)
        self._next = 1

    def subscribe(self, method: str, *params: Any) -> Dict[str, Any]:
        req_id = self._next
        self._next += 1
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method,
                                 "params": list(params)}))
        return self.recv()

    def recv(self, timeout: float = TIMEOUT) -> Dict[str, Any]:
        self.ws.settimeout(timeout)
        text = self.ws.recv()
        if not text:
            raise ConnectionError("connection closed")
        return dict(json.loads(text))

    def until_complete(self, sub_id: int) -> List[Dict[str, Any]]:
        got = []
        while True:
            msg = self.recv()
            got.append(msg)
            if (msg.get("method") == "subscriptionComplete"
                    and msg["params"]["subscription"] == sub_id):
                return got

    def close(self) -> None:
        self.ws.close()
        self.ws.shutdown()  # type: ignore[no-untyped-call]  # close() skips it after a server close


class Rpc:
    """Per-session JSON-RPC over requests."""

    def __init__(self, http_url: str, session_id: str) -> None:
        self.url = f"{http_url}/backtest/{session_id}"
        self.http = requests.Session()
        self.http.headers["Connection"] = "close"  # a pooled socket would outlive close()

    def raw(self, body: Any) -> Any:
        resp = self.http.post(self.url, json=body, timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def call(self, method: str, *params: Any) -> Dict[str, Any]:
        return dict(self.raw({"jsonrpc": "2.0", "id": 1, "method": method,
                              "params": list(params)}))

    def result(self, method: str, *params: Any) -> Any:
        answer = self.call(method, *params)
        assert "result" in answer, answer
        return answer["result"]

    def close(self) -> None:
        self.http.close()


def http_get(url: str, **kwargs: Any) -> requests.Response:
    """GET on a fresh ``Connection: close`` socket, so no pooled socket outlives the call."""
    headers = {"Connection": "close", **kwargs.pop("headers", {})}
    with requests.Session() as http:
        resp = http.get(url, timeout=TIMEOUT, headers=headers, **kwargs)
        _ = resp.content
        resp.close()
    return resp


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


