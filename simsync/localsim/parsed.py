"""Agave's ``jsonParsed`` forms: SPL Token accounts and mints, System nonce accounts, and the
instructions of the System, SPL Token, Associated Token Account and Memo programs. Pure
functions of bytes.

Shapes follow solana-account-decoder (``parse_token``) and solana-transaction-status
(``parse_instruction``): an account is ``{program, parsed: {info, type}, space}``, an
instruction ``{program, programId, parsed, stackHeight}``; what they cannot parse, Agave shows
raw (accounts in base64, instructions as ``{programId, accounts, data}``), and so do these.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import base58
from solders.pubkey import Pubkey

JsonObj = Dict[str, Any]

SYSTEM_PROGRAM_ID = "11111111111111111111111111111111"
TOKEN_PROGRAM_ID = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM_ID = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
TOKEN_PROGRAMS = (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)
ATA_PROGRAM_ID = "ATokenGPvbdGVxr1b2hvZbsiqW5xUWYTgbbDnmD5t5x"
MEMO_PROGRAM_IDS = ("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",
                    "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
TOKEN_ACCOUNT_LEN = 165
MINT_LEN = 82
_ACCOUNT_STATES = {1: "initialized", 2: "frozen"}


def _key(raw: bytes) -> str:
    """Base58 of ``raw``: solders' (Rust) for a 32-byte key, the base58 package otherwise."""
    if len(raw) == 32:
        return str(Pubkey.from_bytes(raw))
    return base58.b58encode(raw).decode("ascii")


def _coption_key(data: bytes, offset: int) -> Optional[str]:
    tag = struct.unpack_from("<I", data, offset)[0]
    return _key(data[offset + 4:offset + 36]) if tag == 1 else None


# -- token amounts ---------------------------------------------------------------------
def ui_token_amount(amount: int, decimals: int) -> JsonObj:
    """Agave's ``UiTokenAmount``: ``{amount, decimals, uiAmount, uiAmountString}``."""
    text = str(amount).rjust(decimals + 1, "0")
    whole, frac = (text[:-decimals], text[-decimals:]) if decimals else (text, "")
    frac = frac.rstrip("0")
    return {"amount": str(amount), "decimals": decimals, "uiAmount": amount / 10**decimals,
            "uiAmountString": f"{whole}.{frac}" if frac else whole}


# -- accounts --------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenAccountState:
    """The fields of an SPL Token (or Token-2022) account the RPC shows."""

    mint: str
    owner: str
    amount: int
    delegate: Optional[str]
    state: str
    is_native: Optional[int]
    delegated_amount: int
    close_authority: Optional[str]


@dataclass(frozen=True)
class MintState:
    mint_authority: Optional[str]
    supply: int
    decimals: int
    is_initialized: bool
    freeze_authority: Optional[str]


def token_account(owner_program: str, data: bytes) -> Optional[TokenAccountState]:
    """The token account in ``data`` when the account is one (owned by a token program,
    initialized), else None."""
    if owner_program not in TOKEN_PROGRAMS or len(data) < TOKEN_ACCOUNT_LEN:
        return None
    if len(data) > TOKEN_ACCOUNT_LEN and (owner_program == TOKEN_PROGRAM_ID or data[165] != 2):
        return None
    state = _ACCOUNT_STATES.get(data[108])
    if state is None:
        return None
    native_tag = struct.unpack_from("<I", data, 109)[0]
    return TokenAccountState(
        mint=_key(data[0:32]), owner=_key(data[32:64]),
        amount=struct.unpack_from("<Q", data, 64)[0], delegate=_coption_key(data, 72),
        state=state,
        is_native=struct.unpack_from("<Q", data, 113)[0] if native_tag == 1 else None,
        delegated_amount=struct.unpack_from("<Q", data, 121)[0],
        close_authority=_coption_key(data, 129))


