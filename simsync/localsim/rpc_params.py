"""Parameter parsing for the per-session JSON-RPC, with Agave's errors. Pure functions.

Agave deserializes params with serde through jsonrpc-core, so a malformed param is
``-32602`` "Invalid params: <serde's text>."; a config names its ``commitment`` from
``processed``/``confirmed``/``finalized``; a ``minContextSlot`` above the slot the
node stands at is ``-32016`` "Minimum context slot has not been reached".
"""
from __future__ import annotations

from typing import Any, List, Optional

from solders.pubkey import Pubkey

from simsync.localsim.accounts import parse_pubkey
from simsync.localsim.jsonrpc import (
    INVALID_PARAMS,
    MIN_CONTEXT_SLOT_NOT_REACHED,
    JsonObj,
    RpcError,
)

COMMITMENTS = ("processed", "confirmed", "finalized")


def serde_error(text: str) -> RpcError:
    """jsonrpc-core's answer to params serde could not read: ``Invalid params: {text}.``"""
    return RpcError(INVALID_PARAMS, f"Invalid params: {text}.")


def agave_invalid(text: str) -> RpcError:
    """An invalid-params error Agave raises itself (its text as is)."""
    return RpcError(INVALID_PARAMS, text)


def param(params: List[Any], index: int, default: Any = None) -> Any:
    """``params[index]``, or ``default`` when absent or null."""
    return params[index] if len(params) > index and params[index] is not None else default


def at_most(params: List[Any], count: int) -> None:
    """Reject more params than the method takes (serde: an array of the wrong length)."""
    if count == 0 and params:  # jsonrpc-core's answer for a method without params
        raise RpcError(INVALID_PARAMS, "Invalid parameters: No parameters were expected")
    if len(params) > count:
        raise serde_error(f"invalid length {len(params)}, expected at most {count} "
                          f"element{'s' if count != 1 else ''} in sequence")


def config(params: List[Any], index: int, name: str = "RpcContextConfig") -> JsonObj:
    """The config object at ``index`` ({} when absent), its ``commitment`` checked."""
    value = param(params, index, {})
    if not isinstance(value, dict):
        raise serde_error(f"invalid type: {_kind(value)}, expected struct {name}")
    commitment = value.get("commitment")
    if commitment is not None and commitment not in COMMITMENTS:
        if not isinstance(commitment, str):
            raise serde_error(f"invalid type: {_kind(commitment)}, expected a string")
        raise serde_error(f"unknown variant `{commitment}`, expected one of "
                          + ", ".join(f"`{c}`" for c in COMMITMENTS))
    return value


def check_context(cfg: JsonObj, slot: int) -> None:
    """``minContextSlot`` above ``slot`` → -32016 with ``data.contextSlot`` (Agave)."""
    wanted = cfg.get("minContextSlot")
    if wanted is None:
        return
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0:
        raise serde_error(f"invalid type: {_kind(wanted)}, expected u64")
    if wanted > slot:
        raise RpcError(MIN_CONTEXT_SLOT_NOT_REACHED, "Minimum context slot has not been reached",
                       {"contextSlot": slot})


def context_config(params: List[Any], index: int, slot: int) -> JsonObj:
    """`config` plus `check_context`, for methods whose config is ``RpcContextConfig``-like."""
    cfg = config(params, index)
    check_context(cfg, slot)
    return cfg


def u64(value: Any, what: str = "u64") -> int:
    """A non-negative integer param (serde's error otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**64:
        raise serde_error(f"invalid type: {_kind(value)}, expected {what}")
    return value


def required(params: List[Any], index: int, what: str) -> Any:
    """A required positional param (serde: "invalid length")."""
    if len(params) <= index or params[index] is None:
        raise serde_error(f"invalid length {len(params)}, expected {what}")
    return params[index]


def pubkey(value: Any) -> Pubkey:
    """A base58 pubkey param; Agave: "Invalid param: Invalid" otherwise."""
    try:
        return parse_pubkey(value)
    except ValueError:
        raise agave_invalid("Invalid param: Invalid") from None


def string(value: Any, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise serde_error(f"invalid type: {_kind(value)}, expected {what}")
    return value


def optional_string(value: Any) -> Optional[str]:
    return None if value is None else string(value)


def _kind(value: Any) -> str:
    """serde's name for a JSON value's type in "invalid type" messages."""
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return "null"
