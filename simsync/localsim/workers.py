"""Sub-sessions of a parallel batch in worker processes: `WorkerPool`, `RemoteSession`.

A `LocalSimulator` with ``workers=N`` (N > 1) is the *front*: it keeps every control
connection, the fault plan of the control channel, the groups (``sessionEventV2`` wrapping,
per-sub-session ``seq_id``, the replay log, attach/resume) and the usage ledger. Each parallel
sub-session's work — its history, LiteSVM, JSON-RPC and PubSub — runs in one of N worker
processes, each itself a local simulator (``python -m simsync.localsim --worker --port 0
--until-stdin-closes``, the same history arguments) on its own loopback port. The front
announces the sub-session with an absolute ``rpc_endpoint`` on the worker (PROTOCOL §1/§8), so
the data plane goes straight to the worker and the front handles only control frames.

Front ↔ worker channel: one WebSocket per worker (``/worker`` on the worker), JSON text
frames, multiplexed by session id:

* front → worker: ``{"op": "create", "id", "params"}`` (``params``: a non-parallel
  ``createBacktestSession`` of the sub-range), ``{"op": "step", "id", "method": "continue" |
  "continueTo", "params"}``, ``{"op": "close", "id"}``;
* worker → front: ``{"id", "frame"}``, one per frame the worker's session emits, in order
  (the worker's session is not sequenced; the front's `RemoteSession` sequences and logs).

Threads: `WorkerPool.launch`/`wait_ready`/`stop` run on the caller's thread (start/stop of
the simulator); everything else on the front's event-loop thread. The worker processes end
with the front: `WorkerPool.stop`, or the end of their standard input when the front process
dies (``--until-stdin-closes``). A worker that dies fails its live sub-sessions with a §9
``internal`` error (fatal), never a hang.

With workers, what runs in a worker is not under the front's fault plan: faults of the
``pubsub`` and ``rpc`` channels, the session actions ``error`` and ``late_notifications``,
and the settings ``replay_window``/``signature_field`` do not reach parallel sub-sessions;
`Registry.executed` holds nothing for them.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import aiohttp
import msgspec

from simsync.localsim.accounts import account_json
from simsync.localsim.chain import Chain
from simsync.localsim.child import ChildSimulator
from simsync.localsim.connection import Connection
from simsync.localsim.faults import FATAL_ERRORS, FaultPlan
from simsync.localsim.history import History
from simsync.localsim.session import (
    BacktestSession,
    CreateParams,
    StepRequest,
    parse_continue,
    parse_continue_to,
)
from simsync.localsim.wire import _ABSENT, Frame, JsonObj, RequestError, encode, error_frame, frame

if TYPE_CHECKING:  # registry imports this module
    from simsync.localsim.registry import Registry

log = logging.getLogger(__name__)
WORKER_PATH = "/worker"
#: How long a worker's data plane waits for a session the front announced but whose
#: ``create`` is still on its way (the client may connect first).
ANNOUNCE_WAIT = 10.0
_decode = msgspec.json.Decoder().decode


# -- front side ----------------------------------------------------------------------------
class WorkerLink:
    """One worker process and the front's WebSocket to it. States: ``starting`` (process
    launched), ``open`` (channel connected), ``dead`` (the process or its channel ended)."""

    def __init__(self, index: int, child: ChildSimulator) -> None:
        self.index = index
        self.child = child
        self.state = "starting"
        self.reason = ""
        self.http_base = ""
        self.sessions: Dict[str, RemoteSession] = {}
        self._ws: Optional[aiohttp.ClientWebSocketResponse[bool]] = None
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: List[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"WorkerLink({self.index}, pid {self.child.pid}, {self.state})"

    async def open(self, http: aiohttp.ClientSession) -> None:
        """Connect the channel (loop thread); raise when the worker does not answer."""
        url = self.child.url
        self.http_base = url.replace("ws://", "http://", 1).rsplit("/backtest", 1)[0]
        self._ws = await http.ws_connect(self.http_base + WORKER_PATH, max_msg_size=0,
                                         autoping=True, heartbeat=None)
        self.state = "open"
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._write())]

    def send(self, message: JsonObj) -> None:
        """Queue one message for the worker (loop thread; dropped when the link is dead)."""
        if self.state == "open":
            self._out.put_nowait(encode(message))

    async def _write(self) -> None:
        assert self._ws is not None
        try:
            while True:
                text = await self._out.get()
                await self._ws.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self._fail(f"its channel failed: {exc!r}")

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                obj = _decode(msg.data)
                session = self.sessions.get(obj.get("id"))
                if session is not None:
                    session.on_worker_frame(obj["frame"])
        except (ConnectionError, aiohttp.ClientError, msgspec.DecodeError) as exc:
            self._fail(f"its channel failed: {exc!r}")
            return
        self._fail("its channel closed")

    def _fail(self, why: str) -> None:
        if self.state == "dead":
            return
        self.state = "dead"
        code = self.child.poll()
        self.reason = (f"worker process {self.child.pid} of the local simulator ended "
                       f"({why}; exit code {code})" if code is not None else
                       f"worker process {self.child.pid} of the local simulator is unreachable "
                       f"({why})")
        log.warning("%s", self.reason)
        for session in list(self.sessions.values()):
            session.worker_lost(self.reason)
        self.sessions.clear()

    async def close(self) -> None:
        """Close the channel and stop its tasks (loop thread; idempotent)."""
        self.state = "dead"
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
            self._ws = None


class WorkerPool:
    """N worker processes of one front simulator and the links to them.

    ``history_args`` are the ``python -m simsync.localsim`` arguments that make a worker's
    history the front's (``--seed``, ``--first-slot``, ``--bundle-size``, ``--bundles``,
    ``--slot-delay``)."""

    def __init__(self, count: int, history_args: Sequence[str],
                 startup_timeout: float = 60.0) -> None:
        if count < 2:
            raise ValueError(f"a worker pool has at least 2 workers, got {count}")
        self.links = [WorkerLink(i, ChildSimulator(["--worker", *history_args],
                                                   startup_timeout=startup_timeout))
                      for i in range(count)]
        self._http: Optional[aiohttp.ClientSession] = None

    def __len__(self) -> int:
        return len(self.links)

    @property
    def pids(self) -> List[int]:
        return [link.child.pid for link in self.links if link.child.pid is not None]

    # caller's thread
    def start(self) -> None:
        """Launch every worker, then wait until each printed its URL (they import in
        parallel); on a failure stop them all and raise ``SimsyncError``."""
        try:
            for link in self.links:
                link.child.launch()
            for link in self.links:
                link.child.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every worker process (end of input, bounded wait, SIGKILL; idempotent):
        every input ends first, so the workers shut down in parallel."""
        for link in self.links:
            link.child.end_input()
        for link in self.links:
            link.child.stop()

    # loop thread
    async def connect(self) -> None:
        self._http = aiohttp.ClientSession()
        for link in self.links:
            await link.open(self._http)

    async def close(self) -> None:
        for link in self.links:
            await link.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def place(self) -> WorkerLink:
        """The link for the next sub-session: the live worker with the fewest sessions (a
        dead one when all are dead: the sub-session then fails at once)."""
        live = [link for link in self.links if link.state == "open"] or self.links
        return min(live, key=lambda link: len(link.sessions))


