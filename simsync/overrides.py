"""Account overrides (``modify_account_states`` of a step): checked where they are given.

``account_overrides(mapping)`` turns what a user passes into ``{base58 pubkey: AccountData}``
or raises an error that names the field at fault, such as
``modify_account_states['9xQe…'].data: missing``. A value may be:

* an ``AccountData`` (``AccountData.of(data, owner, lamports)``);
* the wire dict: ``{"data": {"data": "<base64>", "encoding": "base64"}, "executable": False,
  "lamports": 1_000_000, "owner": "<base58>", "space": 0}``;
* Solana's ``UiAccount`` dict, as ``getAccountInfo`` returns it and as the ``before``/
  ``after`` of an output file's ``account_diffs`` hold it: ``data`` is ``["<base64>",
  "base64"]``, ``rentEpoch`` is ignored;
* a minimal dict: ``lamports`` is required; ``data`` defaults to no bytes (and may also be
  ``bytes``); ``owner`` defaults to the System program when there is no data (a wallet) and
  is required otherwise; ``executable`` defaults to False; ``space`` defaults to the data's
  length (and must equal it when given);
* a solders ``Account`` (anything with ``lamports``, ``data``, ``owner``, ``executable``).

Errors: ``AccountOverrideTypeError`` (a ``TypeError``) for a value of the wrong type,
``AccountOverrideError`` (a ``ValueError``) for a bad or missing value; both are
``SimsyncError``s and carry the field's path in ``.field``. Pure functions, any thread.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, Mapping, Optional, Tuple

import base58

from simsync.errors import SimsyncError
from simsync.protocol import AccountData, EncodedData

SYSTEM_PROGRAM_ID = "11111111111111111111111111111111"
ENCODINGS = ("base64", "base58")
MAX_LAMPORTS = 2**64 - 1
_FIELDS = frozenset({"data", "executable", "lamports", "owner", "space", "rentEpoch"})


class AccountOverrideError(SimsyncError, ValueError):
    """An account override has a bad or missing value; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class AccountOverrideTypeError(AccountOverrideError, TypeError):
    """An account override, or one of its fields, has the wrong type; ``field`` names it."""


def _short(key: str) -> str:
    return key if len(key) <= 12 else key[:8] + "…"


def _type_name(value: Any) -> str:
    return type(value).__name__


def pubkey_text(value: Any, field: str) -> str:
    """``value`` (base58 ``str`` or an object whose ``str()`` is one, e.g. a solders
    ``Pubkey``) as base58 text of exactly 32 bytes."""
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        return str(base58.b58encode(bytes(value)).decode("ascii"))
    text = value if isinstance(value, str) else str(value) if hasattr(value, "__bytes__") \
        else None
    if text is None:
        raise AccountOverrideTypeError(
            field, f"expected a base58 public key (str or Pubkey), got {_type_name(value)}")
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise AccountOverrideError(field, f"not a base58 public key of 32 bytes: {text!r}")
    return text


def account_overrides(accounts: Optional[Mapping[Any, Any]],
                      where: str = "modify_account_states") -> Dict[str, AccountData]:
    """Check and normalise overrides: ``{pubkey: value}`` → ``{base58: AccountData}``.
    ``None`` gives ``{}``. Raises ``AccountOverrideError``/``AccountOverrideTypeError``
    naming the field (``where[...]...``)."""
    if accounts is None:
        return {}
    if not isinstance(accounts, Mapping):
        raise AccountOverrideTypeError(
            where, f"expected a mapping {{pubkey: account}}, got {_type_name(accounts)}")
    out: Dict[str, AccountData] = {}
    for key, value in accounts.items():
        address = pubkey_text(key, f"{where} key {key!r}")
        out[address] = account_data(value, f"{where}[{_short(address)!r}]")
    return out


