"""`LocalSimulator`: the aiohttp server on one host:port, run by one background thread.

Threads: the caller's thread runs `start`/`stop` and the thread-safe accessors; the simulator's
own thread (``simsync-localsim-PORT``) runs the asyncio loop with every handler, session step
and LiteSVM call. `stop` leaves no thread, socket or listening port behind.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple, Type, TypeVar

from aiohttp import web
from aiohttp.http import WS_KEY

from simsync.localsim.chain import ExecutedTx
from simsync.localsim.connection import Connection
from simsync.localsim.control import serve_control
from simsync.localsim.faults import Fault, FaultPlan
from simsync.localsim.history import DISCOVERY_PROGRAM_ID, ORACLE_ACCOUNT, History
from simsync.localsim.pubsub import serve_pubsub
from simsync.localsim.registry import Registry, SimStats
from simsync.localsim.rpc_methods import handle_body
from simsync.localsim.session import BacktestSession
from simsync.localsim.usage import usage_handler
from simsync.localsim.workers import (
    ANNOUNCE_WAIT,
    WORKER_PATH,
    RemoteSession,
    WorkerPool,
    serve_worker,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
MAX_MESSAGE = 64 * 1024 * 1024
API_KEY_HEADER = "X-API-Key"
_WS_GUID = WS_KEY  # RFC 6455 §1.3 GUID
NON_JSON_BODY = "<html><body><h1>502 Bad Gateway</h1></body></html>"


class _Handled(Exception):
    """A fault wrote its own answer on the raw transport; aiohttp must write nothing more."""


@dataclass(frozen=True)
class SeenRequest:
    """One HTTP request the simulator received (WebSocket upgrades included), for tests that
    check where credentials go. Holds header *names* only: no header value is kept except
    ``host`` (the ``Host`` header, to tell which host name a client used)."""

    method: str
    path: str
    host: str
    header_names: Tuple[str, ...]
    api_key_present: bool
    websocket: bool

    @property
    def channel(self) -> str:
        """``control``, ``pubsub``, ``rpc``, ``ranges`` or ``other`` (from path and method)."""
        if self.path == "/backtest":
            return "control"
        if self.path.startswith("/backtest/"):
            return "pubsub" if self.method == "GET" else "rpc"
        if self.path == "/available-ranges":
            return "ranges"
        return "other"


class LocalSimulator:
    """A real backtest simulator on loopback (PROTOCOL.md end to end). See the package doc.

    ``ssl_context`` (a server-side context with a certificate) serves wss/https instead of
    ws/http. ``rpc_endpoint_host`` makes ``sessionCreated.rpc_endpoint`` an absolute URL on that
    host name (same port, same server) instead of a path, e.g. ``"localhost"`` while the
    control URL says ``127.0.0.1``: a server that points the data plane at another host.

    ``recording`` (a file ``simsync record`` wrote) serves that recorded range instead of the
    synthetic history (``seed``, ``first_slot``, ``bundle_size`` and ``bundles`` are then
    unused): see `simsync.localsim.recorded`. Loaded here, on the calling thread; raises
    ``RecordingNotFound`` for a missing file, ``RecordingError`` for one that is not a
    recording (both `SimsyncError`); a prefix is served with a WARNING.

    ``workers`` (default 1: everything in this process) > 1 runs the sub-sessions of every
    parallel batch in that many worker processes (`simsync.localsim.workers`: this simulator
    keeps the control channel, each sub-session's data plane is on its worker's port); not
    with ``ssl_context``, ``rpc_endpoint_host`` or ``recording``. `start` then blocks until
    every worker is up; `stop` ends them. ``worker`` makes this simulator a worker of another
    (the ``/worker`` channel; ``python -m simsync.localsim --worker``).
    """

    DISCOVERY_PROGRAM_ID = DISCOVERY_PROGRAM_ID
    ORACLE_ACCOUNT = ORACLE_ACCOUNT

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: Optional[str] = None,
                 seed: int = 0, first_slot: int = 400_000_000, bundle_size: int = 1000,
                 bundles: int = 10, slot_delay: float = 0.0,
                 faults: Optional[FaultPlan] = None,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 rpc_endpoint_host: Optional[str] = None,
                 recording: Optional[str] = None, workers: int = 1,
                 worker: bool = False) -> None:
        if workers < 1:
            raise ValueError(f"workers is at least 1, got {workers}")
        if workers > 1 and (ssl_context is not None or rpc_endpoint_host is not None
                            or recording is not None):
            raise ValueError("workers > 1 serves plain ws/http on the workers' own ports: "
                             "not with ssl_context, rpc_endpoint_host or recording")
        self.host = host
        self.port = port
        self.seed = seed
        self.ssl_context = ssl_context
        self.rpc_endpoint_host = rpc_endpoint_host
        self.faults = faults if faults is not None else FaultPlan()
        self.workers: Optional[WorkerPool] = None
        if recording is None:
            self.history = History(seed, first_slot, bundle_size, bundles)
            if workers > 1:
                self.workers = WorkerPool(workers, [
                    "--seed", str(seed), "--first-slot", str(first_slot), "--bundle-size",
                    str(bundle_size), "--bundles", str(bundles), "--slot-delay",
                    str(slot_delay)])
            self.registry = Registry(self.history, slot_delay, self.faults, self.workers,
                                     worker)
        else:   # a recording's range replaces the synthetic history (and its layout)
            from simsync.localsim.recorded import RecordedRegistry, load_recording
            self.history = load_recording(recording)
            self.registry = RecordedRegistry(self.history, slot_delay, self.faults)
        self._api_key = api_key
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop_event: Optional[asyncio.Event] = None
        self._start_error: Optional[BaseException] = None
        self._stopping = False
        self._conns: Set[Connection] = set()
        self._seen: List[SeenRequest] = []
        self._seen_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"LocalSimulator({self.host}:{self.port}, {state})"

    # -- URLs ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self._netloc}/backtest"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self._netloc}"

    @property
    def _netloc(self) -> str:
        return _netloc(self.host, self.port)

    def _rpc_base(self) -> str:
        """Prefix of ``rpc_endpoint`` ("" = the plain path ``/backtest/ID``)."""
        if self.rpc_endpoint_host is None:
            return ""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{_netloc(self.rpc_endpoint_host, self.port)}"

    # -- life ------------------------------------------------------------------------------
    def start(self) -> LocalSimulator:
        """Bind, start the loop thread, return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("LocalSimulator already started")
        if self.workers is not None:
            self.workers.start()
        try:
            sock = self._bind()
        except BaseException:
            if self.workers is not None:
                self.workers.stop()
            raise
        self.port = sock.getsockname()[1]
        self.registry.rpc_base = self._rpc_base()
        ready = threading.Event()
        self._start_error = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(sock, ready), daemon=True,
                                        name=f"simsync-localsim-{self.port}")
        self._thread.start()
        if not ready.wait(START_TIMEOUT) or self._start_error is not None:
            self.stop()
            raise RuntimeError(f"local simulator failed to start: {self._start_error!r}")
        log.info("local simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the port, join the thread, end the
        worker processes (idempotent)."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            if self.workers is not None:
                self.workers.stop()
            return
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("local simulator thread did not stop within %ss", STOP_TIMEOUT)
        self._thread = None
        self._loop = None
        if self.workers is not None:
            self.workers.stop()

    def __enter__(self) -> LocalSimulator:
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.stop()

    def _bind(self) -> socket.socket:
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
        return sock

    # -- loop thread -----------------------------------------------------------------------
    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock, ready))
        except BaseException as exc:  # surface start-up failures to start()
            self._start_error = exc
            ready.set()
        finally:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        try:
            if self.workers is not None:
                await self.workers.connect()
            await web.SockSite(runner, sock, ssl_context=self.ssl_context).start()
            ready.set()
            await self._stop_event.wait()
            self._stopping = True
            self.registry.shutdown()
            for conn in list(self._conns):
                conn.abort()
        finally:
            if self.workers is not None:
                await self.workers.close()
            await runner.cleanup()

    def _app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self._note(request)
            try:
                return await handler(request)
            except _Handled:  # the transport is closed: aiohttp's write of this is a no-op
                return web.Response(status=204)

        app = web.Application(client_max_size=MAX_MESSAGE, middlewares=[record])
        app.router.add_get("/backtest", self._control)
        app.router.add_get("/available-ranges", self._ranges)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/usage", usage_handler(self.registry.usage, self._key_ok))
        app.router.add_get("/backtest/{session_id}", self._pubsub)
        app.router.add_post("/backtest/{session_id}", self._rpc)
        if self.registry.worker:
            app.router.add_get(WORKER_PATH, self._worker)
        return app

    # -- handlers (loop thread) ------------------------------------------------------------
    def _note(self, request: web.Request) -> None:
        """Record one request: header names only (never a value but the host)."""
        seen = SeenRequest(
            method=request.method, path=request.path, host=request.host,
            header_names=tuple(str(name) for name in request.headers),
            api_key_present=API_KEY_HEADER in request.headers,
            websocket=request.headers.get("Upgrade", "").lower() == "websocket")
        with self._seen_lock:
            self._seen.append(seen)

    def _key_ok(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        given = request.headers.get("X-API-Key", "")
        return hmac.compare_digest(given.encode(), self._api_key.encode())

    async def _control(self, request: web.Request) -> web.StreamResponse:
        if self.faults.reject_key or not self._key_ok(request):
            self.registry.stats.connects_refused += 1
            return web.Response(status=401, text="invalid API key")
        return await self._websocket(request, "control", serve_control_for(self.registry))

    async def _pubsub(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session_id"]
        await self.registry.wait_announced(session_id, ANNOUNCE_WAIT)
        return await self._websocket(
            request, "pubsub", lambda conn: serve_pubsub(conn, lambda: self.registry.hub(
                session_id)))

    async def _worker(self, request: web.Request) -> web.StreamResponse:
        # counted as a control connection: a worker's fault plan is empty (it runs none)
        return await self._websocket(request, "control",
                                     lambda conn: serve_worker(conn, self.registry))

    async def _websocket(self, request: web.Request, channel: str,
                         serve: Callable[[Connection], Awaitable[None]]) -> web.StreamResponse:
        if self._stopping:
            return web.Response(status=503, text="stopping")
        number = self.faults.next_connection(channel)
        if self.faults.take_refusal(channel):
            self.registry.stats.connects_refused += 1
            return web.Response(status=503, text="refused by the fault plan")
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=MAX_MESSAGE,
                                   timeout=2.0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade")
        for fault in self.faults.take_upgrade(channel, number):
            self._fault_fired(fault)
            return await self._upgrade_fault(request, fault)
        await ws.prepare(request)
        conn = Connection(ws, request, channel, self.faults, self._fault_fired, number)
        self._count_connection(channel)
        self._conns.add(conn)
        conn.start()
        try:
            await serve(conn)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            log.debug("%s connection %s ended: %s", channel, conn.id, exc)
        finally:
            self._conns.discard(conn)
            await conn.finish()
        return ws

    def _count_connection(self, channel: str) -> None:
        stats = self.registry.stats
        stats.connections_accepted += 1
        if channel == "control":
            stats.control_connections += 1
        else:
            stats.pubsub_connections += 1

    def _fault_fired(self, fault: Fault) -> None:
        self.registry.stats.faults_fired += 1

    async def _ranges(self, request: web.Request) -> web.Response:
        if not self._key_ok(request):
            return web.Response(status=401, text="invalid API key")
        return web.json_response(self.history.available_ranges())

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _ready(self, request: web.Request) -> web.Response:
        if self._stopping:
            return web.Response(status=503, text="stopping")
        return web.Response(text="ready")

    async def _upgrade_fault(self, request: web.Request,
                             fault: Fault) -> web.StreamResponse:
        """Answer a WebSocket upgrade as ``fault`` says (refuse, silent, trickle_upgrade)."""
        if fault.action == "refuse":
            self.registry.stats.connects_refused += 1
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return web.Response(status=fault.status, headers=headers,
                                text=f"refused by the fault plan ({fault.status})")
        transport = request.transport
        if fault.action == "trickle_upgrade":
            accept = base64.b64encode(hashlib.sha1(
                request.headers.get("Sec-WebSocket-Key", "").encode() + _WS_GUID).digest())
            head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            await self._trickle(transport, head, fault.interval_secs)
        else:  # silent: never answer; end when the peer goes or the server stops
            while (transport is not None and not transport.is_closing()
                   and not self._stopping):
                await asyncio.sleep(0.02)
        if transport is not None:
            transport.close()
        raise _Handled()

    async def _trickle(self, transport: Any, data: bytes, interval: float) -> None:
        """Write ``data`` one byte every ``interval`` seconds (stops when the peer goes)."""
        for i in range(len(data)):
            if transport is None or transport.is_closing() or self._stopping:
                return
            transport.write(data[i:i + 1])
            await asyncio.sleep(interval)

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        self.registry.stats.rpc_requests += 1
        body = await request.read()
        await self.registry.wait_announced(request.match_info["session_id"], ANNOUNCE_WAIT)
        faults = self.faults.take_rpc(self.faults.next_connection("rpc"))
        for fault in faults:
            self._fault_fired(fault)
        actions = {f.action: f for f in faults}
        if "rpc_status" in actions:
            status = actions["rpc_status"].status
            return web.Response(status=status, text=f"injected HTTP {status}")
        if "rpc_non_json" in actions:
            return web.Response(text=NON_JSON_BODY, content_type="text/html")
        if "rpc_delay" in actions:
            await asyncio.sleep(actions["rpc_delay"].delay_secs)
        answer = handle_body(body, request.match_info["session_id"], self._served_here)
        text = json.dumps(answer).encode()
        trickle = actions.get("rpc_trickle")
        if trickle is None:
            return web.Response(body=text, content_type="application/json")
        if trickle.part == "headers":
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n").encode()
            await self._trickle(request.transport, head + text, trickle.interval_secs)
            if request.transport is not None:
                request.transport.close()
            raise _Handled()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(text)
        await response.prepare(request)
        for i in range(len(text)):
            await response.write(text[i:i + 1])
            await asyncio.sleep(trickle.interval_secs)
        await response.write_eof()
        return response

    def _served_here(self, session_id: str) -> Optional[BacktestSession]:
        """The session whose JSON-RPC this simulator answers (not one in a worker)."""
        session = self.registry.sessions.get(session_id)
        return None if isinstance(session, RemoteSession) else session

    # -- thread-safe accessors -------------------------------------------------------------
    def requests_seen(self) -> List[SeenRequest]:
        """Every HTTP request received so far (WebSocket upgrades included), oldest first."""
        with self._seen_lock:
            return list(self._seen)

    def clear_requests_seen(self) -> None:
        with self._seen_lock:
            self._seen.clear()

    @property
    def stats(self) -> SimStats:
        return self.registry.stats

    @property
    def wallets(self) -> List[str]:
        """Base58 ids of the synthetic history's wallets (e.g. for ``signerFilter``)."""
        return self.history.wallet_ids

    def produced_slots(self, start: int, end: int) -> List[int]:
        return self.history.produced_slots(start, end)

    def executed(self, session_id: str) -> List[ExecutedTx]:
        return self.registry.executed(session_id)

    def session_ids(self) -> List[str]:
        return self.registry.session_ids()

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the simulator's loop thread and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("LocalSimulator is not running")

        async def run() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    def session_info(self, session_id: str) -> Optional[Dict[str, Any]]:
        """State of a live session (``state``, ``slot``, ``attached``, …), None when gone."""
        def read() -> Optional[Dict[str, Any]]:
            session = self.registry.sessions.get(session_id)
            return None if session is None else session.describe()
        return self.call(read)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no session is starting or running a step; True when that happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = self.call(lambda: any(s.state in ("starting", "running")
                                         for s in self.registry.sessions.values()))
            if not busy:
                return True
            time.sleep(0.01)
        return False


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve_control_for(registry: Registry) -> Callable[[Connection], Awaitable[None]]:
    return lambda conn: serve_control(conn, registry)


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
