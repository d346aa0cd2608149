"""``Client``: the entry point — where the simulator is, the key, the config."""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Dict, List, Optional

import requests
import tenacity

from simsync import urls
from simsync.config import ClientConfig
from simsync.control import ControlLink, SessionInfo, SingleControl
from simsync.cursor import SessionCursor
from simsync.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RpcError,
    SessionClosed,
    SessionCreateError,
)
from simsync.netpolicy import TRANSIENT_HTTP_STATUSES, proxy_for, retry_after_seconds
from simsync.parallel import ParallelSession
from simsync.protocol import AvailableRange, CreateSessionParams, decode_available_ranges
from simsync.protocol.types import Discovery
from simsync.rpc import HTTP_FAILURES, CallWatch, close_http, timed_request, watched_http
from simsync.session import Inbox, Session, next_label
from simsync.subscriptions import ReconnectCoordinator
from simsync.transport import ReconnectPolicy, State, Transient
from simsync.usage import UsageReport, When, fetch_usage

log = logging.getLogger(__name__)


class Client:
    """A simulator endpoint and its credentials. Cheap to create; holds no connection.

    ``url`` is a bare host (``sim.example.com`` → ``wss://sim.example.com/backtest``) or a
    ``ws://``/``wss://`` URL. The API key is sent only on the control upgrade and to
    ``/available-ranges``, and never shown in a repr, a log line or an error.
    """

    def __init__(self, url: str, api_key: Optional[str] = None,
                 config: Optional[ClientConfig] = None) -> None:
        self.url = urls.control_url(url)
        self._api_key = api_key or None
        self.config = config or ClientConfig()
        self._closed = False

    def __repr__(self) -> str:
        key = "<set>" if self._api_key else None
        closed = ", closed" if self._closed else ""
        return f"Client({self.url!r}, api_key={key}{closed})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Refuse new sessions from now on (``start_session``, ``start_parallel`` and
        ``attach_session`` raise ``SessionClosed``). The client keeps no connection between
        calls (each ``available_ranges``/``usage`` call closes its own HTTP pool), so there
        is nothing else to release; sessions already started stay open: close them (``with``
        or ``Session.close()``). Idempotent; any thread; does not block."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed("the Client is closed: create a new one")

    def available_ranges(self) -> List[AvailableRange]:
        """The bundles the service can replay: ``GET /available-ranges`` (user thread).

        Each request is bounded as a whole by ``rpc_timeout``; connection failures, timeouts
        and HTTP 408/429/502/503/504 are retried (backoff as for reconnects, honouring
        ``Retry-After``) within ``initial_connect_budget``; the first failure is logged at
        WARNING, the retries after it at INFO. Trust and proxy as every channel
        (``simsync.netpolicy``).
        Raises ``RpcError`` naming the URL and the cause: at once for a TLS failure or any
        other HTTP error status, or once the budget is spent."""
        headers = {"X-API-Key": self._api_key} if self._api_key else {}
        url = urls.http_base(self.url) + "/available-ranges"
        config = self.config
        stop = threading.Event()
        policy = ReconnectPolicy(config, stop)

        def log_retry(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.log(logging.WARNING if state.attempt_number == 1 else logging.INFO,
                    "simsync: GET %s failed (attempt %d): %s; retrying in %.2fs",
                    url, state.attempt_number, exc, delay,
                    extra={"simsync_connect_retry": state.attempt_number})

        http = watched_http(config)
        try:
            for attempt in policy.retrying(log_retry, lambda: config.initial_connect_budget):
                with attempt:
                    content = self._get_ranges(http, url, headers)
            if attempt.retry_state.attempt_number > 1:     # the loop ends on an answer
                log.info("simsync: GET %s answered (attempt %d)", url,
                         attempt.retry_state.attempt_number, extra={"simsync_state": State.UP})
        except Transient as exc:
            raise RpcError(f"{urls.shown(self.url)}: GET {url} failed for "
                           f"initial_connect_budget={config.initial_connect_budget:g}s; "
                           f"last cause: {exc}",
                           http_status=exc.http_status) from None
        finally:
            close_http(http)
        return decode_available_ranges(content)

    def _get_ranges(self, http: requests.Session, url: str, headers: Dict[str, str]) -> bytes:
        """One ``GET /available-ranges``; ``Transient`` for what is worth a retry."""
        watch = CallWatch(self.config.rpc_timeout)
        try:
            status, content, reply_headers = timed_request(
                http, "GET", url, watch, self.config, headers=headers, allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise RpcError(f"GET {url} failed: SSLError: {exc}") from None
        except requests.exceptions.ProxyError as exc:
            proxy = proxy_for(url, self.config)
            raise RpcError(f"GET {url} failed: the proxy {proxy.shown if proxy else ''} "
                           f"failed, not the simulator: {exc}") from None
        except HTTP_FAILURES as exc:
            cut = f" ({watch.describe()})" if watch.expired else ""
            raise Transient(f"{type(exc).__name__}{cut}: {exc}") from None
        if status in TRANSIENT_HTTP_STATUSES:
            retry_after = retry_after_seconds(reply_headers.get("Retry-After"))
            raise Transient(f"HTTP {status}", http_status=status, retry_after=retry_after)
        if status >= 400:
            raise RpcError(f"GET {url} answered HTTP {status}", http_status=status)
        return content

    def usage(self, since: Optional[When] = None, until: Optional[When] = None) -> UsageReport:
        """What this API key used in ``[since, until)``: ``GET /usage`` with the key in the
        ``X-API-Key`` header, ``since``/``until`` sent as ISO-8601 UTC query parameters
        (an aware ``datetime``, a naive one taken as UTC, or ISO-8601 text; ``None`` leaves
        the bound open). Runs on the caller's thread and blocks on one HTTP GET bounded by
        ``rpc_timeout``. Raises ``RpcError`` naming the URL (never the key) on a connection
        failure or an HTTP error, ``ProtocolError`` on a malformed answer, ``ValueError``
        when ``since`` is after ``until``."""
        return fetch_usage(self.url, self._api_key, self.config, since, until)

    def start_session(self, params: Optional[CreateSessionParams] = None, *,
                      start_slot: Optional[int] = None, end_slot: Optional[int] = None,
                      slot_count: Optional[int] = None,
                      signer_filter: Optional[List[str]] = None,
                      send_summary: Optional[bool] = None, parallel: Optional[bool] = None,
                      disconnect_timeout_secs: Optional[int] = None,
                      capacity_wait_timeout_secs: Optional[int] = None,
                      extra_compute_units: Optional[int] = None,
                      discoveries: Optional[List[Discovery]] = None,
                      replay_account_state: Optional[bool] = None,
                      extra: Optional[Dict[str, Any]] = None,
                      coordinator: Optional[ReconnectCoordinator] = None) -> Session:
        """Create a session and return it once the server confirmed it (user thread; blocks
        through the start-up statuses). Takes a ``CreateSessionParams``, or its fields as
        keywords (``start_slot=``, ``end_slot=`` or ``slot_count=``, ``disconnect_timeout_secs=``,
        ...; see ``CreateSessionParams``; ``None`` leaves a field to the server's default).

        ``coordinator``: a ``ReconnectCoordinator`` shared with other sessions, so that
        their subscriptions, after a few quick attempts each, reconnect (and replay) one at
        a time, as a parallel batch's do.

        Raises ``InvalidArgumentError`` (also a ``ValueError``) or ``InvalidArgumentTypeError``
        (also a ``TypeError``) for bad fields, before connecting; ``SessionCreateError`` with
        the server's reason when it refuses."""
        self._check_open()
        create = _create_params(params, dict(
            start_slot=start_slot, end_slot=end_slot, slot_count=slot_count,
            signer_filter=signer_filter, send_summary=send_summary, parallel=parallel,
            disconnect_timeout_secs=disconnect_timeout_secs,
            capacity_wait_timeout_secs=capacity_wait_timeout_secs,
            extra_compute_units=extra_compute_units, discoveries=discoveries,
            replay_account_state=replay_account_state, extra=extra))
        if create.parallel:
            raise InvalidArgumentError("parallel=True needs Client.start_parallel(...)")
        inbox = Inbox(self.config, create.start_slot)
        link = ControlLink(self.url, self._api_key, create, self.config,
                           inbox.on_control_event, inbox.before_resume)
        label = next_label()
        control = SingleControl(link, self.config, label)
        inbox.watch_control(control.status, lambda: control.failure)
        control.start()
        session = Session(control, inbox, self.url, create, self.config, label, coordinator)
        try:
            session.check_rpc_host()
        except BaseException:
            session.close()
            raise
        return session

    def attach_session(self, session_id: str, cursor: Optional[SessionCursor] = None
                       ) -> Session:
        """A ``Session`` bound to a session created elsewhere (another process, a worker
        that crashed), within its detach window (user thread; blocks until attached).

        With ``cursor`` (``Session.cursor``, persisted after each handled event) the user
        sees every event after it exactly once, and its subscriptions are opened again and
        replayed from where they stood; without it, the server replays the session's whole
        record (its pauses that were already answered are left out: they are history). A
        pause the user had handled is announced again when the server is idle there (its
        step never arrived). Raises ``SessionCreateError`` when the server does
        not know the session (or it has no detach window), ``InvalidArgumentError`` (also a
        ``ValueError``) for a cursor of another session, ``InvalidArgumentTypeError`` (also a
        ``TypeError``) when ``session_id`` is not a ``str`` or ``cursor`` not a
        ``SessionCursor``.

        A failed attach (``SessionCreateError``, a ``SubscriptionFailed`` while its
        subscriptions reopen, an interrupt) closes only what it opened here and leaves the
        session on the server, within its detach window, for another try; close it there
        with a later attach and ``close()``."""
        self._check_open()
        if not isinstance(session_id, str) or not session_id:
            raise InvalidArgumentTypeError(f"session_id must be a non-empty str, "
                                           f"got {session_id!r}")
        if cursor is not None and not isinstance(cursor, SessionCursor):
            raise InvalidArgumentTypeError(f"cursor must be a SessionCursor, "
                                           f"got {type(cursor).__name__}")
        if cursor is not None and cursor.session_id != session_id:
            raise InvalidArgumentError(f"the cursor belongs to session {cursor.session_id!r}, "
                             f"not {session_id!r}")
        start = cursor.start_slot if cursor is not None else 0
        create = CreateSessionParams(start, start, disconnect_timeout_secs=1)  # sequenced
        info = SessionInfo(session_id, cursor.rpc_endpoint if cursor is not None
                           else f"/backtest/{session_id}")
        inbox = Inbox(self.config, cursor.slot if cursor is not None else start)
        link = ControlLink(self.url, self._api_key, create, self.config,
                           inbox.on_control_event, inbox.before_resume,
                           attach=(info, cursor.control_seq if cursor is not None else None))
        label = next_label()
        control = SingleControl(link, self.config, label)
        inbox.watch_control(control.status, lambda: control.failure)
        session = Session(control, inbox, self.url, create, self.config, label, resume=cursor)
        try:
            session.check_rpc_host()
            for subscription in cursor.subscriptions if cursor is not None else ():
                session.open_subscription(subscription.spec, subscription)
            control.start()
            status = control.status.value
            if status.state is State.FAILED:
                raise SessionCreateError(f"could not attach to session {session_id}: "
                                         f"{status.reason}", cause=control.failure)
        except BaseException:
            session.close(keep_on_server=True)      # the user may try again
            raise
        return session

    def start_parallel(self, params: Optional[CreateSessionParams] = None, *,
                       start_slot: Optional[int] = None, end_slot: Optional[int] = None,
                       slot_count: Optional[int] = None,
                       signer_filter: Optional[List[str]] = None,
                       send_summary: Optional[bool] = None,
                       disconnect_timeout_secs: Optional[int] = None,
                       capacity_wait_timeout_secs: Optional[int] = None,
                       extra_compute_units: Optional[int] = None,
                       discoveries: Optional[List[Discovery]] = None,
                       replay_account_state: Optional[bool] = None,
                       extra: Optional[Dict[str, Any]] = None) -> ParallelSession:
        """Create a parallel batch (``parallel=True`` is implied): the server splits the range
        into sub-sessions. Takes what ``start_session`` takes. Blocks (user thread) through
        the whole create, which may wait for capacity (``ClientConfig.
        parallel_create_frame_timeout`` per frame). Raises as ``start_session`` does."""
        self._check_open()
        create = _create_params(params, dict(
            start_slot=start_slot, end_slot=end_slot, slot_count=slot_count,
            signer_filter=signer_filter, send_summary=send_summary,
            disconnect_timeout_secs=disconnect_timeout_secs,
            capacity_wait_timeout_secs=capacity_wait_timeout_secs,
            extra_compute_units=extra_compute_units, discoveries=discoveries,
            replay_account_state=replay_account_state, extra=extra))
        if not create.parallel:
            create = dataclasses.replace(create, parallel=True)
        batch = ParallelSession(self.url, self._api_key, create, self.config)
        batch._start()
        return batch


def _create_params(params: Optional[CreateSessionParams], given: Dict[str, Any]
                   ) -> CreateSessionParams:
    """``params``, or a ``CreateSessionParams`` of the keyword fields that are not None;
    its ``ValueError``/``TypeError`` become ``InvalidArgumentError``/``...TypeError``."""
    fields = {name: value for name, value in given.items() if value is not None}
    if params is not None and fields:
        raise InvalidArgumentTypeError(
            f"pass either a CreateSessionParams or keyword fields, not both "
            f"(got {', '.join(sorted(fields))})")
    if params is not None:
        if not isinstance(params, CreateSessionParams):
            raise InvalidArgumentTypeError(f"params must be a CreateSessionParams, "
                                           f"got {type(params).__name__}")
        return params
    if "start_slot" not in fields:
        raise InvalidArgumentTypeError("start_slot is required (or pass a CreateSessionParams)")
    try:
        return CreateSessionParams(**fields)
    except TypeError as exc:
        raise InvalidArgumentTypeError(f"bad session fields: {exc}") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"bad session fields: {exc}") from None


__all__ = ["Client", "SessionCreateError"]
