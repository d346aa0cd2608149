"""The ``/backtest`` control channel: one `ControlEndpoint` per accepted WebSocket.

Runs on the event-loop thread. `serve_control` is the read loop; each request is decoded and
dispatched synchronously (steps run as session tasks), so requests are handled in arrival order.
Handshake replies (``sessionCreated``, ``sessionsCreatedV2``, ``sessionAttached``,
``parallelSessionAttachedV2``, the ``success`` of a resume or a close) and errors not tied to a
step carry no ``seqId``; everything a session emits does when the session is sequenced.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple

from simsync.localsim.connection import Connection
from simsync.localsim.registry import Registry, SessionGroup
from simsync.localsim.session import (
    BacktestSession,
    CreateParams,
    parse_continue,
    parse_continue_to,
)
from simsync.localsim.wire import (
    Frame,
    JsonObj,
    RequestError,
    as_object,
    decode_request,
    error_frame,
    error_params,
    frame,
    invalid_request,
    pick,
)

log = logging.getLogger(__name__)
STEP_METHODS = ("continue", "continueTo", "continueSessionV1", "continueToSessionV1")


def _created(session: BacktestSession, rpc_base: str,
             method: str = "sessionCreated") -> Frame:
    """``sessionCreated``/``sessionAttached``; ``rpc_base`` ("" or ``scheme://host:port``)
    makes the endpoint absolute."""
    return frame(method, {"session_id": session.id,
                          "rpc_endpoint": rpc_base + session.rpc_endpoint, "task_id": None})


class ControlEndpoint:
    """Requests of one control connection; owns at most one `SessionGroup` at a time."""

    def __init__(self, conn: Connection, registry: Registry) -> None:
        self.conn = conn
        self.registry = registry
        self.group: Optional[SessionGroup] = None
        self._handlers: Dict[str, Callable[[Any], None]] = {
            "createBacktestSession": self._create,
            "continue": self._continue,
            "continueTo": self._continue_to,
            "closeBacktestSession": self._close,
            "attachBacktestSession": self._attach,
            "resumeAttachedSession": self._resume,
            "continueSessionV1": self._continue_v1,
            "continueToSessionV1": self._continue_to_v1,
            "closeSessionV1": self._close_v1,
            "attachParallelControlSessionV2": self._attach_parallel,
        }

    # -- entry points ----------------------------------------------------------------------
    def on_frame(self, data: Any) -> None:
        try:
            method, params = decode_request(data)
            handler = self._handlers.get(method)
            if handler is None:
                raise invalid_request(f"unknown method {method!r}")
            if method in STEP_METHODS:
                self.conn.point("after_continue_received")
            handler(params)
        except RequestError as exc:
            self.conn.send(error_frame(exc.params))

    def on_disconnect(self) -> None:
        group, self.group = self.group, None
        if group is not None:
            self.registry.connection_lost(group, self.conn)

    # -- create / close --------------------------------------------------------------------
    def _create(self, params: Any) -> None:
        if self.group is not None:
            raise invalid_request("this connection already drives a session")
        create = CreateParams.from_json(params)
        group = self.registry.create_group(create)
        self.group = group
        group.bind(self.conn)
        self.conn.point("before_session_created")
        for i, session in enumerate(group.sessions):
            if i == 1:
                self.conn.point("mid_create")
            self.conn.send(_created(session, self.registry.rpc_base))
        if group.parallel:
            self.conn.send(frame("sessionsCreatedV2", {
                "control_session_id": group.id,
                "session_ids": [s.id for s in group.sessions],
                "task_ids": [None for _ in group.sessions],
                "start_slots": [s.params.start_slot for s in group.sessions],
                "end_slots": [s.params.end_slot for s in group.sessions]}))
        self.conn.point("after_session_created")
        for session in group.sessions:
            session.start()

    def _close(self, params: Any) -> None:
        group = self._require_group()
        self.group = None
        group.unbind(self.conn)
        self.registry.destroy_group(group)
        self.conn.send(frame("success"))
        self.conn.close_after_pending()

    # -- single-session steps --------------------------------------------------------------
    def _single(self) -> BacktestSession:
        group = self._require_group()
        if group.parallel:
            raise invalid_request("parallel batch: use continueSessionV1/continueToSessionV1")
        return group.sessions[0]

    def _continue(self, params: Any) -> None:
        self._single().step(lambda: parse_continue(params))

    def _continue_to(self, params: Any) -> None:
        self._single().step(lambda: parse_continue_to(params))

    # -- parallel steps --------------------------------------------------------------------
    def _sub(self, params: Any) -> Tuple[BacktestSession, JsonObj]:
        """The addressed sub-session and its step params (flattened or nested form)."""
        group = self._require_group()
        obj = as_object(params, "…SessionV1")
        session_id = pick(obj, "sessionId", "session_id")
        session = group.find(session_id)
        if session is None:
            raise RequestError(error_params("sessionNotFound", session_id=session_id))
        nested = obj.get("request")
        body = nested if isinstance(nested, dict) else {
            k: v for k, v in obj.items() if k not in ("sessionId", "session_id")}
        return session, body

    def _continue_v1(self, params: Any) -> None:
        session, body = self._sub(params)
        session.step(lambda: parse_continue(body))

    def _continue_to_v1(self, params: Any) -> None:
        session, body = self._sub(params)
        session.step(lambda: parse_continue_to(body))

    def _close_v1(self, params: Any) -> None:
        session, _ = self._sub(params)
        session.emit("success")
        self.registry.destroy_session(session)

    # -- attach / resume -------------------------------------------------------------------
    def _attach(self, params: Any) -> None:
        obj = as_object(params, "attachBacktestSession")
        session_id = pick(obj, "session_id", "sessionId")
        group = self._attachable(session_id, parallel=False)
        if group is None or not group.sessions[0].sequenced:
            raise RequestError(error_params("sessionNotFound", session_id=session_id))
        last = pick(obj, "last_sequence", "lastSequence")
        replay = group.attach(self.conn, {group.id: last if isinstance(last, int) else None})
        self.group = group
        self.conn.point("before_session_attached")
        self.conn.send(_created(group.sessions[0], self.registry.rpc_base, "sessionAttached"))
        self.conn.point("after_session_attached")
        self._send_replay(replay)

    def _attach_parallel(self, params: Any) -> None:
        obj = as_object(params, "attachParallelControlSessionV2")
        group_id = pick(obj, "control_session_id", "controlSessionId")
        group = self._attachable(group_id, parallel=True)
        if group is None:
            raise RequestError(error_params("sessionNotFound", session_id=group_id))
        raw = pick(obj, "last_sequences", "lastSequences", default={})
        cursors = {k: v if isinstance(v, int) else None
                   for k, v in (raw.items() if isinstance(raw, dict) else [])}
        replay = group.attach(self.conn, cursors)
        self.group = group
        self.conn.point("before_session_attached")
        self.conn.send(frame("parallelSessionAttachedV2", {
            "control_session_id": group.id, "session_ids": [s.id for s in group.sessions],
            "task_ids": [None for _ in group.sessions]}))
        self.conn.point("after_session_attached")
        self._send_replay(replay)

    def _attachable(self, group_id: Any, parallel: bool) -> Optional[SessionGroup]:
        if self.group is not None:
            raise invalid_request("this connection already drives a session")
        return self.registry.group_of(group_id, parallel)

    def _send_replay(self, replay: list[Frame]) -> None:
        half = len(replay) // 2
        for i, body in enumerate(replay):
            if i == half:
                self.conn.point("mid_replay")
            self.conn.send(body)
        if not replay:
            self.conn.point("mid_replay")

    def _resume(self, params: Any) -> None:
        group = self._require_group()
        self.conn.send(frame("success"))
        self.conn.point("after_resume_success")
        group.resume()

    def _require_group(self) -> SessionGroup:
        if self.group is None:
            raise invalid_request("no session on this connection (create or attach first)")
        return self.group


async def serve_control(conn: Connection, registry: Registry) -> None:
    """Read loop of one control WebSocket (event-loop thread)."""
    endpoint = ControlEndpoint(conn, registry)
    try:
        while True:
            msg = await conn.receive()
            if msg is None:
                return
            endpoint.on_frame(msg.data)
    finally:
        endpoint.on_disconnect()