def mint(owner_program: str, data: bytes) -> Optional[MintState]:
    """The mint in ``data`` when the account is an initialized mint, else None."""
    if owner_program not in TOKEN_PROGRAMS or len(data) < MINT_LEN:
        return None
    if len(data) > MINT_LEN and (owner_program == TOKEN_PROGRAM_ID
                                 or len(data) <= TOKEN_ACCOUNT_LEN or data[165] != 1):
        return None
    if not data[45]:
        return None
    return MintState(_coption_key(data, 0), struct.unpack_from("<Q", data, 36)[0], data[44],
                     True, _coption_key(data, 46))


NONCE_LEN = 80


def _nonce(data: bytes) -> Optional[JsonObj]:
    """A System nonce account (``Versions``: u32 version, u32 state, authority, durable
    nonce, lamports per signature): Agave's ``{program: "nonce", parsed, space}``."""
    if len(data) != NONCE_LEN:
        return None
    _, state = struct.unpack_from("<II", data, 0)
    if state == 0:
        parsed: JsonObj = {"type": "uninitialized"}
    elif state == 1:
        parsed = {"type": "initialized", "info": {
            "authority": _key(data[8:40]), "blockhash": _key(data[40:72]),
            "feeCalculator": {"lamportsPerSignature":
                              str(struct.unpack_from("<Q", data, 72)[0])}}}
    else:
        return None
    return {"program": "nonce", "parsed": parsed, "space": NONCE_LEN}


def parse_account(owner_program: str, data: bytes,
                  decimals_of: Any) -> Optional[JsonObj]:
    """The ``jsonParsed`` data of an account, or None when Agave would fall back to base64.
    ``decimals_of(mint) -> Optional[int]`` gives a token account's mint decimals."""
    if owner_program == SYSTEM_PROGRAM_ID:
        return _nonce(data)
    program = "spl-token" if owner_program == TOKEN_PROGRAM_ID else "spl-token-2022"
    account = token_account(owner_program, data)
    if account is not None:
        decimals = decimals_of(account.mint)
        if decimals is None:
            return None
        info: JsonObj = {"isNative": account.is_native is not None, "mint": account.mint,
                         "owner": account.owner, "state": account.state,
                         "tokenAmount": ui_token_amount(account.amount, decimals)}
        if account.delegate is not None:
            info["delegate"] = account.delegate
            info["delegatedAmount"] = ui_token_amount(account.delegated_amount, decimals)
        if account.is_native is not None:
            info["rentExemptReserve"] = ui_token_amount(account.is_native, decimals)
        if account.close_authority is not None:
            info["closeAuthority"] = account.close_authority
        return {"program": program, "parsed": {"info": info, "type": "account"},
                "space": len(data)}
    state = mint(owner_program, data)
    if state is not None:
        return {"program": program, "parsed": {"info": {
            "decimals": state.decimals, "freezeAuthority": state.freeze_authority,
            "isInitialized": state.is_initialized, "mintAuthority": state.mint_authority,
            "supply": str(state.supply)}, "type": "mint"}, "space": len(data)}
    return None


# -- instructions ----------------------------------------------------------------------
def parse_instruction(program_id: str, accounts: List[str], data: bytes,
                      stack_height: Optional[int]) -> JsonObj:
    """One instruction in ``jsonParsed``: parsed for the programs above, raw otherwise."""
    parsed = _parsed(program_id, accounts, data)
    if parsed is None:
        return {"programId": program_id, "accounts": accounts,
                "data": _key(data), "stackHeight": stack_height}
    name, value = parsed
    return {"program": name, "programId": program_id, "parsed": value,
            "stackHeight": stack_height}


def _parsed(program_id: str, accounts: List[str], data: bytes) -> Optional[tuple[str, Any]]:
    try:
        if program_id == SYSTEM_PROGRAM_ID:
            value = _system(accounts, data)
            return None if value is None else ("system", value)
        if program_id in TOKEN_PROGRAMS:
            value = _token(accounts, data)
            name = "spl-token" if program_id == TOKEN_PROGRAM_ID else "spl-token-2022"
            return None if value is None else (name, value)
        if program_id == ATA_PROGRAM_ID:
            value = _ata(accounts, data)
            return None if value is None else ("spl-associated-token-account", value)
        if program_id in MEMO_PROGRAM_IDS:
            return "spl-memo", data.decode("utf-8")
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return None


