"""Parallel scaling: one total slot range driven as N = 1, 4, 16, 64 sub-sessions with
``Client.start_parallel``, from one thread (``ParallelSession.events()``).

Run: ``python benchmarks/parallel_scaling.py [--slots S] [--sizes 1,4,16,64] [--advance A]``

For each N a fresh ``LocalSimulator(bundle_size=S/N, bundles=N)`` covers exactly the range
``[first, first + S - 1]``; the simulator splits a parallel create by bundle (one sub-session
per bundle overlap that has a produced slot; a bundle's first slot is always produced), so the
batch has exactly N sub-sessions (checked). The driver steps each sub-session with
``send_continue(advance_count=A)`` at every ``ReadyForContinue`` until every sub-session has
delivered ``Completed``.

The simulator runs in its own process (spawn) by default, so the client's CPU time
(``time.process_time()`` of this process) is simsync's alone and the two do not share a GIL;
``--in-process`` runs it in this process instead. Two workloads:

* **full**: the synthetic history executes in LiteSVM as usual;
* **minimal**: the simulator's work minimised: ``signerFilter`` names every payer of the
  synthetic history (nothing executes) and every block is built before the clock starts.

Per N: events delivered, wall seconds (``start_parallel`` → last ``Completed``; the create
alone in brackets), events/s, client CPU seconds, peak ``threading.active_count()`` sampled at
every event (the main thread included), and the cost per sub-session with its ratio to N=1.
Total cost growing at most linearly with N means the ratio of totals stays <= N.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import simsync
from simsync.localsim import LocalSimulator

FIRST = 400_000_000


def _serve_sim(bundle_size: int, bundles: int, warm: bool, reply: Any, stop: Any) -> None:
    """Simulator process: serve until ``stop`` is set; report the URL, the payers and, at
    the end, the process's CPU seconds."""
    with LocalSimulator(first_slot=FIRST, bundle_size=bundle_size, bundles=bundles) as sim:
        if warm:
            for slot in sim.produced_slots(FIRST, FIRST + bundle_size * bundles - 1):
                sim.history.block(slot)
        payers = sim.wallets + [str(sim.history.oracle_authority.pubkey())]
        cpu = time.process_time()
        reply.put((sim.url, payers))
        stop.wait()
        reply.put(time.process_time() - cpu)


