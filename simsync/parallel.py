"""Parallel sessions (PROTOCOL.md §8): one control connection creates the sub-sessions,
demultiplexes ``sessionEventV2`` into one mailbox per sub-session, and re-attaches them all
with per-session cursors."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from simsync import urls
from simsync.config import ClientConfig
from simsync.control import ControlBase, ControlSide, SessionInfo, StepGate, Verdict
from simsync.errors import ControlFailed, EventTimeout, SessionCreateError
from simsync.mailbox import Mailbox
from simsync.protocol import (
    AttachParallelControlSessionV2,
    CloseSessionV1,
    Completed,
    Continue,
    ContinueSessionV1,
    ContinueTo,
    ContinueToSessionV1,
    CreateBacktestSession,
    CreateSessionParams,
    ParallelSessionAttachedV2,
    Request,
    ServerError,
    SessionCreated,
    SessionEventV1,
    SessionEventV2,
    SessionsCreated,
    SessionsCreatedV2,
    Success,
    encode_request,
)
from simsync.session import Session
from simsync.subscriptions import ReconnectCoordinator
from simsync.transport import (
    SLICE,
    Channel,
    Connection,
    ConnectionStatus,
    Fatal,
    State,
    Transient,
)

log = logging.getLogger(__name__)

SlotRange = Tuple[int, int]


class _Sub:
    """The parallel link's view of one sub-session: its gate and where its events go."""

    def __init__(self, deliver: Callable[[Any], None], fail: Callable[[str], None]) -> None:
        self.gate = StepGate()
        self.deliver = deliver
        self.fail = fail
        self.close_acked = threading.Event()
        self.closing = False


def check_created(reply: SessionsCreatedV2) -> List[SlotRange]:
    """The server's sub-session ranges; a too-old server (no ranges, or arrays of other
    lengths than ``session_ids``) is refused loudly."""
    count = len(reply.session_ids)
    if reply.start_slots is None or reply.end_slots is None:
        raise Fatal("the server is too old for parallel sessions: sessionsCreatedV2 carries "
                    "no start_slots/end_slots")
    if not len(reply.start_slots) == len(reply.end_slots) == len(reply.task_ids) == count:
        raise Fatal("the server is too old for parallel sessions: sessionsCreatedV2 arrays "
                    "differ in length from session_ids")
    return list(zip(reply.start_slots, reply.end_slots))


MakeSub = Callable[[SessionInfo, SlotRange], _Sub]


