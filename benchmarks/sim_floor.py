"""The floor for the local simulator's speed: its history's transactions driven through LiteSVM
directly, with nothing else (no sockets, no JSON, no sessions).

For a slot range of the simulator's default history (`LocalSimulator()`'s seed and bundle
layout, the one `simsync run` uses without ``--url``) this builds exactly the history's signed
transactions with `simsync.localsim.history.History`'s own builders, and executes them block by
block in one LiteSVM: the genesis accounts installed, the slot warped and the Clock sysvar set
before each produced block, **signature verification on** (LiteSVM's, as Agave has it), the
recent-blockhash window (150 blocks) and the status-cache duplicate check done as
`Chain.admit` does them. It prints the seconds and transactions/s of the build+execute part.

``--check`` (the default) first runs the same range through a `LocalSimulator` in this
process, with one `subscribe_transactions` on every program the history invokes, and asserts
the bytes the simulator served are identical, transaction for transaction and in order, to
the ones this script builds; it prints the count it checked. ``--no-check`` skips it (what
`sim_ratio.py` times: this script as a whole process).

    python benchmarks/sim_floor.py --slots 5000            # check, then the floor
    python benchmarks/sim_floor.py --slots 5000 --no-check # the floor only
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import inspect
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Set, Tuple

from solders.clock import Clock
from solders.litesvm import LiteSVM
from solders.transaction_metadata import FailedTransactionMetadata

from simsync.localsim.accounts import order_for_install
from simsync.localsim.chain import MAX_PROCESSING_AGE, SLOTS_PER_EPOCH
from simsync.localsim.history import MEMO_PROGRAM_ID, SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID, History


def default_history() -> History:
    """The history `LocalSimulator()` builds with its default arguments."""
    from simsync.localsim import LocalSimulator
    params = inspect.signature(LocalSimulator.__init__).parameters
    return History(*(params[name].default
                     for name in ("seed", "first_slot", "bundle_size", "bundles")))


def built_transactions(history: History, start: int, end: int) -> List[Tuple[int, bytes]]:
    """``[(slot, wire bytes)]`` of every historical transaction of ``start..end``, in
    execution order, from the history's own builders."""
    return [(slot, bytes(htx.tx)) for slot in history.produced_slots(start, end)
            for batch in history.block(slot) for htx in batch]


def floor(history: History, start: int, end: int) -> Dict[str, float]:
    """Build, sign and execute ``start..end`` in LiteSVM; the counts and seconds."""
    began = time.perf_counter()
    svm = LiteSVM().with_sigverify(True).with_blockhash_check(False)
    for pubkey, account in order_for_install(history.genesis()):
        svm.set_account(pubkey, account)
    recent: OrderedDict[str, int] = OrderedDict()
    processed: Set[str] = set()
    height = history.block_height(history.first_slot)
    executed = failed = rejected = 0
    for slot in history.produced_slots(start, end):
        # warp as Chain.warp: slot, block height, blockhash window, Clock sysvar
        height = history.block_height(slot) if not recent else height + 1
        svm.warp_to_slot(slot)
        recent[str(history.blockhash(slot))] = height
        while len(recent) > MAX_PROCESSING_AGE + 1:
            recent.popitem(last=False)
        epoch = slot // SLOTS_PER_EPOCH
        svm.set_clock(Clock(slot, history.block_time(epoch * SLOTS_PER_EPOCH), epoch,
                            epoch + 1, history.block_time(slot)))
        for batch in history.block(slot):
            for htx in batch:
                tx = htx.tx
                # Chain.admit's order: signatures (LiteSVM's sigverify, in send_transaction),
                # the blockhash's age, the status cache
                if str(tx.message.recent_blockhash) not in recent:
                    rejected += 1
                    continue
                signature = str(tx.signatures[0])
                if signature in processed:
                    rejected += 1
                    continue
                result = svm.send_transaction(tx)
                processed.add(signature)
                executed += 1
                if isinstance(result, FailedTransactionMetadata):
                    failed += 1
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "executed": executed, "failed": failed, "rejected": rejected}


def served_transactions(history: History, start: int, end: int) -> List[Tuple[int, bytes]]:
    """``[(slot, wire bytes)]`` the local simulator streams for ``start..end`` (every
    program the history invokes subscribed), in arrival order."""
    import simsync
    from simsync.localsim import LocalSimulator
    out: List[Tuple[int, bytes]] = []
    with LocalSimulator(seed=history.seed, first_slot=history.first_slot,
                        bundle_size=history.bundle_size, bundles=history.bundle_count) as sim:
        client = simsync.Client(sim.url)
        with client.start_session(start_slot=start, end_slot=end) as session:
            session.subscribe_transactions([SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID,
                                            MEMO_PROGRAM_ID])
            for event in session.events():
                if isinstance(event, simsync.Transaction):
                    text, encoding = event.transaction
                    assert encoding == "base64", encoding
                    out.append((event.slot, base64.b64decode(text)))
                elif isinstance(event, simsync.ReadyForContinue):
                    session.send_continue(advance_count=100)
                elif isinstance(event, simsync.Completed):
                    break
    return out


def check(history: History, start: int, end: int) -> int:
    """Assert the simulator serves exactly the bytes `built_transactions` builds; the count."""
    built = built_transactions(history, start, end)
    served = served_transactions(history, start, end)
    if served != built:
        first = next((i for i, (a, b) in enumerate(zip(served, built)) if a != b),
                     min(len(served), len(built)))
        raise SystemExit(f"MISMATCH: the simulator served {len(served)} transactions, this "
                         f"script built {len(built)}; first difference at index {first}")
    return len(built)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=5000, help="slots from the history's "
                        "first (default: 5000)")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="first assert byte-identity with what the simulator serves "
                        "(default: on)")
    args = parser.parse_args()
    history = default_history()
    start = history.first_slot
    end = start + args.slots - 1
    if args.check:
        count = check(history, start, end)
        digest = hashlib.sha256(b"".join(raw for _, raw in
                                         built_transactions(history, start, end))).hexdigest()
        print(f"checked: {count} transactions of slots {start}-{end} byte-identical to what "
              f"the local simulator serves (sha256 of all {digest[:16]}...)")
        history = default_history()   # a fresh one: the floor builds and signs from nothing
    figures = floor(history, start, end)
    print(f"floor: slots {start}-{end}, {figures['executed']:.0f} transactions executed "
          f"({figures['failed']:.0f} failed, {figures['rejected']:.0f} rejected) in "
          f"{figures['seconds']:.3f} s build+sign+execute "
          f"({figures['executed'] / figures['seconds']:,.0f} tx/s), LiteSVM sigverify on")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
