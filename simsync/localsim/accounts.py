"""Account overrides (PROTOCOL.md §6 ``AccountData``) and Solana's JSON shape of an account.

Pure functions over solders types; called on the event-loop thread.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, List, Mapping, Optional, Tuple

import base58
from solders.account import Account
from solders.pubkey import Pubkey

Override = Tuple[Pubkey, Account]
BASE58_LIMIT = 128  # Solana refuses base58 account data above this size


class AccountDataError(Exception):
    """An override that cannot be applied; ``variant``/``fields`` follow PROTOCOL.md §9."""

    def __init__(self, variant: str, **fields: Any) -> None:
        super().__init__(f"{variant}: {fields}")
        self.variant = variant
        self.fields = fields


def parse_pubkey(text: Any) -> Pubkey:
    """A base58 pubkey; ValueError when it is not one."""
    if not isinstance(text, str):
        raise ValueError("a pubkey must be a base58 string")
    try:
        return Pubkey.from_string(text)
    except Exception as exc:  # solders raises its own error types
        raise ValueError(f"invalid pubkey {text!r}: {exc}") from None


def parse_overrides(mapping: Any) -> List[Override]:
    """``{base58: AccountData}`` to ``[(pubkey, account)]``; raise `AccountDataError`."""
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise AccountDataError("invalidAccountPubkey", address="", error="expected an object")
    return [(_address(addr), _account(addr, data)) for addr, data in mapping.items()]


def order_for_install(overrides: List[Override]) -> List[Override]:
    """Data accounts first, executables last, so a program's ProgramData exists before it."""
    return sorted(overrides, key=lambda item: item[1].executable)


def _address(addr: str) -> Pubkey:
    try:
        return parse_pubkey(addr)
    except ValueError as exc:
        raise AccountDataError("invalidAccountPubkey", address=addr, error=str(exc)) from None


def _account(addr: str, data: Any) -> Account:
    if not isinstance(data, dict):
        raise AccountDataError("invalidAccountEncoding", address=addr, encoding="",
                               error="AccountData must be an object")
    try:
        owner = parse_pubkey(data.get("owner"))
    except ValueError as exc:
        raise AccountDataError("invalidAccountOwner", address=addr, error=str(exc)) from None
    raw = _data_bytes(addr, data.get("data"))
    space = data.get("space")
    if isinstance(space, int) and not isinstance(space, bool):
        if space < len(raw):
            raise AccountDataError("invalidAccountEncoding", address=addr, encoding="base64",
                                   error=f"space {space} < data length {len(raw)}")
        raw = raw + bytes(space - len(raw))
    lamports = data.get("lamports", 0)
    if isinstance(lamports, bool) or not isinstance(lamports, int) or lamports < 0:
        raise AccountDataError("invalidAccountEncoding", address=addr, encoding="",
                               error="lamports must be a non-negative integer")
    rent_epoch = data.get("rentEpoch", data.get("rent_epoch", 0)) or 0
    return Account(lamports=lamports, data=raw, owner=owner,
                   executable=bool(data.get("executable", False)), rent_epoch=int(rent_epoch))


def _data_bytes(addr: str, value: Any) -> bytes:
    """Accept ``{"data": s, "encoding": e}``, ``[s, e]`` or a bare base64 string."""
    encoding = "base64"
    if isinstance(value, dict):
        text, encoding = value.get("data", ""), value.get("encoding") or "base64"
    elif isinstance(value, list) and len(value) == 2:
        text, encoding = value
    elif value is None:
        text = ""
    else:
        text = value
    try:
        return decode_text(text, str(encoding))
    except ValueError as exc:
        raise AccountDataError("invalidAccountEncoding", address=addr, encoding=str(encoding),
                               error=str(exc)) from None


def decode_text(text: Any, encoding: str) -> bytes:
    """Bytes of a base64 or base58 string; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(text, str):
        raise ValueError("expected an encoded string")
    try:
        if encoding == "base64":
            return base64.b64decode(text, validate=True)
        if encoding == "base58":
            return base58.b58decode(text)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid {encoding}: {exc}") from None
    raise ValueError(f"unsupported encoding {encoding!r} (use base64 or base58)")


def account_json(account: Account, encoding: str = "base64",
                 data_slice: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Solana's ``UiAccount``: ``{data: [s, enc], executable, lamports, owner, rentEpoch, space}``.

    ``jsonParsed`` and ``base64+zstd`` fall back to base64 (as Solana does for unparsable data).
    Raises ValueError for base58 data above 128 bytes, like Solana.
    """
    raw = bytes(account.data)
    if data_slice:
        offset, length = int(data_slice.get("offset", 0)), int(data_slice.get("length", 0))
        raw = raw[offset:offset + length]
    if encoding == "base58":
        if len(raw) > BASE58_LIMIT:
            raise ValueError("encoded binary (base 58) data should be less than 128 bytes, "
                             "please use Base64 encoding.")
        data: List[str] = [base58.b58encode(raw).decode("ascii"), "base58"]
    else:
        data = [base64.b64encode(raw).decode(), "base64"]
    return {"data": data, "executable": account.executable, "lamports": account.lamports,
            "owner": str(account.owner), "rentEpoch": account.rent_epoch,
            "space": len(account.data)}
