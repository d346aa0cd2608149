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
from simsync.control import ControlLink, SingleControl
from simsync.errors import RpcError, SessionCreateError
from simsync.parallel import ParallelSession
from simsync.protocol import AvailableRange, CreateSessionParams, decode_available_ranges
from simsync.rpc import CallWatch, close_http, timed_request, watched_http
from simsync.session import Session
from simsync.transport import (
    TRANSIENT_UPGRADE_STATUSES,
    ReconnectPolicy,
    Transient,
    retry_after_seconds,
)

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

    def __repr__(self) -> str:
        key = "<set>" if self._api_key else None
        return f"Client({self.url!r}, api_key={key})"

    def available_ranges(self) -> List[AvailableRange]:
        """The bundles the service can replay: ``GET /available-ranges`` (user thread).

        Each request is bounded as a whole by ``rpc_timeout``; connection failures, timeouts
        and HTTP 408/429/502/503/504 are retried (backoff as for reconnects, honouring
        ``Retry-After``) within ``initial_connect_budget``, each failure logged at WARNING.
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
            log.warning("simsync: GET %s failed (attempt %d): %s; retrying in %.2fs",
                        url, state.attempt_number, exc, delay)

        http = watched_http()
        try:
            for attempt in policy.retrying(log_retry, lambda: config.initial_connect_budget):
                with attempt:
                    content = self._get_ranges(http, url, headers)
        except Transient as exc:
            raise RpcError(f"GET {url} failed for initial_connect_budget="
                           f"{config.initial_connect_budget:g}s; last cause: {exc}",
                           http_status=exc.http_status) from None
        finally:
            close_http(http)
        return decode_available_ranges(content)

    def _get_ranges(self, http: requests.Session, url: str, headers: Dict[str, str]) -> bytes:
        """One ``GET /available-ranges``; ``Transient`` for what is worth a retry."""
        watch = CallWatch(self.config.rpc_timeout)
        try:
            status, content, reply_headers = timed_request(
                http, "GET", url, watch, headers=headers,
                verify=self.config.ca_bundle or True, allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise RpcError(f"GET {url} failed: SSLError: {exc}") from None
        except requests.RequestException as exc:
            cut = f" ({watch.describe()})" if watch.expired else ""
            raise Transient(f"{type(exc).__name__}{cut}: {exc}") from None
        if status in TRANSIENT_UPGRADE_STATUSES:
            retry_after = retry_after_seconds(reply_headers.get("Retry-After"))
            raise Transient(f"HTTP {status}", http_status=status, retry_after=retry_after)
        if status >= 400:
            raise RpcError(f"GET {url} answered HTTP {status}", http_status=status)
        return content

    def start_session(self, params: Optional[CreateSessionParams] = None,
                      **fields: Any) -> Session:
        """Create a session and return it once the server confirmed it (blocks through the
        start-up statuses). Takes a ``CreateSessionParams`` or its fields as keywords
        (``start_slot=``, ``end_slot=``, ``disconnect_timeout_secs=``, ...).

        Raises ``SessionCreateError`` with the server's reason when it refuses."""
        create = _create_params(params, fields)
        if create.parallel:
            raise ValueError("parallel=True needs Client.start_parallel(...)")
        session = Session(self.url, create, self.config)
        link = ControlLink(self.url, self._api_key, create, self.config,
                           session._on_control_event, session._before_resume)
        session._bind(SingleControl(link, self.config, session._label))
        return session


    def start_parallel(self, params: Optional[CreateSessionParams] = None,
                       **fields: Any) -> ParallelSession:
        """Create a parallel batch (``parallel=True`` is implied): the server splits the range
        into sub-sessions. Blocks through the whole create, which may wait for capacity
        (``ClientConfig.parallel_create_frame_timeout`` per frame)."""
        create = _create_params(params, fields)
        if not create.parallel:
            create = dataclasses.replace(create, parallel=True)
        batch = ParallelSession(self.url, self._api_key, create, self.config)
        batch._start()
        return batch


def _create_params(params: Optional[CreateSessionParams], fields: dict[str, Any]
                   ) -> CreateSessionParams:
    if params is not None and fields:
        raise TypeError("pass either a CreateSessionParams or keyword fields, not both")
    if params is not None:
        return params
    try:
        return CreateSessionParams(**fields)
    except TypeError as exc:
        raise TypeError(f"bad session fields: {exc}") from None


__all__ = ["Client", "SessionCreateError"]