class _RemoteChain(Chain):
    """Stands in for the chain of a sub-session that runs in a worker: the front holds no
    history state and no LiteSVM (overrides are installed by the worker)."""

    def __init__(self, history: History) -> None:  # pylint: disable=super-init-not-called
        self.history = history
        self.ended = False
        self.history_executed = 0
        self.history_failed = 0

    def install(self, overrides: Any) -> None:
        pass

    def close(self) -> None:
        self.ended = True


class RemoteSession(BacktestSession):
    """The front's side of a sub-session that runs in a worker: the control-side state
    machine, sequencing and replay log of `BacktestSession`, fed by the worker's frames.

    Steps are checked here as `BacktestSession.request_step` checks them (state, the
    ``reject_step`` fault, a ``continueTo`` target) and forwarded; the state follows the
    worker's frames (a pause makes it idle, ``completed`` completed, a fatal error failed)."""

    def __init__(self, session_id: str, params: CreateParams, history: History,
                 slots: List[int], link: WorkerLink, *, slot_delay: float,
                 on_completed: Any, faults: Optional[FaultPlan] = None) -> None:
        super().__init__(session_id, params, history, _RemoteChain(history), slots,
                         sequenced=True, slot_delay=slot_delay, on_completed=on_completed,
                         faults=faults)
        self.link = link
        self._index = {slot: i for i, slot in enumerate(slots)}
        link.sessions[session_id] = self

    @property
    def rpc_endpoint(self) -> str:
        return f"{self.link.http_base}/backtest/{self.id}"

    def start(self) -> None:
        if self.link.state != "open":
            self.worker_lost(self.link.reason or "its worker process is not running")
            return
        p = self.params
        self.link.send({"op": "create", "id": self.id, "params": {
            "startSlot": p.start_slot, "endSlot": p.end_slot,
            "signerFilter": sorted(p.signer_filter), "sendSummary": p.send_summary,
            "discoveries": p.discoveries}})

    async def _continue(self, step: StepRequest) -> None:
        params: JsonObj = {"advanceCount": step.advance_count}
        if step.transactions:
            params["transactions"] = [base64.b64encode(bytes(tx)).decode()
                                      for tx in step.transactions]
        if step.overrides:
            params["modifyAccountStates"] = {str(key): account_json(account)
                                             for key, account in step.overrides}
        self.link.send({"op": "step", "id": self.id, "method": "continue", "params": params})

    async def _continue_to(self, slot: int, batch: Optional[int]) -> None:
        params: JsonObj = {"slot": slot}
        if batch is not None:
            params["batchIndex"] = batch
        self.link.send({"op": "step", "id": self.id, "method": "continueTo", "params": params})

    def close(self) -> None:
        if self.state not in ("closed", "failed"):
            self.link.send({"op": "close", "id": self.id})
        self.link.sessions.pop(self.id, None)
        super().close()

    def on_worker_frame(self, body: Frame) -> None:
        """One frame the worker's session emitted: follow its state, emit it (loop thread)."""
        if self.state in ("closed", "failed"):
            return
        method = body.get("method")
        params = body.get("params", _ABSENT)
        if method in ("readyForContinue", "paused"):
            self.pause_frame = frame(method, params)
            self.state = "idle"
            self._emit_pause(self.pause_frame)
            return
        if method == "slotNotification" and isinstance(params, int):
            self.idx = self._index.get(params, self.idx)
        elif method == "completed":
            self.idx = len(self.slots)
            self.state = "completed"
            self.pause_frame = None
            self.emit("completed", params)
            self.hub.complete()
            self._on_completed(self)
            return
        elif method == "error" and _variant(params) in FATAL_ERRORS:
            self.state = "failed"
            self.pause_frame = None
        self.emit(str(method), params)

    def worker_lost(self, reason: str) -> None:
        """The worker is gone: a live sub-session fails with a §9 ``internal`` error."""
        if self.state in ("completed", "closed", "failed"):
            return
        self.state = "failed"
        self.pause_frame = None
        self.emit("error", {"internal": {"error": f"{reason}: sub-session {self.id} is lost"}})
        self.hub.complete()


