"""Per-session Solana JSON-RPC 2.0 (PROTOCOL.md §10) over a session's `Chain`.

`handle_body` turns one HTTP body into the response body; it runs on the event-loop thread
and never blocks on I/O. Unknown or ended sessions are answered at once with code -32002.
Results follow Solana's shapes (``{"context": {"slot": S}, "value": ...}`` where Solana uses it),
so standard Solana clients work against the endpoint.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

from solders.message import from_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from simsync.localsim import rpc_cluster, rpc_ledger, rpc_tokens
from simsync.localsim.accounts import AccountDataError, decode_text, parse_overrides
from simsync.localsim.chain import Chain, TxRecord
from simsync.localsim.encodings import account_encoding, encode_account
from simsync.localsim.jsonrpc import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PREFLIGHT_FAILURE,
    SESSION_ENDED,
    SIGNATURE_VERIFICATION_FAILURE,
    JsonObj,
    RpcError,
    error,
    invalid_params,
    request_id,
    result,
)
from simsync.localsim.rpc_params import agave_invalid, at_most, context_config, required
from simsync.localsim.rpc_params import config as _config
from simsync.localsim.rpc_params import param as _param
from simsync.localsim.rpc_params import pubkey as _pubkey
from simsync.localsim.rpc_tokens import mint_decimals
from simsync.localsim.session import BacktestSession

FEE_PER_SIGNATURE = 5000
MAX_MULTIPLE_ACCOUNTS = 100  # Agave's MAX_MULTIPLE_ACCOUNTS
MAX_SIGNATURE_STATUSES = 256  # MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS
Method = Callable[[BacktestSession, List[Any]], Any]
SessionLookup = Callable[[str], Optional[BacktestSession]]


def handle_body(body: bytes, session_id: str, lookup: SessionLookup) -> Any:
    """The JSON response for one HTTP body (a request object or a batch array)."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return error(None, RpcError(PARSE_ERROR, "Parse error"))
    if isinstance(obj, list):
        if not obj:
            return error(None, RpcError(INVALID_REQUEST, "Invalid request: empty batch"))
        return [handle_one(item, session_id, lookup) for item in obj]
    return handle_one(obj, session_id, lookup)


def handle_one(obj: Any, session_id: str, lookup: SessionLookup) -> JsonObj:
    req_id = request_id(obj)
    try:
        if (not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0"
                or not isinstance(obj.get("method"), str)):
            raise RpcError(INVALID_REQUEST, "Invalid request")
        params = obj.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, list):
            raise invalid_params("params must be an array")
        method = METHODS.get(obj["method"])
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {obj['method']}")
        session = lookup(session_id)
        if session is None:
            raise RpcError(SESSION_ENDED, f"session not found: {session_id}")
        if session.chain.ended:
            raise RpcError(SESSION_ENDED, f"session ended: {session_id} is {session.state}")
        return result(req_id, method(session, params))
    except RpcError as exc:
        return error(req_id, exc)


# -- param helpers -----------------------------------------------------------------------
def _context(chain: Chain, value: Any) -> JsonObj:
    return {"context": {"slot": chain.slot, "apiVersion": "2.2.0"}, "value": value}


def _decode_bytes(text: Any, encoding: str) -> bytes:
    try:
        return decode_text(text, encoding)
    except ValueError as exc:
        raise invalid_params(str(exc)) from None


def _transaction(params: List[Any]) -> VersionedTransaction:
    encoding = _config(params, 1).get("encoding") or "base58"
    raw = _decode_bytes(_param(params, 0), encoding)
    try:
        return VersionedTransaction.from_bytes(raw)
    except Exception as exc:  # solders raises its own error type
        raise invalid_params(f"failed to deserialize transaction: {exc}") from None


def _account_value(chain: Chain, key: Pubkey, config: JsonObj) -> Optional[JsonObj]:
    """The account in the config's encoding (Agave's ``UiAccount``), None when absent."""
    account = chain.account(key)
    if account is None:
        return None
    return encode_account(account, account_encoding(config), config.get("dataSlice"),
                          lambda mint: mint_decimals(chain, mint))


# -- methods -----------------------------------------------------------------------------
def get_slot(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 1)
    context_config(params, 0, session.chain.slot)
    return session.chain.slot


