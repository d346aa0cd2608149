"""`FaultProxy`: a TCP proxy on loopback that breaks the network between a client and a server.

Faults that need no cooperation from the server: the bytes of every connection go through the
proxy, which can delay them, throttle them, cut them into small pieces, stop forwarding them
(a half-open path), or reset the connection. Every fault can be switched on and off while
connections are live, from any thread::

    with LocalSimulator() as sim, FaultProxy(upstream=("127.0.0.1", sim.port)) as proxy:
        client = simsync.Client(proxy.url(sim.url))     # ws://127.0.0.1:PROXY_PORT/backtest
        proxy.set_latency(0.05)                         # 50 ms each way
        proxy.set_slicing(7, pause=0.001)               # 7-byte TCP pieces
        proxy.blackhole("down", duration=2.0)           # nothing reaches the client for 2 s
        proxy.reset(side="client")                      # RST every client connection now
        proxy.connections()                             # [ProxiedConnection(index, bytes…)]

One proxy serves one upstream ``host:port``; give the client the proxy's URL (`url`) and every
connection it makes to that host:port (control WebSocket, JSON-RPC over HTTP, PubSub
WebSocket, when the server names them by path as the local simulator does) goes through it.

Directions: ``"up"`` is client → upstream, ``"down"`` is upstream → client, ``"both"`` is
both. Sides (for resets): ``"client"`` (the accepted socket), ``"upstream"`` (the proxy's
socket to the server), ``"both"``.

Semantics of each fault, per direction:

* latency ``s``: every chunk read is written ``s`` seconds after it was read (order kept; the
  value in force when the chunk is due applies).
* bandwidth ``b`` bytes/s: written in pieces of about ``b / 20`` bytes, each followed by a
  wait of ``len / b`` seconds.
* slicing ``n`` (with ``pause``): written in pieces of at most ``n`` bytes (each its own
  ``send``; TCP_NODELAY is on), with ``pause`` seconds after each piece.
* blackhole: nothing is forwarded (bytes, FIN or a reset from the peer are held, nothing is
  dropped) and nothing is closed; the sender's data waits in the proxy and in the kernel's
  buffers, as on a partitioned path. Released by `release` (or when ``duration`` ends), the held
  bytes flow on in order.
* reset: ``SO_LINGER`` 0 then close, so the peer gets a TCP RST (``ECONNRESET``). A side that
  is not reset stays open with nothing forwarded to it (what it sends is read and discarded)
  until its peer closes it or the proxy closes.
* a peer's FIN is forwarded as a FIN (half-close); a peer's RST as an RST on the other side.

Threads: `start` and `close` run on the caller's thread; one daemon thread
(``simsync-netproxy-PORT``) runs an asyncio loop that accepts and forwards. Setters and
`connections` are thread-safe and never block on the loop; `reset` blocks (up to 5 s) until
the resets were sent. `close` closes every socket and joins the thread. Imports nothing from the
simsync client or the rest of the simulator.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType
from typing import Callable, Dict, List, Optional, Tuple, Type, Union
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

DIRECTIONS = ("up", "down")
SIDES = ("client", "upstream")
#: Longest a wait sleeps before it looks at the settings again (so changes apply at once).
TICK = 0.01
READ_SIZE = 64 * 1024
QUEUE_CHUNKS = 16
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CALL_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProxiedConnection:
    """One accepted connection, as the proxy saw it.

    ``index``: 1-based accept order. ``client``: the client's (host, port). ``bytes_up`` /
    ``bytes_down``: bytes forwarded client → upstream / upstream → client. ``writes_down``:
    ``send`` calls towards the client (pieces). ``open``: neither side closed yet. ``reset``:
    the side(s) the proxy reset (``"client"``, ``"upstream"``, ``"both"``), None if none.
    ``upstream_failed``: the proxy could not connect upstream (the client was reset).
    """

    index: int
    client: Tuple[str, int]
    bytes_up: int = 0
    bytes_down: int = 0
    writes_up: int = 0
    writes_down: int = 0
    open: bool = True
    reset: Optional[str] = None
    upstream_failed: bool = False


@dataclass
class _Shaping:
    """The faults in force for one direction (guarded by the proxy's lock)."""

    latency: float = 0.0
    bandwidth: Optional[float] = None
    slice_size: Optional[int] = None
    slice_pause: float = 0.0
    blackhole: bool = False
    blackhole_until: Optional[float] = None   # time.monotonic(); None = until released

    def holding(self, now: float) -> bool:
        return self.blackhole and (self.blackhole_until is None or now < self.blackhole_until)


@dataclass
class _ArmedReset:
    """Reset the connection that forwards the ``after``-th byte (counted from arming) in
    ``direction``; ``connection`` restricts it to one accept index."""

    after: int
    side: str
    direction: str
    connection: Optional[int]
    fired: bool = field(default=False)


class _Eof:
    """The peer closed its sending half (FIN)."""


class _Rst:
    """The peer reset its connection (or it failed)."""


_Item = Union[Tuple[float, bytes], _Eof, _Rst]


def _directions(direction: str) -> Tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'up', 'down' or 'both', got {direction!r}")
    return (direction,)


def _sides(side: str) -> Tuple[str, ...]:
    if side == "both":
        return SIDES
    if side not in SIDES:
        raise ValueError(f"side must be 'client', 'upstream' or 'both', got {side!r}")
    return (side,)


def _rst(writer: Optional[asyncio.StreamWriter]) -> None:
    """Close ``writer``'s socket with a TCP RST (SO_LINGER 0)."""
    if writer is None:
        return
    transport = writer.transport
    if transport.is_closing() and transport.get_extra_info("socket") is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Link:
    """One proxied connection: two sockets and a reader + writer task per direction."""

    def __init__(self, proxy: FaultProxy, index: int, client_r: asyncio.StreamReader,
                 client_w: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.index = index
        peer = client_w.get_extra_info("peername") or ("", 0)
        self.record = ProxiedConnection(index, (str(peer[0]), int(peer[1])))
        self.readers: Dict[str, asyncio.StreamReader] = {"client": client_r}
        self.writers: Dict[str, asyncio.StreamWriter] = {"client": client_w}
        self.tasks: List[asyncio.Task[None]] = []
        self.done_dirs: set[str] = set()
        self.dead_sides: set[str] = set()

    # -- bookkeeping (loop thread; the record is swapped under the proxy's lock) -----------
    def note(self, **changes: object) -> None:
        with self.proxy._lock:
            self.record = replace(self.record, **changes)  # type: ignore[arg-type]

    def count(self, direction: str, n: int) -> None:
        with self.proxy._lock:
            r = self.record
            if direction == "up":
                self.record = replace(r, bytes_up=r.bytes_up + n, writes_up=r.writes_up + 1)
            else:
                self.record = replace(r, bytes_down=r.bytes_down + n,
                                      writes_down=r.writes_down + 1)

    # -- life ------------------------------------------------------------------------------
    async def run(self) -> None:
        host, port = self.proxy.upstream
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError as exc:
            log.info("proxy connection %d: upstream %s:%d failed: %s", self.index, host, port,
                     exc)
            self.note(upstream_failed=True, open=False)
            _rst(self.writers["client"])
            return
        self.readers["upstream"], self.writers["upstream"] = up_r, up_w
        for direction, src, dst in (("up", "client", "upstream"), ("down", "upstream", "client")):
            queue: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_CHUNKS)
            self.tasks.append(asyncio.ensure_future(self._read(src, queue)))
            self.tasks.append(asyncio.ensure_future(self._write(direction, dst, queue)))
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def finish_direction(self, direction: str) -> None:
        self.done_dirs.add(direction)
        if self.done_dirs >= set(DIRECTIONS):
            self.close_all()

    def close_all(self) -> None:
        for writer in self.writers.values():
            if writer.transport.is_closing():
                writer.transport.abort()
            else:
                writer.close()
        self.note(open=False)

    def abort_all(self) -> None:
        for writer in self.writers.values():
            writer.transport.abort()
        self.note(open=False)

    def reset(self, side: str) -> None:
        """RST ``side`` (client, upstream or both); the other side only gets drained."""
        sides = _sides(side)
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        for name in sides:
            _rst(self.writers.get(name))
            self.dead_sides.add(name)
        self.note(reset=side)
        for name, reader in self.readers.items():
            if name not in sides:
                self.tasks.append(asyncio.ensure_future(self._discard(name, reader)))
        if not self.tasks:
            self.note(open=False)

    # -- tasks -----------------------------------------------------------------------------
    async def _read(self, side: str, queue: asyncio.Queue[_Item]) -> None:
        reader = self.readers[side]
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                await queue.put(_Rst())
                return
            if not data:
                await queue.put(_Eof())
                return
            await queue.put((time.monotonic(), data))

    async def _write(self, direction: str, side: str, queue: asyncio.Queue[_Item]) -> None:
        writer = self.writers[side]
        proxy = self.proxy
        last_write = time.monotonic()
        last_piece = 0
        while True:
            item = await queue.get()
            if isinstance(item, (_Eof, _Rst)):
                await proxy._hold(direction)
                if isinstance(item, _Rst):
                    _rst(writer)
                    self.abort_all()
                    return
                if writer.can_write_eof() and not writer.transport.is_closing():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                self.finish_direction(direction)
                return
            arrival, data = item
            await proxy._wait(arrival, partial(proxy._latency, direction))
            view = memoryview(data)
            while view:
                await proxy._hold(direction)
                # paced after the previous piece (bandwidth, slicing pause)
                await proxy._wait(last_write, partial(proxy._gap, direction, last_piece))
                await proxy._hold(direction)
                size = proxy._piece_size(direction, len(view))
                size = proxy._cut_for_reset(self, direction, size)
                piece = bytes(view[:size])
                try:
                    writer.write(piece)
                    await writer.drain()
                except (ConnectionError, OSError):
                    self.abort_all()
                    return
                last_write, last_piece = time.monotonic(), size
                self.count(direction, size)
                view = view[size:]
                armed = proxy._reset_due(self, direction, size)
                if armed is not None:
                    self.reset(armed)
                    return

    async def _discard(self, side: str, reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(READ_SIZE):
                pass
        except (ConnectionError, OSError):
            pass
        self.writers[side].transport.abort()
        self.note(open=False)


class FaultProxy:
    """A fault-injecting TCP proxy on ``host`` (ephemeral ``port`` unless given) in front of
    ``upstream`` = (host, port). A context manager; see the module doc for each fault."""

    def __init__(self, upstream: Tuple[str, int], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = (str(upstream[0]), int(upstream[1]))
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._shapes: Dict[str, _Shaping] = {d: _Shaping() for d in DIRECTIONS}
        self._armed: List[_ArmedReset] = []
        self._links: Dict[int, _Link] = {}
        self._ids = itertools.count(1)
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._start_error: Optional[BaseException] = None

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return (f"FaultProxy({self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}, "
                f"{state})")

    # -- addresses -------------------------------------------------------------------------
    @property
    def address(self) -> Tuple[str, int]:
        """(host, port) the proxy listens on (port known after `start`)."""
        return self.host, self.port

    def url(self, url: str) -> str:
        """``url`` (``ws://``, ``wss://``, ``http://``, ``https://``; any path) with its
        host:port replaced by the proxy's, e.g. ``ws://127.0.0.1:8900/backtest`` →
        ``ws://127.0.0.1:PROXY/backtest``. Raises ``ValueError`` for a URL that does not
        point at the proxy's upstream port."""
        parts = urlsplit(url)
        if parts.port is not None and parts.port != self.upstream[1]:
            raise ValueError(f"{url!r} is not on the proxied port {self.upstream[1]}")
        netloc = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # -- life ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Bind, start the loop thread, return once the proxy accepts connections."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), daemon=True,
                                        name=f"simsync-netproxy-{self.port}")
        self._thread.start()
        if not ready.wait(START_TIMEOUT) or self._start_error is not None:
            self.close()
            raise RuntimeError(f"fault proxy failed to start: {self._start_error!r}")
        return self

    def close(self) -> None:
        """Close every connection (abort, no RST forced) and the listening socket, and join
        the thread (idempotent; blocks up to 10 s)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("fault proxy thread did not stop within %ss", STOP_TIMEOUT)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    # -- faults (any thread) ---------------------------------------------------------------
    def set_latency(self, seconds: float, direction: str = "both") -> None:
        """Delay every chunk by ``seconds`` in ``direction`` (0 = off)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._set(direction, latency=float(seconds))

    def set_bandwidth(self, bytes_per_sec: Optional[float], direction: str = "both") -> None:
        """Cap ``direction`` at ``bytes_per_sec`` (None = no cap)."""
        if bytes_per_sec is not None and bytes_per_sec <= 0:
            raise ValueError("bandwidth must be > 0 (or None for no cap)")
        self._set(direction, bandwidth=bytes_per_sec)

    def set_slicing(self, size: Optional[int], pause: float = 0.0,
                    direction: str = "both") -> None:
        """Forward ``direction`` in pieces of at most ``size`` bytes with ``pause`` seconds
        after each (None = off)."""
        if size is not None and size < 1:
            raise ValueError("slice size must be >= 1 (or None for off)")
        if pause < 0:
            raise ValueError("pause must be >= 0")
        self._set(direction, slice_size=size, slice_pause=float(pause) if size else 0.0)

    def blackhole(self, direction: str = "both", duration: Optional[float] = None) -> None:
        """Stop forwarding ``direction`` (half-open: nothing is closed, nothing dropped) until
        `release`, or for ``duration`` seconds."""
        until = None if duration is None else time.monotonic() + duration
        self._set(direction, blackhole=True, blackhole_until=until)

    def release(self, direction: str = "both") -> None:
        """End a blackhole: the held bytes flow on, in order."""
        self._set(direction, blackhole=False, blackhole_until=None)

    def clear(self) -> None:
        """Every fault off (latency, bandwidth, slicing, blackholes, armed resets)."""
        with self._lock:
            self._shapes = {d: _Shaping() for d in DIRECTIONS}
            self._armed.clear()

    def reset(self, side: str = "both", connection: Optional[int] = None) -> int:
        """RST ``side`` of every open connection, or only of the ``connection``-th (1-based
        accept order). Blocks until sent (up to 5 s); returns how many were reset."""
        _sides(side)
        loop = self._loop
        if loop is None:
            raise RuntimeError("FaultProxy is not running")

        async def do() -> int:
            links = [link for index, link in self._links.items()
                     if link.record.open and connection in (None, index)]
            for link in links:
                link.reset(side)
            return len(links)
        return asyncio.run_coroutine_threadsafe(do(), loop).result(CALL_TIMEOUT)

    def reset_after(self, nbytes: int, side: str = "both", direction: str = "down",
                    connection: Optional[int] = None) -> None:
        """Arm one reset: the connection that forwards the ``nbytes``-th byte in ``direction``
        from now on (any connection, or the ``connection``-th) has ``side`` reset right
        after that byte (possibly in the middle of a WebSocket frame)."""
        _sides(side)
        (dir_,) = _directions(direction)
        if nbytes < 1:
            raise ValueError("nbytes must be >= 1")
        with self._lock:
            self._armed.append(_ArmedReset(nbytes, side, dir_, connection))

    def armed_resets(self) -> int:
        """Armed resets that have not fired yet."""
        with self._lock:
            return sum(1 for a in self._armed if not a.fired)

    # -- record ----------------------------------------------------------------------------
    def connections(self) -> List[ProxiedConnection]:
        """Every connection accepted so far, in accept order (snapshots)."""
        with self._lock:
            return [self._links[i].record for i in sorted(self._links)]

    def open_connections(self) -> List[ProxiedConnection]:
        return [c for c in self.connections() if c.open]

    # -- internals (settings: any thread; the rest: loop thread) ---------------------------
    def _set(self, direction: str, **changes: object) -> None:
        dirs = _directions(direction)
        with self._lock:
            for d in dirs:
                self._shapes[d] = replace(self._shapes[d], **changes)  # type: ignore[arg-type]

    def _shaping(self, direction: str) -> _Shaping:
        with self._lock:
            return self._shapes[direction]

    def _gap(self, direction: str, last_piece: int) -> float:
        """Seconds to wait after a piece of ``last_piece`` bytes before the next one."""
        shape = self._shaping(direction)
        gap = 0.0
        if shape.bandwidth and last_piece:
            gap += last_piece / shape.bandwidth
        if shape.slice_size and last_piece:
            gap += shape.slice_pause
        return gap

    def _piece_size(self, direction: str, available: int) -> int:
        shape = self._shaping(direction)
        size = available
        if shape.slice_size:
            size = min(size, shape.slice_size)
        if shape.bandwidth:
            size = min(size, max(1, int(shape.bandwidth / 20)))
        return size

    def _cut_for_reset(self, link: _Link, direction: str, size: int) -> int:
        with self._lock:
            for armed in self._armed:
                if (not armed.fired and armed.direction == direction
                        and armed.connection in (None, link.index)):
                    size = min(size, max(1, armed.after))
        return size

    def _reset_due(self, link: _Link, direction: str, size: int) -> Optional[str]:
        """Count ``size`` forwarded bytes against armed resets; the side to reset, if due."""
        due: Optional[str] = None
        with self._lock:
            for armed in self._armed:
                if (armed.fired or armed.direction != direction
                        or armed.connection not in (None, link.index)):
                    continue
                armed.after -= size
                if armed.after <= 0 and due is None:
                    armed.fired = True
                    due = armed.side
        return due

    def _latency(self, direction: str) -> float:
        return self._shaping(direction).latency

    async def _wait(self, since: float, delay: Callable[[], float]) -> None:
        """Sleep until ``since + delay()`` (re-read every tick, so a changed setting applies
        at once)."""
        while True:
            left = since + delay() - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, TICK))

    async def _hold(self, direction: str) -> None:
        """Wait while ``direction`` is blackholed."""
        while self._shaping(direction).holding(time.monotonic()):
            await asyncio.sleep(TICK)

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock, ready))
        except BaseException as exc:  # surface start-up failures to start()
            self._start_error = exc
            ready.set()
        finally:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, sock=sock)
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for link in list(self._links.values()):
                for task in link.tasks:
                    task.cancel()
                link.abort_all()
            await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = next(self._ids)
        link = _Link(self, index, reader, writer)
        with self._lock:
            self._links[index] = link
        try:
            await link.run()
        except asyncio.CancelledError:
            # closing: end quietly (Python 3.11's stream callback would log a cancelled
            # handler task as an error)
            return


__all__ = ["DIRECTIONS", "SIDES", "FaultProxy", "ProxiedConnection"]
