"""How fast is ``simsync.protocol.decode_response`` next to plain ``json.loads``?

Run: ``python benchmarks/decode.py [--repeat R] [--number N]``

For each payload it times, on the very same text:

* ``json.loads(frame)`` (the floor: every decoder parses the JSON first),
* ``decode_response(frame)`` (simsync's hot path), and the ratio of the two,
* for information, ``json.loads`` + dataclasses-json's generic ``from_dict`` of the params
  (the slow path the codec deliberately avoids).

Each figure is the best (minimum) per-call time over ``--repeat`` runs of ``--number`` calls
(``timeit`` convention: the minimum is the least noisy estimate; the median is printed too).
Target (issue 25): decode <= 1.0 x json.loads on every payload, the worst included.
"""
from __future__ import annotations

import argparse
import base64
import json
import platform
import random
import statistics
import sys
import timeit
from functools import partial
from typing import Any, Callable, Dict, List, Tuple

import base58

import simsync
from simsync.protocol import ReadyForContinue, Slot, Transaction, decode_response

TARGET_RATIO = 1.0


def _b58(rng: random.Random, size: int = 32) -> str:
    return base58.b58encode(bytes(rng.getrandbits(8) for _ in range(size))).decode("ascii")


def transaction_frame(seed: int = 7) -> str:
    """A realistic ~4 KB ``transactionNotification``: a ~1.2 KB base64 transaction, a meta
    with ~30 log lines, pre/post balances and token balances."""
    rng = random.Random(seed)
    keys = [_b58(rng) for _ in range(10)]
    programs = ["ComputeBudget111111111111111111111111111111",
                "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4",
                "whirLbMiicVdio4qvUfM5KAg6Ct8VwpYzGff3uctyCc",
                "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"]
    raw_tx = bytes([1]) + bytes(rng.getrandbits(8) for _ in range(900))
    logs: List[str] = []
    for depth, program in enumerate(programs * 3):
        logs.append(f"Program {program} invoke [{depth % 3 + 1}]")
        if program.startswith("Token"):
            logs.append("Program log: Instruction: TransferChecked")
        else:
            logs.append("Program log: Instruction: Route")
        logs.append(f"Program {program} consumed {rng.randrange(1000, 90000)} of "
                    f"{rng.randrange(200000, 1400000)} compute units")
        logs.append(f"Program {program} success")
    logs = logs[:30]

    def token_balance(index: int) -> Dict[str, Any]:
        amount = rng.randrange(10**6, 10**12)
        return {"accountIndex": index, "mint": _b58(rng), "owner": keys[0],
                "programId": programs[3],
                "uiTokenAmount": {"amount": str(amount), "decimals": 6,
                                  "uiAmount": amount / 1e6, "uiAmountString": str(amount / 1e6)}}

    pre_balances = [rng.randrange(0, 10**10) for _ in keys]
    result = {
        "slot": 400000001,
        "transaction": [base64.b64encode(raw_tx).decode("ascii"), "base64"],
        "meta": {
            "err": None, "status": {"Ok": None}, "fee": 5000 + rng.randrange(0, 100000),
            "preBalances": pre_balances,
            "postBalances": [b - rng.randrange(0, 10**6) for b in pre_balances],
            "innerInstructions": [], "logMessages": logs,
            "preTokenBalances": [token_balance(i) for i in (2,)],
            "postTokenBalances": [token_balance(i) for i in (2,)],
            "rewards": [], "loadedAddresses": {"writable": [], "readonly": keys[8:]},
            "computeUnitsConsumed": 187_331,
        },
        "blockTime": 1767225600,
        "version": 0,
    }
    frame = {"jsonrpc": "2.0", "method": "transactionNotification",
             "params": {"subscription": 5, "result": result}}
    return json.dumps(frame, separators=(",", ":"))


SLOT_FRAME = '{"seqId":44,"method":"slotNotification","params":400000001}'
READY_FRAME = '{"seqId":43,"method":"readyForContinue"}'


def _from_dict_transaction(text: str) -> Any:
    params = json.loads(text)["params"]
    return Transaction.from_dict({"subscription": params["subscription"], **params["result"]})


def _from_dict_slot(text: str) -> Any:
    return Slot.from_dict({"slot": json.loads(text)["params"]})


def _from_dict_ready(text: str) -> Any:
    json.loads(text)
    return ReadyForContinue.from_dict({})


PAYLOADS: List[Tuple[str, str, Callable[[str], Any]]] = [
    ("slotNotification (control)", SLOT_FRAME, _from_dict_slot),
    ("readyForContinue (control)", READY_FRAME, _from_dict_ready),
    ("transactionNotification", transaction_frame(), _from_dict_transaction),
]


def per_call_us(func: Callable[[], Any], repeat: int, number: int) -> Tuple[float, float]:
    """(min, median) microseconds per call over ``repeat`` runs of ``number`` calls."""
    runs = timeit.Timer(func).repeat(repeat=repeat, number=number)
    per = [run / number * 1e6 for run in runs]
    return min(per), statistics.median(per)


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timing runs (default 7)")
    parser.add_argument("--number", type=int, default=0,
                        help="calls per run (default: ~0.2 s worth per run, per payload)")
    args = parser.parse_args(argv)

    print(f"simsync {simsync.__version__}, Python {platform.python_version()} "
          f"({platform.python_implementation()}), {platform.machine()}")
    print(f"per call, microseconds: min of {args.repeat} runs (median in brackets); "
          f"target: decode <= {TARGET_RATIO:g} x json.loads")
    print()
    header = (f"{'payload':<28}{'bytes':>6}  {'json.loads':>15}  {'decode_response':>15}  "
              f"{'ratio':>6}  {'from_dict':>15}  target")
    print(header)
    print("-" * len(header))
    all_ok = True
    for name, frame, generic in PAYLOADS:
        decode_response(frame)  # warm up, and fail fast on a payload that does not decode
        generic(frame)
        number = args.number
        if number <= 0:
            loops, _ = timeit.Timer(partial(decode_response, frame)).autorange()
            number = max(loops, 1000)
        loads_min, loads_med = per_call_us(partial(json.loads, frame), args.repeat, number)
        dec_min, dec_med = per_call_us(partial(decode_response, frame), args.repeat, number)
        gen_min, gen_med = per_call_us(partial(generic, frame), args.repeat,
                                       max(number // 10, 100))
        ratio = dec_min / loads_min
        ok = ratio <= TARGET_RATIO
        all_ok = all_ok and ok
        print(f"{name:<28}{len(frame.encode()):>6}  "
              f"{loads_min:>6.2f} [{loads_med:>6.2f}]  {dec_min:>6.2f} [{dec_med:>6.2f}]  "
              f"{ratio:>5.2f}x  {gen_min:>6.2f} [{gen_med:>6.2f}]  "
              f"{'ok' if ok else 'MISSED'}")
    print()
    print(f"decode <= {TARGET_RATIO:g} x json.loads: "
          + ("met for every payload" if all_ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
