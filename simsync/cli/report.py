"""The run output file (the service CLI's JSON format) and what ``summarize``/``compare`` print.

File layout (interchangeable with the service's own CLI)::

    {"metadata": {"start_slot", "end_slot", "program_id", "session_ids", "timestamp"},
     "transactions": [{"slot", "signature", "success", "error", "logs",
                       "sol_changes": {pubkey: lamports delta},
                       "token_changes": {pubkey: {mint: raw amount delta}},
                       "account_diffs": {pubkey: {"before": account, "after": account}}}],
     "summary": {"total", "successes", "failures"}}

Account keys come from the wire transaction (decoded with solders). Without solders the
changes are keyed by account index ("0", "1", ...). Pure functions; no I/O but ``load``/``write``.
"""
from __future__ import annotations

import base64
import datetime
import json
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

Json = Dict[str, Any]

_decode: Optional[Callable[[bytes], Any]]
try:  # the 'local' extra; without it sol_changes are keyed by account index
    from solders.transaction import VersionedTransaction

    _decode = VersionedTransaction.from_bytes
except ImportError:  # pragma: no cover - depends on the installed extras
    _decode = None

KEYS_DECODABLE = _decode is not None


# ----------------------------------------------------------------------------- building


def account_keys(transaction: Any, meta: Optional[Json]) -> Optional[List[str]]:
    """The transaction's account keys in Solana's order (static keys, then the addresses
    loaded from lookup tables), or None when they cannot be decoded."""
    keys: Optional[List[str]] = None
    if isinstance(transaction, (list, tuple)) and transaction and isinstance(transaction[0], str):
        transaction = transaction[0]
    if isinstance(transaction, str) and _decode is not None:
        try:
            decoded = _decode(base64.b64decode(transaction))
            keys = [str(key) for key in decoded.message.account_keys]
        except Exception:  # noqa: BLE001 - solders raises its own types; fall back to indices
            keys = None
    elif isinstance(transaction, dict):  # a "json"-encoded transaction
        listed = (transaction.get("message") or {}).get("accountKeys")
        if isinstance(listed, list):
            keys = [str(k.get("pubkey")) if isinstance(k, dict) else str(k) for k in listed]
    loaded = (meta or {}).get("loadedAddresses") or {}
    if keys is not None and isinstance(loaded, dict):
        keys += [str(k) for k in (loaded.get("writable") or []) + (loaded.get("readonly") or [])]
    return keys


def _key(keys: Optional[List[str]], index: int) -> str:
    return keys[index] if keys is not None and index < len(keys) else str(index)


def _token_amounts(balances: Any) -> Dict[tuple[int, str], int]:
    out: Dict[tuple[int, str], int] = {}
    for entry in balances or []:
        try:
            amount = int((entry.get("uiTokenAmount") or {}).get("amount", 0))
            out[(int(entry["accountIndex"]), str(entry["mint"]))] = amount
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return out


def transaction_record(slot: int, signature: str, transaction: Any, meta: Optional[Json]) -> Json:
    """One entry of ``transactions`` (without ``account_diffs``) from a Transaction event."""
    meta = meta or {}
    keys = account_keys(transaction, meta)
    sol: Dict[str, int] = {}
    for index, (pre, post) in enumerate(zip(meta.get("preBalances") or [],
                                            meta.get("postBalances") or [])):
        if post != pre:
            sol[_key(keys, index)] = sol.get(_key(keys, index), 0) + int(post) - int(pre)
    tokens: Dict[str, Dict[str, int]] = {}
    pre_tokens = _token_amounts(meta.get("preTokenBalances"))
    post_tokens = _token_amounts(meta.get("postTokenBalances"))
    for index, mint in sorted(set(pre_tokens) | set(post_tokens)):
        delta = post_tokens.get((index, mint), 0) - pre_tokens.get((index, mint), 0)
        if delta:
            tokens.setdefault(_key(keys, index), {})[mint] = delta
    error = meta.get("err")
    return {"slot": slot, "signature": signature, "success": (error is None) if meta else None,
            "error": error, "logs": list(meta.get("logMessages") or []),
            "sol_changes": sol, "token_changes": tokens}


