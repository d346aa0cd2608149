"""Per-session JSON-RPC over HTTP (PROTOCOL.md §10): :class:`SessionRpc`, ``session.rpc``.

A session's simulated chain answers standard Solana JSON-RPC 2.0 at the session's
``rpc_endpoint`` (``POST http(s)://HOST/backtest/SESSION_ID``), plus the custom
``modifyAccounts``. That endpoint needs no authentication, so the API key is never sent here.
The endpoint stops answering once the session completes or closes: reads belong at a
``readyForContinue`` or ``paused`` pause.

:class:`SessionRpc` is a :class:`simsync.SolanaRpc` (every Agave method, typed) bound to the
session: it fails fast once the session has ended and adds ``modify_accounts``. Every failure
surfaces as :class:`simsync.RpcError` (a JSON-RPC error object, an HTTP error status, a
response that is not JSON-RPC, a timeout, a connection failure, or a session that has ended).
Error messages carry at most a short excerpt of what the server sent and never the request
body.

The HTTP machinery the control client shares (:class:`CallWatch`, :func:`watched_http`,
:func:`timed_request`, :func:`close_http`, ``HTTP_FAILURES``) lives in
:mod:`simsync.solana_rpc` and is importable from here too.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Callable, Optional

from simsync import urls
from simsync.config import ClientConfig
from simsync.rpc_types import base58, to_base64
from simsync.solana_rpc import (
    HTTP_FAILURES,
    CallWatch,
    SolanaRpc,
    close_http,
    timed_request,
    watched_http,
)

__all__ = ["HTTP_FAILURES", "CallWatch", "SessionRpc", "close_http", "timed_request",
           "to_base64", "watched_http"]


def _account_data(value: Any, key: str) -> Any:
    """One ``AccountData`` value of ``modifyAccounts`` as a JSON-ready dict (PROTOCOL.md §6)."""
    if isinstance(value, Mapping):
        return dict(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if all(hasattr(value, a) for a in ("lamports", "data", "owner", "executable")):
        data = bytes(value.data)  # a solders Account, or anything shaped like one
        return {
            "data": {"data": base64.b64encode(data).decode("ascii"), "encoding": "base64"},
            "executable": bool(value.executable),
            "lamports": int(value.lamports),
            "owner": base58(value.owner, f"owner of account {key}"),
            "space": len(data),
        }
    raise TypeError(f"account {key}: expected an AccountData dict, an object with to_dict(), "
                    f"or a solders Account, not {type(value).__name__}")




class SessionRpc(SolanaRpc):
    """The JSON-RPC client of one session's simulated chain (PROTOCOL.md §10): a
    :class:`simsync.SolanaRpc` at the session's endpoint with ``config.rpc_timeout`` as its
    deadline, the session's trust store, proxy and ``rpc_retries`` (see ``SolanaRpc``).

    ``ended``, when given, returns ``None`` while the session is live and a reason string once
    it has completed or closed; from then on every call fails fast with ``RpcError`` without
    sending anything.

    Threads: as ``SolanaRpc`` (any thread; calls serialised; :meth:`close` never waits).
    """

    def __init__(self, url: str, config: ClientConfig,
                 ended: Optional[Callable[[], Optional[str]]] = None) -> None:
        super().__init__(url, config=config)
        self._session_ended = ended

    def _ended(self) -> Optional[str]:
        return self._session_ended() if self._session_ended is not None else None

    def _shown_url(self) -> str:
        # the server's rpc_endpoint: its path names the session, a credential has no place
        return urls.shown(self.url)

    def modify_accounts(self, accounts: Mapping[Any, Any]) -> Any:
        """``modifyAccounts`` (custom): overwrite accounts now; returns the server's ``result``.

        ``accounts`` maps a pubkey (base58 ``str`` or solders ``Pubkey``) to an ``AccountData``
        (PROTOCOL.md §6): a dict sent as is, an object with ``to_dict()``, or a solders
        ``Account``. Sent as ``[{base58: AccountData}]``.
        """
        if not isinstance(accounts, Mapping):
            raise TypeError(f"accounts must be a mapping, not {type(accounts).__name__}")
        payload: dict[str, Any] = {}
        for key, value in accounts.items():
            address = base58(key, "account address")
            payload[address] = _account_data(value, address)
        return self.call("modifyAccounts", [payload])


