"""Program override: replay the same slots twice, once as history ran them and once with a
program replaced by another build, then compare the two runs transaction by transaction.

By default the SPL Token program is replaced with the SPL Memo program's ELF (taken from
solders' LiteSVM), so every historical token transfer fails: each one shows up as a regression.
Pass --program-id/--program-so to try your own build.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from typing import Dict, Optional

from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

import simsync
from simsync.localsim import MEMO_PROGRAM_ID, TOKEN_PROGRAM_ID, LocalSimulator


def replay(client: simsync.Client, start: int, end: int, program: str,
           elf: Optional[bytes]) -> Dict[str, object]:
    """Run start..end; return {signature: error or None} for every transaction of `program`."""
    outcome: Dict[str, object] = {}
    with client.start_session(start_slot=start, end_slot=end,
                              disconnect_timeout_secs=900) as session:
        session.subscribe_transactions([program])
        first_step = True
        for event in session.events():
            if isinstance(event, simsync.Transaction):
                outcome[event.signature] = (event.meta or {}).get("err")
            elif isinstance(event, simsync.ReadyForContinue):
                overrides = None
                if first_step and elf is not None:
                    # The account states that install `elf` at `program` (ProgramData of the
                    # upgradeable loader); they apply before the first block executes.
                    overrides = session.modify_program(program, elf)
                first_step = False
                session.send_continue(advance_count=10, modify_account_states=overrides)
    return outcome


def run(client: simsync.Client, program: str, elf: bytes) -> None:
    start = client.available_ranges()[0].bundle_start_slot
    end = start + 30
    baseline = replay(client, start, end, program, None)
    modified = replay(client, start, end, program, elf)
    for name, runs in (("baseline", baseline), ("override", modified)):
        ok = sum(1 for err in runs.values() if err is None)
        print(f"{name}: {ok} of {len(runs)} transactions of {program} succeeded")
    regressions = [s for s in baseline if baseline[s] is None and modified.get(s) is not None]
    improvements = [s for s in baseline if baseline[s] is not None and modified.get(s) is None]
    print(f"regressions: {len(regressions)}, improvements: {len(improvements)}")
    for signature in regressions[:3]:
        print(f"  {signature} now fails: {modified[signature]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="simulator URL (default: an embedded local simulator)")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATOR_API_KEY"))
    parser.add_argument("--program-id", default=TOKEN_PROGRAM_ID, help="program to replace")
    parser.add_argument("--program-so", help="ELF to install (default: the SPL Memo ELF)")
    args = parser.parse_args()
    if args.program_so:
        with open(args.program_so, "rb") as source:
            elf = source.read()
    else:   # LiteSVM ships real SBF programs: borrow the Memo program's ELF
        elf = bytes(LiteSVM().get_account(Pubkey.from_string(MEMO_PROGRAM_ID)).data)
    with contextlib.ExitStack() as stack:
        if args.url is None:     # no service at hand: run a local simulator for this script
            args.url = stack.enter_context(LocalSimulator()).url
        run(simsync.Client(args.url, api_key=args.api_key), args.program_id, elf)


if __name__ == "__main__":
    main()
