"""A JSON-RPC 2.0 server on 127.0.0.1 for pure HTTP-client tests: a subclass says what each
request gets (`JsonRpcServer.answer`)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List


class JsonRpcServer:
    """Answers every POST with ``{"jsonrpc": "2.0", "id": …, **self.answer(body)}``;
    ``requests`` holds each request body, ``url`` is ``http://127.0.0.1:PORT`` + ``path``.
    A context manager: stops and joins its threads on exit."""

    def __init__(self, path: str = "/") -> None:
        self.requests: List[Dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                reply = {**outer.answer(body), "jsonrpc": "2.0", "id": body["id"]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False           # server_close() joins each handler
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"{type(self).__name__}")
        self._thread.start()

    def answer(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """The reply's ``result`` or ``error`` for one request body (handler thread)."""
        raise NotImplementedError

    def calls(self, method: str) -> List[Any]:
        """The ``params`` of each ``method`` request received, in order."""
        return [r["params"] for r in self.requests if r["method"] == method]

    def __enter__(self) -> JsonRpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
