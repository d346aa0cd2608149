"""``GET /usage``: what an API key used over a time window (`UsageReport`).

The service answers one JSON object with snake_case fields (camelCase accepted too)::

    {"since": "2026-11-30T00:00:00Z", "until": null, "sessions_started": 3,
     "sessions_completed": 2, "sessions_failed": 1, "executed_slot_count": 250,
     "session_duration": 71.5}

``session_duration`` is the *total* wall-clock time, in seconds, of the sessions the report
counts (their sum, not a mean). Counters the server left out are ``None``; unknown fields are
kept in ``extra`` under their wire names.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union
from urllib.parse import urlencode

import requests

from simsync import urls
from simsync.config import ClientConfig
from simsync.errors import ProtocolError, RpcError
from simsync.netpolicy import proxy_for, retry_after_seconds
from simsync.rpc import HTTP_FAILURES, CallWatch, close_http, timed_request, watched_http

#: A window bound: an aware ``datetime`` (a naive one is taken as UTC) or ISO-8601 text.
When = Union[datetime.datetime, str]

USAGE_PATH = "/usage"
_COUNTERS = ("sessions_started", "sessions_completed", "sessions_failed",
             "executed_slot_count")
_WIRE: Dict[str, str] = {}
for _name in _COUNTERS + ("session_duration", "since", "until"):
    _head, *_rest = _name.split("_")
    _WIRE[_name] = _name
    _WIRE[_head + "".join(w.title() for w in _rest)] = _name


@dataclass(frozen=True)
class UsageReport:
    """What the API key used in ``[since, until)`` (``None`` bound: open), as the server
    counted it. ``session_duration`` is the total in seconds (a sum over the sessions
    counted). ``since``/``until`` are the server's echo of the window (ISO-8601 text),
    ``None`` when it sent none."""

    sessions_started: Optional[int] = None
    sessions_completed: Optional[int] = None
    sessions_failed: Optional[int] = None
    executed_slot_count: Optional[int] = None
    session_duration: Optional[float] = None
    since: Optional[str] = None
    until: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def wire(self) -> Dict[str, Any]:
        """The canonical snake_case object (absent fields left out, extras last)."""
        out = {name: getattr(self, name) for name in _COUNTERS
               + ("session_duration", "since", "until") if getattr(self, name) is not None}
        out.update(self.extra)
        return out


def iso_utc(value: When, what: str) -> str:
    """``value`` as ISO-8601 UTC text (``2026-11-30T20:00:00Z``; microseconds kept when not
    zero). Text is parsed and normalised; a naive ``datetime`` is taken as UTC. Raises
    ``ValueError`` (naming ``what``) for text that is not ISO-8601, ``TypeError`` for other
    types."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} is not an ISO-8601 time: {value!r}") from None
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"{what} must be a datetime or ISO-8601 text, "
                        f"got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    utc = value.astimezone(datetime.timezone.utc)
    text = utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def decode_usage(body: Union[str, bytes]) -> UsageReport:
    """Decode a ``/usage`` body (snake_case or camelCase). Raises ``ProtocolError`` when it
    is not a JSON object or a known field has the wrong type."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError):
        raise ProtocolError("/usage did not answer JSON", body) from None
    if not isinstance(obj, dict):
        raise ProtocolError("/usage did not answer a JSON object", body)
    fields: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    for key, value in obj.items():
        name = _WIRE.get(key)
        if name is None:
            extra[key] = value
            continue
        if value is None or (name in fields and key != name):
            continue         # null, or the camelCase twin of a snake_case field already read
        if name in _COUNTERS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ProtocolError(f"/usage {key} must be a non-negative integer", body)
        elif name == "session_duration":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ProtocolError(f"/usage {key} must be a non-negative number", body)
            value = float(value)
        elif not isinstance(value, str):
            raise ProtocolError(f"/usage {key} must be text", body)
        fields[name] = value
    return UsageReport(**fields, extra=extra)


def usage_url(control_url: str, since: Optional[When] = None,
              until: Optional[When] = None) -> str:
    """``http(s)://HOST[:PORT]/usage`` with ``since``/``until`` as ISO-8601 UTC query
    parameters (left out when ``None``). Raises ``ValueError`` when ``since`` is after
    ``until``."""
    query: Dict[str, str] = {}
    if since is not None:
        query["since"] = iso_utc(since, "since")
    if until is not None:
        query["until"] = iso_utc(until, "until")
    if "since" in query and "until" in query and _parse(query["since"]) > _parse(query["until"]):
        raise ValueError(f"since ({query['since']}) is after until ({query['until']})")
    url = urls.http_base(control_url) + USAGE_PATH
    return f"{url}?{urlencode(query)}" if query else url


def _parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def fetch_usage(control_url: str, api_key: Optional[str], config: ClientConfig,
                since: Optional[When] = None, until: Optional[When] = None) -> UsageReport:
    """One ``GET /usage`` with the ``X-API-Key`` header (caller's thread; blocks at most
    ``config.rpc_timeout`` in all; trusts and proxies as every channel, see
    ``simsync.netpolicy``). Raises ``RpcError`` naming the URL (never the key) on a
    connection failure or an HTTP error status (``http_status``, ``retry_after``),
    ``ProtocolError`` on a malformed body, ``ValueError``/``TypeError`` for a bad window."""
    url = usage_url(control_url, since, until)
    headers = {"X-API-Key": api_key, "Accept": "application/json"} if api_key else \
        {"Accept": "application/json"}
    http = watched_http(config)
    watch = CallWatch(config.rpc_timeout)
    try:
        status, content, reply_headers = timed_request(http, "GET", url, watch, config,
                                                       headers=headers, allow_redirects=False)
    except HTTP_FAILURES as exc:
        cut = f" ({watch.describe()})" if watch.expired else ""
        proxy = proxy_for(url, config)
        if isinstance(exc, requests.exceptions.ProxyError) and proxy is not None:
            cut += f": the proxy {proxy.shown} failed, not the simulator"
        raise RpcError(f"GET {url} failed: {type(exc).__name__}{cut}") from None
    finally:
        close_http(http)
    if status >= 400:
        retry_after = retry_after_seconds(reply_headers.get("Retry-After"))
        raise RpcError(f"GET {url} answered HTTP {status}", http_status=status,
                       retry_after=retry_after)
    return decode_usage(content)


__all__ = ["USAGE_PATH", "UsageReport", "When", "decode_usage", "fetch_usage", "iso_utc",
           "usage_url"]
