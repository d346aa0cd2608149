"""The SPL Token methods of the per-session JSON-RPC: getTokenAccountBalance,
getTokenAccountsByOwner, getTokenSupply, getTokenLargestAccounts. Event-loop thread.

Accounts are read from the chain's LiteSVM (token accounts of both token programs); amounts
are Agave's ``UiTokenAmount`` and errors its texts ("Invalid param: not a Token account",
"Invalid param: not a v2.0 Token mint", "Invalid param: could not find account").
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple, TypeVar

from solders.pubkey import Pubkey

from simsync.localsim.chain import Chain
from simsync.localsim.encodings import account_encoding, encode_account
from simsync.localsim.jsonrpc import JsonObj
from simsync.localsim.parsed import (
    TOKEN_PROGRAMS,
    MintState,
    mint,
    token_account,
    ui_token_amount,
)
from simsync.localsim.rpc_params import (
    agave_invalid,
    at_most,
    context_config,
    pubkey,
    required,
    serde_error,
)
from simsync.localsim.session import BacktestSession

NUM_LARGEST_ACCOUNTS = 20

S = TypeVar("S")


def _context(chain: Chain, value: Any) -> JsonObj:
    return {"context": {"slot": chain.slot, "apiVersion": "2.2.0"}, "value": value}


def mint_decimals(chain: Chain, key: str) -> Optional[int]:
    """The decimals of the mint at ``key``, None when it is not a mint."""
    account = chain.account(Pubkey.from_string(key))
    if account is None:
        return None
    state = mint(str(account.owner), bytes(account.data))
    return None if state is None else state.decimals


def get_token_account_balance(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 2)
    chain = session.chain
    key = pubkey(required(params, 0, "a token account"))
    context_config(params, 1, chain.slot)
    _, state = _unpacked(chain, key, token_account, "not a Token account")
    decimals = mint_decimals(chain, state.mint)
    if decimals is None:
        raise agave_invalid("Invalid param: mint could not be unpacked")
    return _context(chain, ui_token_amount(state.amount, decimals))


def _unpacked(chain: Chain, key: Pubkey, unpack: Callable[[str, bytes], Optional[S]],
              not_it: str) -> Tuple[str, S]:
    """``(token program, state)`` of the account at ``key`` as ``unpack`` reads it; Agave's
    -32602 "could not find account", or "Invalid param: ``not_it``" when it does not unpack."""
    account = chain.account(key)
    if account is None:
        raise agave_invalid("Invalid param: could not find account")
    state = unpack(str(account.owner), bytes(account.data))
    if state is None:
        raise agave_invalid(f"Invalid param: {not_it}")
    return str(account.owner), state


def _mint(chain: Chain, key: Pubkey) -> Tuple[str, MintState]:
    """``(token program, mint)`` of the mint at ``key``; Agave's -32602 otherwise."""
    return _unpacked(chain, key, mint, "not a v2.0 Token mint")


def get_token_supply(session: BacktestSession, params: List[Any]) -> Any:
    at_most(params, 2)
    chain = session.chain
    key = pubkey(required(params, 0, "a mint"))
    context_config(params, 1, chain.slot)
    _, state = _mint(chain, key)
    return _context(chain, ui_token_amount(state.supply, state.decimals))


def get_token_largest_accounts(session: BacktestSession, params: List[Any]) -> Any:
    """The 20 largest token accounts of a mint: ``[{address, amount, decimals, uiAmount,
    uiAmountString}]``, largest first."""
    at_most(params, 2)
    chain = session.chain
    key = pubkey(required(params, 0, "a mint"))
    context_config(params, 1, chain.slot)
    program, state = _mint(chain, key)
    decimals = state.decimals
    holders = []
    for address, account in chain.svm.get_program_accounts(Pubkey.from_string(program)):
        held = token_account(program, bytes(account.data))
        if held is not None and held.mint == str(key):
            holders.append((held.amount, str(address)))
    holders.sort(key=lambda h: (-h[0], h[1]))
    return _context(chain, [{"address": address, **ui_token_amount(amount, decimals)}
                            for amount, address in holders[:NUM_LARGEST_ACCOUNTS]])


def get_token_accounts_by_owner(session: BacktestSession, params: List[Any]) -> Any:
    """Agave's getTokenAccountsByOwner: ``[{pubkey, account}]`` of the owner's token
    accounts of ``{"mint": m}`` or ``{"programId": p}``, in the config's encoding."""
    at_most(params, 3)
    chain = session.chain
    owner = str(pubkey(required(params, 0, "an owner")))
    flt = required(params, 1, "a mint or programId filter")
    if not isinstance(flt, dict) or len(flt) != 1 or not ({"mint", "programId"} & set(flt)):
        raise serde_error("data did not match any variant of untagged enum "
                          "RpcTokenAccountsFilter")
    cfg = context_config(params, 2, chain.slot)
    encoding = account_encoding(cfg)
    wanted_mint: Optional[str] = None
    if "mint" in flt:
        wanted_mint = str(pubkey(flt["mint"]))
        programs = [_mint(chain, Pubkey.from_string(wanted_mint))[0]]
    else:
        program = str(pubkey(flt["programId"]))
        if program not in TOKEN_PROGRAMS:
            raise agave_invalid("Invalid param: unrecognized Token program id")
        programs = [program]
    out = []
    for program in programs:
        for address, account in chain.svm.get_program_accounts(Pubkey.from_string(program)):
            state = token_account(program, bytes(account.data))
            if state is None or state.owner != owner or (
                    wanted_mint is not None and state.mint != wanted_mint):
                continue
            out.append({"pubkey": str(address), "account": encode_account(
                account, encoding, cfg.get("dataSlice"), lambda m: mint_decimals(chain, m))})
    return _context(chain, out)


METHODS = {
    "getTokenAccountBalance": get_token_account_balance,
    "getTokenAccountsByOwner": get_token_accounts_by_owner,
    "getTokenSupply": get_token_supply,
    "getTokenLargestAccounts": get_token_largest_accounts,
}
