"""The simulator's live state: sessions, the groups that own them, detach windows, counters.

A `SessionGroup` is what one control connection drives: a single session (group id = session
id) or a parallel batch (group id = ``parallel_…``). It routes its sessions' frames to the
connection bound to it (plain for a single session, wrapped in ``sessionEventV2`` for a parallel
batch) and outlives a dropped connection for the detach window.

Event-loop thread only, except `Registry.executed`, `Registry.session_ids` and `SimStats`, which
the test thread reads (guarded by a lock, or plain int reads).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple, Type

from simsync.localsim.chain import Chain, ExecutedLog, ExecutedTx
from simsync.localsim.connection import Connection
from simsync.localsim.faults import FaultPlan
from simsync.localsim.history import History
from simsync.localsim.pubsub import PubSubHub
from simsync.localsim.session import BacktestSession, CreateParams, Sink
from simsync.localsim.usage import UsageLedger
from simsync.localsim.wire import Frame, RequestError, error_params, frame, sequenced
from simsync.localsim.workers import RemoteSession, WorkerPool

log = logging.getLogger(__name__)


@dataclass
class SimStats:
    """Counters (the loop thread increments, any thread may read)."""

    connections_accepted: int = 0
    control_connections: int = 0
    pubsub_connections: int = 0
    connects_refused: int = 0
    faults_fired: int = 0
    sessions_created: int = 0
    sessions_completed: int = 0
    sessions_destroyed: int = 0
    rpc_requests: int = 0

    def as_dict(self) -> Dict[str, int]:
        return asdict(self)


def new_session_id() -> str:
    return f"backtest_{uuid.uuid4()}"


class SessionGroup:
    """Sessions driven by one control connection, and that connection (when bound)."""

    def __init__(self, group_id: str, parallel: bool, sessions: List[BacktestSession],
                 window: int) -> None:
        self.id = group_id
        self.parallel = parallel
        self.sessions = sessions
        self.window = window
        self.conn: Optional[Connection] = None
        self.expiry: Optional[asyncio.TimerHandle] = None
        self._sink: Optional[Sink] = None

    def find(self, session_id: Any) -> Optional[BacktestSession]:
        return next((s for s in self.sessions if s.id == session_id), None)

    def bind(self, conn: Connection) -> None:
        """Output of every session flows to ``conn`` from now on (create)."""
        self._take(conn)
        for session in self.sessions:
            session.connect(self._bound_sink())

    def attach(self, conn: Connection, cursors: Dict[str, Optional[int]]) -> List[Frame]:
        """Hold output for ``conn``; return the replay frames (already wrapped)."""
        self._take(conn)
        replay: List[Frame] = []
        for session in self.sessions:
            for seq, body in session.attach(self._bound_sink(), cursors.get(session.id)):
                replay.append(self._wrap(session, seq, body))
        return replay

    def resume(self) -> None:
        for session in self.sessions:
            session.resume()

    def after_output(self, fn: Any) -> None:
        """Run ``fn`` once the bound connection wrote everything queued so far (at once when
        no connection is bound)."""
        if self.conn is not None:
            self.conn.call_after_pending(fn)
        else:
            fn()

    def unbind(self, conn: Connection) -> bool:
        """Forget ``conn`` if it is the bound one (True then)."""
        if self.conn is not conn:
            return False
        sink = self._bound_sink()
        for session in self.sessions:
            session.detach(sink)
        self.conn = None
        self._sink = None
        return True

    def _take(self, conn: Connection) -> None:
        if self.conn is not None and self.conn is not conn:
            old = self.conn
            self.unbind(old)
            log.info("group %s: taken over from connection %s", self.id, old.id)
            old.abort()
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.conn = conn

    def _bound_sink(self) -> Sink:
        if self._sink is None:
            conn = self.conn

            def sink(session: BacktestSession, seq: Optional[int], body: Frame) -> None:
                if conn is not None:
                    conn.send(self._wrap(session, seq, body))
            self._sink = sink
        return self._sink

    def _wrap(self, session: BacktestSession, seq: Optional[int], body: Frame) -> Frame:
        if self.parallel:
            return frame("sessionEventV2", {"session_id": session.id, "seq_id": seq,
                                            "event": body})
        return sequenced(seq, body)


class Registry:
    """Every group and session of one simulator, plus what tests inspect."""

    #: what a session is made of (a recording's registry replaces both: `recorded`)
    chain_type: Type[Chain] = Chain
    session_type: Type[BacktestSession] = BacktestSession

    def __init__(self, history: History, slot_delay: float,
                 faults: Optional[FaultPlan] = None, workers: Optional[WorkerPool] = None,
                 worker: bool = False) -> None:
        self.history = history
        #: Where parallel sub-sessions run (None: here); ``worker``: this simulator is a
        #: worker of another (its sessions are created by `create_announced`).
        self.workers = workers
        self.worker = worker
        self._announced: Dict[str, List[asyncio.Future[None]]] = {}
        self.slot_delay = slot_delay
        self.faults = faults if faults is not None else FaultPlan()
        self.stats = SimStats()
        #: Prefix of every ``rpc_endpoint`` sent: "" (a path) or ``scheme://host:port``.
        self.rpc_base = ""
        self.groups: Dict[str, SessionGroup] = {}
        self.sessions: Dict[str, BacktestSession] = {}
        self.ended_hubs: Dict[str, PubSubHub] = {}
        self._lock = threading.Lock()
        self._executed: Dict[str, ExecutedLog] = {}
        self._live_ids: List[str] = []
        self.drops = 0
        self.usage = UsageLedger()

    # -- creation --------------------------------------------------------------------------
    def check_range(self, params: CreateParams) -> None:
        """Refuse what the service refuses: a range outside the history, backwards, or (not
        parallel) spanning bundles are ``bundleNotFound`` (no bundle holds it: "a range lies
        in one bundle"); a range with no produced block is ``noProducedBlocksInRange``."""
        start, end = params.start_slot, params.end_slot
        if (start > end or not self.history.in_range(start) or not self.history.in_range(end)
                or (not params.parallel
                    and self.history.bundle_of(start) != self.history.bundle_of(end))):
            raise RequestError(error_params("bundleNotFound", start_slot=start, end_slot=end))
        if not self.history.produced_slots(start, end):
            raise RequestError(error_params("noProducedBlocksInRange", start_slot=start,
                                            end_slot=end))

    def split(self, params: CreateParams) -> List[Tuple[int, int]]:
        """The parallel split: one sub-range per bundle overlap that has a produced slot."""
        out = []
        for lo, hi in self.history.bundles():
            a, b = max(lo, params.start_slot), min(hi, params.end_slot)
            if a <= b and self.history.produced_slots(a, b):
                out.append((a, b))
        return out

    def create_group(self, params: CreateParams) -> SessionGroup:
        self.check_range(params)
        if params.parallel:
            ranges = self.split(params)
            group_id = f"parallel_{uuid.uuid4()}"
        else:
            ranges = [(params.start_slot, params.end_slot)]
            group_id = ""
        if params.parallel and self.workers is not None:
            sessions = [self._new_remote(params, lo, hi) for lo, hi in ranges]
        else:
            sessions = [self._new_session(params, lo, hi, params.parallel or
                                          params.disconnect_timeout_secs > 0)
                        for lo, hi in ranges]
        group = SessionGroup(group_id or sessions[0].id, params.parallel, sessions,
                             params.disconnect_timeout_secs)
        for session in sessions:
            session.after_output = group.after_output
        self.groups[group.id] = group
        return group

    def create_announced(self, session_id: Any, params: CreateParams) -> BacktestSession:
        """A worker's session under the id the front announced (not sequenced: the front
        sequences); raise `RequestError` for a taken id or a range this history refuses."""
        if not isinstance(session_id, str) or session_id in self.sessions:
            raise RequestError(error_params("sessionNameTaken", session_name=session_id))
        params.parallel = False
        self.check_range(params)
        session = self._new_session(params, params.start_slot, params.end_slot, False,
                                    session_id)
        for waiter in self._announced.pop(session_id, []):
            if not waiter.done():
                waiter.set_result(None)
        return session

    async def wait_announced(self, session_id: str, timeout: float) -> None:
        """On a worker: wait (at most ``timeout`` s) until the session exists, for a client
        that reached this worker's data plane before the front's ``create`` did. At once when
        the session exists or ended, or on a simulator that is no worker."""
        if (not self.worker or session_id in self.sessions or session_id in self.ended_hubs):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._announced.setdefault(session_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            log.info("session %s was announced to nobody within %ss", session_id, timeout)
        finally:
            waiters = self._announced.get(session_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._announced.pop(session_id, None)

    def _new_remote(self, params: CreateParams, lo: int, hi: int) -> BacktestSession:
        assert self.workers is not None
        session_id = new_session_id()
        sub = CreateParams(lo, hi, params.signer_filter, params.send_summary,
                           params.disconnect_timeout_secs, params.discoveries, params.parallel)
        session = RemoteSession(session_id, sub, self.history,
                                self.history.produced_slots(lo, hi), self.workers.place(),
                                slot_delay=self.slot_delay, on_completed=self._completed,
                                faults=self.faults)
        self._register(session)
        return session

    def _register(self, session: BacktestSession) -> None:
        self.sessions[session.id] = session
        self.stats.sessions_created += 1
        self.usage.started(session)

    def _new_session(self, params: CreateParams, lo: int, hi: int,
                     is_sequenced: bool, session_id: Optional[str] = None) -> BacktestSession:
        session_id = session_id or new_session_id()
        with self._lock:
            self._executed[session_id] = ExecutedLog()
            self._live_ids.append(session_id)
        chain = self.chain_type(self.history, on_executed=self._recorder(session_id),
                                start_slot=lo)
        sub = CreateParams(lo, hi, params.signer_filter, params.send_summary,
                           params.disconnect_timeout_secs, params.discoveries, params.parallel)
        session = self.session_type(session_id, sub, self.history, chain,
                                    self.history.produced_slots(lo, hi),
                                    sequenced=is_sequenced, slot_delay=self.slot_delay,
                                    on_completed=self._completed, faults=self.faults)
        self._register(session)
        return session

    def _recorder(self, session_id: str) -> Any:
        def record(executed: ExecutedTx) -> None:
            with self._lock:
                self._executed[session_id].append(executed)
        return record

    def _completed(self, session: BacktestSession) -> None:
        self.stats.sessions_completed += 1
        self.usage.completed(session)

    # -- lookup ----------------------------------------------------------------------------
    def group_of(self, group_id: Any, parallel: bool) -> Optional[SessionGroup]:
        group = self.groups.get(group_id) if isinstance(group_id, str) else None
        if group is None or group.parallel != parallel:
            return None
        return group

    def hub(self, session_id: str) -> Optional[PubSubHub]:
        session = self.sessions.get(session_id)
        return session.hub if session is not None else self.ended_hubs.get(session_id)

    # -- ending ----------------------------------------------------------------------------
    def destroy_session(self, session: BacktestSession) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        session.close()
        self.usage.ended(session)
        self.ended_hubs[session.id] = session.hub
        with self._lock:
            if session.id in self._live_ids:
                self._live_ids.remove(session.id)
        self.stats.sessions_destroyed += 1
        log.info("session %s destroyed", session.id)

    def destroy_group(self, group: SessionGroup) -> None:
        if group.expiry is not None:
            group.expiry.cancel()
            group.expiry = None
        for session in group.sessions:
            self.destroy_session(session)
        self.groups.pop(group.id, None)

    def connection_lost(self, group: SessionGroup, conn: Connection) -> None:
        """The bound control connection is gone: keep the group for its window, or end it."""
        if not group.unbind(conn):
            return
        window: float = group.window
        if window > 0:
            self.drops += 1
            fault = self.faults.take_session("expire_detach", ("drop", self.drops),
                                             f"drop of {group.id}")
            if fault is not None:
                window = fault.window_secs
        if window > 0 and group.id in self.groups:
            loop = asyncio.get_running_loop()
            group.expiry = loop.call_later(window, self._expire, group)
            log.info("group %s detached for %ss", group.id, window)
        else:
            self.usage.lost(group.sessions)
            self.destroy_group(group)

    def _expire(self, group: SessionGroup) -> None:
        group.expiry = None
        if group.conn is None:
            log.info("group %s: detach window over", group.id)
            self.usage.lost(group.sessions)
            self.destroy_group(group)

    def shutdown(self) -> None:
        for group in list(self.groups.values()):
            self.destroy_group(group)

    # -- thread-safe views -----------------------------------------------------------------
    def executed(self, session_id: str) -> List[ExecutedTx]:
        with self._lock:
            return list(self._executed.get(session_id, []))

    def session_ids(self) -> List[str]:
        with self._lock:
            return list(self._live_ids)