class ParallelControlLink(ControlBase):
    """The control link of a parallel batch (reader thread runs every handshake/route)."""

    name = "parallel"

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig, make_sub: MakeSub,
                 before_resume: Callable[[float], None]) -> None:
        super().__init__(url, api_key, create, config, before_resume)
        self._make_sub = make_sub
        self.control_session_id: Optional[str] = None
        self.subs: Dict[str, _Sub] = {}

    def __repr__(self) -> str:
        return f"ParallelControlLink({self._url!r}, {self.control_session_id!r})"

    @property
    def created(self) -> bool:
        return self.control_session_id is not None

    @property
    def finished(self) -> bool:
        return bool(self.subs) and all(s.gate.completed or s.closing
                                       for s in self.subs.values())

    # ------------------------------------------------------------------ handshakes

    def _create_session(self, channel: Channel) -> None:
        """Collect one ``sessionCreated`` per sub-session until ``sessionsCreatedV2``
        (each frame may take ``parallel_create_frame_timeout`` while the server waits)."""
        channel.send(encode_request(CreateBacktestSession(self._create)))
        created: Dict[str, SessionCreated] = {}
        early: List[Tuple[Optional[int], Any]] = []

        def other(frame: Tuple[Optional[int], Any]) -> None:
            event = frame[1]
            if isinstance(event, SessionCreated):
                created[event.session_id] = event
            elif isinstance(event, SessionsCreated):
                raise Fatal("the server is too old for parallel sessions (it answered the "
                            "legacy sessionsCreated without ranges)")
            else:
                early.append(frame)

        _, reply = self._await(channel, SessionsCreatedV2, "sessionsCreatedV2", other,
                               self._config.parallel_create_frame_timeout)
        self._bind(reply, created)
        for seq, event in early:
            self._route(seq, event)

    def _bind(self, reply: SessionsCreatedV2, created: Dict[str, SessionCreated]) -> None:
        ranges = check_created(reply)
        for index, session_id in enumerate(reply.session_ids):
            announced = created.get(session_id)
            endpoint = announced.rpc_endpoint if announced else f"/backtest/{session_id}"
            info = SessionInfo(session_id, endpoint, reply.task_ids[index])
            self.subs[session_id] = self._make_sub(info, ranges[index])
        self.control_session_id = reply.control_session_id

    def _attach(self, channel: Channel) -> None:
        assert self.control_session_id is not None
        cursors = {sid: sub.gate.last_seq for sid, sub in self.subs.items()}
        channel.send(encode_request(AttachParallelControlSessionV2(self.control_session_id,
                                                                   cursors)))
        self._await(channel, ParallelSessionAttachedV2, "parallelSessionAttachedV2")
        self._resume(channel)
        for sub in self.subs.values():
            sub.gate.reattached()   # the replays (sent before the ack) have been routed

    # ------------------------------------------------------------------ routing

    def _route(self, seq: Optional[int], event: Any) -> None:
        if isinstance(event, (SessionEventV2, SessionEventV1)):
            sub = self.subs.get(event.session_id)
            if sub is None:
                log.debug("simsync parallel: event for unknown sub-session %s", event.session_id)
                return
            self._route_sub(sub, getattr(event, "seq_id", None), event.event)
        elif isinstance(event, ServerError) and event.fatal:
            raise Fatal(f"the server ended the parallel session: {event.message}")
        else:
            log.debug("simsync parallel: control-level %s", type(event).__name__)

    def _route_sub(self, sub: _Sub, seq: Optional[int], event: Any) -> None:
        if isinstance(event, Success):
            sub.close_acked.set()
            return
        verdict, request = sub.gate.admit(seq, event)
        if verdict is Verdict.RESEND and request is not None:
            self._send(encode_request(request))
        elif verdict is Verdict.DELIVER:
            if isinstance(event, ServerError) and event.fatal:
                sub.gate.completed = True
                sub.fail(f"the server ended the sub-session: {event.message}")
                return
            sub.deliver(event)

    # ------------------------------------------------------------------ user threads

    def send_step(self, session_id: str, request: Request) -> None:
        """Wrap a step as ``…SessionV1`` and send it (gated per sub-session)."""
        if isinstance(request, Continue):
            wrapped: Request = ContinueSessionV1(session_id, request.step)
        elif isinstance(request, ContinueTo):
            wrapped = ContinueToSessionV1(session_id, request.slot, request.batch_index)
        else:
            raise TypeError(f"not a step: {request!r}")
        self.subs[session_id].gate.begin_step(wrapped)
        try:
            self._send(encode_request(wrapped))
        except Transient as exc:
            log.info("simsync parallel: step not sent (%s); sent again after reconnect", exc)

    def close_sub(self, session_id: str) -> threading.Event:
        """Send ``closeSessionV1``; the returned event is set on its ``success``."""
        sub = self.subs[session_id]
        sub.closing = True
        if sub.gate.completed:
            sub.close_acked.set()
        else:
            try:
                self._send(encode_request(CloseSessionV1(session_id)))
            except Transient:
                sub.close_acked.set()
        return sub.close_acked


class SubControl(ControlSide):
    """A sub-session's slice of the shared parallel control connection."""

    def __init__(self, link: ParallelControlLink, connection: Connection,
                 info: SessionInfo) -> None:
        self._link = link
        self._info = info
        self.status = connection.status

    @property
    def info(self) -> SessionInfo:
        return self._info

    def start(self) -> None:
        """Nothing to do: the parallel create already made this sub-session."""

    def send_step(self, request: Request) -> None:
        self._link.send_step(self._info.session_id, request)

    def close(self, deadline: float) -> None:
        """``closeSessionV1`` → ``success`` (bounded); the shared connection stays."""
        if self.status.value.state is State.UP:
            acked = self._link.close_sub(self._info.session_id)
            while not acked.wait(SLICE) and time.monotonic() < deadline:
                pass


