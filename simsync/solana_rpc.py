"""A blocking Solana JSON-RPC 2.0 client over HTTP: :class:`SolanaRpc`.

``SolanaRpc(url)`` talks to any Solana JSON-RPC endpoint (an Agave node, a provider, the local
simulator, a session's ``rpc_endpoint``): the common Agave methods as typed methods (results
as solders types, see :mod:`simsync.rpc_types`) and :meth:`SolanaRpc.call` for any other.
Each call is bounded as a whole by one deadline (name resolution, connect, send, headers and
body), trusts and proxies as the network policy says (:mod:`simsync.netpolicy`), and fails
with :class:`simsync.RpcError` only (:class:`simsync.RpcTimeout`,
:class:`simsync.RpcConnectionError`, a JSON-RPC error object with ``code``/``message``/``data``,
an HTTP status, a body that is not JSON-RPC). Error messages carry at most a short excerpt of
what the server sent and never the request body.

Also here, shared with the control client's HTTP calls: :class:`CallWatch` (the whole-call
deadline), :func:`watched_http`, :func:`timed_request`, :func:`close_http`.
"""
from __future__ import annotations

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
from typing import Any, Callable, Literal, Optional, Tuple, Union, overload

import requests
import tenacity
import urllib3
from solders.account import Account, AccountJSON
from solders.account_decoder import UiTokenAmount
from solders.address_lookup_table_account import AddressLookupTable
from solders.epoch_info import EpochInfo
from solders.epoch_schedule import EpochSchedule
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc import responses as resp
from solders.signature import Signature
from solders.transaction_status import (
    EncodedConfirmedTransactionWithStatusMeta,
    TransactionStatus,
    UiConfirmedBlock,
)
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from simsync._version import __version__
from simsync.config import ClientConfig
from simsync.errors import (
    ForkedSessionError,
    RpcConnectionError,
    RpcError,
    RpcTimeout,
    excerpt,
)
from simsync.netpolicy import (
    TRANSIENT_HTTP_STATUSES,
    PolicyAdapter,
    proxy_for,
    requests_proxies,
    resolve,
    retry_after_seconds,
)
from simsync.rpc_types import (
    Commitment,
    TransactionDetails,
    TransactionEncoding,
    TypedAccountEncoding,
    base58,
    by_encoding,
    lookup_table,
    parse,
    readable,
    sequence,
    snake_to_camel,
    to_base64,
    u64,
    unexpected,
    value_of,
)
from simsync.rpc_types import config as rpc_config
from simsync.urls import redacted, scrub

__all__ = ["HTTP_FAILURES", "WRITE_METHODS", "CallWatch", "SolanaRpc", "close_http",
           "is_read", "timed_request", "watched_http"]

log = logging.getLogger("simsync.rpc")
"""The JSON-RPC channel's logger (one name for standalone and per-session clients)."""

PubkeyLike = Union[Pubkey, str]
"""A public key: a solders ``Pubkey`` or its base58 ``str``."""
SignatureLike = Union[Signature, str]
"""A transaction signature: a solders ``Signature`` or its base58 ``str``."""
HashLike = Union[Hash, str]
"""A blockhash: a solders ``Hash`` or its base58 ``str``."""

_BODY_EXCERPT = 200
"""Characters of a server's response body an error message may quote."""
_SERVER_MESSAGE_LIMIT = 500
"""Characters of a JSON-RPC error object's ``message`` an error message may quote."""
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
# HTTP with a whole-call deadline
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




def _head(content: bytes) -> str:
    """The start of a response body as text, enough for an error's excerpt."""
    return content[:4 * _BODY_EXCERPT].decode("utf-8", "replace")

