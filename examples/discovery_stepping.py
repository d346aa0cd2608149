"""Discovery stepping: stop just before the next batch that runs a program, look at the frozen
state, and simulate that batch's transaction against it before it executes.

Runs against an embedded local simulator by default; pass --url/--api-key for a real one.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import os
from typing import Any, Optional

from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim import DISCOVERY_PROGRAM_ID, LocalSimulator


def wire_bytes(item: Any) -> bytes:
    """A transaction of a discovery batch: base64, bare or as {"data": ..., "encoding": ...}."""
    return base64.b64decode(item["data"] if isinstance(item, dict) else item)


def first_pause(session: simsync.Session) -> Optional[simsync.DiscoveryBatch]:
    """Wait for the first pause; return a discovery the server announced on the way there."""
    announced = None
    for event in session.events():
        if isinstance(event, simsync.DiscoveryBatch):
            announced = event
        elif isinstance(event, simsync.ReadyForContinue):
            return announced
    return None


def run(client: simsync.Client, program: str) -> None:
    start = client.available_ranges()[0].bundle_start_slot
    # A discovery filter: the server tells us ahead of time about every upcoming batch that
    # executes `program` (a DiscoveryBatch event), so we can stop right before it.
    with client.start_session(start_slot=start, end_slot=start + 30,
                              disconnect_timeout_secs=900,
                              discoveries=[{"programExecuted": program}]) as session:
        batch = first_pause(session)
        if batch is None:
            # Step block by block until a batch is announced, then continueTo it: returns
            # with the session paused just before that batch (or Completed if none came).
            events = session.advance_to_discovery(timeout=60)
            batch = next((e for e in events if isinstance(e, simsync.DiscoveryBatch)), None)
        else:
            # Announced before the first pause already: go straight to it.
            session.send_continue_to(batch.slot, batch.batch_index)
            while not isinstance(session.next_event(60), simsync.Paused):
                pass
        if batch is None:
            print(f"no batch ran {program} in this range")
            return
        print(f"paused before batch {batch.batch_index} of slot {batch.slot} "
              f"({len(batch.transactions)} matching transaction(s))")

        # The state is frozen just before the batch: read it over JSON-RPC ...
        tx = VersionedTransaction.from_bytes(wire_bytes(batch.transactions[0]))
        payer = str(tx.message.account_keys[0])
        print(f"state at the pause: slot {session.rpc.get_slot()}, "
              f"fee payer {payer} holds {session.rpc.get_balance(payer)} lamports")
        # ... and ask what the upcoming transaction would do right now (nothing is changed).
        result = session.rpc.simulate_transaction(tx, sig_verify=False,
                                                  replace_recent_blockhash=True)
        print(f"simulated {tx.signatures[0]}: err={result.err}, "
              f"{result.units_consumed} compute units")
        for line in result.logs or []:
            print(f"  log: {line}")

        # Execute the batch and the rest of its block, then stop early: closing mid-range is fine.
        session.continue_until_ready(advance_count=1, timeout=60)
        print(f"after the batch: fee payer holds {session.rpc.get_balance(payer)} lamports")
    print("session closed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="simulator URL (default: an embedded local simulator)")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATOR_API_KEY"))
    parser.add_argument("--program-id", default=DISCOVERY_PROGRAM_ID,
                        help="program to stop before (default: SPL Memo)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.url is None:     # no service at hand: run a local simulator for this script
            args.url = stack.enter_context(LocalSimulator()).url
        run(simsync.Client(args.url, api_key=args.api_key), args.program_id)


if __name__ == "__main__":
    main()
