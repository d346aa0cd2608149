"""Agave's encodings of accounts (``UiAccountEncoding``) and executed transactions
(``UiTransactionEncoding``, ``TransactionDetails``, ``maxSupportedTransactionVersion``) for
the per-session JSON-RPC. Pure functions over solders types and `TxRecord`s; errors are the
`RpcError`s Agave answers.
"""
from __future__ import annotations

import base64
from typing import Any, Callable, List, Mapping, Optional

import base58
import zstandard
from solders.account import Account
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from simsync.localsim.accounts import BASE58_LIMIT
from simsync.localsim.chain import TxRecord, encode_transaction, static_keys_json
from simsync.localsim.jsonrpc import (
    INVALID_REQUEST,
    UNSUPPORTED_TRANSACTION_VERSION,
    JsonObj,
    RpcError,
)
from simsync.localsim.parsed import parse_account, parse_instruction
from simsync.localsim.rpc_params import agave_invalid, serde_error

ACCOUNT_ENCODINGS = ("binary", "base58", "base64", "jsonParsed", "base64+zstd")
TX_ENCODINGS = ("binary", "base64", "base58", "json", "jsonParsed")
DETAILS = ("full", "signatures", "none", "accounts")
DecimalsOf = Callable[[str], Optional[int]]


def _variant(value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise serde_error("invalid type: expected a string")
    if value not in allowed:
        raise serde_error(f"unknown variant `{value}`, expected one of "
                          + ", ".join(f"`{v}`" for v in allowed))
    return value


# -- accounts --------------------------------------------------------------------------
def account_encoding(cfg: Mapping[str, Any]) -> str:
    """The config's ``encoding`` for accounts (default ``binary`` as Agave's, -32602 for a
    name Agave does not know — ``json`` included), checked against ``dataSlice``."""
    encoding = _variant(cfg.get("encoding") or "binary", ACCOUNT_ENCODINGS)
    if cfg.get("dataSlice") is not None and encoding == "jsonParsed":
        raise agave_invalid("Sliced account data can only be encoded using binary (base 58) "
                            "or base64 encoding.")
    return encoding


def encode_account(account: Account, encoding: str, data_slice: Optional[Mapping[str, Any]],
                   decimals_of: DecimalsOf) -> JsonObj:
    """Solana's ``UiAccount`` in ``encoding``: ``data`` is ``[text, enc]`` (a bare base58
    string for ``binary``) or, for ``jsonParsed`` of a known account, ``{program, parsed,
    space}`` (base64 for anything else, as Agave). base58 of more than 128 bytes is -32600."""
    raw = bytes(account.data)
    owner = str(account.owner)
    data: Any = None
    if encoding == "jsonParsed":
        data = parse_account(owner, raw, decimals_of)
        if data is None:
            encoding = "base64"
    if data_slice is not None:
        offset, length = _slice(data_slice)
        raw = raw[offset:offset + length]
    if data is None and encoding in ("binary", "base58"):
        if len(raw) > BASE58_LIMIT:
            raise RpcError(INVALID_REQUEST, "Encoded binary (base 58) data should be less than "
                           "128 bytes, please use Base64 encoding.")
        text = base58.b58encode(raw).decode("ascii")
        data = text if encoding == "binary" else [text, "base58"]
    elif data is None and encoding == "base64+zstd":
        packed = zstandard.ZstdCompressor().compress(raw)
        data = [base64.b64encode(packed).decode("ascii"), "base64+zstd"]
    elif data is None:
        data = [base64.b64encode(raw).decode("ascii"), "base64"]
    return {"data": data, "executable": account.executable, "lamports": account.lamports,
            "owner": owner, "rentEpoch": account.rent_epoch, "space": len(account.data)}


def _slice(data_slice: Mapping[str, Any]) -> tuple[int, int]:
    if not isinstance(data_slice, Mapping):
        raise serde_error("invalid type: expected struct UiDataSliceConfig")
    offset, length = data_slice.get("offset"), data_slice.get("length")
    for value in (offset, length):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise serde_error("invalid type: expected usize")
    assert isinstance(offset, int) and isinstance(length, int)
    return offset, length


# -- transactions ----------------------------------------------------------------------
def transaction_encoding(cfg: Mapping[str, Any], default: str = "json") -> str:
    return _variant(cfg.get("encoding") or default, TX_ENCODINGS)


def max_version(cfg: Mapping[str, Any]) -> Optional[int]:
    value = cfg.get("maxSupportedTransactionVersion")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise serde_error("invalid type: expected u8")
    return value


def check_version(record: TxRecord, max_supported: Optional[int]) -> None:
    """Agave's -32015 for a versioned transaction the client did not say it reads."""
    version = record.version
    if version == "legacy":
        return
    if max_supported is None or (isinstance(version, int) and version > max_supported):
        raise RpcError(UNSUPPORTED_TRANSACTION_VERSION,
                       f"Transaction version ({version}) is not supported by the requesting "
                       "client. Please try the request again with the following configuration "
                       f"parameter: \"maxSupportedTransactionVersion\": {version}")


def encode_record(record: TxRecord, encoding: str, max_supported: Optional[int],
                  rewards: bool = True) -> JsonObj:
    """``{transaction, meta, version?}`` of one executed transaction (getTransaction's result
    without slot/blockTime; getBlock's ``full`` entry). ``version`` only when the client
    gave ``maxSupportedTransactionVersion``, as Agave."""
    check_version(record, max_supported)
    meta = dict(record.meta)
    if not rewards:
        meta.pop("rewards", None)
    if encoding == "jsonParsed":
        transaction: Any = _parsed_transaction(record)
        meta["innerInstructions"] = _parsed_inner(record)
        meta.pop("loadedAddresses", None)  # jsonParsed shows them among the account keys
    else:
        transaction = encode_transaction(record.raw, "base58" if encoding == "binary"
                                         else encoding)
        if encoding == "binary":
            transaction = transaction[0]
    out: JsonObj = {"transaction": transaction, "meta": meta}
    if max_supported is not None:
        out["version"] = record.version
    return out


def encode_accounts_only(record: TxRecord, max_supported: Optional[int],
                         rewards: bool = True) -> JsonObj:
    """getBlock's ``transactionDetails: accounts`` entry: signatures, annotated account
    keys and the balance part of the meta."""
    check_version(record, max_supported)
    tx = VersionedTransaction.from_bytes(record.raw)
    meta = {k: record.meta[k] for k in ("err", "status", "fee", "preBalances", "postBalances",
                                         "preTokenBalances", "postTokenBalances")}
    if rewards:
        meta["rewards"] = record.meta.get("rewards", [])
    out: JsonObj = {"transaction": {"signatures": [str(s) for s in tx.signatures],
                                    "accountKeys": _annotated_keys(record, tx)}, "meta": meta}
    if max_supported is not None:
        out["version"] = record.version
    return out


def _annotated_keys(record: TxRecord, tx: VersionedTransaction) -> List[JsonObj]:
    message = tx.message
    out = static_keys_json(message)
    static = message.account_keys
    loaded = record.account_keys[len(static):]
    n_writable = (sum(len(lk.writable_indexes) for lk in message.address_table_lookups)
                  if isinstance(message, MessageV0) else 0)
    out += [{"pubkey": k, "writable": i < n_writable, "signer": False, "source": "lookupTable"}
            for i, k in enumerate(loaded)]
    return out


def _parsed_transaction(record: TxRecord) -> JsonObj:
    tx = VersionedTransaction.from_bytes(record.raw)
    message = tx.message
    keys = list(record.account_keys)
    msg: JsonObj = {"accountKeys": _annotated_keys(record, tx),
                    "recentBlockhash": str(message.recent_blockhash),
                    "instructions": [
                        parse_instruction(keys[ix.program_id_index],
                                          [keys[a] for a in ix.accounts if a < len(keys)],
                                          bytes(ix.data), None)
                        for ix in message.instructions]}
    if isinstance(message, MessageV0):
        msg["addressTableLookups"] = [
            {"accountKey": str(lk.account_key), "writableIndexes": list(lk.writable_indexes),
             "readonlyIndexes": list(lk.readonly_indexes)}
            for lk in message.address_table_lookups]
    return {"signatures": [str(s) for s in tx.signatures], "message": msg}


def _parsed_inner(record: TxRecord) -> List[JsonObj]:
    keys = list(record.account_keys)
    out: List[JsonObj] = []
    for group in record.meta.get("innerInstructions") or []:
        out.append({"index": group["index"], "instructions": [
            parse_instruction(keys[ix["programIdIndex"]],
                              [keys[a] for a in ix["accounts"] if a < len(keys)],
                              base58.b58decode(ix["data"]), ix.get("stackHeight"))
            for ix in group["instructions"]]})
    return out

