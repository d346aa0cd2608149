"""One WebSocket and the threads that keep it: ``Connection``, ``ConnectionStatus``, and the
reconnect policy (tenacity). What the frames mean is the link's business (``Link``).

Threads (per connection, no more):

* the **reader** owns the socket's reads, is the only thread that closes the socket, and runs
  the connect → handshake → read loop → backoff → reconnect cycle;
* the **keepalive** pings every ``ping_interval`` (skipping a ping while a send is in
  progress: it never waits for one); when nothing at all arrived within ``dead_after`` it
  aborts the socket (``shutdown``), which wakes the reader and any sender.

No wait is unbounded and no lock is held across a write without a deadline: the socket is
non-blocking underneath (``DeadlineSocket``); receives wait until the reader's deadline
(handshake replies, the whole connect), sends until their own deadline and never longer than
``dead_after`` without progress, and a send that fails or times out aborts the socket, so the
connection reconnects. The whole connect (TCP, TLS, upgrade) is bounded by
``connect_timeout`` and by the outage's budget; ``close()`` cuts every phase short.
Upgrade answers and close codes are classified transient or fatal (README, failure table).
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import enum
import errno
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import tenacity
import websocket
from websocket import ABNF
from websocket._http import _tunnel as tunnel  # HTTP CONNECT on a socket we own

from simsync import urls
from simsync._version import __version__
from simsync.config import ClientConfig
from simsync.errors import excerpt
from simsync.netpolicy import (
    TRANSIENT_HTTP_STATUSES,
    TrustStoreError,
    proxy_for,
    resolve,
    retry_after_seconds,
    tls_context,
)

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
        log.info("%s: %s (attempt %d)%s", self._name, status, status.attempt, extra,
                 extra={"simsync_state": status.state})
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


class WriteBusy(TimeoutError):
    """Another thread's write held the socket until this write's deadline: nothing of this
    frame was written, and the socket is left alone (its writer still owns it)."""


class DeadlineSocket:
    """One TCP (or TLS) socket as websocket-client sees it: non-blocking underneath, and
    every wait a ``poll`` with its own deadline, so that no wait is unbounded and the two
    directions never share a timeout.

    * **receives** (the reader thread only) wait until ``recv_deadline`` (a
      ``time.monotonic()`` value; ``None``: no deadline) and are served from a 64 KiB
      read-ahead buffer: websocket-client asks for exactly a frame's header, then exactly its
      payload, and the buffer turns those two or three calls into one system call
      (benchmarks/README.md: client CPU per control event ~41 → ~25 µs);
    * **sends** go through :meth:`sendall`, under ``write_lock``, with a deadline of their
      own and a stall limit: a write that makes no progress for ``stall`` seconds fails;
    * :meth:`abort` (any thread) shuts the socket down, which wakes every wait at once; only
      the reader calls :meth:`close`.

    ``gettimeout()`` answers 0 so that websocket-client calls ``recv``/``send`` directly and
    leaves all waiting to this class. The socket's blocking mode is set once, before any other
    thread can see it, and never changed.
    """

    def __init__(self, sock: socket.socket, stall: float) -> None:
        sock.setblocking(False)
        self._sock: Any = sock
        self._stall = stall
        self._buffer = b""
        self._at = 0
        self._aborted = False
        self._closed_flag = False
        self.recv_deadline: Optional[float] = None
        self.send_deadline: Optional[float] = None
        self.write_lock = threading.Lock()

    # -- what websocket-client uses -----------------------------------------------------------

    def gettimeout(self) -> float:
        return 0.0

    def settimeout(self, timeout: Optional[float]) -> None:
        """Ignored: the deadlines are this class's own (see the class docstring)."""

    @property
    def _closed(self) -> bool:  # websocket-client's ``shutdown()`` looks at it
        return self._closed_flag

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def recv(self, size: int) -> bytes:
        """At most ``size`` bytes (reader thread). Raises ``TimeoutError`` at
        ``recv_deadline``, ``ConnectionAbortedError`` once aborted; ``b""`` at EOF."""
        at = self._at
        if at >= len(self._buffer):
            data = self._read()
            if len(data) <= size:
                return data
            self._buffer, at = data, 0
        self._at = at + size
        return self._buffer[at:at + size]

    def send(self, data: Union[bytes, str]) -> int:
        """websocket-client's writes during the upgrade: all of ``data`` by ``send_deadline``."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self.sendall(raw, self.send_deadline)
        return len(raw)

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        self.abort()

    # -- ours ----------------------------------------------------------------------------------

    @property
    def aborted(self) -> bool:
        return self._aborted

    def connect(self, address: Any, deadline: float) -> None:
        """TCP connect by ``deadline`` (reader thread)."""
        err = self._sock.connect_ex(address)
        if err in (0, errno.EISCONN):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return
        if err not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            raise OSError(err, os.strerror(err))
        self._wait(_POLLOUT, deadline, "the TCP connect")
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start_tls(self, context: ssl.SSLContext, hostname: str, deadline: float) -> None:
        """TLS handshake by ``deadline`` (reader thread, before any other thread sees it)."""
        self._sock = context.wrap_socket(self._sock, server_hostname=hostname,
                                         do_handshake_on_connect=False)
        while True:
            try:
                self._sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                self._wait(_POLLIN, deadline, "the TLS handshake")
            except ssl.SSLWantWriteError:
                self._wait(_POLLOUT, deadline, "the TLS handshake")

    def sendall(self, data: bytes, deadline: Optional[float] = None,
                blocking: bool = True) -> bool:
        """Write all of ``data`` under ``write_lock`` (any thread). Waits for the lock until
        ``deadline`` (``blocking=False``: not at all, and returns False if it is held);
        each write waits until ``deadline`` and at most ``stall`` seconds without progress.
        Raises ``WriteBusy`` when the lock was not had by ``deadline`` (nothing written:
        the socket is the other writer's, and fine), ``TimeoutError`` (the stream may hold
        part of the data: abort the socket), ``ConnectionAbortedError`` once aborted,
        ``OSError`` on a socket error."""
        if not blocking:
            if not self.write_lock.acquire(blocking=False):
                return False
        elif deadline is None:
            self.write_lock.acquire()
        elif not self.write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise WriteBusy("another send held the connection until the deadline")
        try:
            view = memoryview(data)
            chunk = 16384 if isinstance(self._sock, ssl.SSLSocket) else len(view)
            progress = time.monotonic()
            while view:
                if self._aborted:
                    raise ConnectionAbortedError("the connection was aborted")
                try:
                    sent = self._sock.send(view[:chunk])
                except (BlockingIOError, ssl.SSLWantWriteError):
                    self._wait_send(_POLLOUT, deadline, progress)
                except ssl.SSLWantReadError:
                    self._wait_send(_POLLIN, deadline, progress)
                else:
                    view = view[sent:]
                    progress = time.monotonic()
            return True
        finally:
            self.write_lock.release()

    def abort(self) -> None:
        """Wake every wait on this socket and end it (any thread; never closes the fd)."""
        self._aborted = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the descriptor once no write is in progress (reader thread): a writer is
        woken first (``abort``) and leaves at once; with none, a plain close."""
        if self._closed_flag:
            return
        locked = self.write_lock.acquire(blocking=False)
        if not locked:
            self.abort()
            locked = self.write_lock.acquire(timeout=SLICE)
        try:
            self._aborted = self._closed_flag = True
            with contextlib.suppress(OSError):
                self._sock.close()
        finally:
            if locked:
                self.write_lock.release()

    # -- waiting -------------------------------------------------------------------------------

    def _read(self) -> bytes:
        while True:
            try:
                return bytes(self._sock.recv(65536))
            except (BlockingIOError, ssl.SSLWantReadError):
                self._wait(_POLLIN, self.recv_deadline, "a receive")
            except ssl.SSLWantWriteError:
                self._wait(_POLLOUT, self.recv_deadline, "a receive")

    def _wait_send(self, events: int, deadline: Optional[float], progress: float) -> None:
        stall_at = progress + self._stall
        if deadline is None or stall_at < deadline:
            if time.monotonic() >= stall_at:
                raise TimeoutError(f"a send made no progress for {self._stall:g}s")
            self._wait(events, stall_at, "a send", stalled=True)
        else:
            self._wait(events, deadline, "a send")

    def _wait(self, events: int, deadline: Optional[float], what: str,
              stalled: bool = False) -> None:
        """Until the socket is ready for ``events``; sliced, so an abort is seen even if the
        shutdown did not wake the poll (a socket still connecting)."""
        fd = self._sock.fileno()
        while True:
            if self._aborted:
                raise ConnectionAbortedError("the connection was aborted")
            if deadline is None:
                wait = SLICE
            else:
                wait = min(SLICE / 2, deadline - time.monotonic())
                if wait <= 0:
                    if stalled:
                        raise TimeoutError(f"a send made no progress for {self._stall:g}s")
                    raise TimeoutError(f"{what} did not complete by its deadline")
            if _ready(fd, events, wait):
                return