class SubSession(Session):
    """One sub-session of a ``ParallelSession``: the ``Session`` surface plus ``range``
    (the server's authoritative ``(start_slot, end_slot)``)."""

    range: SlotRange


class ParallelSession:
    """A parallel batch: ``sub_sessions`` to drive from one thread (``events()`` yields
    ``(sub_session, event)`` in arrival order) or from one thread each (each sub-session's
    own ``next_event``) — pick one style per batch."""

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig) -> None:
        self._url = urls.control_url(url)
        self._config = config
        self._create = create
        self._arrivals: Mailbox = Mailbox(1, config.slow_consumer_timeout)
        self.coordinator = ReconnectCoordinator(config.coordinator_quick_attempts)
        self.sub_sessions: List[SubSession] = []
        self._link = ParallelControlLink(self._url, api_key, create, config, self._make_sub,
                                         self._before_resume)
        self._connection = Connection(self._link, config, "p")
        self._completed: set[str] = set()       # sub-sessions whose Completed was yielded
        self._closed = False

    def _start(self) -> None:
        """Create the batch (user thread); blocks through the whole parallel create."""
        self._connection.start()
        status = self._connection.status.wait_for({State.UP}, None)
        if status.state is not State.UP and not self._link.created:
            self._connection.close(self._config.close_timeout)
            raise SessionCreateError(f"could not create the parallel session: {status.reason}")
        try:
            for sub_session in self.sub_sessions:
                sub_session._check_rpc_host()
        except SessionCreateError:
            self.close()
            raise

    def _make_sub(self, info: SessionInfo, slot_range: SlotRange) -> _Sub:
        """Reader thread, during the create: build and bind one ``SubSession``."""
        create = CreateSessionParams(slot_range[0], slot_range[1],
                                     disconnect_timeout_secs=self._create.disconnect_timeout_secs)
        sub_session = SubSession(self._url, create, self._config)
        sub_session.range = slot_range
        sub_session._coordinator = self.coordinator
        sub_session._mailbox = Mailbox(self._config.max_buffered_events,
                                       self._config.slow_consumer_timeout,
                                       lambda: self._arrivals.put(sub_session))
        sub_session._attach_control(SubControl(self._link, self._connection, info))
        self.sub_sessions.append(sub_session)
        return _Sub(sub_session._on_control_event,
                    lambda reason: sub_session._mailbox.fail(ControlFailed(reason)))

    def _before_resume(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for sub_session in self.sub_sessions:
            sub_session._before_resume(max(0.0, deadline - time.monotonic()))

    @property
    def control_session_id(self) -> str:
        assert self._link.control_session_id is not None
        return self._link.control_session_id

    @property
    def status(self) -> ConnectionStatus:
        """The shared control connection's ``ConnectionStatus``."""
        return self._connection.status.value

    def __repr__(self) -> str:
        return (f"ParallelSession({self._link.control_session_id!r}, "
                f"{len(self.sub_sessions)} sub-sessions, status={self.status})")

    def events(self, timeout: Optional[float] = None) -> Iterator[Tuple[SubSession, Any]]:
        """``(sub_session, event)`` pairs in arrival order until every sub-session has
        delivered ``Completed``. ``timeout`` bounds each wait (``EventTimeout``); calling
        ``events()`` again afterwards resumes where it stopped."""
        done = self._completed
        while len(done) < len(self.sub_sessions):
            sub_session = self._arrivals.get(timeout)
            try:
                event = sub_session.next_event(0)
            except EventTimeout:
                continue        # already taken through the sub-session's own next_event
            if isinstance(event, Completed):
                done.add(sub_session.info.session_id)
            yield sub_session, event

    def close(self, timeout: Optional[float] = None) -> None:
        """Close every sub-session, then the control connection (idempotent; bounded)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + (timeout or self._config.close_timeout)
        for sub_session in self.sub_sessions:
            sub_session.close(max(SLICE, deadline - time.monotonic()))
        self._connection.close(max(0.0, deadline - time.monotonic()))
        self._arrivals.close("the parallel session was closed")

    def __enter__(self) -> ParallelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
