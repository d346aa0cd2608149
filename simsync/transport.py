"""One WebSocket and the threads that keep it: ``Connection``, ``ConnectionStatus``, and the
reconnect policy (tenacity). What the frames mean is the link's business (``Link``).

Threads (per connection, no more):

* the **reader** owns the socket's reads, is the only thread that closes the socket, and runs
  the connect → handshake → read loop → backoff → reconnect cycle;
* the **keepalive** pings every ``ping_interval``; when nothing at all arrived within
  ``dead_after`` it aborts the socket (``shutdown``), which wakes the reader.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import enum
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Union

import tenacity
import websocket
from websocket import ABNF

from simsync._version import __version__
from simsync.config import ClientConfig

log = logging.getLogger(__name__)

#: Longest single wait anywhere in simsync, so Ctrl-C and close() are seen at once.
SLICE = 0.2
USER_AGENT = f"simsync/{__version__}"


class State(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConnectionStatus:
    """A connection's state; ``reason`` says why it is FAILED (or why it is reconnecting);
    ``reconnects`` counts the outages so far (entries into RECONNECTING)."""

    state: State
    reason: Optional[str] = None
    attempt: int = 0
    reconnects: int = 0

    @property
    def final(self) -> bool:
        return self.state in (State.FAILED, State.CLOSED)

    def __str__(self) -> str:
        return self.state.value.upper() + (f"({self.reason})" if self.reason else "")


class StatusCell:
    """A watchable ``ConnectionStatus``: any thread may read it or wait for a state."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._status = ConnectionStatus(State.CONNECTING)
        self._changed = threading.Condition(threading.RLock())   # set() from a signal handler
        self._watchers: List[Callable[[ConnectionStatus], None]] = []

    @property
    def value(self) -> ConnectionStatus:
        return self._status

    def watch(self, callback: Callable[[ConnectionStatus], None]) -> None:
        """Call ``callback`` (on the setting thread) after every transition."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[ConnectionStatus], None]) -> None:
        """Stop calling ``callback`` (no error if it was not watching)."""
        with contextlib.suppress(ValueError):
            self._watchers.remove(callback)

    def set(self, status: ConnectionStatus, delay: Optional[float] = None) -> None:
        """Publish a transition (a final state is never left). Logged at INFO."""
        with self._changed:
            old = self._status
            reconnects = old.reconnects + (status.state is State.RECONNECTING
                                           and old.state is not State.RECONNECTING)
            status = dataclasses.replace(status, reconnects=reconnects)
            if old.final or old == status:
                return
            self._status = status
            self._changed.notify_all()
        extra = f" in {delay:.2f}s" if delay is not None else ""
        log.info("%s: %s (attempt %d)%s", self._name, status, status.attempt, extra)
        for callback in list(self._watchers):
            callback(status)

    def wait_for(self, states: Iterable[State], timeout: Optional[float]) -> ConnectionStatus:
        """Block (sliced) until the state is one of ``states`` or final, or ``timeout``."""
        wanted = set(states)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._status.state not in wanted and not self._status.final:
                remaining = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._status


class ReadAheadSocket:
    """The socket as websocket-client sees it, with reads served from a 64 KiB buffer.

    websocket-client asks for exactly a frame's header, then exactly its payload: two or
    three ``recv`` calls per frame, each releasing the GIL to the consumer thread. Measured
    on loopback (benchmarks/README.md) this cut client CPU per control event from ~41 to
    ~25 µs. Installed after the upgrade (which reads its response byte by byte, so nothing
    is buffered yet); every other attribute is the socket's own.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def recv(self, size: int) -> bytes:
        at = self._at
        if at >= len(self._buffer):
            data = self._sock.recv(65536)
            if len(data) <= size:
                return bytes(data)
            self._buffer, at = data, 0
        self._at = at + size
        return self._buffer[at:at + size]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Transient(Exception):
    """A failure worth a reconnect (socket error, timeout, missed keepalive, unexpected close)."""


class Fatal(Exception):
    """A failure no reconnect can mend (auth rejected, fatal server error, bad handshake)."""


class StableDrop(Exception):
    """A connection that had stayed up ``stable_after`` dropped: start a fresh budget."""


class LinkDone(Exception):
    """The link finished its work; the connection ends without error."""


