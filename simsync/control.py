"""The control link: what to send on connect (create, or attach + resume) and how to route
what arrives (sequence cursor, the step/pause rules of PROTOCOL.md §13)."""
from __future__ import annotations

import abc
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

from simsync import urls
from simsync.config import ClientConfig
from simsync.errors import ProtocolError, SessionClosed, SessionCreateError, SimsyncError
from simsync.protocol import (
    AttachBacktestSession,
    CloseBacktestSession,
    Completed,
    CreateBacktestSession,
    CreateSessionParams,
    Paused,
    ReadyForContinue,
    Request,
    ResumeAttachedSession,
    ServerError,
    SessionAttached,
    SessionCreated,
    Slot,
    Status,
    Success,
    decode_response,
    encode_request,
)
from simsync.transport import (
    SLICE,
    Channel,
    Connection,
    Fatal,
    Link,
    LinkDone,
    State,
    StatusCell,
    Transient,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionInfo:
    """What the server said about a session: its id, its JSON-RPC URL, its task id."""

    session_id: str
    rpc_endpoint: str
    task_id: Optional[str] = None


class Verdict(enum.Enum):
    DELIVER = "deliver"
    DROP = "drop"
    RESEND = "resend"


class StepGate:
    """Decides, frame by frame, what the user sees so that each pause is seen once and each
    step executes once (PROTOCOL.md §2 sequencing and §13). Thread-safe: the reader calls
    ``admit``/``reattached``, the user's thread ``begin_step``."""

    _STEP_FRAMES = frozenset({Status, Slot, ServerError, Paused, Completed})
    _PAUSES = frozenset({ReadyForContinue, Paused})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_seq: Optional[int] = None
        self.completed = False
        self._holding_pause = False
        self._outstanding: Optional[Request] = None
        self._step_seen = False
        self._reattached = False
        self._expect_reannounce = False

    def admit(self, seq: Optional[int], event: Any) -> Tuple[Verdict, Optional[Request]]:
        """What to do with one event (reader thread)."""
        with self._lock:
            if seq is not None:
                if self.last_seq is not None and seq <= self.last_seq:
                    return Verdict.DROP, None
                self.last_seq = seq
            return self._admit_locked(event)

    def _admit_locked(self, event: Any) -> Tuple[Verdict, Optional[Request]]:
        kind = type(event)                  # exact types: isinstance on ABCs is slow
        if kind in self._PAUSES:
            return self._pause()
        if kind is Completed:
            self.completed, self._outstanding, self._holding_pause = True, None, False
            return Verdict.DELIVER, None
        if self._outstanding is not None and kind in self._STEP_FRAMES:
            self._step_seen, self._expect_reannounce = True, False
            if kind is ServerError and event.rejects_request:
                self._outstanding, self._holding_pause = None, True
        return Verdict.DELIVER, None

    def _pause(self) -> Tuple[Verdict, Optional[Request]]:
        if self._outstanding is None:
            if self._holding_pause:
                self._expect_reannounce = False
                return Verdict.DROP, None            # rule 1: a pause the user already holds
            self._holding_pause = True
            return Verdict.DELIVER, None
        if not self._step_seen:
            if self._reattached:
                self._reattached = False             # rule 2: the step never reached the server
                return Verdict.RESEND, self._outstanding
            if self._expect_reannounce:
                self._expect_reannounce = False      # rule 1, raced by a quick step: the
                return Verdict.DROP, None            # server's re-announcement of the old pause
        self._outstanding, self._holding_pause = None, True
        return Verdict.DELIVER, None

    def begin_step(self, request: Request) -> None:
        """Record a step about to be sent (user thread). Raises if one is outstanding."""
        with self._lock:
            if self.completed:
                raise SessionClosed("the session has completed; no step can follow")
            if self._outstanding is not None:
                raise SimsyncError(
                    f"a step ({self._outstanding.METHOD}) is still running: wait for its "
                    "ReadyForContinue/Paused before sending the next one")
            self._outstanding, self._step_seen = request, False
            self._reattached, self._holding_pause = False, False

    def reattached(self) -> None:
        """A re-attach happened (reader thread): an outstanding step may have been lost, and
        a pause the user holds may be announced again after the resume."""
        with self._lock:
            if self._outstanding is not None:
                self._reattached = True
            elif self._holding_pause:
                self._expect_reannounce = True

    @property
    def step_outstanding(self) -> bool:
        return self._outstanding is not None


Deliver = Callable[[Any], None]


class ControlBase(Link):
    """What the single and the parallel control links share: URL and key, the sender, the
    create-or-attach handshake, the bounded handshake receive loop, frame decoding, and what
    a lost connection means. Subclasses create, attach and route (reader thread)."""

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig, before_resume: Callable[[float], None]) -> None:
        self._url = urls.control_url(url)
        self.headers = [f"{name}: {value}" for name, value in config.extra_headers.items()]
        if api_key:
            self.headers.append(f"X-API-Key: {api_key}")
        self._create = create
        self._config = config
        self._before_resume = before_resume
        self._send: Callable[[str], None] = self._not_connected

    def url(self) -> str:
        return self._url

    @property
    @abc.abstractmethod
    def created(self) -> bool:
        """Whether the server has confirmed the session (then reconnects attach)."""

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """Whether nothing more is expected (completed or closing): a drop ends the link."""

    @property
    def reconnectable(self) -> bool:  # type: ignore[override]
        return not self.created or self._create.sequenced

    def handshake(self, channel: Channel, attempt: int) -> None:
        """Create (first time) or attach + resume (reader thread; each reply waited for at
        most the handshake timeout)."""
        self._send = channel.send
        if self.created:
            self._attach(channel)
        else:
            self._create_session(channel)

    @abc.abstractmethod
    def _create_session(self, channel: Channel) -> None:
        """Send the create request and wait for the session(s)."""

    @abc.abstractmethod
    def _attach(self, channel: Channel) -> None:
        """Re-attach with the cursors, then ``_resume``."""

    @abc.abstractmethod
    def _route(self, seq: Optional[int], event: Any) -> None:
        """Route one decoded frame."""

    def _resume(self, channel: Channel) -> None:
        """Rebuild the data plane (bounded), then ``resumeAttachedSession`` → ``success``."""
        self._before_resume(self._config.handshake_timeout)
        channel.send(encode_request(ResumeAttachedSession()))
        self._await(channel, Success, "success (resume)")

    def _await(self, channel: Channel, wanted: type, what: str,
               other: Optional[Callable[[Tuple[Optional[int], Any]], None]] = None,
               timeout: Optional[float] = None) -> Tuple[Optional[int], Any]:
        """Receive until a ``wanted`` frame; the rest goes to ``other`` (default: routed).
        Errors are fatal here, except ``sessionOwnershipBusy`` which is worth a retry."""
        while True:
            seq, event = self._decode(channel.recv(timeout or self._config.handshake_timeout))
            if event is None:
                continue
            if isinstance(event, wanted):
                return seq, event
            if isinstance(event, ServerError):
                if event.retryable_on_attach:
                    raise Transient(f"server busy: {event.message}")
                raise Fatal(f"the server refused the session while waiting for {what}: "
                            f"{event.message}")
            if other is not None:
                other((seq, event))
            else:
                self._route(seq, event)

    def on_frame(self, data: Union[str, bytes]) -> None:
        """Route one frame of the read loop (reader thread)."""
        seq, event = self._decode(data)
        if event is not None:
            self._route(seq, event)

    def _decode(self, data: Union[str, bytes]) -> Tuple[Optional[int], Any]:
        try:
            return decode_response(data)
        except ProtocolError as exc:
            log.warning("simsync %s: ignoring a malformed frame: %s", self.name, exc)
            return None, None

    def on_down(self, reason: str) -> None:
        self._send = self._not_connected
        if self.finished:
            raise LinkDone()
        if not self.reconnectable:
            raise Fatal(f"the connection was lost ({reason}) and the session had no detach "
                        "window (disconnect_timeout_secs=0), so the server has ended it")

    @staticmethod
    def _not_connected(text: str) -> None:
        raise Transient("not connected")


