"""The typed parameters and results of Solana JSON-RPC (used by :mod:`simsync.solana_rpc`).

* Parameter types: :data:`Commitment`, :data:`AccountEncoding`, :data:`TransactionEncoding`,
  :data:`TransactionDetails`; conversion of what callers pass (a solders ``Pubkey`` /
  ``Signature`` / ``Hash`` or its base58 ``str``; a transaction or message as bytes, base64
  or a solders object) into the wire form.
* Results: :func:`parse` reads a JSON-RPC ``result`` into the solders response type of its
  method (``solders.rpc.responses.*Resp``) and gives its typed ``value``; a result that does
  not match Agave's shape is an :class:`simsync.RpcError` naming the method.

Pure functions: no I/O, no threads.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Literal

from solders.address_lookup_table_account import AddressLookupTable, LookupTableMeta
from solders.errors import SerdeJSONError
from solders.pubkey import Pubkey

from simsync.errors import RpcError, excerpt

__all__ = ["AccountEncoding", "Commitment", "TransactionDetails", "TransactionEncoding",
           "TypedAccountEncoding", "base58", "by_encoding", "config", "lookup_table", "parse",
           "readable", "sequence", "snake_to_camel", "to_base64", "u64", "unexpected", "value_of"]

Commitment = Literal["processed", "confirmed", "finalized"]
"""Solana's commitment levels (the node's default, ``finalized`` on Agave, when omitted)."""
AccountEncoding = Literal["base64", "base58", "base64+zstd", "jsonParsed"]
"""How account data comes back (``getAccountInfo`` and friends)."""
TypedAccountEncoding = Literal["base64", "jsonParsed"]
"""The account encodings the typed account methods read (``Account`` / ``AccountJSON``):
solders reads neither ``base64+zstd`` nor a ``dataSlice`` into an ``Account``; ``call``
gives those raw."""
TransactionEncoding = Literal["json", "jsonParsed", "base64", "base58"]
"""How a transaction comes back (``getTransaction``, ``getBlock``)."""
TransactionDetails = Literal["full", "accounts", "signatures", "none"]
"""How much of each transaction ``getBlock`` returns."""

_BASE58 = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


# ---------------------------------------------------------------------------------------------
# Parameters
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


def base58(value: Any, what: str) -> str:
    """``value`` as a base58 string: a ``str``, or anything whose ``str()`` is base58 (a
    solders ``Pubkey``, ``Signature``, ``Hash``). Raises ``TypeError`` for raw bytes and
    ``ValueError`` for text that is not base58."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be a base58 str or a solders object, not raw bytes")
    text = value if isinstance(value, str) else str(value)
    if not text or not set(text) <= _BASE58:
        raise ValueError(f"{what} is not base58: {excerpt(text, 40)}")
    return text


def sequence(values: Any, what: str) -> Sequence[Any]:
    """``values`` as a list of items, refusing a lone string (a common slip) with ``TypeError``."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a list, not a single {type(values).__name__}")
    return list(values)


def snake_to_camel(name: str) -> str:
    """``replace_recent_blockhash`` → ``replaceRecentBlockhash`` (camelCase kept as is)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def config(**options: Any) -> dict[str, Any]:
    """A Solana RPC config object from keyword options: ``None`` values left out, snake_case
    names sent camelCase (``min_context_slot=5`` → ``{"minContextSlot": 5}``)."""
    return {snake_to_camel(k): v for k, v in options.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

def parse(method: str, resp: Any, result: Any) -> Any:
    """``result`` (the JSON ``result`` of ``method``) read by solders' response type ``resp``
    (``solders.rpc.responses.GetEpochInfoResp`` …): returns its typed ``value``. Raises
    :class:`simsync.RpcError` when the result does not have Agave's shape."""
    wrapped = json.dumps({"jsonrpc": "2.0", "id": 0, "result": result}, separators=(",", ":"))
    parsed: Any = readable(method, result, lambda: resp.from_json(wrapped))
    if not hasattr(parsed, "value"):                     # solders read it as an error object
        raise unexpected(method, result, "a result")
    return parsed.value


def readable(method: str, result: Any, read: Callable[[], Any]) -> Any:
    """``read()`` (solders reading ``result``, the JSON ``result`` of ``method``), its failure
    an :class:`simsync.RpcError`: solders raises ``ValueError``/``SerdeJSONError``, or panics
    (pyo3's ``PanicException``, a ``BaseException``) on some values it reads lazily, e.g. a
    base64 transaction that does not deserialize."""
    try:
        return read()
    except (SerdeJSONError, ValueError, TypeError, RecursionError) as exc:
        raise unexpected(method, result, f"Agave's shape ({excerpt(str(exc), 80)})") from None
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise unexpected(method, result, "Agave's shape (solders could not read it)") from None


def by_encoding(encoding: Any, binary: Any, parsed: Any) -> Any:
    """The solders response type that reads an account method's result in ``encoding``:
    ``binary`` for ``"base64"``, ``parsed`` (the ``…MaybeJsonParsedResp``: a parsed account
    or, where the node fell back to base64, an ``Account``) for ``"jsonParsed"``. Raises
    ``ValueError`` for another encoding (before anything is sent)."""
    if encoding == "base64":
        return binary
    if encoding == "jsonParsed":
        return parsed
    raise ValueError(f"encoding must be 'base64' or 'jsonParsed' for a typed account, not "
                     f"{excerpt(encoding, 40)} (call(method, params) returns other encodings "
                     "as Solana's JSON)")


def lookup_table(method: str, value: Any) -> AddressLookupTable | None:
    """An address lookup table's JSON (the ``value`` of PROTOCOL.md §10's
    ``getAddressLookupTable``: ``{key, state: {deactivationSlot, lastExtendedSlot,
    lastExtendedSlotStartIndex, authority, addresses}}`` or null) as a solders
    ``AddressLookupTable``, or ``None``. Raises :class:`simsync.RpcError` for another shape."""
    if value is None:
        return None
    state = value.get("state") if isinstance(value, Mapping) else None
    try:
        if not isinstance(state, Mapping):
            raise TypeError("no state object")
        authority = state.get("authority")
        meta = LookupTableMeta(
            deactivation_slot=int(state["deactivationSlot"]),
            last_extended_slot=int(state["lastExtendedSlot"]),
            last_extended_slot_start_index=int(state["lastExtendedSlotStartIndex"]),
            authority=None if authority is None else Pubkey.from_string(authority))
        addresses = [Pubkey.from_string(a) for a in state["addresses"]]
        # solders' stub names the parameters (key, addresses); it takes (meta, addresses)
        return AddressLookupTable(meta, addresses)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise unexpected(method, value, f"a lookup table ({excerpt(str(exc), 80)})") from None


def value_of(result: Any) -> Any:
    """The ``value`` of an ``{"context": ..., "value": ...}`` result; anything else as is."""
    if isinstance(result, Mapping) and "value" in result:
        return result["value"]
    return result


def unexpected(method: str, result: Any, wanted: str) -> RpcError:
    """The error for a result of ``method`` that is not what Solana answers."""
    return RpcError(f"{method}: unexpected result, wanted {wanted}: {excerpt(result, 120)}")


def u64(value: Any, what: str) -> int:
    """``value`` checked to be a non-negative ``int`` (a slot, a size, lamports): raises
    ``TypeError`` for another type (a bool, a str) and ``ValueError`` below 0."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value
