"""A bot skeleton whose event loop survives dropped connections.

The embedded local simulator is told to drop the control connection a few times (twice
after a number of frames, twice right after receiving a step). The loop below does not
notice: simsync reconnects, re-attaches and resumes, and every event still arrives exactly
once. The bot funds its wallet with an account override, then sends one transfer per block;
at the end we check that every slot was seen once and every transfer executed once.

Runs against an embedded local simulator by default; pass --url/--api-key for a real one
(then no faults are injected, and the server-side cross-check is skipped).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import sys
from typing import List, Optional

from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

import simsync
from simsync.localsim import Fault, FaultPlan, LocalSimulator

SYSTEM_PROGRAM = "11111111111111111111111111111111"
PAYMENT = 1_000_000          # lamports per transfer (above the rent-exempt minimum)


def payment(bot: Keypair, to: Pubkey, n: int, blockhash: Hash) -> VersionedTransaction:
    """The bot's n-th transfer (the amount makes each signature unique)."""
    ix = transfer(TransferParams(from_pubkey=bot.pubkey(), to_pubkey=to, lamports=PAYMENT + n))
    message = MessageV0.try_compile(bot.pubkey(), [ix], [], blockhash)
    return VersionedTransaction(message, [bot])


def run(client: simsync.Client, sim: Optional[LocalSimulator]) -> None:
    start = client.available_ranges()[0].bundle_start_slot
    bot, recipient = Keypair(), Keypair().pubkey()
    sent: List[str] = []                       # signatures of the bot's transfers
    slots: List[int] = []
    streamed: collections.Counter[str] = collections.Counter()
    funded = False
    with client.start_session(start_slot=start, end_slot=start + 20,
                              disconnect_timeout_secs=900) as session:
        session_id = session.info.session_id
        session.subscribe_transactions([SYSTEM_PROGRAM])
        for event in session.events():         # the whole bot: one loop, no reconnect code
            if isinstance(event, simsync.Slot):
                slots.append(event.slot)
            elif isinstance(event, simsync.Transaction):
                streamed[event.signature] += 1
            elif isinstance(event, simsync.ReadyForContinue):
                overrides, txs = None, []
                if not funded:                   # first pause: fund the bot's wallet
                    overrides = {str(bot.pubkey()): simsync.AccountData.of(
                        b"", SYSTEM_PROGRAM, 10**12)}
                    funded = True
                else:                            # then: pay the recipient once per block
                    expected = PAYMENT * len(sent) + sum(range(len(sent)))
                    held = session.rpc.get_balance(recipient)
                    assert held == expected, f"recipient holds {held}, expected {expected}"
                    blockhash = session.rpc.get_latest_blockhash().blockhash
                    tx = payment(bot, recipient, len(sent), blockhash)
                    sent.append(str(tx.signatures[0]))
                    txs = [tx]
                session.send_continue(advance_count=1, transactions=txs,
                                      modify_account_states=overrides)

    twice = [s for s, n in streamed.items() if n > 1]
    checks = {"each slot seen once, in order": slots == sorted(set(slots)),
              "no transaction streamed twice": not twice,
              "each bot transfer streamed back once": all(streamed[s] == 1 for s in sent)}
    if sim is not None:                        # the server's own record of what it executed
        executed = collections.Counter(tx.signature for tx in sim.executed(session_id))
        checks["slots match the server's"] = slots == sim.produced_slots(start, start + 20)
        checks["each bot transfer executed once"] = all(executed[s] == 1 for s in sent)
        print(f"the control connection was dropped {sim.faults.fired} times")
    print(f"{len(slots)} slots, {sum(streamed.values())} transactions streamed, "
          f"{len(sent)} bot transfers sent")
    for what, ok in checks.items():
        print(f"  {what}: {ok}")
    if not all(checks.values()):
        sys.exit("exactly-once delivery was violated")
    print("exactly once: every slot and every transfer, across every drop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="simulator URL (default: an embedded local simulator)")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATOR_API_KEY"))
    args = parser.parse_args()
    # simsync logs each connection transition at INFO: show them, to watch the reconnects.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  [simsync] %(message)s"))
    logging.getLogger("simsync.transport").addHandler(handler)
    logging.getLogger("simsync.transport").setLevel(logging.INFO)
    config = simsync.ClientConfig(backoff_max=0.5)     # reconnect quickly for the demo
    with contextlib.ExitStack() as stack:
        sim = None
        if args.url is None:
            faults = FaultPlan([Fault("drop", after_frames=15, times=2),
                                Fault("drop", at="after_continue_received", times=2)])
            sim = stack.enter_context(LocalSimulator(faults=faults))
            args.url = sim.url
        run(simsync.Client(args.url, api_key=args.api_key, config=config), sim)


if __name__ == "__main__":
    main()
