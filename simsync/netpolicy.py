"""The network policy every channel shares: one trust store, one proxy rule, one reading of
HTTP ``Retry-After`` and of which HTTP answers are worth another attempt.

* **Trust** (:func:`tls_context`): the system's certificates (``ssl.create_default_context``:
  the platform's store, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), or only
  ``ClientConfig.ca_bundle`` when set. The WebSocket channels (control, PubSub) wrap their
  sockets with it; the HTTP channels (JSON-RPC, ``/available-ranges``, ``/usage``) get it
  through :class:`PolicyAdapter`, so requests' own bundle (certifi, ``REQUESTS_CA_BUNDLE``) is
  never consulted.
* **Proxy** (:func:`proxy_for`): ``ClientConfig.proxy`` says it: ``"environment"`` (the
  default) follows ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` exactly as requests reads
  them (``requests.utils.get_environ_proxies``; ``wss://`` is looked up as ``https://``,
  ``ws://`` as ``http://``), a URL sends every channel through that HTTP proxy, ``None``
  connects directly. WebSocket channels tunnel with HTTP ``CONNECT``.

Knows nothing of sockets' lifetimes or of what the channels carry.
"""
from __future__ import annotations

import email.utils
import functools
import ipaddress
import os
import socket
import ssl
import threading
import time
from typing import Any, Callable, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import requests.exceptions
import requests.utils
from requests.adapters import HTTPAdapter

from simsync.config import PROXY_FROM_ENVIRONMENT, ClientConfig
from simsync.urls import Proxy, parse_proxy

__all__ = ["TRANSIENT_HTTP_STATUSES", "PolicyAdapter", "Proxy", "TrustStoreError",
           "parse_proxy", "proxy_for", "requests_proxies", "resolve", "retry_after_seconds",
           "tls_context"]

#: HTTP answers worth another attempt (RFC 9110): timeout, rate limit, gateway trouble.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 502, 503, 504})


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """An HTTP ``Retry-After`` (delta-seconds or an HTTP-date) in seconds from now, ``None``
    when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# ------------------------------------------------------------------ trust

def tls_context(config: ClientConfig) -> ssl.SSLContext:
    """The one trust policy: verify against ``config.ca_bundle`` when set, else the system's
    store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured); host names checked; TLS >= 1.2.
    Cached per bundle and environment (an ``SSLContext`` is safe to share between threads)."""
    return _context(config.ca_bundle, os.environ.get("SSL_CERT_FILE"),
                    os.environ.get("SSL_CERT_DIR"))


class TrustStoreError(ssl.SSLError):
    """``ClientConfig.ca_bundle`` cannot be read as a PEM bundle: fatal on every channel."""


@functools.lru_cache(maxsize=8)
def _context(ca_bundle: Optional[str], cert_file: Optional[str],
             cert_dir: Optional[str]) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise TrustStoreError(f"ClientConfig.ca_bundle={ca_bundle!r} cannot be read as a PEM "
                              f"CA bundle: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class PolicyAdapter(HTTPAdapter):
    """A requests adapter that verifies with :func:`tls_context` (for direct and proxied
    pools alike) and ignores requests' ``verify`` bundle: the caller passes
    ``verify=True``."""

    def __init__(self, config: ClientConfig) -> None:
        self._problem: Optional[TrustStoreError] = None
        try:
            self._context: Optional[ssl.SSLContext] = tls_context(config)
        except TrustStoreError as exc:      # raised by each request, as requests' SSLError
            self._context, self._problem = None, exc
        super().__init__()

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if self._problem is not None:
            raise requests.exceptions.SSLError(str(self._problem), request=request)
        return super().send(request, *args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Certificates are required on https; which ones to trust is the context's."""
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if url.lower().startswith("https"):
            conn.ca_certs = conn.ca_cert_dir = None

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> Any:
        return super().build_connection_pool_key_attributes(request, True, cert)


# ------------------------------------------------------------------ proxy

def proxy_for(url: str, config: ClientConfig) -> Optional[Proxy]:
    """The proxy a request to ``url`` (``ws``/``wss``/``http``/``https``) goes through under
    ``config.proxy``, or ``None`` for a direct connection. Raises ``ValueError`` for a proxy
    URL that is not ``http://HOST[:PORT]``."""
    if config.proxy is None:
        return None
    if config.proxy != PROXY_FROM_ENVIRONMENT:
        return parse_proxy(config.proxy)
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    lookup = parts._replace(scheme=scheme).geturl()
    proxies: Mapping[str, str] = requests.utils.get_environ_proxies(lookup)
    chosen = requests.utils.select_proxy(lookup, dict(proxies))
    return parse_proxy(chosen) if chosen else None


def requests_proxies(url: str, config: ClientConfig) -> Optional[dict[str, str]]:
    """``proxies=`` for a requests call to ``url`` under the policy (the session does not
    read the environment itself: ``trust_env`` is off)."""
    proxy = proxy_for(url, config)
    if proxy is None:
        return {"http": "", "https": ""}
    return {"http": proxy.url, "https": proxy.url}


# ------------------------------------------------------------------ name resolution

AddrInfo = Tuple[int, int, int, str, Any]


def resolve(host: str, port: int, deadline: Optional[float],
            stopping: Callable[[], bool] = lambda: False) -> List[AddrInfo]:
    """``socket.getaddrinfo(host, port, type=SOCK_STREAM)`` within ``deadline`` (a
    ``time.monotonic()`` value; ``None``: no deadline), given up at once when ``stopping()``
    turns true (checked every 0.1 s). Raises ``TimeoutError("resolving HOST did not
    complete …")``, ``InterruptedError`` when stopped, or the lookup's own
    ``socket.gaierror``.

    A numeric address is answered on the calling thread. Otherwise the lookup runs on a
    daemon thread ``simsync-resolve`` of its own: the C library's ``getaddrinfo`` cannot be
    cancelled, so a caller that stops waiting leaves that one thread to finish the lookup
    and end by itself (bounded by the system resolver's own timeout, ``resolv.conf``); it
    holds no socket and no lock of simsync's, and its answer is dropped."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:                         # a literal address: no lookup to wait for
        return list(socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM))
    done = threading.Event()
    outcome: List[Any] = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, daemon=True, name=f"simsync-resolve-{host}").start()
    while not done.wait(0.1 if deadline is None else
                        max(0.0, min(0.1, deadline - time.monotonic()))):
        if stopping():
            raise InterruptedError(f"resolving {host} was cut short")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"resolving {host} did not complete by its deadline")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return list(result)
