"""URL rules of PROTOCOL.md §1: control URL, HTTP base, rpc_endpoint, PubSub URL."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

_WS_TO_HTTP = {"ws": "http", "wss": "https"}
_HTTP_TO_WS = {"http": "ws", "https": "wss"}


def control_url(url: str) -> str:
    """Normalise a host or URL to the control URL ``ws(s)://HOST/backtest`` (idempotent)."""
    url = url.strip()
    if not url:
        raise ValueError("the simulator URL is empty")
    if "://" not in url:
        url = "wss://" + url
    parts = urlsplit(url)
    if parts.scheme not in _WS_TO_HTTP:
        raise ValueError(f"the simulator URL must be ws:// or wss:// (or a bare host), "
                         f"got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("the simulator URL has no host")
    path = parts.path.rstrip("/")
    if not path.endswith("/backtest"):
        path += "/backtest"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def http_base(control: str) -> str:
    """``wss→https``, ``ws→http``; keep only ``scheme://host[:port]``."""
    parts = urlsplit(control_url(control))
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{_WS_TO_HTTP[parts.scheme]}://{host}{port}"


def rpc_url(control: str, rpc_endpoint: str) -> str:
    """Resolve a server-given ``rpc_endpoint`` (absolute, or a path joined to the HTTP base)."""
    if rpc_endpoint.lower().startswith(("http://", "https://")):
        return rpc_endpoint
    if not rpc_endpoint.startswith("/"):
        rpc_endpoint = "/" + rpc_endpoint
    return http_base(control) + rpc_endpoint


def pubsub_url(rpc: str) -> str:
    """The PubSub URL is the RPC URL with ``http→ws`` and ``https→wss``."""
    parts = urlsplit(rpc)
    if parts.scheme not in _HTTP_TO_WS:
        raise ValueError(f"an RPC URL must be http:// or https://, got {parts.scheme!r}")
    return urlunsplit((_HTTP_TO_WS[parts.scheme],) + tuple(parts[1:]))


def same_host(a: str, b: str) -> bool:
    """Whether two URLs name the same host (scheme-insensitive, case-insensitive)."""
    return (urlsplit(a).hostname or "").lower() == (urlsplit(b).hostname or "").lower()


def rpc_endpoint_problem(control: str, rpc: str) -> Optional[str]:
    """Why a server-given RPC URL is not to be trusted, or ``None``: another host than the
    control URL (a faulty or hostile server must not redirect the client's traffic), or
    plain ``http`` when the control channel is ``wss`` (a downgrade)."""
    if not same_host(rpc, control):
        return f"the server gave an rpc_endpoint on another host ({rpc})"
    if urlsplit(control).scheme == "wss" and urlsplit(rpc).scheme != "https":
        return f"the server gave a plain-http rpc_endpoint for a wss session ({rpc})"
    return None


def shown(url: str) -> str:
    """A URL as it may appear in logs and errors: ``scheme://host[:port]/path``, without
    userinfo, query or fragment (where a credential could hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def _secret_parts(url: str) -> List[str]:
    """The parts of ``url`` where a provider's credential may be: userinfo, query, fragment
    and path segments that look like a key (20+ characters mixing letters and digits:
    ``/v2/<key>``, ``/<token>/``)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    found = [p for p in (parts.query, parts.fragment, userinfo) if p]
    # a password or a query value alone, where it is long enough not to occur everywhere
    found += [v for v in [parts.password or ""] + [v for _, v in parse_qsl(parts.query)]
              if len(v) >= 6]
    found += [seg for seg in parts.path.split("/") if _looks_like_a_key(seg)]
    return found


def _looks_like_a_key(segment: str) -> bool:
    return (len(segment) >= 20 and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment))


def redacted(url: str) -> str:
    """An HTTP endpoint as it may appear in reprs, logs and errors: ``shown`` with each
    path segment that looks like a key cut to its first 4 characters and ``…``
    (``https://host/v2/abcd…``)."""
    parts = urlsplit(shown(url))
    path = "/".join(seg[:4] + "…" if _looks_like_a_key(seg) else seg
                    for seg in parts.path.split("/"))
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def scrub(text: str, url: str) -> str:
    """``text`` (an exception's message, a response body) with every secret part of ``url``
    (userinfo, query and its values, fragment, key-like path segments) replaced by
    ``[redacted]``, percent-decoded or not."""
    for secret in sorted(_secret_parts(url), key=len, reverse=True):
        for form in {secret, unquote(secret)}:
            text = text.replace(form, "[redacted]")
    return text


def plain_ws(url: str) -> str:
    """The ``ws://`` form of a ``wss://`` URL, as ``shown`` (for the "use ws://" hint)."""
    parts = urlsplit(shown(url))
    scheme = {"wss": "ws", "https": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme,) + tuple(parts[1:]))


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy: where it is and its credentials (never shown: see :attr:`shown`)."""

    url: str
    host: str
    port: int
    username: Optional[str] = None
    password: Optional[str] = None

    @property
    def shown(self) -> str:
        """``http://HOST:PORT`` (no credentials), for messages."""
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Proxy({self.shown!r})"


def parse_proxy(text: str) -> Proxy:
    """``http://[USER[:PASSWORD]@]HOST[:PORT]`` (a bare ``HOST:PORT`` is taken as http)."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("a proxy must be an http://HOST[:PORT] URL (HTTP CONNECT), not "
                         f"{parts.scheme}://…")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("the proxy URL has a bad port") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return Proxy(text if "://" in text else f"http://{text}", parts.hostname, port, user,
                 password)