def account_data(value: Any, field: str = "account") -> AccountData:
    """One override value as ``AccountData`` (see the module docstring for the shapes)."""
    if isinstance(value, AccountData):
        _check_data(value.data, f"{field}.data")
        return value
    if not isinstance(value, Mapping):
        if all(hasattr(value, name) for name in ("lamports", "data", "owner", "executable")):
            return AccountData.of(bytes(value.data), pubkey_text(value.owner, f"{field}.owner"),
                                  _lamports(value.lamports, f"{field}.lamports"),
                                  _flag(value.executable, f"{field}.executable"))
        raise AccountOverrideTypeError(
            field, f"expected AccountData or a dict with lamports/owner/data, got "
                   f"{_type_name(value)}")
    unknown = sorted(str(k) for k in value if k not in _FIELDS)
    if unknown:
        raise AccountOverrideError(
            f"{field}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    if "lamports" not in value:
        raise AccountOverrideError(f"{field}.lamports", "missing")
    lamports = _lamports(value["lamports"], f"{field}.lamports")
    encoded, size = _encoded(value.get("data", b""), f"{field}.data")
    if "owner" in value:
        owner = pubkey_text(value["owner"], f"{field}.owner")
    elif size == 0:
        owner = SYSTEM_PROGRAM_ID
    else:
        raise AccountOverrideError(f"{field}.owner",
                                   "missing (required for an account that holds data)")
    executable = _flag(value.get("executable", False), f"{field}.executable")
    space = value.get("space", size)
    if isinstance(space, bool) or not isinstance(space, int):
        raise AccountOverrideTypeError(f"{field}.space",
                                       f"expected an int, got {_type_name(space)}")
    if space != size:
        raise AccountOverrideError(f"{field}.space",
                                   f"{space} differs from the data's length {size}")
    return AccountData(encoded, executable, lamports, owner, space)


def _lamports(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AccountOverrideTypeError(field, f"expected an int, got {_type_name(value)}")
    if not 0 <= value <= MAX_LAMPORTS:
        raise AccountOverrideError(field, f"must be between 0 and 2**64-1, got {value}")
    return int(value)


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise AccountOverrideTypeError(field, f"expected True or False, got {value!r}")
    return value


def _encoded(value: Any, field: str) -> Tuple[EncodedData, int]:
    """``(EncodedData, byte length)`` from bytes, ``[text, encoding]``,
    ``{"data": text, "encoding": ...}`` or an ``EncodedData``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return EncodedData(base64.b64encode(raw).decode("ascii")), len(raw)
    if isinstance(value, EncodedData):
        return value, len(_check_data(value, field))
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise AccountOverrideError(field, f"expected [text, encoding], got {len(value)} "
                                              "items")
        text, encoding = value
    elif isinstance(value, Mapping):
        if "data" not in value:
            raise AccountOverrideError(f"{field}.data", "missing")
        text, encoding = value["data"], value.get("encoding", "base64")
    elif isinstance(value, str):
        raise AccountOverrideTypeError(
            field, "a bare string is ambiguous: give {'data': text, 'encoding': 'base64'}, "
                   "[text, 'base64'] or bytes")
    else:
        raise AccountOverrideTypeError(
            field, f"expected bytes, [text, encoding] or {{'data', 'encoding'}}, got "
                   f"{_type_name(value)}")
    encoded = EncodedData(text, encoding) if isinstance(text, str) and isinstance(
        encoding, str) else None
    if encoded is None:
        raise AccountOverrideTypeError(field, "data and encoding must be strings")
    return encoded, len(_check_data(encoded, field))


def _check_data(encoded: Any, field: str) -> bytes:
    """The bytes of an ``EncodedData`` (base64 or base58), or an error naming ``field``."""
    if encoded.encoding not in ENCODINGS:
        raise AccountOverrideError(f"{field}.encoding", f"{encoded.encoding!r} is not one of "
                                                        f"{', '.join(ENCODINGS)}")
    try:
        if encoded.encoding == "base58":
            return bytes(base58.b58decode(encoded.data))
        return base64.b64decode(encoded.data, validate=True)
    except (binascii.Error, ValueError):
        raise AccountOverrideError(field, f"not valid {encoded.encoding}") from None


__all__ = ["AccountOverrideError", "AccountOverrideTypeError", "account_data",
           "account_overrides", "pubkey_text"]