_POLLIN = getattr(select, "POLLIN", 1)
_POLLOUT = getattr(select, "POLLOUT", 4)


def _ready(fd: int, events: int, timeout: float) -> bool:
    """Whether ``fd`` became ready for ``events`` (or failed) within ``timeout`` seconds."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, events | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(max(0, int(timeout * 1000) + 1)))
    readable, writable, failed = select.select(  # pragma: no cover - no poll() (Windows)
        [fd] if events & _POLLIN else [], [fd] if events & _POLLOUT else [], [fd], timeout)
    return bool(readable or writable or failed)


class ConnectionProblem(Exception):
    """Base of ``Transient`` and ``Fatal``: a reason in plain words, plus what the server
    said when it said something: ``http_status`` (an upgrade refused), ``close_code`` and
    ``close_reason`` (a WebSocket close, RFC 6455 §7.4; 1006: lost without a close frame),
    ``retry_after`` (seconds, from an HTTP ``Retry-After``)."""

    def __init__(self, reason: str, *, http_status: Optional[int] = None,
                 close_code: Optional[int] = None, close_reason: Optional[str] = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.http_status = http_status
        self.close_code = close_code
        self.close_reason = close_reason
        self.retry_after = retry_after
        self.by_budget = False          # a connect cut short by the outage's budget


class Transient(ConnectionProblem):
    """A failure worth a reconnect (socket error, timeout, missed keepalive, a stalled send,
    a transient upgrade status or close code)."""


class Fatal(ConnectionProblem):
    """A failure no reconnect can mend (auth rejected, wrong URL, fatal close code, fatal
    server error, bad handshake, a TLS failure)."""


class StableDrop(Exception):
    """A connection that had stayed up ``stable_after`` dropped: start a fresh budget."""


class LinkDone(Exception):
    """The link finished its work; the connection ends without error."""


class Channel:
    """The live socket as a link sees it during its handshake and read loop."""

    def __init__(self, ws: websocket.WebSocket, sock: DeadlineSocket,
                 connection: Connection) -> None:
        self._ws = ws
        self._sock = sock
        self._connection = connection

    def send(self, text: str, deadline: Optional[float] = None) -> None:
        """Send one text frame (any thread; see ``Connection.send``)."""
        self._connection.send_on(self._sock, text, deadline)

    @property
    def stopping(self) -> bool:
        """Whether the connection was asked to stop (``Connection.close``)."""
        return self._connection.stopping

    def recv(self, timeout: Optional[float]) -> Union[str, bytes]:
        """Receive the next data frame, waiting at most ``timeout`` seconds (``None``: no
        limit), and during a reconnect no longer than the outage's budget (reader thread,
        handshakes only). Malformed frames are skipped (``Link.on_malformed``). Raises
        ``Transient`` on a timeout or a lost connection, ``Fatal`` on a fatal close code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outage = self._connection._handshake_deadline()
        if outage is not None and (deadline is None or outage < deadline):
            deadline = outage
        self._sock.recv_deadline = deadline
        try:
            return self._connection.recv_on(self._ws)
        finally:
            self._sock.recv_deadline = None

    def poll(self, timeout: float) -> Optional[Union[str, bytes]]:
        """The next data frame, or ``None`` when none came within ``timeout`` (the
        connection is fine then); other failures raise ``Transient`` (reader thread)."""
        try:
            return self.recv(timeout)
        except Transient as exc:
            if isinstance(exc.__cause__, websocket.WebSocketTimeoutException):
                return None
            raise


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

    def on_malformed(self, data: bytes, reason: str) -> None:
        """A frame the transport could not even decode (a text frame that is not UTF-8):
        skipped with a WARNING by default; during the handshake too. May raise like
        ``on_frame``."""
        log.warning("simsync %s: ignoring a malformed frame: %s: %s", self.name, reason,
                    excerpt(data))


