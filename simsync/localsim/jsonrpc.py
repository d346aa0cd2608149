"""JSON-RPC 2.0 envelopes and error codes shared by the per-session RPC and PubSub. Pure."""
from __future__ import annotations

from typing import Any, Dict, Optional

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SESSION_ENDED = -32002
PREFLIGHT_FAILURE = -32002  # Agave: "Transaction simulation failed: …" (sendTransaction)
SIGNATURE_VERIFICATION_FAILURE = -32003  # Agave: "Transaction signature verification failure"
BLOCK_CLEANED_UP = -32001  # Agave: "Block {slot} cleaned up, does not exist on node. ..."
BLOCK_NOT_AVAILABLE = -32004  # Agave: "Block not available for slot {slot}"
SLOT_SKIPPED = -32007  # Agave: "Slot {slot} was skipped, or missing due to ledger jump to ..."
UNSUPPORTED_TRANSACTION_VERSION = -32015  # a v0 transaction without maxSupportedTransactionVersion
MIN_CONTEXT_SLOT_NOT_REACHED = -32016  # Agave: "Minimum context slot has not been reached"

JsonObj = Dict[str, Any]


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> JsonObj:
        out: JsonObj = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {message}")


def result(req_id: Any, value: Any) -> JsonObj:
    return {"jsonrpc": "2.0", "result": value, "id": req_id}


def error(req_id: Any, err: RpcError) -> JsonObj:
    return {"jsonrpc": "2.0", "error": err.to_json(), "id": req_id}


def notification(method: str, params: Any) -> JsonObj:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def request_id(obj: Any) -> Optional[Any]:
    """The request's id when it is a valid one (string, number or null)."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return value
    return None
