"""What ``summarize``/``compare`` print from run output files (the document itself, its
collector, ``load`` and ``write`` live in ``simsync.runoutput``). Pure functions.
"""
from __future__ import annotations

import json
from typing import Dict, List, Sequence, Tuple

from simsync.runoutput import KEYS_DECODABLE, Json, load, totals, write

__all__ = ["KEYS_DECODABLE", "Json", "compare", "coverage_differences", "load", "net_changes",
           "net_token_changes", "summarize", "token_changes_measured", "totals", "write"]

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


def net_token_changes(doc: Json) -> Dict[Tuple[str, str], int]:
    """Sum of ``token_changes`` per (account, mint) over the whole file."""
    out: Dict[Tuple[str, str], int] = {}
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


ACCOUNT_COLUMNS = ("account", "net_lamports", "transactions")
OUTCOME_COLUMNS = ("signature", "slot", "base_success", "exp_success", "change")


def account_rows(doc: Json, accounts: Sequence[str]) -> List[Json]:
    """``summarize --csv``: per account (``accounts``, else every one that changed, largest
    change first) its net lamport change and how many transactions changed it."""
    net = net_changes(doc)
    touched: Dict[str, int] = {}
    for record in doc["transactions"]:
        for account, delta in (record.get("sol_changes") or {}).items():
            if delta:
                touched[account] = touched.get(account, 0) + 1
    chosen = list(accounts) or sorted(net, key=lambda a: (-abs(net[a]), a))
    return [{"account": a, "net_lamports": net.get(a, 0), "transactions": touched.get(a, 0)}
            for a in chosen]


def summary_data(doc: Json, accounts: Sequence[str]) -> Json:
    """``summarize --json``: the metadata, the totals and ``account_rows``."""
    return {"metadata": _metadata(doc), "summary": totals(doc["transactions"]),
            "accounts": account_rows(doc, accounts)}


def outcome_rows(base: Json, exp: Json) -> List[Json]:
    """``compare --csv``: each signature in both files, its outcomes and the change."""
    exp_by = {r["signature"]: r for r in exp["transactions"]}
    rows = []
    for record in base["transactions"]:
        other = exp_by.get(record["signature"])
        if other is None:
            continue
        pair = (record["success"], other["success"])
        change = {(True, False): "regression", (False, True): "improvement"}.get(pair, "same")
        rows.append({"signature": record["signature"], "slot": record.get("slot"),
                     "base_success": pair[0], "exp_success": pair[1], "change": change})
    return rows


def compare_data(base: Json, exp: Json) -> Json:
    """``compare --json``: counts, the regressions and improvements, per-account lamport
    differences, and token differences (None when not measured)."""
    rows = outcome_rows(base, exp)
    base_net, exp_net = net_changes(base), net_changes(exp)
    balances = [{"account": a, "base": base_net.get(a, 0), "exp": exp_net.get(a, 0),
                 "diff": exp_net.get(a, 0) - base_net.get(a, 0)}
                for a in sorted(set(base_net) | set(exp_net))
                if base_net.get(a, 0) != exp_net.get(a, 0)]
    tokens = None
    if token_changes_measured(base) and token_changes_measured(exp):
        base_tok, exp_tok = net_token_changes(base), net_token_changes(exp)
        tokens = [{"owner": o, "mint": m, "base": base_tok.get((o, m), 0),
                   "exp": exp_tok.get((o, m), 0),
                   "diff": exp_tok.get((o, m), 0) - base_tok.get((o, m), 0)}
                  for o, m in sorted(set(base_tok) | set(exp_tok))
                  if base_tok.get((o, m), 0) != exp_tok.get((o, m), 0)]
    return {"in_both": len(rows), "only_in_base": len(base["transactions"]) - len(rows),
            "only_in_exp": len(exp["transactions"]) - len(rows),
            "regressions": [r for r in rows if r["change"] == "regression"],
            "improvements": [r for r in rows if r["change"] == "improvement"],
            "balance_differences": balances, "token_differences": tokens}


def _metadata(doc: Json) -> Json:
    meta = doc.get("metadata")
    return meta if isinstance(meta, dict) else {}


def coverage_differences(base: Json, exp: Json) -> List[str]:
    """What makes two output files incomparable: a different ``metadata.program_id`` or slot
    range (``start_slot``-``end_slot``), as ``"program X (BASE) vs Y (EXP)"`` phrases. A
    field missing from either file's metadata is not compared. Empty when they match."""
    b, e = _metadata(base), _metadata(exp)
    out = []
    if None not in (b.get("program_id"), e.get("program_id")) \
            and b["program_id"] != e["program_id"]:
        out.append(f"program {b['program_id']} (BASE) vs {e['program_id']} (EXP)")
    slots = [(m.get("start_slot"), m.get("end_slot")) for m in (b, e)]
    if None not in slots[0] + slots[1] and slots[0] != slots[1]:
        out.append(f"slots {slots[0][0]}-{slots[0][1]} (BASE) vs "
                   f"{slots[1][0]}-{slots[1][1]} (EXP)")
    return out


def token_changes_measured(doc: Json) -> bool:
    """False when the file says its token changes were not measured (no token balances in
    the transaction meta and no ``account-diff`` subscription); True otherwise (files
    without the flag, such as the service CLI's, are taken as measured)."""
    return _metadata(doc).get("token_changes_measured") is not False


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
        unmeasured = [name for name, doc in (("BASE", base), ("EXP", exp))
                      if not token_changes_measured(doc)]
        if unmeasured:
            lines.append(f"token balance differences: not measured ({' and '.join(unmeasured)} "
                         "ran without token balances in the transaction meta and without "
                         "--subscriptions transactions,account-diff)")
            return lines
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
