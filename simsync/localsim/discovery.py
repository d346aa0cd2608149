"""Discovery filters (PROTOCOL.md §5 ``discoveries``) matched against planned batches. Pure.

* ``{"programExecuted": ID}`` matches a transaction whose top-level instructions invoke ``ID``.
* ``{"oracleUpdate": {"programs": [...], "accounts": [...]}}`` matches a transaction that invokes
  one of ``programs`` (any program when the list is empty or absent) and references one of
  ``accounts`` (any account when empty or absent). In the synthetic history an oracle update is a
  System transfer into `simsync.localsim.history.ORACLE_ACCOUNT`.

Filters of any other shape are kept (and echoed nowhere) but never match.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from simsync.localsim.history import TxPlan

Filter = Dict[str, Any]


def parse_filters(value: Any) -> List[Filter]:
    if not isinstance(value, list):
        return []
    return [f for f in value if isinstance(f, dict)]


def _strings(value: Any) -> List[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def matches(flt: Filter, plan: TxPlan) -> bool:
    program = flt.get("programExecuted")
    if isinstance(program, str):
        return program in plan.program_ids
    oracle = flt.get("oracleUpdate")
    if isinstance(oracle, dict):
        programs, accounts = _strings(oracle.get("programs")), _strings(oracle.get("accounts"))
        if not programs and not accounts:
            return False
        return ((not programs or any(p in plan.program_ids for p in programs)) and
                (not accounts or any(a in plan.account_keys for a in accounts)))
    return False


def matched_filters(filters: Sequence[Filter], plans: Sequence[TxPlan]) -> List[Filter]:
    """The filters that at least one of ``plans`` matches, in filter order."""
    return [f for f in filters if any(matches(f, p) for p in plans)]