class ControlLink(ControlBase):
    """The ``/backtest`` link of one session: create on the first connect, attach + resume
    on every reconnect, then route frames through the ``StepGate`` to ``deliver``."""

    name = "control"

    def __init__(self, url: str, api_key: Optional[str], create: CreateSessionParams,
                 config: ClientConfig, deliver: Deliver,
                 before_resume: Callable[[float], None] = lambda timeout: None) -> None:
        super().__init__(url, api_key, create, config, before_resume)
        self._deliver = deliver
        self.gate = StepGate()
        self.info: Optional[SessionInfo] = None
        self._closing = False
        self.close_acked = threading.Event()

    def __repr__(self) -> str:
        return f"ControlLink({self._url!r}, session={self.info and self.info.session_id!r})"

    @property
    def created(self) -> bool:
        return self.info is not None

    @property
    def finished(self) -> bool:
        return self.gate.completed or self._closing

    # ------------------------------------------------------------------ reader thread

    def _create_session(self, channel: Channel) -> None:
        """Events before ``sessionCreated`` are held back and routed only once the session
        exists: if this attempt dies, a retried create would announce them again."""
        early: List[Tuple[Optional[int], Any]] = []
        channel.send(encode_request(CreateBacktestSession(self._create)))
        seq, created = self._await(channel, SessionCreated, "sessionCreated", early.append)
        self.gate.admit(seq, created)
        self.info = SessionInfo(created.session_id, created.rpc_endpoint, created.task_id)
        for early_seq, event in early:
            self._route(early_seq, event)

    def _attach(self, channel: Channel) -> None:
        assert self.info is not None
        channel.send(encode_request(AttachBacktestSession(self.info.session_id,
                                                          self.gate.last_seq)))
        seq, attached = self._await(channel, SessionAttached, "sessionAttached")
        self.gate.admit(seq, attached)
        self._resume(channel)
        self.gate.reattached()      # the replay (sent before the ack) has been routed

    def _route(self, seq: Optional[int], event: Any) -> None:
        kind = type(event)
        if kind is Success:
            if self._closing:
                self.close_acked.set()
            return
        if kind is SessionCreated or kind is SessionAttached:
            return
        verdict, request = self.gate.admit(seq, event)
        if verdict is Verdict.DELIVER:
            if kind is ServerError and event.fatal:
                raise Fatal(f"the server ended the session: {event.message}")
            log.debug("simsync control: event %s seq=%s", kind.__name__, seq)
            self._deliver(event)
        elif verdict is Verdict.RESEND and request is not None:
            log.info("simsync control: the step was lost in the drop; sending it again")
            self._send(encode_request(request))

    # ------------------------------------------------------------------ user thread

    def send_step(self, request: Request) -> None:
        """Send a step (user thread). If the send fails the step stays outstanding and is
        sent again after the re-attach (PROTOCOL.md §13 rule 2)."""
        self.gate.begin_step(request)
        try:
            self._send(encode_request(request))
        except Transient as exc:
            log.info("simsync control: step not sent (%s); it will be sent after reconnect", exc)

    def send_close(self) -> None:
        """Ask the server to close the session (user thread); ``close_acked`` is set on its
        ``success``. Best effort: a dead socket is fine here."""
        self._closing = True
        try:
            self._send(encode_request(CloseBacktestSession()))
        except Transient:
            self.close_acked.set()