class Channel:
    """The live socket as a link sees it during its handshake and read loop."""

    def __init__(self, ws: websocket.WebSocket, connection: Connection) -> None:
        self._ws = ws
        self._connection = connection

    def send(self, text: str) -> None:
        """Send one text frame (any thread; serialised by websocket-client's lock)."""
        self._connection.send_on(self._ws, text)

    def recv(self, timeout: Optional[float]) -> Union[str, bytes]:
        """Receive the next data frame, waiting at most ``timeout`` (handshakes only)."""
        self._ws.settimeout(timeout)
        try:
            return self._connection.recv_on(self._ws)
        finally:
            self._ws.settimeout(None)


class Link(abc.ABC):
    """What a connection serves: the URL, the handshake, and where frames go.

    The reader thread calls every method. ``handshake`` and ``on_frame`` may raise
    ``Transient``, ``Fatal`` or ``LinkDone``.
    """

    name = "link"
    headers: List[str] = []
    #: Whether a lost connection may be re-established (no detach window: it may not).
    reconnectable = True

    @abc.abstractmethod
    def url(self) -> str:
        """Where to connect (called before every attempt)."""

    @abc.abstractmethod
    def handshake(self, channel: Channel, attempt: int) -> None:
        """Runs once per connection before the read loop (create, attach, subscribe...)."""

    @abc.abstractmethod
    def on_frame(self, data: Union[str, bytes]) -> None:
        """Route one inbound data frame."""

    def on_down(self, reason: str) -> None:  # noqa: B027 - optional hook
        """The connection was lost (before any reconnect attempt)."""

    @contextlib.contextmanager
    def attempt_turn(self, attempt: int, stopping: Callable[[], bool]) -> Iterator[None]:
        """Held around one connect + handshake; ``attempt`` counts within the outage.
        A link may wait here for its turn (``ReconnectCoordinator``)."""
        yield

    def holding_back(self) -> bool:
        """True while the link deliberately waits on the user (keepalive then stays calm)."""
        return False


class ReconnectPolicy:
    """Backoff of one outage: exponential with full jitter, capped, bounded by a wall-clock
    budget and by ``stop`` (set by ``close()``, which also cuts a sleep short)."""

    def __init__(self, config: ClientConfig, stop: threading.Event) -> None:
        self._config = config
        self._stop = stop

    def retrying(self, on_sleep: Callable[[tenacity.RetryCallState], None]) -> tenacity.Retrying:
        """A fresh tenacity controller (a fresh budget) for one outage."""
        config = self._config
        return tenacity.Retrying(
            stop=(tenacity.stop_before_delay(config.reconnect_budget)
                  | tenacity.stop_when_event_set(self._stop)),
            wait=tenacity.wait_random_exponential(multiplier=config.backoff_initial,
                                                  max=config.backoff_max),
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=self._sleep,
            before_sleep=on_sleep,
            reraise=True,
        )

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


def _lock_free(ws: websocket.WebSocket) -> bool:
    """Whether nobody is writing on ``ws`` right now: a close frame must not wait behind a
    write (from a signal handler, the interrupted write is this very thread's)."""
    lock = getattr(ws, "lock", None)
    if lock is None or not lock.acquire(blocking=False):
        return lock is None
    lock.release()
    return True


