"""Quickstart: create a session, step through it, read chain state at a pause, close.

Runs against an embedded local simulator by default; pass --url/--api-key for a real one.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import os

from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim import LocalSimulator

SYSTEM_PROGRAM = "11111111111111111111111111111111"


def fee_payer(event: simsync.Transaction) -> str:
    """The first account key of a streamed transaction (it arrives as [base64, "base64"])."""
    tx = VersionedTransaction.from_bytes(base64.b64decode(event.transaction[0]))
    return str(tx.message.account_keys[0])


def run(client: simsync.Client) -> None:
    # Ask the service which slot ranges it can replay; take the first ten slots of the first.
    start = client.available_ranges()[0].bundle_start_slot
    # start_session blocks until the server has created the session. The detach window lets
    # simsync reconnect and resume if the connection drops; the summary comes with Completed.
    with client.start_session(start_slot=start, end_slot=start + 10,
                              disconnect_timeout_secs=900, send_summary=True) as session:
        print(f"session {session.info.session_id} created for slots {start}-{start + 10}")
        # Stream every transaction that invokes the System program (subscribe before stepping).
        session.subscribe_transactions([SYSTEM_PROGRAM])
        watched = None       # an account to read at each pause: the first fee payer we see
        transactions = 0
        for event in session.events():                # every event, in order, exactly once
            if isinstance(event, simsync.Transaction):
                transactions += 1
                watched = watched or fee_payer(event)
            elif isinstance(event, simsync.ReadyForContinue):
                # The session is paused: its state is frozen and readable over JSON-RPC.
                line = f"paused at slot {session.rpc.get_slot()}"
                if watched:
                    line += f"; {watched} holds {session.rpc.get_balance(watched)} lamports"
                print(line)
                session.send_continue(advance_count=1)   # execute the next block
            elif isinstance(event, simsync.Completed):
                print(f"completed: {transactions} System transactions streamed; "
                      f"server summary: {event.summary}")
    # Leaving the with-block closed the session (close() is idempotent and bounded).
    print("session closed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="simulator URL (default: an embedded local simulator)")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATOR_API_KEY"))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.url is None:     # no service at hand: run a local simulator for this script
            args.url = stack.enter_context(LocalSimulator()).url
        run(simsync.Client(args.url, api_key=args.api_key))


if __name__ == "__main__":
    main()