class ControlSide(abc.ABC):
    """What a ``Session`` needs from its control channel: whether it is up, who the session
    is, a way to send a step, and a way to close. User-thread methods."""

    status: StatusCell

    @property
    @abc.abstractmethod
    def info(self) -> SessionInfo:
        """The server's description of the session."""

    @abc.abstractmethod
    def start(self) -> None:
        """Block until the session exists (or raise); for sub-sessions it already does."""

    @abc.abstractmethod
    def send_step(self, request: Request) -> None:
        """Send one step (gated: one outstanding at a time)."""

    @abc.abstractmethod
    def close(self, deadline: float) -> None:
        """Close the session on the server, then release what is this side's own."""


class SingleControl(ControlSide):
    """The control side of a single session: its own ``ControlLink`` and ``Connection``."""

    def __init__(self, link: ControlLink, config: ClientConfig, label: str) -> None:
        self.link = link
        self._config = config
        self.connection = Connection(link, config, label)
        self.status = self.connection.status

    @property
    def info(self) -> SessionInfo:
        assert self.link.info is not None, "the session has not been created"
        return self.link.info

    def start(self) -> None:
        """Connect and create (user thread); blocks through the start-up statuses."""
        self.connection.start()
        status = self.status.wait_for({State.UP}, None)
        if status.state is not State.UP and not self.link.created:
            self.connection.close(self._config.close_timeout)
            raise SessionCreateError(f"could not create the session: {status.reason}")
        # Created, even if it already failed since: next_event raises the failure.

    def send_step(self, request: Request) -> None:
        self.link.send_step(request)

    def close(self, deadline: float) -> None:
        """``closeBacktestSession`` → ``success`` (if up), then close the connection."""
        if self.status.value.state is State.UP:
            self.link.send_close()
            while not self.link.close_acked.wait(SLICE) and time.monotonic() < deadline:
                pass
        self.connection.close(max(0.0, deadline - time.monotonic()))


__all__: List[str] = ["ControlBase", "ControlLink", "ControlSide", "SessionInfo",
                      "SingleControl", "StepGate", "Verdict"]
