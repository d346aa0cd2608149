"""Per-session JSON-RPC over HTTP (PROTOCOL.md §10): :class:`SessionRpc`.

A session's simulated chain answers standard Solana JSON-RPC 2.0 at the session's
``rpc_endpoint`` (``POST http(s)://HOST/backtest/SESSION_ID``), plus the custom
``modifyAccounts``. That endpoint needs no authentication, so the API key is never sent here.
The endpoint stops answering once the session completes or closes: reads belong at a
``readyForContinue`` or ``paused`` pause.

Every failure surfaces as :class:`simsync.RpcError` (a JSON-RPC error object, an HTTP error
status, a response that is not JSON-RPC, a timeout, a connection failure, or a session that
has ended). Error messages carry at most a short excerpt of what the server sent and never
the request body.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Tuple

import requests
import tenacity
import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from simsync._version import __version__
from simsync.config import ClientConfig
from simsync.errors import ForkedSessionError, RpcError, excerpt
from simsync.netpolicy import (
    TRANSIENT_HTTP_STATUSES,
    PolicyAdapter,
    proxy_for,
    requests_proxies,
    resolve,
    retry_after_seconds,
)

__all__ = ["SessionRpc", "to_base64"]

log = logging.getLogger(__name__)

_BODY_EXCERPT = 200
"""Characters of a server's response body an error message may quote."""
_SERVER_MESSAGE_LIMIT = 500
"""Characters of a JSON-RPC error object's ``message`` an error message may quote."""
_BASE58 = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
#: Methods that change the simulated chain: never sent twice by ``rpc_retries``.
WRITE_METHODS = frozenset({"sendTransaction", "requestAirdrop", "modifyAccounts"})
#: Reads that do not start with ``get``.
_OTHER_READS = frozenset({"simulateTransaction", "isBlockhashValid", "minimumLedgerSlot"})
#: What may escape a requests call besides ``RequestException`` (a server that breaks HTTP).
HTTP_FAILURES = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                  http.client.HTTPException, OSError, ValueError)


def is_read(method: str) -> bool:
    """Whether ``method`` only reads (``get…``, ``simulateTransaction``, …): only reads are
    retried under ``ClientConfig.rpc_retries``."""
    return method not in WRITE_METHODS and (method.startswith("get") or method in _OTHER_READS)


# ---------------------------------------------------------------------------------------------
# Argument conversion
# ---------------------------------------------------------------------------------------------

def to_base64(obj: Any) -> str:
    """The base64 wire form of a transaction or message.

    Accepts ``bytes``/``bytearray``/``memoryview`` (the serialized form), a ``str`` that is
    already base64 (checked, returned stripped), or any object whose ``bytes(obj)`` is the wire
    form (solders ``VersionedTransaction``, ``Transaction``, ``Message``). A solders
    ``MessageV0`` gets its version prefix (``0x80``), as ``solders.message.to_bytes_versioned``
    would give. Raises ``TypeError`` for anything else and ``ValueError`` for a ``str`` that is
    not base64.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
    elif isinstance(obj, str):
        text = obj.strip()
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not a base64 string: {excerpt(obj, 40)}") from exc
        if not text:
            raise ValueError("empty transaction/message string")
        return text
    elif hasattr(type(obj), "__bytes__") and not isinstance(obj, (int, bool)):
        raw = bytes(obj)
        cls = type(obj)
        if cls.__name__ == "MessageV0" and cls.__module__.startswith("solders"):
            raw = b"\x80" + raw  # bytes(MessageV0) omits the versioned-message prefix
    else:
        raise TypeError("expected bytes, a base64 str, or an object with __bytes__ "
                        f"(e.g. a solders VersionedTransaction), not {type(obj).__name__}")
    if not raw:
        raise ValueError("empty transaction/message bytes")
    return base64.b64encode(raw).decode("ascii")


def _base58(value: Any, what: str) -> str:
    """``value`` as a base58 string: a ``str``, or anything whose ``str()`` is base58."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be a base58 str or a solders object, not raw bytes")
    text = value if isinstance(value, str) else str(value)
    if not text or not set(text) <= _BASE58:
        raise ValueError(f"{what} is not base58: {excerpt(text, 40)}")
    return text


