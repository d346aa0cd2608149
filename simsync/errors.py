"""The exceptions simsync raises. Each carries its reason in plain words.

Every exception derives from :class:`SimsyncError`. None of them ever holds the API key.
"""
from __future__ import annotations

from typing import Any, Optional


class SimsyncError(Exception):
    """Base class of every error simsync raises on purpose."""


class ProtocolError(SimsyncError):
    """A frame did not match the wire protocol (PROTOCOL.md). Carries a short excerpt only."""

    def __init__(self, reason: str, frame: Any = None) -> None:
        self.reason = reason
        self.excerpt = excerpt(frame) if frame is not None else None
        super().__init__(f"{reason}: {self.excerpt}" if self.excerpt else reason)


class ConnectionFailedError(SimsyncError):
    """Base of the errors that end a connection. Besides the reason in plain words, what the
    server said when it said something: ``http_status`` (an upgrade refused),
    ``close_code`` and ``close_reason`` (a WebSocket close, RFC 6455 §7.4; 1006: lost without
    a close frame). Each is ``None`` when unknown.

    ``cause``: the connection's failure (a transport ``Fatal``/``Transient``, or any exception
    with those attributes); each attribute not given explicitly is copied from it, so control
    and PubSub failures carry what the server said the same way."""

    def __init__(self, message: str = "", *, http_status: Optional[int] = None,
                 close_code: Optional[int] = None, close_reason: Optional[str] = None,
                 cause: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.http_status = http_status if http_status is not None else _said(cause,
                                                                             "http_status")
        self.close_code = close_code if close_code is not None else _said(cause, "close_code")
        self.close_reason = close_reason if close_reason is not None else _said(
            cause, "close_reason")


class SessionCreateError(ConnectionFailedError):
    """The server refused to create or attach the session, or answered nonsense, or the
    first connection's budget was spent (the reason names the URL and the last cause)."""


class ControlFailed(ConnectionFailedError):
    """The control connection failed for good (fatal error or reconnect budget spent).

    ``server_error`` is the typed ``simsync.ServerError`` (``kind``, ``fields``, ``raw``)
    when a fatal ``error`` frame ended the session, else ``None``."""

    def __init__(self, message: str, server_error: Any = None, *,
                 http_status: Optional[int] = None, close_code: Optional[int] = None,
                 close_reason: Optional[str] = None,
                 cause: Optional[BaseException] = None) -> None:
        self.server_error = server_error
        super().__init__(message, http_status=http_status, close_code=close_code,
                         close_reason=close_reason, cause=cause)


def _said(cause: Optional[BaseException], name: str) -> Any:
    """``cause.name`` (an int or str the server sent), ``None`` when absent."""
    value = getattr(cause, name, None)
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


class SubscriptionFailed(ConnectionFailedError):
    """A data-plane subscription was refused, failed for good, or ended incomplete."""


class SessionClosed(SimsyncError):
    """The session was closed; nothing more will come from it."""


class RpcError(SimsyncError):
    """A JSON-RPC call (or an HTTP request of the client) failed: a JSON-RPC error object
    (``code``, ``rpc_message``: its ``message``, at most 500 characters, ``data``), an HTTP
    error status (``http_status``), a body that cannot be decoded, a timeout
    (:class:`RpcTimeout`) or a connection failure (:class:`RpcConnectionError`).
    ``retry_after``: seconds the server asked to wait (HTTP ``Retry-After``, delta-seconds or
    HTTP-date), else ``None``."""

    def __init__(self, message: str, code: Optional[int] = None,
                 http_status: Optional[int] = None, data: Any = None,
                 retry_after: Optional[float] = None,
                 rpc_message: Optional[str] = None) -> None:
        self.code = code
        self.http_status = http_status
        self.data = data
        self.retry_after = retry_after
        self.rpc_message = rpc_message
        super().__init__(message)


class RpcTimeout(RpcError, TimeoutError):
    """A JSON-RPC call got no complete answer within its deadline (``timeout`` /
    ``ClientConfig.rpc_timeout``, name resolution included); the message names the phase that
    ran out. Also a ``TimeoutError``."""


class RpcConnectionError(RpcError, ConnectionError):
    """A JSON-RPC call could not reach the server: the connection was refused or reset, the
    host name did not resolve, or the proxy failed. Nothing was answered; a read may be tried
    again. Also a ``ConnectionError``."""


class SlowConsumerError(SimsyncError):
    """The user fell too far behind the data plane for too long."""


class ForkedSessionError(SimsyncError):
    """A session was used in a process other than the one that created it."""


class EventTimeout(SimsyncError, TimeoutError):
    """``next_event(timeout=...)`` waited and nothing came."""


def excerpt(frame: Any, limit: int = 80) -> str:
    """A short, printable excerpt of a frame for error messages (never the whole frame)."""
    try:
        shown = str(frame)
    except (RecursionError, ValueError):       # too deeply nested, an int too long to print
        shown = f"<{type(frame).__name__} too large to show>"
        frame = shown
    if isinstance(frame, (bytes, bytearray, memoryview)):
        text = bytes(frame[:limit]).decode("utf-8", "replace")
    else:
        text = shown
    text = text[:limit].encode("unicode_escape").decode("ascii")
    return repr(text[:limit] + ("…" if len(shown) > limit else ""))


class InvalidArgumentError(SimsyncError, ValueError):
    """A call got an argument with a bad value (a negative slot, ``start_slot`` after
    ``end_slot``, a cursor of another session, ...); also a ``ValueError``."""


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """A call got an argument of the wrong type, or a wrong combination (a slot given as
    text, both ``end_slot`` and ``slot_count``); also a ``TypeError``."""