class SilenceClock:
    """How long the server has been silent, not counting the time this process itself was
    not running (keepalive thread only).

    A garbage collection, a GIL held by native code, SIGSTOP or a suspended laptop stop the
    reader and the keepalive together: the keepalive then wakes late and finds the last inbound
    frame old although the server may have answered long ago, its frames waiting unread in the
    socket buffer. Only the keepalive's own lateness is taken out, so a dead server is still
    found under any steady load: each wake adds at least its nominal interval of silence.
    """

    #: Lateness of one wake (seconds) below which it is scheduling jitter, not a stall.
    JITTER = 0.05

    def __init__(self) -> None:
        self._inbound_seen = -1.0   # the last-inbound time the stall credit belongs to
        self._stalled = 0.0         # seconds of own stall since that inbound frame

    def measure(self, now: float, last_inbound: float, late: float) -> float:
        """Seconds of silence since ``last_inbound`` (``time.monotonic`` values), the
        keepalive having woken ``late`` seconds after it asked to."""
        if last_inbound != self._inbound_seen:
            self._inbound_seen, self._stalled = last_inbound, 0.0
        if late > self.JITTER:
            # the stall ended now: only its part after the last inbound frame counts
            self._stalled += min(late, now - last_inbound)
        return now - last_inbound - self._stalled


