"""Send your own transaction in a step: fund a fresh keypair with an account override, build a
System transfer with solders against the session's latest blockhash, send it with
``send_continue``, and read its result at the next pause (over RPC) and from the data plane.

Runs against an embedded local simulator by default; pass --url/--api-key for a real one.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from typing import Optional

from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim import LocalSimulator

SYSTEM_PROGRAM = "11111111111111111111111111111111"
FUNDING = 10**9            # lamports the override gives the payer
AMOUNT = 2_000_000         # lamports sent (above the rent-exempt minimum of an empty account)


def first_pause(session: simsync.Session) -> simsync.ReadyForContinue:
    """Wait for the pause after creation: the session stands at its start slot, and nothing
    of that slot has executed yet."""
    for event in session.events():
        if isinstance(event, simsync.ReadyForContinue):
            return event
    raise SystemExit("the session completed before its first pause")


def run(client: simsync.Client) -> None:
    start = client.available_ranges()[0].bundle_start_slot
    payer = Keypair()               # a fresh key: no simulator knows it, the override funds it
    recipient = Keypair().pubkey()
    with client.start_session(start_slot=start, end_slot=start + 10,
                              disconnect_timeout_secs=900) as session:
        session.subscribe_transactions([SYSTEM_PROGRAM])       # before the first step
        first_pause(session)
        slot = session.rpc.get_slot()                  # the slot the next step executes
        blockhash = session.rpc.get_latest_blockhash().blockhash
        message = MessageV0.try_compile(
            payer.pubkey(),
            [transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=recipient,
                                     lamports=AMOUNT))],
            [], blockhash)
        tx = VersionedTransaction(message, [payer])
        signature = str(tx.signatures[0])
        # One step: the override is applied first, then block `slot` runs its historical
        # transactions, then ours. A wallet override needs only lamports (owner: System).
        events = session.continue_until_ready(
            advance_count=1, transactions=[tx],
            modify_account_states={str(payer.pubkey()): {"lamports": FUNDING}}, timeout=60)
        print(f"sent {signature} in the step that executed slot {slot}")

        # At the pause, RPC shows the state after the step, our transaction included.
        status = session.rpc.get_signature_statuses([signature])[0]
        print(f"status at the pause: slot {status and status.slot}, "
              f"err={status and status.err}")
        print(f"recipient holds {session.rpc.get_balance(recipient)} lamports, payer "
              f"{session.rpc.get_balance(payer.pubkey())}")

        # The data plane is another socket: the notification may come before or after the
        # pause. Keep stepping until it is there (or the session ends).
        found: Optional[simsync.Transaction] = next(
            (e for e in events if isinstance(e, simsync.Transaction)
             and e.signature == signature), None)
        event: simsync.Event = events[-1]
        while found is None and not isinstance(event, simsync.Completed):
            if isinstance(event, simsync.ReadyForContinue):
                session.send_continue(advance_count=1)
            event = session.next_event(60)
            if isinstance(event, simsync.Transaction) and event.signature == signature:
                found = event
        if found is None:
            raise SystemExit(f"no notification for {signature}")
        print(f"notification: slot {found.slot}, err={found.err}, "
              f"fee {(found.meta or {}).get('fee')} lamports")


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
