"""``Client``: the entry point — where the simulator is, the key, the config."""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional

import requests

from simsync import urls
from simsync.config import ClientConfig
from simsync.control import ControlLink, SingleControl
from simsync.errors import RpcError, SessionCreateError
from simsync.parallel import ParallelSession
from simsync.protocol import AvailableRange, CreateSessionParams, decode_available_ranges
from simsync.rpc import close_http
from simsync.session import Inbox, Session, next_label


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
        """The bundles the service can replay (blocks on one HTTP GET, bounded by
        ``rpc_timeout``). Raises ``RpcError`` on an HTTP or format failure."""
        headers = {"X-API-Key": self._api_key} if self._api_key else {}
        url = urls.http_base(self.url) + "/available-ranges"
        http = requests.Session()
        try:
            reply = http.get(url, headers=headers, timeout=self.config.rpc_timeout,
                             verify=self.config.ca_bundle or True)
        except requests.RequestException as exc:
            raise RpcError(f"GET /available-ranges failed: {type(exc).__name__}") from None
        finally:
            close_http(http)
        if reply.status_code >= 400:
            raise RpcError(f"GET /available-ranges answered HTTP {reply.status_code}",
                           http_status=reply.status_code)
        return decode_available_ranges(reply.content)

    def start_session(self, params: Optional[CreateSessionParams] = None,
                      **fields: Any) -> Session:
        """Create a session and return it once the server confirmed it (blocks through the
        start-up statuses). Takes a ``CreateSessionParams`` or its fields as keywords
        (``start_slot=``, ``end_slot=``, ``disconnect_timeout_secs=``, ...).

        Raises ``SessionCreateError`` with the server's reason when it refuses."""
        create = _create_params(params, fields)
        if create.parallel:
            raise ValueError("parallel=True needs Client.start_parallel(...)")
        inbox = Inbox(self.config, create.start_slot)
        link = ControlLink(self.url, self._api_key, create, self.config,
                           inbox.on_control_event, inbox.before_resume)
        label = next_label()
        control = SingleControl(link, self.config, label)
        inbox.watch_control(control.status, lambda: control.failure)
        control.start()
        session = Session(control, inbox, self.url, create, self.config, label)
        try:
            session.check_rpc_host()
        except BaseException:
            session.close()
            raise
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