def get_latest_blockhash(session: BacktestSession, params: List[Any]) -> Any:
    chain = session.chain
    at_most(params, 1)
    context_config(params, 0, chain.slot)
    blockhash, last_valid = chain.latest_blockhash()
    return _context(chain, {"blockhash": blockhash, "lastValidBlockHeight": last_valid})


def get_block_height(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 1)
    context_config(params, 0, session.chain.slot)
    return session.chain.block_height


def is_blockhash_valid(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 2)
    blockhash = _param(params, 0)
    if not isinstance(blockhash, str):
        raise invalid_params("expected a blockhash (base58)")
    context_config(params, 1, session.chain.slot)
    return _context(session.chain, session.chain.is_blockhash_valid(blockhash))


def get_account_info(session: BacktestSession, params: List[Any]) -> Any:
    chain = session.chain
    at_most(params, 2)
    key = _pubkey(required(params, 0, "a pubkey"))
    return _context(chain, _account_value(chain, key, context_config(params, 1, chain.slot)))


def get_balance(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 2)
    key = _pubkey(required(params, 0, "a pubkey"))
    context_config(params, 1, session.chain.slot)
    account = session.chain.account(key)
    return _context(session.chain, 0 if account is None else account.lamports)


def get_multiple_accounts(session: BacktestSession, params: List[Any]) -> Any:
    keys = _param(params, 0, [])
    if not isinstance(keys, list):
        raise invalid_params("expected a list of pubkeys")
    if len(keys) > MAX_MULTIPLE_ACCOUNTS:
        raise agave_invalid(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
    chain = session.chain
    config = context_config(params, 1, chain.slot)
    return _context(chain, [_account_value(chain, _pubkey(k), config) for k in keys])


def get_program_accounts(session: BacktestSession, params: List[Any]) -> Any:
    chain = session.chain
    program = _pubkey(required(params, 0, "a program id"))
    config = context_config(params, 1, chain.slot)
    filters = config.get("filters") or []
    out = []
    for key, account in chain.svm.get_program_accounts(program):
        if all(_filter_ok(f, bytes(account.data)) for f in filters):
            value = _account_value(chain, key, config)
            if value is not None:
                out.append({"pubkey": str(key), "account": value})
    return _context(chain, out) if config.get("withContext") else out


def _filter_ok(flt: Any, data: bytes) -> bool:
    if not isinstance(flt, dict):
        raise invalid_params("a filter must be an object")
    if "dataSize" in flt:
        return bool(len(data) == flt["dataSize"])
    memcmp = flt.get("memcmp")
    if isinstance(memcmp, dict):
        offset = int(memcmp.get("offset", 0))
        wanted = _decode_bytes(memcmp.get("bytes"), memcmp.get("encoding") or "base58")
        return data[offset:offset + len(wanted)] == wanted
    raise invalid_params(f"unsupported filter {flt!r}")


def get_fee_for_message(session: BacktestSession, params: List[Any]) -> Any:
    raw = _decode_bytes(_param(params, 0), "base64")
    try:
        message = from_bytes_versioned(raw)
    except Exception as exc:  # solders raises its own error type
        raise invalid_params(f"failed to deserialize message: {exc}") from None
    fee = FEE_PER_SIGNATURE * message.header.num_required_signatures
    return _context(session.chain, fee)


def get_signature_statuses(session: BacktestSession, params: List[Any]) -> Any:
    sigs = _param(params, 0, [])
    if not isinstance(sigs, list):
        raise invalid_params("expected a list of signatures")
    if len(sigs) > MAX_SIGNATURE_STATUSES:
        raise agave_invalid(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
    chain = session.chain
    values: List[Optional[JsonObj]] = []
    for sig in sigs:
        record = chain.record(sig) if isinstance(sig, str) else None
        values.append(None if record is None else {
            "slot": record.slot, "confirmations": None, "err": record.executed.err,
            "status": record.meta["status"], "confirmationStatus": "finalized"})
    return _context(chain, values)


def _signature_failure() -> RpcError:
    return RpcError(SIGNATURE_VERIFICATION_FAILURE,
                    "Transaction signature verification failure")


#: Agave's preflight message for each admission error (``TransactionError`` display text)
_PREFLIGHT_TEXT = {"AlreadyProcessed": "This transaction has already been processed",
                   "BlockhashNotFound": "Blockhash not found"}


def _preflight_failure(err: Any, sim: Optional[JsonObj] = None) -> RpcError:
    data: JsonObj = {"err": err, "logs": [], "accounts": None, "unitsConsumed": 0,
                     "returnData": None, **(sim or {})}
    text = _PREFLIGHT_TEXT.get(err, err) if isinstance(err, str) else err
    return RpcError(PREFLIGHT_FAILURE, f"Transaction simulation failed: {text}", data)


def simulate_transaction(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's simulateTransaction: ``sigVerify`` (default off) verifies the signatures
    (-32003 on failure); the blockhash's age is checked unless ``replaceRecentBlockhash``."""
    tx = _transaction(params)
    chain = session.chain
    config = context_config(params, 1, chain.slot)
    if config.get("sigVerify") and not all(tx.verify_with_results()):
        raise _signature_failure()
    if (not config.get("replaceRecentBlockhash") and not tx.uses_durable_nonce()
            and not chain.is_blockhash_valid(str(tx.message.recent_blockhash))):
        return _context(chain, {"err": "BlockhashNotFound", "logs": [], "accounts": None,
                                "unitsConsumed": 0, "returnData": None})
    return _context(chain, chain.simulate(tx))


def send_transaction(session: BacktestSession, params: List[Any]) -> Any:
    """Execute at once in the slot the session stands at. The preflight (unless
    ``skipPreflight``), as Agave's: signatures verified (-32003), the admission checks and
    a simulation (-32002 with the simulation result as ``data``). Without preflight a
    transaction the runtime refuses is dropped (its signature is answered, no status)."""
    tx = _transaction(params)
    chain = session.chain
    if not context_config(params, 1, chain.slot).get("skipPreflight"):
        if not all(tx.verify_with_results()):
            raise _signature_failure()
        refused = chain.admit(tx, verify=False)
        if refused is not None:
            raise _preflight_failure(refused.err)
        sim = chain.simulate(tx)
        if sim["err"] is not None:
            raise _preflight_failure(sim["err"], sim)
    record = chain.execute(tx, None, "rpc")
    if isinstance(record, TxRecord):
        session.hub.publish(record.slot, record)
    return str(tx.signatures[0])


def get_address_lookup_table(session: BacktestSession, params: List[Any]) -> Any:
    key = _pubkey(_param(params, 0))
    chain = session.chain
    table = chain.lookup_table(key) if chain.account(key) is not None else None
    if table is None:
        return _context(chain, None)
    meta = table.meta
    return _context(chain, {"key": str(key), "state": {
        "deactivationSlot": meta.deactivation_slot, "lastExtendedSlot": meta.last_extended_slot,
        "lastExtendedSlotStartIndex": meta.last_extended_slot_start_index,
        "authority": None if meta.authority is None else str(meta.authority),
        "addresses": [str(a) for a in table.addresses]}})


def modify_accounts(session: BacktestSession, params: List[Any]) -> Any:
    try:
        overrides = parse_overrides(_param(params, 0, {}))
        session.chain.install(overrides)
    except AccountDataError as exc:
        raise invalid_params(f"{exc.variant}: {exc.fields}") from None
    return None


def get_minimum_balance(session: BacktestSession, params: List[Any]) -> Any:
    size = _param(params, 0, 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise invalid_params("expected a data length")
    return session.chain.svm.minimum_balance_for_rent_exemption(size)


def get_health(session: BacktestSession, params: List[Any]) -> Any:
    return "ok"


METHODS: Dict[str, Method] = {
    "getSlot": get_slot,
    "getBlockHeight": get_block_height,
    "getLatestBlockhash": get_latest_blockhash,
    "getAccountInfo": get_account_info,
    "getBalance": get_balance,
    "getMultipleAccounts": get_multiple_accounts,
    "getProgramAccounts": get_program_accounts,
    "getFeeForMessage": get_fee_for_message,
    "getSignatureStatuses": get_signature_statuses,
    "simulateTransaction": simulate_transaction,
    "isBlockhashValid": is_blockhash_valid,
    "sendTransaction": send_transaction,
    "getAddressLookupTable": get_address_lookup_table,
    "modifyAccounts": modify_accounts,
    "getMinimumBalanceForRentExemption": get_minimum_balance,
    "getHealth": get_health,
    **rpc_ledger.METHODS,
    **rpc_cluster.METHODS,
    **rpc_tokens.METHODS,
}