def _account_data(value: Any, key: str) -> Any:
    """One ``AccountData`` value of ``modifyAccounts`` as a JSON-ready dict (PROTOCOL.md §6)."""
    if isinstance(value, Mapping):
        return dict(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if all(hasattr(value, a) for a in ("lamports", "data", "owner", "executable")):
        data = bytes(value.data)  # a solders Account, or anything shaped like one
        return {
            "data": {"data": base64.b64encode(data).decode("ascii"), "encoding": "base64"},
            "executable": bool(value.executable),
            "lamports": int(value.lamports),
            "owner": _base58(value.owner, f"owner of account {key}"),
            "space": len(data),
        }
    raise TypeError(f"account {key}: expected an AccountData dict, an object with to_dict(), "
                    f"or a solders Account, not {type(value).__name__}")


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# ---------------------------------------------------------------------------------------------
# Result unwrapping
# ---------------------------------------------------------------------------------------------

def _value(result: Any) -> Any:
    """The ``value`` of an ``{"context": ..., "value": ...}`` result; anything else as is."""
    if isinstance(result, dict) and "value" in result:
        return result["value"]
    return result


def _unexpected(method: str, result: Any, wanted: str) -> RpcError:
    return RpcError(f"{method}: unexpected result, wanted {wanted}: {excerpt(result, 120)}")


# ---------------------------------------------------------------------------------------------
# SessionRpc
# ---------------------------------------------------------------------------------------------

def close_http(http: requests.Session) -> None:
    """Close a ``requests.Session`` and its pooled sockets now. (urllib3 2.8's
    ``PoolManager.clear()`` drops its pools without closing them, so ``Session.close()``
    alone leaves idle keep-alive sockets open until garbage collection.)"""
    for adapter in http.adapters.values():
        pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
        if pools is None:
            continue
        for key in list(pools.keys()):
            pool = pools.get(key)
            if pool is not None:
                pool.close()
    http.close()


class CallWatch:
    """The whole-call deadline of one HTTP request (``rpc_timeout``), on top of requests'
    per-read timeouts: which phase the call is in (``connect``, ``send``, ``headers``,
    ``body``) and, once the deadline passes, a watchdog that shuts the connection's socket
    down so that even a server trickling one byte at a time cannot stretch the call.

    Use as a context manager around one ``requests`` call made through a session from
    :func:`watched_http` (on the calling thread); ``expired`` says whether the watchdog
    fired. The watchdog is a ``threading.Timer`` that is cancelled and joined on exit.
    """

    _current = threading.local()

    PHASES = {"resolve": "while resolving the host name", "connect": "while connecting",
              "send": "while sending the request",
              "headers": "while waiting for the response headers",
              "body": "while reading the response body"}

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self.phase = "connect"
        self.resolving: Optional[str] = None
        self.expired = False
        self._conn: Any = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.name = "simsync-rpc-deadline"

    @classmethod
    def current(cls) -> Optional[CallWatch]:
        watch: Optional[CallWatch] = getattr(cls._current, "watch", None)
        return watch

    def __enter__(self) -> CallWatch:
        CallWatch._current.watch = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        CallWatch._current.watch = None
        self._timer.cancel()
        self._timer.join()

    def using(self, conn: Any, phase: str) -> None:
        """The connection in use and the phase it entered (calling thread)."""
        with self._lock:
            self._conn = conn
            self.phase = phase
            expired = self.expired
        if expired:
            self._cut(conn)

    def enter(self, phase: str) -> None:
        """The call moved to ``phase`` on the same connection (calling thread)."""
        with self._lock:
            self.phase = phase

    def describe(self) -> str:
        if self.phase == "resolve" and self.resolving:
            return f"rpc_timeout={self.timeout:g}s ran out while resolving {self.resolving}"
        return f"rpc_timeout={self.timeout:g}s ran out {self.PHASES.get(self.phase, '')}"

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    def ran_out(self) -> None:
        """The deadline passed in a phase with no socket to cut (name resolution)."""
        with self._lock:
            self.expired = True

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            conn = self._conn
        if conn is not None:
            self._cut(conn)

    @staticmethod
    def _cut(conn: Any) -> None:
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """Mixed into urllib3's connection classes: tells the current ``CallWatch`` which
    connection a call uses and when it moves from connect to send to headers."""

    def connect(self) -> None:
        watch = CallWatch.current()
        if watch is not None:
            watch.using(self, "connect")
        super().connect()  # type: ignore[misc]
        if watch is not None:
            watch.using(self, "send")

    def _new_conn(self) -> Any:
        """Resolve within the call's deadline (``netpolicy.resolve``), then connect to each
        address in turn; TLS still checks the host name (``self.host``)."""
        watch = CallWatch.current()
        conn: Any = self          # an urllib3 HTTPConnection (this is its mixin)
        host: str = conn._dns_host
        if watch is None:
            return super()._new_conn()  # type: ignore[misc]
        with self._resolving(watch, host):
            infos = resolve(host, conn.port, watch.deadline, lambda: watch.expired)
        watch.enter("connect")
        error: Optional[BaseException] = None
        try:
            for *_, address in infos:
                conn._dns_host = address[0]
                try:
                    return super()._new_conn()  # type: ignore[misc]
                except urllib3.exceptions.NewConnectionError as exc:
                    error = exc
        finally:
            conn._dns_host = host
        raise error or OSError(f"no address for {host}")

    @contextlib.contextmanager
    def _resolving(self, watch: CallWatch, host: str) -> Any:
        watch.enter("resolve")
        watch.resolving = host
        try:
            yield
        except (TimeoutError, InterruptedError) as exc:
            watch.ran_out()
            raise urllib3.exceptions.NewConnectionError(
                self, f"{watch.describe()}: {exc}") from exc  # type: ignore[arg-type]
        except socket.gaierror as exc:
            raise urllib3.exceptions.NameResolutionError(
                host, self, exc) from exc  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch = CallWatch.current()
        if watch is not None:
            watch.using(self, "send")
        super().request(*args, **kwargs)  # type: ignore[misc]
        if watch is not None:
            watch.using(self, "headers")


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(PolicyAdapter):
    """The network policy's adapter (trust store) with watched connections, direct or
    through a proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


def watched_http(config: ClientConfig) -> requests.Session:
    """A ``requests.Session`` whose calls a ``CallWatch`` can bound as a whole, trusting and
    proxying as the network policy says (``simsync.netpolicy``); it reads nothing from the
    environment itself (``trust_env`` off: no ``REQUESTS_CA_BUNDLE``, no ``.netrc``): pass
    ``proxies=requests_proxies(url, config)`` and ``verify=True`` on each request."""
    http = requests.Session()
    http.trust_env = False
    http.mount("http://", _WatchedAdapter(config))
    http.mount("https://", _WatchedAdapter(config))
    return http


def timed_request(http: requests.Session, method: str, url: str, watch: CallWatch,
                  config: ClientConfig, **kwargs: Any) -> Tuple[int, bytes, Any]:
    """One request bounded as a whole by ``watch`` (calling thread; ``http`` from
    :func:`watched_http`, proxied as ``config`` says): returns ``(status, body, headers)``.
    Raises ``requests.RequestException`` (or, from a server that breaks HTTP, another of
    ``HTTP_FAILURES``); when the deadline cut the call, ``watch.expired`` is True and
    ``watch.describe()`` names the phase that ran out."""
    with watch, http.request(method, url, timeout=watch.timeout, stream=True, verify=True,
                             proxies=requests_proxies(url, config), **kwargs) as response:
        watch.enter("body")
        return response.status_code, response.content, response.headers


class SessionRpc:
    """The JSON-RPC client of one session's simulated chain (PROTOCOL.md §10).

    One pooled :class:`requests.Session` per instance; each request is bounded as a whole by
    ``config.rpc_timeout``, trusts and proxies as every channel does (``simsync.netpolicy``:
    the system's store or ``config.ca_bundle``; ``config.proxy``). A failed call raises
    :class:`simsync.RpcError`; reads are tried again ``config.rpc_retries`` times (default
    0) after a connection failure or an HTTP 408/429/502/503/504, writes never.

    Threads: every method runs on the calling user thread. An instance is safe to share
    between threads; calls are serialised by an internal lock (``requests.Session`` is not
    guaranteed thread-safe), so a call may wait for another thread's call in flight, each
    bounded by ``rpc_timeout``. :meth:`close` never waits for that lock.

    ``ended``, when given, returns ``None`` while the session is live and a reason string once
    it has completed or closed; from then on every call fails fast with ``RpcError`` without
    sending anything.
    """

    def __init__(self, url: str, config: ClientConfig,
                 ended: Optional[Callable[[], Optional[str]]] = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"per-session RPC URL must be http(s)://…, got {excerpt(url)}")
        self._url = url
        self._timeout = config.rpc_timeout
        self._config = config
        self._ended = ended
        self._pid = os.getpid()                 # the process whose pool this is (fork check)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._http = watched_http(config)
        self._http.headers.update({
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"simsync/{__version__}",
        })

    @property
    def url(self) -> str:
        """The session's JSON-RPC endpoint."""
        return self._url

    def __repr__(self) -> str:
        url = self._url if len(self._url) <= 100 else self._url[:99] + "…"
        return f"SessionRpc({url!r}{', closed' if self._closed else ''})"

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled HTTP connections. Idempotent; any thread; never blocks on a call.

        Later calls raise ``RpcError``; a call already in flight finishes or fails on its own.
        """
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:      # a forked child leaves the parent's pool alone
            close_http(self._http)

    def __enter__(self) -> SessionRpc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the one generic call ------------------------------------------------------------------

    def _refusal(self, method: str) -> Optional[RpcError]:
        """Why a call must not be sent now (the session ended, or this client is closed).
        Raises ``ForkedSessionError`` in a forked child: the pooled connections are the
        parent's, and a request on them would mix both processes' replies."""
        if os.getpid() != self._pid:
            raise ForkedSessionError(f"{method}: this SessionRpc was created in another "
                                     "process (before a fork); create the session inside "
                                     "the worker process instead")
        reason = self._ended() if self._ended is not None else None
        if reason is not None:
            return RpcError(f"{method}: the session has ended ({reason}); its JSON-RPC endpoint "
                            "no longer answers (read state at a readyForContinue or paused pause)")
        if self._closed:
            return RpcError(f"{method}: this SessionRpc is closed")
        return None

    def call(self, method: str, params: Optional[Sequence[Any]] = None) -> Any:
        """Send one JSON-RPC 2.0 request and return its ``result`` (any JSON value, may be None).

        Runs on the calling thread; blocks on the HTTP request (at most ``rpc_timeout``) and on
        another thread's call in flight. Raises ``RpcError``: with ``code``/``data`` for a
        JSON-RPC error object, with ``http_status`` for an HTTP status >= 300, and for invalid
        JSON, a response without ``result`` or ``error``, an ``id`` mismatch, a timeout or a
        connection failure (the ``requests`` exception chained), or an ended session (nothing
        sent). Raises ``TypeError`` when ``params`` is not a list or not JSON-serialisable.
        """
        if isinstance(params, (str, bytes)) or not isinstance(params, (Sequence, type(None))):
            raise TypeError(f"{method}: params must be a list, not {type(params).__name__}")
        refusal = self._refusal(method)
        if refusal is not None:
            raise refusal
        request_id = next(self._ids)          # itertools.count: atomic under the GIL
        try:
            body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                               "params": list(params or [])}, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"{method}: params are not JSON-serialisable: {exc}") from None
        payload = body.encode("utf-8")
        return self._with_retries(method, lambda: self._send(method, request_id, payload))

    def _with_retries(self, method: str, attempt: Callable[[], Any]) -> Any:
        """``attempt()`` once, or under ``rpc_retries`` for a read (calling thread; sleeps
        the backoff, at least the server's ``Retry-After``, but never longer than
        ``rpc_timeout`` for one wait: a longer ``Retry-After`` is raised at once)."""
        if self._config.rpc_retries == 0 or not is_read(method):
            return attempt()
        config = self._config
        backoff = tenacity.wait_random_exponential(multiplier=config.backoff_initial,
                                                   max=config.backoff_max)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None) or 0.0
            return max(float(backoff(state)), after)

        def worth_it(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None)
            return isinstance(exc, RpcError) and _retryable(exc) and (
                after is None or after <= self._timeout) and self._refusal(method) is None

        def log_retry(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("rpc %s failed (attempt %d of %d): %s; retrying in %.2fs", method,
                     state.attempt_number, config.rpc_retries + 1, exc,
                     state.next_action.sleep if state.next_action else 0.0)

        return tenacity.Retrying(stop=tenacity.stop_after_attempt(config.rpc_retries + 1),
                                 wait=wait, retry=worth_it, before_sleep=log_retry,
                                 reraise=True)(attempt)

    def _send(self, method: str, request_id: int, payload: bytes) -> Any:
        """One HTTP POST and its decoding (calling thread, under the call lock)."""
        with self._lock:
            refusal = self._refusal(method)
            if refusal is not None:
                raise refusal
            started = time.monotonic()
            watch: Optional[CallWatch] = None
            try:
                watch = CallWatch(self._timeout)
                status, content, headers = timed_request(
                    self._http, "POST", self._url, watch, self._config, data=payload,
                    allow_redirects=False)
            except HTTP_FAILURES as exc:
                raise self._transport_error(method, exc, watch) from exc
            log.debug("rpc %s id=%d -> HTTP %d in %.3fs (%d bytes)", method, request_id, status,
                      time.monotonic() - started, len(content))
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        return self._decode(method, request_id, status, content, retry_after)

    def _transport_error(self, method: str, exc: BaseException,
                         watch: Optional[CallWatch] = None) -> RpcError:
        if watch is not None and (watch.expired or isinstance(exc,
                                                              requests.exceptions.Timeout)):
            what = f"{watch.describe()} ({type(exc).__name__})"
        elif isinstance(exc, requests.exceptions.Timeout):
            what = f"no answer within rpc_timeout={self._timeout:g}s ({type(exc).__name__})"
        elif isinstance(exc, requests.exceptions.ProxyError):
            proxy = proxy_for(self._url, self._config)
            what = (f"the proxy {proxy.shown if proxy else ''} failed, not the simulator "
                    f"({type(exc).__name__})")
        elif isinstance(exc, requests.exceptions.ConnectionError):
            what = f"connection failed ({type(exc).__name__})"
        elif isinstance(exc, requests.exceptions.RequestException):
            what = f"HTTP request failed ({type(exc).__name__})"
        else:
            what = f"the server broke HTTP ({type(exc).__name__})"
        after = self._ended() if self._ended is not None else None
        if after is not None:
            what += f"; the session has ended ({after})"
        elif self._closed:
            what += "; this SessionRpc was closed meanwhile"
        return RpcError(f"{method}: {what} at {self._url}: {excerpt(str(exc), _BODY_EXCERPT)}")

    def _decode(self, method: str, request_id: int, status: int, content: bytes,
                retry_after: Optional[float] = None) -> Any:
        why = ""
        try:
            reply: Any = json.loads(content)
        except RecursionError:
            reply, parsed, why = None, False, "nested too deeply to decode"
        except ValueError as exc:       # not JSON, not UTF-8, an integer too long
            reply, parsed, why = None, False, excerpt(str(exc), 80)
        else:
            parsed = True
        error = reply.get("error") if isinstance(reply, dict) else None
        if not 200 <= status < 300:
            after = f", Retry-After {retry_after:g}s" if retry_after is not None else ""
            if isinstance(error, dict):  # an error object carried on an HTTP error status
                raise self._error_object(method, error, http_status=status,
                                         retry_after=retry_after)
            raise RpcError(f"{method}: HTTP {status}{after} from {self._url}: "
                           f"{excerpt(content, _BODY_EXCERPT)}", http_status=status,
                           retry_after=retry_after)
        if not parsed:
            raise RpcError(f"{method}: response is not JSON ({why}): "
                           f"{excerpt(content, _BODY_EXCERPT)}")
        if not isinstance(reply, dict):
            raise RpcError(f"{method}: response is not a JSON-RPC object: "
                           f"{excerpt(content, _BODY_EXCERPT)}")
        reply_id = reply.get("id")
        if "error" in reply:
            # A server that could not read the request answers with "id": null.
            if reply_id is not None and reply_id != request_id:
                raise RpcError(f"{method}: response id {excerpt(reply_id, 40)} does not match "
                               f"request id {request_id}")
            if isinstance(error, dict):
                raise self._error_object(method, error)
            raise RpcError(f"{method}: malformed JSON-RPC error: {excerpt(error, _BODY_EXCERPT)}")
        if "result" not in reply:
            raise RpcError(f"{method}: response has neither result nor error: "
                           f"{excerpt(content, _BODY_EXCERPT)}")
        if reply_id != request_id or isinstance(reply_id, bool):
            raise RpcError(f"{method}: response id {excerpt(reply_id, 40)} does not match "
                           f"request id {request_id}")
        return reply["result"]

    @staticmethod
    def _error_object(method: str, error: Mapping[str, Any],
                      http_status: Optional[int] = None,
                      retry_after: Optional[float] = None) -> RpcError:
        raw_code = error.get("code")
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        message = str(error.get("message") or "no message")
        if len(message) > _SERVER_MESSAGE_LIMIT:
            message = message[:_SERVER_MESSAGE_LIMIT] + "…"
        where = f"JSON-RPC error {code}" if code is not None else "JSON-RPC error"
        if http_status is not None:
            where += f", HTTP {http_status}"
        return RpcError(f"{method}: {message} ({where})", code=code, http_status=http_status,
                        data=error.get("data"), retry_after=retry_after)

    # -- typed helpers (PROTOCOL.md §10) -------------------------------------------------------
    # Each runs on the calling thread and blocks like call(): at most rpc_timeout.

    def get_slot(self) -> int:
        """``getSlot``: the session's current slot."""
        result = _value(self.call("getSlot"))
        if not isinstance(result, int) or isinstance(result, bool):
            raise _unexpected("getSlot", result, "an integer")
        return result

    def get_balance(self, pubkey: Any) -> int:
        """``getBalance``: lamports held by ``pubkey`` (the ``value``; 0 for a missing account)."""
        result = _value(self.call("getBalance", [_base58(pubkey, "pubkey")]))
        if not isinstance(result, int) or isinstance(result, bool):
            raise _unexpected("getBalance", result, "an integer")
        return result

    def get_account_info(self, pubkey: Any, encoding: str = "base64") -> Optional[dict[str, Any]]:
        """``getAccountInfo``: the account (the ``value``: ``{lamports, owner, data, executable,
        rentEpoch, space}``, ``data`` as ``[base64, "base64"]`` by default), or ``None`` if absent.
        """
        result = _value(self.call("getAccountInfo",
                                  [_base58(pubkey, "pubkey"), {"encoding": encoding}]))
        if result is not None and not isinstance(result, dict):
            raise _unexpected("getAccountInfo", result, "an account object or null")
        return result

    def get_multiple_accounts(self, pubkeys: Sequence[Any],
                              encoding: str = "base64") -> list[Optional[dict[str, Any]]]:
        """``getMultipleAccounts``: one account or ``None`` per pubkey, in order (the ``value``)."""
        keys = [_base58(k, "pubkey") for k in _sequence(pubkeys, "pubkeys")]
        result = _value(self.call("getMultipleAccounts", [keys, {"encoding": encoding}]))
        if not isinstance(result, list):
            raise _unexpected("getMultipleAccounts", result, "a list")
        return result

    def get_program_accounts(self, program_id: Any, filters: Optional[Sequence[Any]] = None,
                             encoding: str = "base64") -> list[dict[str, Any]]:
        """``getProgramAccounts``: the accounts owned by ``program_id``, each ``{pubkey, account}``.

        ``filters`` are Solana's (``{"dataSize": N}``, ``{"memcmp": {...}}``), sent as given.
        A ``{context, value}`` answer (``withContext``) is unwrapped to its list.
        """
        config: dict[str, Any] = {"encoding": encoding}
        if filters is not None:
            config["filters"] = list(_sequence(filters, "filters"))
        result = _value(self.call("getProgramAccounts",
                                  [_base58(program_id, "program_id"), config]))
        if not isinstance(result, list):
            raise _unexpected("getProgramAccounts", result, "a list")
        return result

    def get_latest_blockhash(self) -> dict[str, Any]:
        """``getLatestBlockhash``: the ``value``, ``{"blockhash", "lastValidBlockHeight"}``."""
        result = _value(self.call("getLatestBlockhash"))
        if not isinstance(result, dict) or "blockhash" not in result:
            raise _unexpected("getLatestBlockhash", result, "an object with a blockhash")
        return result

    def get_fee_for_message(self, message: Any) -> Optional[int]:
        """``getFeeForMessage``: the fee in lamports (the ``value``), or ``None``.

        ``message``: serialized message bytes, base64 ``str``, or a solders ``Message`` /
        ``MessageV0`` (see :func:`to_base64`).
        """
        result = _value(self.call("getFeeForMessage", [to_base64(message)]))
        if result is not None and (not isinstance(result, int) or isinstance(result, bool)):
            raise _unexpected("getFeeForMessage", result, "an integer or null")
        return result

    def get_signature_statuses(self, signatures: Sequence[Any],
                               search_transaction_history: bool = False,
                               ) -> list[Optional[dict[str, Any]]]:
        """``getSignatureStatuses``: one status or ``None`` per signature, in order (the ``value``).

        Each status is Solana's ``{slot, confirmations, err, confirmationStatus}``.
        """
        sigs = [_base58(s, "signature") for s in _sequence(signatures, "signatures")]
        params: list[Any] = [sigs]
        if search_transaction_history:
            params.append({"searchTransactionHistory": True})
        result = _value(self.call("getSignatureStatuses", params))
        if not isinstance(result, list):
            raise _unexpected("getSignatureStatuses", result, "a list")
        return result

    def get_transaction(self, signature: Any, encoding: str = "json",
                        ) -> Optional[dict[str, Any]]:
        """``getTransaction``: ``{slot, transaction, meta, blockTime}``, or ``None`` if unknown.

        Asks for ``maxSupportedTransactionVersion: 0`` so versioned transactions come back.
        ``encoding="base64"`` gives ``transaction`` as ``[base64, "base64"]``.
        """
        result = self.call("getTransaction", [
            _base58(signature, "signature"),
            {"encoding": encoding, "maxSupportedTransactionVersion": 0},
        ])
        if result is not None and not isinstance(result, dict):
            raise _unexpected("getTransaction", result, "a transaction object or null")
        return result

    def simulate_transaction(self, tx: Any, **config: Any) -> dict[str, Any]:
        """``simulateTransaction``: the ``value``, ``{err, logs, accounts, unitsConsumed, ...}``.

        ``tx`` as in :func:`to_base64`; sent base64. ``config`` keywords are Solana's
        simulate config; snake_case names are sent camelCase (``replace_recent_blockhash=True``
        → ``replaceRecentBlockhash``), camelCase names as given.
        """
        options: dict[str, Any] = {"encoding": "base64"}
        options.update({_snake_to_camel(k): v for k, v in config.items()})
        result = _value(self.call("simulateTransaction", [to_base64(tx), options]))
        if not isinstance(result, dict):
            raise _unexpected("simulateTransaction", result, "an object")
        return result

    def send_transaction(self, tx: Any, skip_preflight: bool = False) -> str:
        """``sendTransaction``: execute ``tx`` at once in the current slot; returns its signature.

        ``tx`` as in :func:`to_base64`; sent base64. With the preflight (the default, as
        Agave's clients have it) a transaction that would fail is refused with ``RpcError``
        (-32002 and the simulation result as ``data``; -32003 for a bad signature); with
        ``skip_preflight=True`` it is sent as is: check ``get_signature_statuses``.
        """
        result = self.call("sendTransaction",
                           [to_base64(tx), {"encoding": "base64",
                                            "skipPreflight": skip_preflight}])
        if not isinstance(result, str):
            raise _unexpected("sendTransaction", result, "a signature string")
        return result

    def get_address_lookup_table(self, address: Any) -> Optional[dict[str, Any]]:
        """``getAddressLookupTable``: the table (the ``value`` when wrapped), or ``None``."""
        result = _value(self.call("getAddressLookupTable", [_base58(address, "address")]))
        if result is not None and not isinstance(result, dict):
            raise _unexpected("getAddressLookupTable", result, "an object or null")
        return result

    def modify_accounts(self, accounts: Mapping[Any, Any]) -> Any:
        """``modifyAccounts`` (custom): overwrite accounts now; returns the server's ``result``.

        ``accounts`` maps a pubkey (base58 ``str`` or solders ``Pubkey``) to an ``AccountData``
        (PROTOCOL.md §6): a dict sent as is, an object with ``to_dict()``, or a solders
        ``Account``. Sent as ``[{base58: AccountData}]``.
        """
        if not isinstance(accounts, Mapping):
            raise TypeError(f"accounts must be a mapping, not {type(accounts).__name__}")
        payload: dict[str, Any] = {}
        for key, value in accounts.items():
            address = _base58(key, "account address")
            payload[address] = _account_data(value, address)
        return self.call("modifyAccounts", [payload])


def _retryable(exc: RpcError) -> bool:
    """A failure another attempt of a read may mend: a transient HTTP status, or a
    connection that failed before any answer (not a timeout: that spent ``rpc_timeout``)."""
    cause = exc.__cause__
    return exc.http_status in TRANSIENT_HTTP_STATUSES or (
        isinstance(cause, requests.exceptions.ConnectionError)
        and not isinstance(cause, requests.exceptions.Timeout))


def _sequence(values: Any, what: str) -> Sequence[Any]:
    """``values`` as a sequence of items, refusing a lone string (a common slip)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a list, not a single {type(values).__name__}")
    return list(values)