class ReconnectPolicy:
    """Backoff of one outage: exponential with full jitter, capped, at least an HTTP
    ``Retry-After`` when the server gave one, bounded by a wall-clock budget (read at each
    decision: ``budget()``) and by ``stop`` (set by ``close()``, which also cuts a sleep
    short)."""

    def __init__(self, config: ClientConfig, stop: threading.Event) -> None:
        self._config = config
        self._stop = stop
        self._exponential = tenacity.wait_random_exponential(
            multiplier=config.backoff_initial, max=config.backoff_max)

    def retrying(self, on_sleep: Callable[[tenacity.RetryCallState], None],
                 budget: Optional[Callable[[], float]] = None) -> tenacity.Retrying:
        """A fresh tenacity controller (a fresh budget) for one outage."""
        spend = budget or (lambda: self._config.reconnect_budget)

        def spent(state: tenacity.RetryCallState) -> bool:
            upcoming = state.upcoming_sleep or 0.0
            return (state.seconds_since_start or 0.0) + upcoming >= spend() \
                or self._stop.is_set()

        return tenacity.Retrying(
            stop=spent,
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=self._sleep,
            before_sleep=on_sleep,
            reraise=True,
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        delay = float(self._exponential(state))
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(delay, retry_after) if retry_after else delay

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


def describe(exc: BaseException) -> str:
    """A short reason for logs and errors (never headers or URLs with secrets)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


#: Upgrade answers worth another attempt (RFC 9110): timeout, rate limit, gateway trouble.
TRANSIENT_UPGRADE_STATUSES = TRANSIENT_HTTP_STATUSES
#: Close codes (RFC 6455 §7.4.1, IANA registry) after which a reconnect cannot help: the
#: server refused what we sent. 4000-4999 (application codes) are fatal too.
FATAL_CLOSE_CODES = {1003: "unsupported data", 1007: "invalid payload data",
                     1008: "policy violation", 1009: "message too big"}
#: Close codes after which a reconnect is expected to work (and any other code not fatal).
TRANSIENT_CLOSE_CODES = {1000: "normal closure", 1001: "going away",
                         1002: "protocol error", 1005: "no status code",
                         1006: "lost without a close frame", 1011: "internal error",
                         1012: "service restart", 1013: "try again later",
                         1014: "bad gateway"}
#: OpenSSL's reasons when the peer answered a TLS ClientHello with something else (plain
#: HTTP): the URL said wss:// (or was a bare host) for a plain ws:// server.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "wrong version number",
            "record layer failure", "packet length too long")


def _check_upgrade(headers: Any, url: str) -> None:
    """Refuse a 101 that agreed to what was never asked (RFC 6455 §4.1: the client MUST fail
    the connection): an extension (``permessage-deflate`` would compress frames this client
    cannot read) or a subprotocol. A protocol violation: ``Fatal`` on every attempt."""
    headers = {str(k).lower(): v for k, v in (headers or {}).items()}
    for name, what in (("sec-websocket-extensions", "an extension"),
                       ("sec-websocket-protocol", "a subprotocol")):
        if headers.get(name):
            raise Fatal(f"the server at {url} violated the WebSocket handshake: it accepted "
                        f"{what} the client never asked for ({name}: "
                        f"{excerpt(headers[name], 60)})")


def close_problem(code: Optional[int], reason: str, url: str = "") -> ConnectionProblem:
    """What a close frame from the server means: ``Fatal`` or ``Transient``, naming both
    (and ``url``, as shown in errors, when the close is fatal)."""
    if code is None:
        code = 1005
    fatal = code in FATAL_CLOSE_CODES or 4000 <= code <= 4999
    name = FATAL_CLOSE_CODES.get(code) or TRANSIENT_CLOSE_CODES.get(code) or (
        "application code" if 4000 <= code <= 4999 else "close code")
    said = f": {reason!r}" if reason else " (no reason given)"
    server = f"the server at {url}" if fatal and url else "the server"
    text = f"{server} closed the connection with code {code} ({name}){said}"
    kind = Fatal if fatal else Transient
    return kind(text, close_code=code, close_reason=reason)


class Connection:
    """One logical WebSocket connection: reconnects under a policy until its link is done,
    fails, or ``close()`` is called. ``status`` is its watchable ``ConnectionStatus``;
    ``failure`` the exception that failed it (``Transient``/``Fatal`` carry ``http_status``,
    ``close_code``, ``close_reason`` when the server said something)."""

    def __init__(self, link: Link, config: ClientConfig, label: str) -> None:
        self.link = link
        self.config = config
        self.label = label
        self.status = StatusCell(f"simsync {link.name} {label}")
        self._stop = threading.Event()
        self._ws: Optional[websocket.WebSocket] = None
        self._sock: Optional[DeadlineSocket] = None    # the socket of the attempt or link
        self._sock_lock = threading.RLock()     # close() may run in a signal handler
        self._live = False                               # UP: handshake done, sends go
        self._watched = False   # upgraded: the keepalive pings it and watches its silence
        self._ever_up = False
        self._outage_started = time.monotonic()
        self._attempts = 0
        self._last_cause: Optional[str] = None
        self._pong_owed: Optional[bytes] = None
        self._last_inbound = time.monotonic()
        self._silence = SilenceClock()      # keepalive thread only
        self._policy = ReconnectPolicy(config, self._stop)
        self._reader = threading.Thread(target=self._run, daemon=True,
                                        name=f"simsync-{link.name}-reader-{label}")
        self._keepalive = threading.Thread(target=self._keep_alive, daemon=True,
                                           name=f"simsync-{link.name}-keepalive-{label}")
        self.failure: Optional[BaseException] = None

    @property
    def _name(self) -> str:
        return f"simsync {self.link.name} {self.label}"

    # ------------------------------------------------------------------ user-facing

    def start(self) -> None:
        """Start the reader (which connects) and the keepalive. Returns at once."""
        self._reader.start()
        self._keepalive.start()

    def send(self, text: str, deadline: Optional[float] = None) -> None:
        """Send one text frame on the current socket (any thread).

        Blocks until the frame is written: waits for another thread's send at most until
        ``deadline`` (a ``time.monotonic()`` value; ``None``: no limit), and each write at
        most until ``deadline`` and at most ``dead_after`` seconds without progress.
        Raises ``Transient`` when not connected or when the send failed or timed out; a
        failed send also aborts the socket (part of the frame may be on the wire), so the
        link reconnects and may send again after its handshake — except a wait for another
        thread's send that ran out (nothing written; the socket is left to that send)."""
        sock = self._sock
        if sock is None or not self._live:
            raise Transient("not connected")
        self.send_on(sock, text, deadline)

    def close(self, timeout: float) -> bool:
        """Stop for good: stop flag first, wake the reader (a close frame if the socket is
        free, then ``shutdown``), join with a deadline last.

        Runs on a user thread; blocks at most ``timeout`` in every state (connecting,
        upgrading, handshaking, sending, backing off). Returns False (and warns) if a thread
        had to be abandoned."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        with self._sock_lock:
            sock = self._sock
        if sock is not None:
            if self._live:
                with contextlib.suppress(Exception):   # best effort, never waits for a send
                    sock.sendall(_close_frame(1000), time.monotonic() + min(0.2, timeout / 4),
                                 blocking=False)
            sock.abort()
        for thread in (self._reader, self._keepalive):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in (self._reader, self._keepalive) if t.is_alive()]
        if alive:
            log.warning("%s: abandoned threads after %.1fs: %s", self._name, timeout, alive)
        self.status.set(ConnectionStatus(State.CLOSED))
        return not alive

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def abort(self) -> None:
        """Cut the current socket (it reconnects unless stopped). Any thread."""
        with self._sock_lock:
            sock = self._sock
        if sock is not None:
            sock.abort()

    # ------------------------------------------------------------------ socket primitives

    def send_on(self, sock: DeadlineSocket, text: str, deadline: Optional[float] = None
                ) -> None:
        """Frame ``text`` (websocket-client's ABNF) and write it (see ``send``)."""
        data = ABNF.create_frame(text, ABNF.OPCODE_TEXT).format()
        try:
            sock.sendall(data, deadline)
        except WriteBusy as exc:
            raise Transient(f"not sent: {describe(exc)}") from exc
        except (OSError, ValueError) as exc:
            sock.abort()
            if isinstance(exc, TimeoutError):
                raise Transient(f"send timed out ({describe(exc)}); the connection is "
                                "declared dead") from exc
            raise Transient(f"send failed: {describe(exc)}") from exc

    def recv_on(self, ws: websocket.WebSocket) -> Union[str, bytes]:
        """Next data frame (reader thread). Pings are answered, pongs and pings refresh the
        liveness clock, malformed text goes to ``Link.on_malformed``; a close frame raises
        what its code means (``close_problem``)."""
        cont = ws.cont_frame
        while True:
            try:
                frame = ws.recv_frame()  # type: ignore[no-untyped-call]
                opcode = frame.opcode
                if opcode == ABNF.OPCODE_TEXT or opcode == ABNF.OPCODE_BINARY or \
                        opcode == ABNF.OPCODE_CONT:
                    cont.validate(frame)
                    cont.add(frame)
                    if not frame.fin:
                        continue
                    opcode, frame = cont.extract(frame)
            except websocket.WebSocketTimeoutException as exc:
                raise Transient("timed out waiting for the server") from exc
            except (OSError, websocket.WebSocketException, ValueError) as exc:
                raise Transient(f"connection lost without a close frame (code 1006): "
                                f"{describe(exc)}", close_code=1006) from exc
            self._last_inbound = time.monotonic()
            if opcode == ABNF.OPCODE_TEXT:
                data = frame.data
                try:
                    return data.decode("utf-8") if not isinstance(data, str) else data
                except UnicodeDecodeError as exc:
                    self.link.on_malformed(bytes(data), f"a text frame that is not UTF-8 "
                                           f"({exc.reason} at byte {exc.start})")
                    continue
            if opcode == ABNF.OPCODE_BINARY:
                return bytes(frame.data)
            if opcode == ABNF.OPCODE_CLOSE:
                raise self._closed_by_server(frame.data)
            if opcode == ABNF.OPCODE_PING:
                self._answer_ping(bytes(frame.data))

    def _closed_by_server(self, payload: bytes) -> ConnectionProblem:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        reason = bytes(payload[2:]).decode("utf-8", "replace")[:123]
        sock = self._sock
        if sock is not None:     # echo the close (RFC 6455 §5.5.1), never waiting on a send
            with contextlib.suppress(Exception):
                sock.sendall(_close_frame(code or 1000), time.monotonic() + SLICE,
                             blocking=False)
        return close_problem(code, reason, urls.shown(self.link.url()))

    def _answer_ping(self, payload: bytes) -> None:
        """Pong at once if no send is in progress, else leave it to the keepalive."""
        sock = self._sock
        if sock is None:
            return
        try:
            if not sock.sendall(ABNF.create_frame(payload, ABNF.OPCODE_PONG).format(),
                                time.monotonic() + self.config.dead_after, blocking=False):
                self._pong_owed = payload
        except OSError:
            sock.abort()

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
                self._fail(exc, self._gave_up(exc))
        except BaseException as exc:  # noqa: BLE001 - a crash must never be silent
            log.exception("%s: internal error", self._name)
            self._fail(exc, f"internal error in the {self.link.name} reader: {describe(exc)}")
        finally:
            self._stop.set()
            self._release_socket()

    def _gave_up(self, exc: Transient) -> str:
        url = urls.shown(self.link.url())
        if not self._ever_up:
            return (f"could not connect to {url} within initial_connect_budget="
                    f"{self.config.initial_connect_budget:g}s ({self._attempts} attempts); "
                    f"last cause: {describe(exc)}")
        return (f"gave up reconnecting to {url} (reconnect_budget="
                f"{self.config.reconnect_budget:g}s): {describe(exc)}")

    def _fail(self, exc: BaseException, reason: Optional[str] = None) -> None:
        self.failure = exc
        self.status.set(ConnectionStatus(State.FAILED, reason or describe(exc)))

    def _budget(self) -> float:
        return (self.config.reconnect_budget if self._ever_up
                else self.config.initial_connect_budget)

    def _handshake_deadline(self) -> Optional[float]:
        """During a reconnect, the end of the outage's budget (the first connection's
        handshake is bounded only by its own timeouts: a create may wait for capacity)."""
        return self._outage_started + self._budget() if self._ever_up else None

    def _serve_outages(self) -> None:
        while not self._stop.is_set():
            self._outage_started = time.monotonic()
            self._last_cause = None
            try:
                for retry in self._policy.retrying(self._before_sleep, self._budget):
                    with retry:
                        self._connect_and_serve(retry.retry_state.attempt_number)
                return
            except StableDrop:
                continue
        raise Transient("stopped")

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else None
        if exc is not None and not (isinstance(exc, ConnectionProblem) and exc.by_budget):
            self._last_cause = describe(exc)
        if not self._ever_up and exc is not None:    # one WARNING, then INFO per retry
            log.log(logging.WARNING if state.attempt_number == 1 else logging.INFO,
                    "%s: connecting to %s failed (attempt %d): %s; retrying in %.2fs "
                    "(initial_connect_budget=%gs)", self._name, urls.shown(self.link.url()),
                    state.attempt_number, describe(exc), delay or 0.0,
                    self.config.initial_connect_budget,
                    extra={"simsync_connect_retry": state.attempt_number})
        self.status.set(ConnectionStatus(State.RECONNECTING, describe(exc) if exc else None,
                                         state.attempt_number), delay)

    def _connect_and_serve(self, attempt: int) -> None:
        """One attempt (reader thread): connect, handshake, then read until the socket dies."""
        if self._stop.is_set():
            raise LinkDone()
        self._attempts = attempt
        with self.link.attempt_turn(attempt, self._stop.is_set):
            ws, sock = self._connect()
            # the handshake is watched too: a parallel create may wait minutes per frame,
            # and only pings tell a parked server from a dead connection
            self._last_inbound = time.monotonic()
            self._watched = True
            try:
                self.link.handshake(Channel(ws, sock, self), attempt)
            except Transient as exc:
                self._drop_socket(sock)
                self._lost(exc, attempt, stable=False)
            except BaseException:
                self._drop_socket(sock)
                raise
        self._last_inbound = time.monotonic()
        self._live = self._ever_up = True
        self.status.set(ConnectionStatus(State.UP, attempt=attempt))
        up_since = time.monotonic()
        try:
            on_frame, recv = self.link.on_frame, self.recv_on
            while True:
                on_frame(recv(ws))
        except Transient as exc:
            stable = time.monotonic() - up_since >= self.config.stable_after
            self._drop_socket(sock)
            self._lost(exc, attempt, stable)
        finally:
            self._drop_socket(sock)

    def _lost(self, exc: Transient, attempt: int, stable: bool) -> None:
        """Decide what a lost socket means: done (stopping), fatal (not reconnectable), a
        fresh outage (it had been stable), or one more failed attempt. Always raises."""
        if self._stop.is_set():
            raise LinkDone() from exc
        self.link.on_down(describe(exc))
        if not self.link.reconnectable:
            raise Fatal(f"connection to {urls.shown(self.link.url())} lost: {describe(exc)}",
                        close_code=exc.close_code,
                        close_reason=exc.close_reason) from exc
        if stable:
            self.status.set(ConnectionStatus(State.RECONNECTING, describe(exc), attempt))
            raise StableDrop() from exc
        raise exc

    def _connect(self) -> Tuple[websocket.WebSocket, DeadlineSocket]:
        """TCP + TLS + upgrade, all by one deadline: ``connect_timeout`` from now, and no
        later than the outage's budget (reader thread). The socket is published before the
        TCP connect, so ``close()`` can cut any phase short."""
        url = self.link.url()
        shown = urls.shown(url)
        started = time.monotonic()
        deadline = started + self.config.connect_timeout
        budget_end = self._outage_started + self._budget()
        by_budget = budget_end < deadline
        deadline = min(deadline, budget_end)
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        proxy = proxy_for(url, self.config)
        dial_host, dial_port = (proxy.host, proxy.port) if proxy else (host, port)
        via = f" to the proxy {proxy.shown}" if proxy else ""
        phase = f"resolving {dial_host}" + (" (the proxy)" if proxy else "")
        sock: Optional[DeadlineSocket] = None
        try:
            infos = resolve(dial_host, dial_port, deadline, self._stop.is_set)
            error: Optional[OSError] = None
            for family, kind, proto, _, address in infos:
                phase = "the TCP connect" + via
                sock = self._publish(DeadlineSocket(socket.socket(family, kind, proto),
                                                    self.config.dead_after))
                try:
                    sock.connect(address, deadline)
                    break
                except (ConnectionRefusedError, OSError) as exc:
                    if isinstance(exc, (TimeoutError, ConnectionAbortedError)):
                        raise
                    error = exc
                    self._drop_socket(sock)
                    sock = None
            if sock is None:
                raise error or OSError(f"no address for {dial_host}")
            if proxy is not None:
                phase = f"the HTTP CONNECT through the proxy {proxy.shown}"
                sock.recv_deadline = sock.send_deadline = deadline
                tunnel(sock, host, port,  # type: ignore[arg-type]
                       (proxy.username, proxy.password))
            if secure:
                phase = "the TLS handshake"
                sock.start_tls(self._tls_context(), host, deadline)
            phase = "the WebSocket upgrade"
            sock.recv_deadline = sock.send_deadline = deadline
            ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
            headers = [*self.link.headers, f"User-Agent: {USER_AGENT}"]
            ws.connect(url, header=headers, suppress_origin=True,  # type: ignore[no-untyped-call]
                       socket=sock, redirect_limit=0)
            sock.recv_deadline = sock.send_deadline = None
            _check_upgrade(ws.getheaders(), shown)
        except BaseException as exc:
            if sock is not None:
                self._drop_socket(sock)
            if self._stop.is_set():
                raise LinkDone() from None
            raise self._connect_problem(exc, shown, phase, by_budget,
                                        time.monotonic() - started) from None
        self._ws = ws
        if self._stop.is_set():
            self._drop_socket(sock)
            raise LinkDone()
        return ws, sock

    def _connect_problem(self, exc: BaseException, url: str, phase: str, by_budget: bool,
                         elapsed: float) -> BaseException:
        """Classify a failed connect (see the README's failure table)."""
        if isinstance(exc, ConnectionProblem):
            return exc
        if isinstance(exc, websocket.WebSocketProxyException):
            return Fatal(f"{phase} failed: {describe(exc)} (the proxy refused; check "
                         "ClientConfig.proxy or HTTP(S)_PROXY/NO_PROXY)")
        if isinstance(exc, InterruptedError):
            return LinkDone()
        if isinstance(exc, websocket.WebSocketBadStatusException):
            status = exc.status_code
            headers = exc.resp_headers or {}
            message = f"{status} {getattr(exc, 'status_message', None) or ''}".strip()
            if status in (401, 403):
                return Fatal(f"the server rejected the credentials (HTTP {status}) at {url}",
                             http_status=status)
            if status in TRANSIENT_UPGRADE_STATUSES:
                retry_after = retry_after_seconds(headers.get("retry-after"))
                after = f", Retry-After {retry_after:g}s" if retry_after is not None else ""
                return Transient(f"upgrade refused (HTTP {message}{after})",
                                 http_status=status, retry_after=retry_after)
            return Fatal(f"the server at {url} answered the WebSocket upgrade with HTTP "
                         f"{message}; check the URL (a simulator serves ws(s)://HOST/backtest)",
                         http_status=status)
        if isinstance(exc, websocket.WebSocketException) and "Redirect" in str(exc):
            return Fatal(f"the server at {url} answered the WebSocket upgrade with a redirect; "
                         "simsync does not follow redirects: use the final URL")
        if isinstance(exc, TrustStoreError):
            return Fatal(str(exc))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Fatal(f"TLS certificate verification failed for {url}: "
                         f"{exc.verify_message}")
        if isinstance(exc, ssl.SSLError) and any(
                mark in f"{exc.reason} {exc}" for mark in _NOT_TLS):
            return Fatal(f"the TLS handshake with {url} failed ({exc.reason or exc}): the server "
                         f"does not speak TLS; for a plain server use ws://, e.g. "
                         f"{urls.plain_ws(url)}")
        if isinstance(exc, (TimeoutError, websocket.WebSocketTimeoutException)):
            what = ("the outage's budget ran out" if by_budget else
                    f"connect_timeout={self.config.connect_timeout:g}s ran out")
            before = (f"; the attempt before failed with: {self._last_cause}"
                      if by_budget and self._last_cause else "")
            problem = Transient(f"connect timed out after {elapsed:.1f}s during {phase} "
                                f"({what}){before}")
            problem.by_budget = by_budget
            return problem
        if isinstance(exc, websocket.WebSocketException) and phase == "the WebSocket upgrade" \
                and "Invalid WebSocket Header" in str(exc):
            return Fatal(f"the server at {url} answered 101 without a valid WebSocket "
                         "handshake (a bad Sec-WebSocket-Accept, Upgrade or Connection "
                         "header: not a simulator?)")
        if isinstance(exc, (OSError, websocket.WebSocketException, ValueError)):
            return Transient(f"connect failed during {phase}: {describe(exc)}")
        return exc

    def _tls_context(self) -> ssl.SSLContext:
        return tls_context(self.config)

    def _publish(self, sock: DeadlineSocket) -> DeadlineSocket:
        with self._sock_lock:
            self._sock = sock
        if self._stop.is_set():
            sock.abort()
        return sock

    def _drop_socket(self, sock: DeadlineSocket) -> None:
        """Close ``sock`` and forget it (reader thread)."""
        with self._sock_lock:
            if self._sock is sock:
                self._sock = None
                self._live = self._watched = False
                self._ws = None
        sock.close()

    def _release_socket(self) -> None:
        with self._sock_lock:
            sock = self._sock
        if sock is not None:
            self._drop_socket(sock)

    # ------------------------------------------------------------------ keepalive thread

    def _keep_alive(self) -> None:
        """Keepalive thread: ping each interval (skipped while a send is in progress); abort
        a socket silent past ``dead_after``. A crash here fails the connection."""
        interval = min(SLICE, self.config.ping_interval)
        next_ping = time.monotonic() + self.config.ping_interval
        try:
            while True:
                due = time.monotonic() + interval
                if self._stop.wait(interval):
                    break
                next_ping = self._keep_alive_once(next_ping, time.monotonic() - due)
        except BaseException as exc:  # noqa: BLE001 - a crash must never be silent
            log.exception("%s: internal error in the keepalive", self._name)
            self._fail(exc, f"internal error in the {self.link.name} keepalive: "
                            f"{describe(exc)}")
            self._stop.set()
            self.abort()

    def _keep_alive_once(self, next_ping: float, late: float) -> float:
        """One keepalive check, ``late`` seconds after it was due; returns the next ping's
        time."""
        sock = self._sock
        now = time.monotonic()
        if sock is None or not self._watched:
            self._last_inbound = now
            return next_ping
        if self.link.holding_back():
            # the reader waits on the user and cannot answer the server's pings: an
            # unsolicited pong (RFC 6455 §5.5.3) each second keeps a heartbeat server calm
            self._last_inbound = now
            if now >= next_ping:
                next_ping = now + min(1.0, self.config.ping_interval)
                self._send_control(sock, ABNF.OPCODE_PONG, b"")
            return next_ping
        silent = self._silence.measure(now, self._last_inbound, late)
        if silent > self.config.dead_after:
            log.warning("%s: nothing received for %.1fs, reconnecting", self._name, silent)
            self._last_inbound = now
            sock.abort()
            return next_ping
        owed = self._pong_owed
        if owed is not None:
            self._send_control(sock, ABNF.OPCODE_PONG, owed)
            self._pong_owed = None
        if now >= next_ping:
            next_ping = now + self.config.ping_interval
            self._send_control(sock, ABNF.OPCODE_PING, b"")
        return next_ping

    def _send_control(self, sock: DeadlineSocket, opcode: int, payload: bytes) -> None:
        """A ping or pong, only if no send is in progress, and only until the moment the
        connection would be declared dead anyway (keepalive thread)."""
        frame = ABNF.create_frame(payload, opcode).format()
        try:
            sock.sendall(frame, self._last_inbound + self.config.dead_after, blocking=False)
        except OSError as exc:
            log.warning("%s: keepalive write failed (%s), reconnecting", self._name,
                        describe(exc))
            sock.abort()


def _close_frame(code: int) -> bytes:
    return bytes(ABNF.create_frame(struct.pack("!H", code), ABNF.OPCODE_CLOSE).format())
