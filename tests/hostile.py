"""Small hostile servers on 127.0.0.1 for transport tests: plain sockets and threads.

``HostileServer(behaviour)`` accepts TCP connections and runs ``behaviour(peer)`` for each on
its own thread; ``peer`` is a ``Peer`` with helpers to read the upgrade request, answer it
(101 or any status, whole or trickled), send frames (websocket-client's ``ABNF``, unmasked as
a server sends them) and read the client's frames. ``stop()`` closes every socket and joins
every thread. Nothing here knows simsync's internals: it speaks the wire only.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import struct
import threading
import time
from typing import Callable, List, Optional

from websocket import ABNF
from websocket._abnf import frame_buffer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 §1.3


class Peer:
    """One accepted connection, seen from the server."""

    def __init__(self, sock: socket.socket, server: HostileServer) -> None:
        self.sock = sock
        self.server = server
        self._frames = frame_buffer(self._recv_exactly_some, True)
        self.request = b""

    # -- HTTP upgrade ---------------------------------------------------------------------------

    def read_request(self) -> bytes:
        """The client's upgrade request (up to the blank line)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the client left before its request ended")
            data += chunk
        self.request = data
        return data

    def accept_key(self) -> str:
        for line in self.request.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                digest = hashlib.sha1((value.strip() + GUID).encode()).digest()
                return base64.b64encode(digest).decode()
        raise ValueError("no Sec-WebSocket-Key in the request")

    def upgrade_response(self) -> bytes:
        return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {self.accept_key()}\r\n\r\n"
                ).encode()

    def upgrade(self) -> None:
        """Read the request and switch protocols."""
        self.read_request()
        self.sock.sendall(self.upgrade_response())

    def answer(self, status: int, reason: str = "Nope", headers: Optional[List[str]] = None,
               body: bytes = b"") -> None:
        """Read the request and answer it with ``status`` (not an upgrade)."""
        self.read_request()
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}",
                 *(headers or [])]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def trickle(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte at a time, ``every`` seconds apart, until stopped."""
        for byte in data:
            if self.server.stopping.wait(every):
                return
            self.sock.sendall(bytes([byte]))

    # -- frames ---------------------------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(ABNF(1, 0, 0, 0, opcode, 0, payload).format())

    def send_text(self, text: str) -> None:
        self.send_frame(ABNF.OPCODE_TEXT, text.encode())

    def send_raw_text(self, payload: bytes) -> None:
        """A text frame whose payload is given as is (it may not be UTF-8)."""
        self.send_frame(ABNF.OPCODE_TEXT, payload)

    def send_close(self, code: int, reason: str = "") -> None:
        self.send_frame(ABNF.OPCODE_CLOSE, struct.pack("!H", code) + reason.encode())

    def recv_frame(self) -> ABNF:
        """The client's next frame (unmasked)."""
        return self._frames.recv_frame()

    def recv_text(self) -> str:
        """The client's next text frame (pings, pongs and the like are skipped)."""
        while True:
            frame = self.recv_frame()
            if frame.opcode == ABNF.OPCODE_TEXT:
                return bytes(frame.data).decode()

    def _recv_exactly_some(self, size: int) -> bytes:
        data = self.sock.recv(size)
        if not data:
            raise ConnectionError("the client closed the connection")
        return data

    def idle(self) -> None:
        """Hold the connection open, reading nothing, until the server stops."""
        self.server.stopping.wait()

    def drain(self) -> None:
        """Read and discard until the client leaves or the server stops."""
        self.sock.settimeout(0.1)
        while not self.server.stopping.is_set():
            try:
                if not self.sock.recv(65536):
                    return
            except socket.timeout:
                continue


Behaviour = Callable[[Peer], None]


class HostileServer:
    """A TCP listener on 127.0.0.1 that runs ``behaviour`` per connection (one thread each).

    ``connections`` counts accepted connections, ``times`` records when each arrived
    (``time.monotonic()``). ``rcvbuf`` shrinks the accepted sockets' receive buffer (so a
    client's large send fills up quickly when the behaviour stops reading). A context
    manager: ``stop()`` on exit closes every socket and joins every thread.
    """

    def __init__(self, behaviour: Behaviour, rcvbuf: Optional[int] = None,
                 backlog: int = 16, accept: bool = True) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.times: List[float] = []
        self.errors: List[BaseException] = []
        self._rcvbuf = rcvbuf
        self._accept = accept
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(backlog)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._sockets: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="hostile-acceptor")
        self._acceptor.start()

    @property
    def connections(self) -> int:
        return len(self.times)

    def url(self, scheme: str = "ws", path: str = "/backtest") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            if not self._accept:
                self.stopping.wait(0.05)
                continue
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                if self.stopping.is_set():
                    sock.close()
                    return
                self.times.append(time.monotonic())
                self._sockets.append(sock)
                thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                          name=f"hostile-peer-{len(self.times)}")
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.behaviour(Peer(sock, self))
        except (OSError, ConnectionError, ValueError) as exc:
            if not self.stopping.is_set():
                self.errors.append(exc)
        except Exception as exc:  # noqa: BLE001 - reported by the test through ``errors``
            self.errors.append(exc)

    def stop(self) -> None:
        self.stopping.set()
        self._acceptor.join(5)
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            sock.close()
        self._listener.close()