class Collector:
    """Gathers ``Transaction`` and ``AccountDiff`` events into file entries (one per
    signature; diffs joined to their transaction by signature)."""

    def __init__(self) -> None:
        self._records: Dict[str, Json] = {}
        self._diffs: Dict[str, Dict[str, Json]] = {}
        self._diff_slots: Dict[str, int] = {}
        self.diff_count = 0

    def transaction(self, event: Any) -> None:
        record = transaction_record(event.slot, event.signature, event.transaction, event.meta)
        self._records.setdefault(event.signature, record)

    def diff(self, event: Any) -> None:
        self.diff_count += 1
        self._diffs.setdefault(event.signature, {})[event.account] = {
            "before": event.pre, "after": event.post}
        self._diff_slots.setdefault(event.signature, event.slot)

    def records(self) -> List[Json]:
        """Every entry, in slot order (arrival order within a slot). A signature seen only
        in diffs gets ``success: null`` and lamport changes computed from its diffs."""
        out = []
        for signature, record in self._records.items():
            out.append({**record, "account_diffs": self._diffs.get(signature, {})})
        for signature, diffs in self._diffs.items():
            if signature not in self._records:
                sol = {account: _lamports(d["after"]) - _lamports(d["before"])
                       for account, d in diffs.items()}
                out.append({"slot": self._diff_slots[signature], "signature": signature,
                            "success": None, "error": None, "logs": [],
                            "sol_changes": {k: v for k, v in sol.items() if v},
                            "token_changes": {}, "account_diffs": diffs})
        return sorted(out, key=lambda r: r["slot"])


def _lamports(account: Optional[Json]) -> int:
    return int((account or {}).get("lamports") or 0)


def document(records: List[Json], start_slot: int, end_slot: int, program_id: Optional[str],
             session_ids: Sequence[str]) -> Json:
    """The whole output file."""
    stamp = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {"metadata": {"start_slot": start_slot, "end_slot": end_slot,
                         "program_id": program_id, "session_ids": list(session_ids),
                         "timestamp": stamp.isoformat().replace("+00:00", "Z")},
            "transactions": records, "summary": totals(records)}


def totals(records: Iterable[Json]) -> Json:
    records = list(records)
    return {"total": len(records),
            "successes": sum(1 for r in records if r.get("success") is True),
            "failures": sum(1 for r in records if r.get("success") is False)}


def write(doc: Json, path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=1)
        out.write("\n")


def load(path: str) -> Json:
    """Read an output file (ours or the service CLI's); ValueError when it is not one."""
    with open(path, encoding="utf-8") as source:
        try:
            doc = json.load(source)
        except ValueError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("transactions"), list):
        raise ValueError(f"{path} is not a backtest output file (no 'transactions' list)")
    for record in doc["transactions"]:
        if not isinstance(record, dict) or "signature" not in record:
            raise ValueError(f"{path}: a transaction entry has no signature")
        if "success" not in record:
            record["success"] = record.get("error") is None
    return doc


# ----------------------------------------------------------------------------- reading


def _signed(value: int) -> str:
    return f"{value:+,d}"


def net_changes(doc: Json) -> Dict[str, int]:
    """Sum of ``sol_changes`` per account over the whole file."""
    out: Dict[str, int] = {}
    for record in doc["transactions"]:
        for account, delta in (record.get("sol_changes") or {}).items():
            out[account] = out.get(account, 0) + int(delta)
    return out


def net_token_changes(doc: Json) -> Dict[tuple[str, str], int]:
    """Sum of ``token_changes`` per (account, mint) over the whole file."""
    out: Dict[tuple[str, str], int] = {}
    for record in doc["transactions"]:
        for account, mints in (record.get("token_changes") or {}).items():
            for mint, delta in (mints or {}).items():
                out[(account, mint)] = out.get((account, mint), 0) + int(delta)
    return out


