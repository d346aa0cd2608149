"""Control-channel frame shapes (PROTOCOL.md §2-§9): building, decoding, tolerant field access.

Pure functions, no I/O; called on the simulator's event-loop thread.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Union

import msgspec

Frame = Dict[str, Any]
JsonObj = Dict[str, Any]

_ABSENT: Any = object()
_msgspec_encode = msgspec.json.Encoder().encode


class RequestError(Exception):
    """A request the server rejects with an ``error`` frame; ``params`` is the §9 tagged value."""

    def __init__(self, params: Union[str, JsonObj]) -> None:
        super().__init__(json.dumps(params))
        self.params = params


def frame(method: str, params: Any = _ABSENT) -> Frame:
    """``{"method": m}`` for unit variants, ``{"method": m, "params": p}`` otherwise."""
    out: Frame = {"method": method}
    if params is not _ABSENT:
        out["params"] = params
    return out


def error_params(variant: str, **fields: Any) -> Union[str, JsonObj]:
    """The §9 tagged value: a bare string without fields, else ``{variant: {fields}}``."""
    return {variant: fields} if fields else variant


def invalid_request(message: str) -> RequestError:
    return RequestError(error_params("invalidRequest", error=message))


def error_frame(params: Union[str, JsonObj]) -> Frame:
    return frame("error", params)


def encode(obj: Any) -> str:
    """``obj`` as compact JSON text, as ``json.dumps(obj, separators=(",", ":"))`` would
    mean it, by msgspec's encoder (C, several times faster); non-ASCII text stays UTF-8
    instead of ``\\u`` escapes, NaN and infinities (never in a frame) become ``null``.
    What msgspec refuses goes to ``json.dumps`` (which raises ``TypeError`` as before)."""
    try:
        return _msgspec_encode(obj).decode("utf-8")
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return json.dumps(obj, separators=(",", ":"))


def sequenced(seq: Optional[int], body: Frame) -> Frame:
    """Put ``seqId`` first (as the fixtures show) when the session is sequenced."""
    if seq is None:
        return body
    out: Frame = {"seqId": seq}
    out.update(body)
    return out


def decode_request(text: Union[str, bytes]) -> tuple[str, Any]:
    """Parse one client frame into ``(method, params)``; raise `RequestError` when malformed."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid_request(f"malformed frame: {exc}") from None
    if not isinstance(obj, dict):
        raise invalid_request("a frame must be a JSON object")
    method = obj.get("method")
    if not isinstance(method, str):
        raise invalid_request("a frame needs a string 'method'")
    return method, obj.get("params")


def pick(obj: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The first present, non-null value among ``names`` (snake_case and camelCase spellings)."""
    for name in names:
        value = obj.get(name)
        if value is not None:
            return value
    return default


def as_object(params: Any, what: str) -> JsonObj:
    """``params`` as a dict; null/absent becomes ``{}``; anything else is an invalid request."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid_request(f"{what}: params must be an object")
    return params


def int_field(obj: Mapping[str, Any], *names: str, default: Optional[int] = None,
              minimum: Optional[int] = None) -> Optional[int]:
    value = pick(obj, *names)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"{names[0]} must be an integer")
    if minimum is not None and value < minimum:
        raise invalid_request(f"{names[0]} must be >= {minimum}")
    return value


def require_int(obj: Mapping[str, Any], *names: str, minimum: Optional[int] = None) -> int:
    value = int_field(obj, *names, minimum=minimum)
    if value is None:
        raise invalid_request(f"{names[0]} is required")
    return value