def describe(exc: BaseException) -> str:
    """A short reason for logs and errors (never headers or URLs with secrets)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


class Connection:
    """One logical WebSocket connection: reconnects under a policy until its link is done,
    fails, or ``close()`` is called. ``status`` is its watchable ``ConnectionStatus``."""

    def __init__(self, link: Link, config: ClientConfig, label: str) -> None:
        self.link = link
        self.config = config
        self.label = label
        self.status = StatusCell(f"simsync {link.name} {label}")
        self._stop = threading.Event()
        self._ws: Optional[websocket.WebSocket] = None
        self._ws_lock = threading.Lock()
        self._last_inbound = time.monotonic()
        self._policy = ReconnectPolicy(config, self._stop)
        self._reader = threading.Thread(target=self._run, daemon=True,
                                        name=f"simsync-{link.name}-reader-{label}")
        self._keepalive = threading.Thread(target=self._keep_alive, daemon=True,
                                           name=f"simsync-{link.name}-keepalive-{label}")
        self.failure: Optional[BaseException] = None

    # ------------------------------------------------------------------ user-facing

    def start(self) -> None:
        """Start the reader (which connects) and the keepalive. Returns at once."""
        self._reader.start()
        self._keepalive.start()

    def send(self, text: str) -> None:
        """Send on the current socket (any thread). Raises ``Transient`` if there is none."""
        ws = self._ws
        if ws is None:
            raise Transient("not connected")
        self.send_on(ws, text)

    def close(self, timeout: float) -> bool:
        """Stop for good: stop flag first, wake the reader, join with a deadline.

        Runs on a user thread; blocks at most ``timeout``. Returns False (and warns) if a
        thread had to be abandoned.
        """
        self._stop.set()
        self._wake_reader(send_close=True)
        deadline = time.monotonic() + timeout
        for thread in (self._reader, self._keepalive):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in (self._reader, self._keepalive) if t.is_alive()]
        if alive:
            log.warning("simsync %s %s: abandoned threads after %.1fs: %s",
                        self.link.name, self.label, timeout, alive)
        self.status.set(ConnectionStatus(State.CLOSED))
        return not alive

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def abort(self) -> None:
        """Cut the current socket (it reconnects unless stopped). Any thread."""
        self._wake_reader(send_close=False)

    # ------------------------------------------------------------------ socket primitives

    def send_on(self, ws: websocket.WebSocket, text: str) -> None:
        try:
            ws.send(text)
        except (OSError, websocket.WebSocketException) as exc:
            raise Transient(f"send failed: {describe(exc)}") from exc

    def recv_on(self, ws: websocket.WebSocket) -> Union[str, bytes]:
        """Next data frame; pings and pongs only refresh the liveness clock."""
        while True:
            try:
                opcode, frame = ws.recv_data_frame(control_frame=True)
            except websocket.WebSocketTimeoutException as exc:
                raise Transient("timed out waiting for the server") from exc
            except (OSError, websocket.WebSocketException, ValueError) as exc:
                raise Transient(f"connection lost: {describe(exc)}") from exc
            self._last_inbound = time.monotonic()
            if opcode == ABNF.OPCODE_TEXT:
                data = frame.data
                return data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            if opcode == ABNF.OPCODE_BINARY:
                return bytes(frame.data)
            if opcode == ABNF.OPCODE_CLOSE:
                raise Transient("the server closed the connection")

    def _wake_reader(self, send_close: bool) -> None:
        with self._ws_lock:
            ws = self._ws
        if ws is None:
            return
        if send_close and _lock_free(ws):
            with contextlib.suppress(Exception):   # best effort on a dying socket
                ws.send_close()
        sock = ws.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ reader thread

    def _run(self) -> None:
        """Reader thread: outages one after another until done, failed or stopped."""
        try:
            self._serve_outages()
        except LinkDone:
            self.status.set(ConnectionStatus(State.CLOSED, "done"))
        except Fatal as exc:
            self._fail(exc)
        except Transient as exc:
            if self._stop.is_set():
                self.status.set(ConnectionStatus(State.CLOSED))
            else:
                self._fail(exc, f"gave up reconnecting: {describe(exc)}")
        except BaseException as exc:  # noqa: BLE001 - a crash must never be silent
            log.exception("simsync %s %s: internal error", self.link.name, self.label)
            self._fail(exc, f"internal error in the {self.link.name} reader: {describe(exc)}")
        finally:
            self._stop.set()

    def _fail(self, exc: BaseException, reason: Optional[str] = None) -> None:
        self.failure = exc
        self.status.set(ConnectionStatus(State.FAILED, reason or describe(exc)))

    def _serve_outages(self) -> None:
        while not self._stop.is_set():
            try:
                for retry in self._policy.retrying(self._before_sleep):
                    with retry:
                        self._connect_and_serve(retry.retry_state.attempt_number)
                return
            except StableDrop:
                continue
        raise Transient("stopped")

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else None
        self.status.set(ConnectionStatus(State.RECONNECTING, describe(exc) if exc else None,
                                         state.attempt_number), delay)

    def _connect_and_serve(self, attempt: int) -> None:
        """One attempt (reader thread): connect, handshake, then read until the socket dies."""
        if self._stop.is_set():
            raise LinkDone()
        with self.link.attempt_turn(attempt, self._stop.is_set):
            ws = self._connect()
            try:
                self.link.handshake(Channel(ws, self), attempt)
            except Transient as exc:
                self._drop_socket(ws)
                self._lost(exc, attempt, stable=False)
            except BaseException:
                self._drop_socket(ws)
                raise
        self.status.set(ConnectionStatus(State.UP, attempt=attempt))
        up_since = time.monotonic()
        try:
            while True:
                self.link.on_frame(self.recv_on(ws))
        except Transient as exc:
            stable = time.monotonic() - up_since >= self.config.stable_after
            self._lost(exc, attempt, stable)
        finally:
            self._drop_socket(ws)

    def _lost(self, exc: Transient, attempt: int, stable: bool) -> None:
        """Decide what a lost socket means: done (stopping), fatal (not reconnectable), a
        fresh outage (it had been stable), or one more failed attempt. Always raises."""
        if self._stop.is_set():
            raise LinkDone() from exc
        self.link.on_down(describe(exc))
        if not self.link.reconnectable:
            raise Fatal(f"connection lost: {describe(exc)}") from exc
        if stable:
            self.status.set(ConnectionStatus(State.RECONNECTING, describe(exc), attempt))
            raise StableDrop() from exc
        raise exc

    def _connect(self) -> websocket.WebSocket:
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True,
                                 sslopt=self._sslopt())
        try:
            headers = [*self.link.headers, f"User-Agent: {USER_AGENT}"]
            ws.connect(self.link.url(), header=headers,  # type: ignore[no-untyped-call]
                       timeout=self.config.connect_timeout, suppress_origin=True)
        except websocket.WebSocketBadStatusException as exc:
            ws.close()
            if exc.status_code in (401, 403):
                raise Fatal(f"the server rejected the credentials (HTTP {exc.status_code})"
                            ) from None
            raise Transient(f"upgrade refused (HTTP {exc.status_code})") from None
        except ssl.SSLCertVerificationError as exc:
            ws.close()
            raise Fatal(f"TLS certificate verification failed: {exc.verify_message}") from None
        except (OSError, websocket.WebSocketException) as exc:
            ws.close()
            raise Transient(f"connect failed: {describe(exc)}") from None
        ws.settimeout(None)
        ws.sock = ReadAheadSocket(ws.sock)  # type: ignore[assignment]
        with self._ws_lock:
            self._ws = ws
        self._last_inbound = time.monotonic()
        if self._stop.is_set():
            self._drop_socket(ws)
            raise LinkDone()
        return ws

    def _sslopt(self) -> dict[str, Any]:
        if self.config.ca_bundle:
            return {"ca_certs": self.config.ca_bundle}
        return {}

    def _drop_socket(self, ws: websocket.WebSocket) -> None:
        with self._ws_lock:
            if self._ws is ws:
                self._ws = None
        ws.shutdown()  # type: ignore[no-untyped-call]   # closes the socket at once

    # ------------------------------------------------------------------ keepalive thread

    def _keep_alive(self) -> None:
        """Keepalive thread: ping each interval; abort a socket silent past ``dead_after``."""
        next_ping = time.monotonic() + self.config.ping_interval
        while not self._stop.wait(min(SLICE, self.config.ping_interval)):
            ws = self._ws
            now = time.monotonic()
            if ws is None or self.link.holding_back():
                self._last_inbound = now
                if ws is not None and now >= next_ping:
                    # the reader waits on the user and cannot answer the server's pings:
                    # an unsolicited pong (RFC 6455 §5.5.3) each second keeps a heartbeat
                    # server calm
                    next_ping = now + min(1.0, self.config.ping_interval)
                    with contextlib.suppress(OSError, websocket.WebSocketException):
                        ws.pong(b"")
                continue
            if now - self._last_inbound > self.config.dead_after:
                log.warning("simsync %s %s: nothing received for %.1fs, reconnecting",
                            self.link.name, self.label, now - self._last_inbound)
                self._last_inbound = now
                self.abort()
            elif now >= next_ping:
                next_ping = now + self.config.ping_interval
                with contextlib.suppress(OSError, websocket.WebSocketException):
                    ws.ping()