def _system(a: List[str], data: bytes) -> Optional[JsonObj]:
    tag = struct.unpack_from("<I", data, 0)[0]
    if tag == 0:  # CreateAccount
        lamports, space = struct.unpack_from("<QQ", data, 4)
        return {"type": "createAccount", "info": {
            "source": a[0], "newAccount": a[1], "lamports": lamports, "space": space,
            "owner": _key(data[20:52])}}
    if tag == 1:  # Assign
        return {"type": "assign", "info": {"account": a[0], "owner": _key(data[4:36])}}
    if tag == 2:  # Transfer
        return {"type": "transfer", "info": {
            "source": a[0], "destination": a[1],
            "lamports": struct.unpack_from("<Q", data, 4)[0]}}
    if tag == 8:  # Allocate
        return {"type": "allocate", "info": {
            "account": a[0], "space": struct.unpack_from("<Q", data, 4)[0]}}
    return None


def _token(a: List[str], data: bytes) -> Optional[JsonObj]:
    tag = data[0]

    def authority(index: int, key: str = "authority") -> JsonObj:
        # a multisig authority lists its signers after it; Agave names them multisigAuthority
        if len(a) > index + 1:
            return {"multisig" + key[0].upper() + key[1:]: a[index],
                    "signers": a[index + 1:]}
        return {key: a[index]}

    if tag == 3:  # Transfer
        return {"type": "transfer", "info": {
            "source": a[0], "destination": a[1],
            "amount": str(struct.unpack_from("<Q", data, 1)[0]), **authority(2)}}
    if tag == 12:  # TransferChecked
        amount, decimals = struct.unpack_from("<QB", data, 1)
        return {"type": "transferChecked", "info": {
            "source": a[0], "mint": a[1], "destination": a[2],
            "tokenAmount": ui_token_amount(amount, decimals), **authority(3)}}
    if tag in (7, 14):  # MintTo, MintToChecked
        amount = struct.unpack_from("<Q", data, 1)[0]
        info: JsonObj = {"mint": a[0], "account": a[1], **authority(2, "mintAuthority")}
        if tag == 7:
            info["amount"] = str(amount)
            return {"type": "mintTo", "info": info}
        info["tokenAmount"] = ui_token_amount(amount, data[9])
        return {"type": "mintToChecked", "info": info}
    if tag in (8, 15):  # Burn, BurnChecked
        amount = struct.unpack_from("<Q", data, 1)[0]
        info = {"account": a[0], "mint": a[1], **authority(2)}
        if tag == 8:
            info["amount"] = str(amount)
            return {"type": "burn", "info": info}
        info["tokenAmount"] = ui_token_amount(amount, data[9])
        return {"type": "burnChecked", "info": info}
    if tag == 4:  # Approve
        return {"type": "approve", "info": {
            "source": a[0], "delegate": a[1],
            "amount": str(struct.unpack_from("<Q", data, 1)[0]), **authority(2, "owner")}}
    if tag == 9:  # CloseAccount
        return {"type": "closeAccount", "info": {
            "account": a[0], "destination": a[1], **authority(2, "owner")}}
    if tag == 17:  # SyncNative
        return {"type": "syncNative", "info": {"account": a[0]}}
    if tag in (1, 16, 18):  # InitializeAccount, 2, 3
        info = {"account": a[0], "mint": a[1]}
        if tag == 1:
            info.update({"owner": a[2], "rentSysvar": a[3]})
            return {"type": "initializeAccount", "info": info}
        info["owner"] = _key(data[1:33])
        if tag == 16:
            info["rentSysvar"] = a[2]
            return {"type": "initializeAccount2", "info": info}
        return {"type": "initializeAccount3", "info": info}
    return None


def _ata(a: List[str], data: bytes) -> Optional[JsonObj]:
    kind = {b"": "create", b"\x00": "create", b"\x01": "createIdempotent"}.get(data)
    if kind is None:
        return None
    return {"type": kind, "info": {
        "source": a[0], "account": a[1], "wallet": a[2], "mint": a[3],
        "systemProgram": a[4], "tokenProgram": a[5]}}