class SolanaRpc:
    """A blocking client of one Solana JSON-RPC endpoint (``http(s)://…``).

    ``SolanaRpc(url, timeout=30.0)``; ``config`` (a :class:`simsync.ClientConfig`) sets the
    trust store (``ca_bundle``), the proxy (``proxy``), ``rpc_retries`` and, unless ``timeout``
    is given, ``rpc_timeout``. One pooled :class:`requests.Session` per instance; each request
    is bounded as a whole by ``timeout`` seconds (resolution and connect included). A failed
    call raises :class:`simsync.RpcError`: :class:`simsync.RpcTimeout` when the deadline ran
    out, :class:`simsync.RpcConnectionError` when the server could not be reached; reads are
    tried again ``rpc_retries`` times (default 0) after a connection failure or an HTTP
    408/429/502/503/504, writes never.

    Results: solders types (``get_epoch_info`` → ``EpochInfo``, ``get_account_info`` →
    ``Account``, ``get_latest_blockhash`` → ``RpcBlockhash``, ``get_transaction`` →
    ``EncodedConfirmedTransactionWithStatusMeta``, ``send_transaction`` → ``Signature``,
    ``get_block`` → ``UiConfirmedBlock`` …) or ints; a context-wrapped result gives its
    ``value``. :meth:`call` returns Solana's JSON as sent (what the methods of PROTOCOL.md
    §10 returned before issue 27). Keys, signatures and blockhashes may be given as solders
    objects or base58 ``str``.

    A context manager; :meth:`close` closes the pooled connections.

    Threads: every method runs on the calling thread. An instance is safe to share between
    threads; calls are serialised by an internal lock (``requests.Session`` is not guaranteed
    thread-safe), so a call may wait for another thread's call in flight, each bounded by
    ``timeout``. :meth:`close` never waits for that lock.

    Processes: an instance belongs to the process that created it; in a forked child every
    call raises :class:`simsync.ForkedSessionError` (its pooled connections are the
    parent's) and :meth:`close` leaves them alone.
    """

    def __init__(self, url: str, *, timeout: Optional[float] = None,
                 config: Optional[ClientConfig] = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"a JSON-RPC URL must be http(s)://…, got {excerpt(url)}")
        config = config if config is not None else ClientConfig()
        if timeout is not None:
            config = config.replace(rpc_timeout=timeout)
        self._url = url
        self._timeout = config.rpc_timeout
        self._config = config
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
        """The JSON-RPC endpoint."""
        return self._url

    @property
    def timeout(self) -> float:
        """Seconds one call may take as a whole."""
        return self._timeout

    def _shown_url(self) -> str:
        """The endpoint as the repr, logs and errors show it: ``urls.redacted`` (a provider's
        key may be in its path or query)."""
        return redacted(self._url)

    def _scrub(self, text: str) -> str:
        """``text`` without the parts of the URL that ``_shown_url`` hides."""
        return text if self._shown_url() == self._url else scrub(text, self._url)

    def __repr__(self) -> str:
        url = self._shown_url()
        url = url if len(url) <= 100 else url[:99] + "…"
        return f"{type(self).__name__}({url!r}{', closed' if self._closed else ''})"

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

    def __enter__(self) -> SolanaRpc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the one generic call ------------------------------------------------------------------

    def _ended(self) -> Optional[str]:
        """Why the endpoint no longer answers (``None`` here: a plain endpoint never ends)."""
        return None

    def _refusal(self, method: str) -> Optional[RpcError]:
        """Why a call must not be sent now (the endpoint ended, or this client is closed).
        Raises ``ForkedSessionError`` in a forked child: the pooled connections are the
        parent's, and a request on them would mix both processes' replies."""
        if os.getpid() != self._pid:
            raise ForkedSessionError(f"{method}: this {type(self).__name__} was created in "
                                     "another process (before a fork); create it inside the "
                                     "worker process instead")
        reason = self._ended()
        if reason is not None:
            return RpcError(f"{method}: the session has ended ({reason}); its JSON-RPC endpoint "
                            "no longer answers (read state at a readyForContinue or paused pause)")
        if self._closed:
            return RpcError(f"{method}: this {type(self).__name__} is closed")
        return None

    def call(self, method: str, params: Optional[Sequence[Any]] = None) -> Any:
        """Send one JSON-RPC 2.0 request and return its ``result`` (any JSON value, may be None).

        Runs on the calling thread; blocks on the HTTP request (at most ``rpc_timeout``) and on
        another thread's call in flight. Raises ``RpcError``: with ``code``/``data`` for a
        JSON-RPC error object, with ``http_status`` for an HTTP status >= 300, and for invalid
        JSON, a response without ``result`` or ``error``, an ``id`` mismatch, a timeout or a
        connection failure (the ``requests`` exception chained), or an ended session (nothing
        sent); ``RpcTimeout`` / ``RpcConnectionError`` for a timeout / a connection failure.
        Raises ``TypeError`` when ``params`` is not a list or not JSON-serialisable.
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
                # chained only where the URL hides nothing: requests' own message carries the
                # whole URL (a provider's key in its path or query)
                error = self._transport_error(method, exc, watch)
                raise error from (exc if self._shown_url() == self._url else None)
            log.debug("rpc %s id=%d -> HTTP %d in %.3fs (%d bytes)", method, request_id, status,
                      time.monotonic() - started, len(content))
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        return self._decode(method, request_id, status, content, retry_after)

    def _transport_error(self, method: str, exc: BaseException,
                         watch: Optional[CallWatch] = None) -> RpcError:
        kind: type[RpcError] = RpcError
        if watch is not None and (watch.expired or isinstance(exc,
                                                              requests.exceptions.Timeout)):
            kind, what = RpcTimeout, f"{watch.describe()} ({type(exc).__name__})"
        elif isinstance(exc, requests.exceptions.Timeout):
            kind = RpcTimeout
            what = f"no answer within rpc_timeout={self._timeout:g}s ({type(exc).__name__})"
        elif isinstance(exc, requests.exceptions.ProxyError):
            proxy = proxy_for(self._url, self._config)
            kind = RpcConnectionError
            what = (f"the proxy {proxy.shown if proxy else ''} failed, not the simulator "
                    f"({type(exc).__name__})")
        elif isinstance(exc, requests.exceptions.ConnectionError):
            kind, what = RpcConnectionError, f"connection failed ({type(exc).__name__})"
        elif isinstance(exc, requests.exceptions.RequestException):
            what = f"HTTP request failed ({type(exc).__name__})"
        else:
            what = f"the server broke HTTP ({type(exc).__name__})"
        after = self._ended()
        if after is not None:
            what += f"; the session has ended ({after})"
        elif self._closed:
            what += f"; this {type(self).__name__} was closed meanwhile"
        return kind(f"{method}: {what} at {self._shown_url()}: "
                    f"{excerpt(self._scrub(str(exc)), _BODY_EXCERPT)}")

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
            raise RpcError(f"{method}: HTTP {status}{after} from {self._shown_url()}: "
                           f"{excerpt(self._scrub(_head(content)), _BODY_EXCERPT)}",
                           http_status=status,
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
                        data=error.get("data"), retry_after=retry_after, rpc_message=message)

    # -- the methods of PROTOCOL.md §10 (what session.rpc has always had) ----------------------
    # Typed like the Agave methods below: solders types, the ``value`` of a context-wrapped
    # result (its ``context.slot`` dropped, as every typed method does). ``call(method,
    # params)`` gives Solana's JSON as sent, context included. Each runs on the calling thread
    # and blocks like call(): at most ``timeout``; each raises RpcError (a result without
    # Agave's shape included) and TypeError/ValueError for a bad argument, before sending.

    def get_slot(self, commitment: Optional[Commitment] = None) -> int:
        """``getSlot``: the current slot (a session's: the slot it stands at)."""
        result = value_of(self.call("getSlot", self._options(commitment=commitment)))
        if not isinstance(result, int) or isinstance(result, bool):
            raise unexpected("getSlot", result, "an integer")
        return result

    def get_balance(self, pubkey: PubkeyLike, commitment: Optional[Commitment] = None) -> int:
        """``getBalance``: lamports held by ``pubkey`` (the ``value``; 0 for a missing account)."""
        result = value_of(self.call("getBalance", [base58(pubkey, "pubkey")]
                                    + self._options(commitment=commitment)))
        if not isinstance(result, int) or isinstance(result, bool):
            raise unexpected("getBalance", result, "an integer")
        return result

    @overload
    def get_account_info(self, pubkey: PubkeyLike, encoding: Literal["base64"] = "base64",
                         commitment: Optional[Commitment] = None) -> Optional[Account]: ...

    @overload
    def get_account_info(self, pubkey: PubkeyLike, encoding: Literal["jsonParsed"],
                         commitment: Optional[Commitment] = None,
                         ) -> Optional[Union[AccountJSON, Account]]: ...

    def get_account_info(self, pubkey: PubkeyLike, encoding: TypedAccountEncoding = "base64",
                         commitment: Optional[Commitment] = None,
                         ) -> Optional[Union[AccountJSON, Account]]:
        """``getAccountInfo``: the account at ``pubkey``, or ``None`` if there is none.

        ``encoding="base64"`` (the default): a solders ``Account`` (``lamports``, ``data``
        bytes, ``owner``, ``executable``, ``rent_epoch``). ``"jsonParsed"``: a solders
        ``AccountJSON`` (``data.program``, ``data.parsed`` a dict, ``data.space``) for an
        account the node can parse (SPL Token accounts and mints …), else an ``Account``, as
        Agave falls back to base64. Raw JSON (``{context, value: {lamports, owner, data:
        [BASE64, "base64"], executable, rentEpoch, space}}``), other encodings or a
        ``dataSlice``: ``call("getAccountInfo", [pubkey, {"encoding": ...}])``.
        """
        params = [base58(pubkey, "pubkey"), rpc_config(encoding=encoding,
                                                       commitment=commitment)]
        result: Optional[Union[AccountJSON, Account]] = self._typed(
            "getAccountInfo", by_encoding(encoding, resp.GetAccountInfoResp,
                                          resp.GetAccountInfoMaybeJsonParsedResp), params)
        return result

    def get_account(self, pubkey: PubkeyLike,
                    commitment: Optional[Commitment] = None) -> Optional[Account]:
        """``getAccountInfo`` as a solders ``Account``, or ``None`` if absent: the same as
        ``get_account_info(pubkey, commitment=commitment)``."""
        return self.get_account_info(pubkey, commitment=commitment)

    @overload
    def get_multiple_accounts(self, pubkeys: Sequence[PubkeyLike],
                              encoding: Literal["base64"] = "base64", *,
                              commitment: Optional[Commitment] = None,
                              ) -> list[Optional[Account]]: ...

    @overload
    def get_multiple_accounts(self, pubkeys: Sequence[PubkeyLike],
                              encoding: Literal["jsonParsed"], *,
                              commitment: Optional[Commitment] = None,
                              ) -> list[Optional[Union[AccountJSON, Account]]]: ...

    def get_multiple_accounts(self, pubkeys: Sequence[PubkeyLike],
                              encoding: TypedAccountEncoding = "base64", *,
                              commitment: Optional[Commitment] = None,
                              ) -> Union[list[Optional[Account]],
                                         list[Optional[Union[AccountJSON, Account]]]]:
        """``getMultipleAccounts``: one account or ``None`` per pubkey, in order (Agave: at
        most 100 pubkeys a call); each as :meth:`get_account_info` gives it for
        ``encoding``. Raw JSON: ``call("getMultipleAccounts", [[pubkey, ...], {"encoding":
        "base64"}])`` (``{context, value: [account or null, ...]}``)."""
        keys = [base58(k, "pubkey") for k in sequence(pubkeys, "pubkeys")]
        params = [keys, rpc_config(encoding=encoding, commitment=commitment)]
        result: list[Optional[Union[AccountJSON, Account]]] = self._typed(
            "getMultipleAccounts", by_encoding(encoding, resp.GetMultipleAccountsResp,
                                               resp.GetMultipleAccountsMaybeJsonParsedResp),
            params)
        return result

    @overload
    def get_program_accounts(self, program_id: PubkeyLike,
                             filters: Optional[Sequence[Mapping[str, Any]]] = None,
                             encoding: Literal["base64"] = "base64", *,
                             commitment: Optional[Commitment] = None,
                             ) -> list[resp.RpcKeyedAccount]: ...

    @overload
    def get_program_accounts(self, program_id: PubkeyLike,
                             filters: Optional[Sequence[Mapping[str, Any]]],
                             encoding: Literal["jsonParsed"], *,
                             commitment: Optional[Commitment] = None,
                             ) -> list[Union[resp.RpcKeyedAccountJsonParsed,
                                             resp.RpcKeyedAccount]]: ...

    @overload
    def get_program_accounts(self, program_id: PubkeyLike,
                             filters: Optional[Sequence[Mapping[str, Any]]] = None, *,
                             encoding: Literal["jsonParsed"],
                             commitment: Optional[Commitment] = None,
                             ) -> list[Union[resp.RpcKeyedAccountJsonParsed,
                                             resp.RpcKeyedAccount]]: ...

    def get_program_accounts(self, program_id: PubkeyLike,
                             filters: Optional[Sequence[Mapping[str, Any]]] = None,
                             encoding: TypedAccountEncoding = "base64", *,
                             commitment: Optional[Commitment] = None,
                             ) -> Union[list[resp.RpcKeyedAccount],
                                        list[Union[resp.RpcKeyedAccountJsonParsed,
                                                   resp.RpcKeyedAccount]]]:
        """``getProgramAccounts``: the accounts owned by ``program_id``, each a solders
        ``RpcKeyedAccount`` (``pubkey``, ``account`` as :meth:`get_account_info` gives it for
        ``encoding``; ``RpcKeyedAccountJsonParsed`` for a parsed one).

        ``filters`` are Solana's (``{"dataSize": N}``, ``{"memcmp": {"offset": N, "bytes":
        BASE58}}``), sent as given. A ``{context, value}`` answer is read as its list. Raw
        JSON: ``call("getProgramAccounts", [program_id, {"encoding": "base64", "filters":
        [...]}])`` (``[{pubkey, account}, ...]``).
        """
        config: dict[str, Any] = rpc_config(encoding=encoding, commitment=commitment)
        if filters is not None:
            config["filters"] = list(sequence(filters, "filters"))
        parser = by_encoding(encoding, resp.GetProgramAccountsResp,
                             resp.GetProgramAccountsMaybeJsonParsedResp)
        result: list[Union[resp.RpcKeyedAccountJsonParsed, resp.RpcKeyedAccount]] = parse(
            "getProgramAccounts", parser, value_of(self.call(
                "getProgramAccounts", [base58(program_id, "program_id"), config])))
        return result

    def get_latest_blockhash(self, commitment: Optional[Commitment] = None,
                             ) -> resp.RpcBlockhash:
        """``getLatestBlockhash``: a solders ``RpcBlockhash``: ``blockhash`` (a ``Hash``) and
        ``last_valid_block_height`` (the block height, not the slot, after which a
        transaction with it no longer lands). Raw JSON: ``call("getLatestBlockhash")``
        (``{context, value: {blockhash, lastValidBlockHeight}}``)."""
        result: resp.RpcBlockhash = self._typed("getLatestBlockhash", resp.GetLatestBlockhashResp,
                                                self._options(commitment=commitment))
        return result

    def get_fee_for_message(self, message: Any) -> Optional[int]:
        """``getFeeForMessage``: the fee in lamports (the ``value``), or ``None``.

        ``message``: serialized message bytes, base64 ``str``, or a solders ``Message`` /
        ``MessageV0`` (see :func:`to_base64`).
        """
        result = value_of(self.call("getFeeForMessage", [to_base64(message)]))
        if result is not None and (not isinstance(result, int) or isinstance(result, bool)):
            raise unexpected("getFeeForMessage", result, "an integer or null")
        return result

    def get_signature_statuses(self, signatures: Sequence[SignatureLike],
                               search_transaction_history: bool = False,
                               ) -> list[Optional[TransactionStatus]]:
        """``getSignatureStatuses``: per signature, in order (Agave: at most 256 a call), a
        solders ``TransactionStatus`` (``slot``, ``confirmations``, ``err`` — ``None`` when it
        succeeded, else a solders ``TransactionError…`` —, ``confirmation_status``), or
        ``None`` for a signature the node does not know. Raw JSON:
        ``call("getSignatureStatuses", [[signature, ...]])`` (``{context, value: [{slot,
        confirmations, err, status, confirmationStatus} or null, ...]}``)."""
        sigs = [base58(s, "signature") for s in sequence(signatures, "signatures")]
        params: list[Any] = [sigs]
        if search_transaction_history:
            params.append({"searchTransactionHistory": True})
        result: list[Optional[TransactionStatus]] = self._typed(
            "getSignatureStatuses", resp.GetSignatureStatusesResp, params)
        return result

    def get_transaction(self, signature: SignatureLike, encoding: TransactionEncoding = "json",
                        *, commitment: Optional[Commitment] = None,
                        ) -> Optional[EncodedConfirmedTransactionWithStatusMeta]:
        """``getTransaction``: a solders ``EncodedConfirmedTransactionWithStatusMeta``
        (``slot``, ``block_time``, ``transaction.transaction`` in ``encoding``,
        ``transaction.meta``: ``fee``, ``err``, ``pre_balances``/``post_balances``,
        ``log_messages``, ``inner_instructions``, token balances …), or ``None`` if unknown.

        Asks for ``maxSupportedTransactionVersion: 0`` so versioned transactions come back.
        Raw JSON: ``call("getTransaction", [signature, {"encoding": "json",
        "maxSupportedTransactionVersion": 0}])`` (``{slot, transaction, meta, blockTime}``).
        """
        params = [base58(signature, "signature"), rpc_config(
            encoding=encoding, max_supported_transaction_version=0, commitment=commitment)]
        raw = self.call("getTransaction", params)
        result: Optional[EncodedConfirmedTransactionWithStatusMeta] = parse(
            "getTransaction", resp.GetTransactionResp, raw)
        if result is not None:          # solders decodes the transaction only when read
            readable("getTransaction", raw, lambda: result.transaction.transaction)
        return result

    def simulate_transaction(self, tx: Any, **config: Any) -> resp.RpcSimulateTransactionResult:
        """``simulateTransaction``: a solders ``RpcSimulateTransactionResult`` (``err``,
        ``logs``, ``accounts``, ``units_consumed``, ``return_data``, …).

        ``tx`` as in :func:`to_base64`; sent base64. ``config`` keywords are Solana's
        simulate config; snake_case names are sent camelCase (``replace_recent_blockhash=True``
        → ``replaceRecentBlockhash``), camelCase names as given. Raw JSON:
        ``call("simulateTransaction", [BASE64, {"encoding": "base64", ...}])`` (``{context,
        value: {err, logs, accounts, unitsConsumed, returnData, ...}}``).
        """
        options: dict[str, Any] = {"encoding": "base64"}
        options.update({snake_to_camel(k): v for k, v in config.items()})
        result: resp.RpcSimulateTransactionResult = self._typed(
            "simulateTransaction", resp.SimulateTransactionResp, [to_base64(tx), options])
        return result

    def send_transaction(self, tx: Any, skip_preflight: bool = False) -> Signature:
        """``sendTransaction``: submit ``tx`` (a session executes it at once, in the slot it
        stands at); returns its signature (a solders ``Signature``). A write: never retried.

        ``tx`` as in :func:`to_base64`; sent base64. With the preflight (the default, as
        Agave's clients have it) a transaction that would fail is refused with ``RpcError``
        (-32002 and the simulation result as ``data``; -32003 for a bad signature); with
        ``skip_preflight=True`` it is sent as is: check ``get_signature_statuses``. Raw JSON:
        ``call("sendTransaction", [BASE64, {"encoding": "base64"}])`` (the base58 signature).
        """
        result: Signature = self._typed(
            "sendTransaction", resp.SendTransactionResp,
            [to_base64(tx), {"encoding": "base64", "skipPreflight": skip_preflight}])
        return result

    def get_address_lookup_table(self, address: PubkeyLike) -> Optional[AddressLookupTable]:
        """``getAddressLookupTable`` (PROTOCOL.md §10; not an Agave method): the table at
        ``address`` as a solders ``AddressLookupTable`` (``addresses``; ``meta``:
        ``deactivation_slot``, ``last_extended_slot``, ``last_extended_slot_start_index``,
        ``authority``), or ``None`` if there is none. Raw JSON:
        ``call("getAddressLookupTable", [address])`` (``{context, value: {key, state:
        {deactivationSlot, lastExtendedSlot, lastExtendedSlotStartIndex, authority,
        addresses}} or null}``)."""
        return lookup_table("getAddressLookupTable", value_of(
            self.call("getAddressLookupTable", [base58(address, "address")])))

    # -- typed Agave methods (results as solders types) ----------------------------------------
    # Each runs on the calling thread and blocks like call(): at most ``timeout``; each raises
    # RpcError (a result without Agave's shape included) and TypeError/ValueError for a bad
    # argument.

    def _typed(self, method: str, parser: Any, params: Sequence[Any] = ()) -> Any:
        return parse(method, parser, self.call(method, list(params)))

    @staticmethod
    def _options(**options: Any) -> list[Any]:
        """``[config]`` when any option is set, else ``[]`` (Agave's defaults apply)."""
        given = rpc_config(**options)
        return [given] if given else []

    def get_health(self) -> str:
        """``getHealth``: ``"ok"``; an unhealthy node answers an error (``RpcError``, -32005)."""
        result: str = self._typed("getHealth", resp.GetHealthResp)
        return result

    def get_version(self) -> resp.RpcVersionInfo:
        """``getVersion``: ``solana_core`` (``"2.1.0"``…) and ``feature_set``."""
        result: resp.RpcVersionInfo = self._typed("getVersion", resp.GetVersionResp)
        return result

    def get_genesis_hash(self) -> Hash:
        """``getGenesisHash``: the cluster's genesis hash."""
        result: Hash = self._typed("getGenesisHash", resp.GetGenesisHashResp)
        return result

    def get_identity(self) -> Pubkey:
        """``getIdentity``: the node's identity public key."""
        result: resp.RpcIdentity = self._typed("getIdentity", resp.GetIdentityResp)
        return result.identity

    def get_block_height(self, commitment: Optional[Commitment] = None) -> int:
        """``getBlockHeight``: the number of blocks below the current one (not the slot)."""
        result: int = self._typed("getBlockHeight", resp.GetBlockHeightResp,
                                  self._options(commitment=commitment))
        return result

    def get_slot_leader(self, commitment: Optional[Commitment] = None) -> Pubkey:
        """``getSlotLeader``: the current slot's leader."""
        result: Pubkey = self._typed("getSlotLeader", resp.GetSlotLeaderResp,
                                     self._options(commitment=commitment))
        return result

    def get_epoch_info(self, commitment: Optional[Commitment] = None) -> EpochInfo:
        """``getEpochInfo``: ``epoch``, ``slot_index``, ``slots_in_epoch``, ``absolute_slot``,
        ``block_height``, ``transaction_count``."""
        result: EpochInfo = self._typed("getEpochInfo", resp.GetEpochInfoResp,
                                        self._options(commitment=commitment))
        return result

    def get_epoch_schedule(self) -> EpochSchedule:
        """``getEpochSchedule``: ``slots_per_epoch`` (432,000 on mainnet), warmup, offsets."""
        result: EpochSchedule = self._typed("getEpochSchedule", resp.GetEpochScheduleResp)
        return result

    def get_block_time(self, slot: int) -> Optional[int]:
        """``getBlockTime``: the block's estimated Unix time in seconds, or ``None``."""
        result: Optional[int] = self._typed("getBlockTime", resp.GetBlockTimeResp,
                                            [u64(slot, "slot")])
        return result

    def get_block(self, slot: int, *, encoding: TransactionEncoding = "json",
                  transaction_details: TransactionDetails = "full", rewards: bool = False,
                  commitment: Optional[Commitment] = None,
                  max_supported_transaction_version: Optional[int] = 0) -> UiConfirmedBlock:
        """``getBlock``: the block at ``slot`` (``blockhash``, ``previous_blockhash``,
        ``parent_slot``, ``transactions`` or ``signatures`` as ``transaction_details`` says,
        ``block_time``, ``block_height``). A skipped or unknown slot is an ``RpcError``
        (Agave: -32007 / -32009). Versioned transactions come back
        (``maxSupportedTransactionVersion`` 0 by default)."""
        params = [u64(slot, "slot"), rpc_config(
            encoding=encoding, transaction_details=transaction_details, rewards=rewards,
            commitment=commitment,
            max_supported_transaction_version=max_supported_transaction_version)]
        result: Optional[UiConfirmedBlock] = self._typed("getBlock", resp.GetBlockResp, params)
        if result is None:
            raise unexpected("getBlock", result, "a block")
        return result

    def get_blocks(self, start_slot: int, end_slot: Optional[int] = None, *,
                   commitment: Optional[Commitment] = None) -> list[int]:
        """``getBlocks``: the slots that have a block in ``[start_slot, end_slot]``."""
        params: list[Any] = [u64(start_slot, "start_slot")]
        if end_slot is not None:
            params.append(u64(end_slot, "end_slot"))
        result: list[int] = self._typed("getBlocks", resp.GetBlocksResp,
                                        params + self._options(commitment=commitment))
        return result

    def get_blocks_with_limit(self, start_slot: int, limit: int, *,
                              commitment: Optional[Commitment] = None) -> list[int]:
        """``getBlocksWithLimit``: at most ``limit`` slots with a block from ``start_slot``."""
        params = [u64(start_slot, "start_slot"), u64(limit, "limit")]
        result: list[int] = self._typed("getBlocksWithLimit", resp.GetBlocksWithLimitResp,
                                        params + self._options(commitment=commitment))
        return result

    def get_first_available_block(self) -> int:
        """``getFirstAvailableBlock``: the lowest slot whose block the node still has."""
        result: int = self._typed("getFirstAvailableBlock", resp.GetFirstAvailableBlockResp)
        return result

    def minimum_ledger_slot(self) -> int:
        """``minimumLedgerSlot``: the lowest slot the node has any information about."""
        result: int = self._typed("minimumLedgerSlot", resp.MinimumLedgerSlotResp)
        return result

    def get_transaction_count(self, commitment: Optional[Commitment] = None) -> int:
        """``getTransactionCount``: transactions processed since genesis."""
        result: int = self._typed("getTransactionCount", resp.GetTransactionCountResp,
                                  self._options(commitment=commitment))
        return result

    def is_blockhash_valid(self, blockhash: HashLike,
                           commitment: Optional[Commitment] = None) -> bool:
        """``isBlockhashValid``: whether a transaction with ``blockhash`` may still land."""
        result: bool = self._typed("isBlockhashValid", resp.IsBlockhashValidResp,
                                   [base58(blockhash, "blockhash")]
                                   + self._options(commitment=commitment))
        return result

    def get_minimum_balance_for_rent_exemption(self, size: int) -> int:
        """``getMinimumBalanceForRentExemption``: lamports for ``size`` bytes of data."""
        result: int = self._typed("getMinimumBalanceForRentExemption",
                                  resp.GetMinimumBalanceForRentExemptionResp,
                                  [u64(size, "size")])
        return result

    def get_recent_prioritization_fees(self, addresses: Sequence[PubkeyLike] = (),
                                       ) -> list[resp.RpcPrioritizationFee]:
        """``getRecentPrioritizationFees``: per recent slot, the lowest prioritization fee
        (micro-lamports per compute unit) that landed a transaction locking ``addresses``."""
        keys = [base58(k, "address") for k in sequence(addresses, "addresses")]
        result: list[resp.RpcPrioritizationFee] = self._typed(
            "getRecentPrioritizationFees", resp.GetRecentPrioritizationFeesResp,
            [keys] if keys else [])
        return result

    def get_signatures_for_address(
            self, address: PubkeyLike, *, limit: Optional[int] = None,
            before: Optional[SignatureLike] = None, until: Optional[SignatureLike] = None,
            commitment: Optional[Commitment] = None,
    ) -> list[resp.RpcConfirmedTransactionStatusWithSignature]:
        """``getSignaturesForAddress``: the transactions that touched ``address``, newest
        first (``signature``, ``slot``, ``err``, ``memo``, ``block_time``), at most ``limit``
        (Agave: 1,000), before/until the given signatures."""
        params = [base58(address, "address")] + self._options(
            limit=limit, commitment=commitment,
            before=None if before is None else base58(before, "before"),
            until=None if until is None else base58(until, "until"))
        result: list[resp.RpcConfirmedTransactionStatusWithSignature] = self._typed(
            "getSignaturesForAddress", resp.GetSignaturesForAddressResp, params)
        return result

    def get_token_account_balance(self, account: PubkeyLike,
                                  commitment: Optional[Commitment] = None,
                                  ) -> UiTokenAmount:
        """``getTokenAccountBalance``: ``amount`` (raw, a str), ``decimals``,
        ``ui_amount_string``."""
        result: UiTokenAmount = self._typed(
            "getTokenAccountBalance", resp.GetTokenAccountBalanceResp,
            [base58(account, "account")] + self._options(commitment=commitment))
        return result

    def get_token_supply(self, mint: PubkeyLike,
                         commitment: Optional[Commitment] = None) -> UiTokenAmount:
        """``getTokenSupply``: the mint's total supply."""
        result: UiTokenAmount = self._typed(
            "getTokenSupply", resp.GetTokenSupplyResp,
            [base58(mint, "mint")] + self._options(commitment=commitment))
        return result

    def get_token_largest_accounts(self, mint: PubkeyLike,
                                   commitment: Optional[Commitment] = None,
                                   ) -> list[resp.RpcTokenAccountBalance]:
        """``getTokenLargestAccounts``: the mint's 20 largest accounts (``address``, amount)."""
        result: list[resp.RpcTokenAccountBalance] = self._typed(
            "getTokenLargestAccounts", resp.GetTokenLargestAccountsResp,
            [base58(mint, "mint")] + self._options(commitment=commitment))
        return result

    def get_token_accounts_by_owner(
            self, owner: PubkeyLike, *, mint: Optional[PubkeyLike] = None,
            program_id: Optional[PubkeyLike] = None, commitment: Optional[Commitment] = None,
    ) -> list[resp.RpcKeyedAccount]:
        """``getTokenAccountsByOwner``: ``owner``'s token accounts of ``mint`` or of the token
        program ``program_id`` (exactly one of the two), each ``pubkey`` and ``account``
        (a solders ``Account``, data base64-decoded)."""
        if (mint is None) == (program_id is None):
            raise TypeError("get_token_accounts_by_owner: give exactly one of mint, program_id")
        which = ({"mint": base58(mint, "mint")} if mint is not None
                 else {"programId": base58(program_id, "program_id")})
        params = [base58(owner, "owner"), which, rpc_config(encoding="base64",
                                                             commitment=commitment)]
        result: list[resp.RpcKeyedAccount] = self._typed(
            "getTokenAccountsByOwner", resp.GetTokenAccountsByOwnerResp, params)
        return result

    def get_supply(self, commitment: Optional[Commitment] = None) -> resp.RpcSupply:
        """``getSupply``: ``total``, ``circulating``, ``non_circulating`` lamports (without
        the list of non-circulating accounts)."""
        result: resp.RpcSupply = self._typed(
            "getSupply", resp.GetSupplyResp,
            [rpc_config(commitment=commitment, exclude_non_circulating_accounts_list=True)])
        return result

    def request_airdrop(self, pubkey: PubkeyLike, lamports: int,
                        commitment: Optional[Commitment] = None) -> Signature:
        """``requestAirdrop`` (test clusters): send ``lamports`` to ``pubkey``; the airdrop
        transaction's signature. A write: never retried."""
        result: Signature = self._typed(
            "requestAirdrop", resp.RequestAirdropResp,
            [base58(pubkey, "pubkey"), u64(lamports, "lamports")]
            + self._options(commitment=commitment))
        return result


def _retryable(exc: RpcError) -> bool:
    """A failure another attempt of a read may mend: a transient HTTP status, or a
    connection that failed before any answer (not a timeout: that spent ``rpc_timeout``)."""
    cause = exc.__cause__
    return exc.http_status in TRANSIENT_HTTP_STATUSES or (
        isinstance(cause, requests.exceptions.ConnectionError)
        and not isinstance(cause, requests.exceptions.Timeout))