class SimProcess:
    """A LocalSimulator in a spawned process (or in this one with ``in_process``)."""

    def __init__(self, bundle_size: int, bundles: int, warm: bool, in_process: bool) -> None:
        self._args = (bundle_size, bundles, warm)
        self._in_process = in_process
        self._local: Optional[LocalSimulator] = None
        self.url = ""
        self.payers: List[str] = []
        self.cpu: Optional[float] = None

    def __enter__(self) -> SimProcess:
        bundle_size, bundles, warm = self._args
        if self._in_process:
            sim = LocalSimulator(first_slot=FIRST, bundle_size=bundle_size, bundles=bundles)
            self._local = sim.start()
            if warm:
                for slot in sim.produced_slots(FIRST, FIRST + bundle_size * bundles - 1):
                    sim.history.block(slot)
            self.url = sim.url
            self.payers = sim.wallets + [str(sim.history.oracle_authority.pubkey())]
            return self
        context = multiprocessing.get_context("spawn")
        self._reply = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(target=_serve_sim, daemon=True,
                                        args=(*self._args, self._reply, self._stop))
        self._process.start()
        self.url, self.payers = self._reply.get(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._local is not None:
            self._local.stop()
            return
        self._stop.set()
        self.cpu = self._reply.get(timeout=30)
        self._process.join(10)


def run_batch(url: str, slots: int, signer_filter: Optional[List[str]], advance: int,
              expected: int) -> Dict[str, Any]:
    """Drive one parallel batch to the end from this thread; return its figures."""
    client = simsync.Client(url)
    threads_before = threading.active_count()
    cpu0 = time.process_time()
    started = time.perf_counter()
    batch = client.start_parallel(start_slot=FIRST, end_slot=FIRST + slots - 1,
                                  disconnect_timeout_secs=60, signer_filter=signer_filter)
    created = time.perf_counter()
    try:
        if len(batch.sub_sessions) != expected:
            raise SystemExit(f"the simulator split the range into {len(batch.sub_sessions)} "
                             f"sub-sessions, expected {expected}")
        events = 0
        peak = threading.active_count()
        for sub, event in batch.events(timeout=60):
            events += 1
            peak = max(peak, threading.active_count())
            if isinstance(event, simsync.ReadyForContinue):
                sub.send_continue(advance_count=advance)
        finished = time.perf_counter()
        cpu = time.process_time() - cpu0
    finally:
        batch.close()
    return {"events": events, "wall": finished - started, "create": created - started,
            "cpu": cpu, "threads": peak, "threads_before": threads_before}


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=1280,
                        help="total slots of the range (default 1280; divisible by every N)")
    parser.add_argument("--sizes", default="1,4,16,64", help="N values (default 1,4,16,64)")
    parser.add_argument("--advance", type=int, default=1,
                        help="advance_count of each step (default 1: a round trip per slot)")
    parser.add_argument("--workloads", default="full,minimal",
                        help="full and/or minimal (default both)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the simulator in this process (default: its own process)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    for n in sizes:
        if args.slots % n:
            parser.error(f"--slots {args.slots} is not divisible by N={n}")

    print(f"simsync {simsync.__version__}, Python {platform.python_version()} "
          f"({platform.python_implementation()}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs, loopback; LocalSimulator "
          f"{'in this process' if args.in_process else 'in its own process'}")
    print(f"range: {args.slots} slots from {FIRST}; advance_count={args.advance}; "
          "driven from one thread with ParallelSession.events()")
    for workload in args.workloads.split(","):
        minimal = workload == "minimal"
        print()
        print(f"workload: {workload}" + (" (signerFilter = every historical payer: nothing "
                                          "executes; blocks pre-built)" if minimal else
                                          " (the synthetic history executes in LiteSVM)"))
        header = (f"{'N':>4} {'events':>7} {'wall s':>7} {'create s':>9} {'step s':>7} "
                  f"{'step ev/s':>10} {'client CPU s':>13} {'sim CPU s':>10} {'threads':>8} "
                  f"{'wall/N s':>9} {'wall vs N=1':>12} {'CPU vs N=1':>11}")
        print(header)
        print("-" * len(header))
        first: Optional[Tuple[float, float]] = None
        for n in sizes:
            with SimProcess(args.slots // n, n, minimal, args.in_process) as sim:
                figures = run_batch(sim.url, args.slots, sim.payers if minimal else None,
                                    args.advance, n)
            if first is None:
                first = (figures["wall"], figures["cpu"])
            step = figures["wall"] - figures["create"]
            sim_cpu = f"{sim.cpu:10.2f}" if sim.cpu is not None else f"{'n/a':>10}"
            print(f"{n:>4} {figures['events']:>7} {figures['wall']:>7.2f} "
                  f"{figures['create']:>9.2f} {step:>7.2f} {figures['events'] / step:>10,.0f} "
                  f"{figures['cpu']:>13.2f} {sim_cpu} "
                  f"{figures['threads']:>3} ({figures['threads_before']}) "
                  f"{figures['wall'] / n:>9.3f} {figures['wall'] / first[0]:>11.2f}x "
                  f"{figures['cpu'] / first[1]:>10.2f}x")
    print()
    print("wall = start_parallel -> last Completed = create (start_parallel returned) + step "
          "(the stepping, events/s over it).")
    print("client CPU = time.process_time() of this process over the batch (with "
          "--in-process it includes the simulator); sim CPU = the simulator process's, from "
          "the create to the end (n/a with --in-process).")
    print("threads: peak threading.active_count() during the batch (before it in brackets: "
          "the main thread, plus the simulator's loop thread with --in-process). wall/N: wall "
          "seconds per sub-session.")
    print("linear or better: each 'vs N=1' ratio must stay <= N (the same total range is "
          "split N ways).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