def _variant(params: Any) -> str:
    if isinstance(params, str):
        return params
    if isinstance(params, dict) and len(params) == 1:
        return str(next(iter(params)))
    return ""


# -- worker side ---------------------------------------------------------------------------
async def serve_worker(conn: Connection, registry: Registry) -> None:
    """Read loop of the front's channel on a worker (the worker's event-loop thread). The
    sessions it created end with it."""
    mine: Dict[str, BacktestSession] = {}

    def sink(session: BacktestSession, seq: Optional[int], body: Frame) -> None:
        conn.send({"id": session.id, "frame": body})

    try:
        while True:
            msg = await conn.receive()
            if msg is None:
                return
            obj = _decode(msg.data)
            op, session_id = obj.get("op"), obj.get("id")
            if op == "create":
                try:
                    session = registry.create_announced(session_id,
                                                        CreateParams.from_json(obj["params"]))
                except RequestError as exc:
                    conn.send({"id": session_id, "frame": error_frame(exc.params)})
                    continue
                mine[session.id] = session
                session.connect(sink)
                session.start()
                continue
            found = registry.sessions.get(session_id)
            if found is None:
                continue
            if op == "step":
                found.step(functools.partial(
                    parse_continue_to if obj.get("method") == "continueTo" else parse_continue,
                    obj.get("params")))
            elif op == "close":
                mine.pop(found.id, None)
                registry.destroy_session(found)
    finally:
        for session in mine.values():
            registry.destroy_session(session)