def summarize(doc: Json, accounts: Sequence[str], top: int = 5) -> List[str]:
    """Metadata, totals, and the lamport trace of ``accounts`` (else the top movers)."""
    meta = doc.get("metadata") or {}
    count = totals(doc["transactions"])
    lines = [f"range:        {meta.get('start_slot')}-{meta.get('end_slot')}",
             f"program:      {meta.get('program_id')}",
             f"sessions:     {', '.join(map(str, meta.get('session_ids') or [])) or '-'}",
             f"timestamp:    {meta.get('timestamp')}",
             f"transactions: {count['total']} ({count['successes']} succeeded, "
             f"{count['failures']} failed)"]
    net = net_changes(doc)
    if not accounts:
        movers = sorted(net.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:top]
        lines.append(f"largest net lamport changes (top {top}; --accounts to trace one):")
        lines += [f"  {account}  {_signed(delta)}" for account, delta in movers]
    for account in accounts:
        lines.append(f"account {account}:")
        running = 0
        for record in doc["transactions"]:
            delta = (record.get("sol_changes") or {}).get(account)
            if delta:
                running += int(delta)
                state = {True: "ok", False: "FAILED"}.get(record.get("success"), "outcome unknown")
                lines.append(f"  slot {record.get('slot')}  {record['signature']}  "
                             f"{_signed(int(delta))}  (net {_signed(running)}, {state})")
        lines.append(f"  net change: {_signed(net.get(account, 0))} lamports")
    return lines


def compare(base: Json, exp: Json, what: str = "all") -> List[str]:
    """Regressions and improvements by signature, and per-account balance differences."""
    base_by = {r["signature"]: r for r in base["transactions"]}
    exp_by = {r["signature"]: r for r in exp["transactions"]}
    common = [s for s in base_by if s in exp_by]
    lines = [f"transactions: {len(common)} in both, {len(base_by) - len(common)} only in BASE, "
             f"{len(exp_by) - len(common)} only in EXP"]
    if what in ("regressions", "all"):
        outcomes = {s: (base_by[s]["success"], exp_by[s]["success"]) for s in common}
        regressions = [s for s, pair in outcomes.items() if pair == (True, False)]
        improvements = [s for s, pair in outcomes.items() if pair == (False, True)]
        lines.append(f"regressions (succeeded in BASE, fail in EXP): {len(regressions)}")
        lines += [f"  slot {exp_by[s].get('slot')}  {s}  error: "
                  f"{json.dumps(exp_by[s].get('error'))}" for s in regressions]
        lines.append(f"improvements (failed in BASE, succeed in EXP): {len(improvements)}")
        lines += [f"  slot {base_by[s].get('slot')}  {s}  was: "
                  f"{json.dumps(base_by[s].get('error'))}" for s in improvements]
    if what in ("balances", "all"):
        base_net, exp_net = net_changes(base), net_changes(exp)
        differ = sorted(a for a in set(base_net) | set(exp_net)
                        if base_net.get(a, 0) != exp_net.get(a, 0))
        lines.append(f"balance differences (sum of sol_changes, lamports): {len(differ)} "
                     "accounts")
        for account in differ:
            b, e = base_net.get(account, 0), exp_net.get(account, 0)
            lines.append(f"  {account}  BASE {_signed(b)}  EXP {_signed(e)}  "
                         f"diff {_signed(e - b)}")
        base_tok, exp_tok = net_token_changes(base), net_token_changes(exp)
        tok_differ = sorted(k for k in set(base_tok) | set(exp_tok)
                            if base_tok.get(k, 0) != exp_tok.get(k, 0))
        lines.append(f"token balance differences (sum of token_changes): {len(tok_differ)} "
                     "accounts")
        for account, mint in tok_differ:
            b, e = base_tok.get((account, mint), 0), exp_tok.get((account, mint), 0)
            lines.append(f"  {account}  mint {mint}  BASE {_signed(b)}  EXP {_signed(e)}  "
                         f"diff {_signed(e - b)}")
    return lines
