"""The local simulator's memory: peak RSS and slots/s of ``simsync run`` against slot count.

Run: ``python benchmarks/sim_memory.py [--slots 1000,5000,20000] [--subscriptions KINDS]``

Each size runs in a fresh subprocess (``python benchmarks/sim_memory.py --one N``), so every
figure is one process's own peak: that process starts ``LocalSimulator(bundle_size=N,
bundles=1)`` in itself (as the embedded ``simsync run`` does: the server runs in the client's
process) and runs ``simsync run --url <it> --start-slot F --end-slot F+N-1`` through
``simsync.cli.main``. Peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` (the process's high-water
mark, client and server together); slots/s is N over the wall time of ``main``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import subprocess
import sys
import time
from typing import List

FIRST = 400_000_000


def one(slots: int, subscriptions: str) -> None:
    import simsync
    from simsync.cli import main
    from simsync.localsim import LocalSimulator

    with LocalSimulator(bundle_size=slots, bundles=1) as sim:
        start = time.perf_counter()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["run", "--url", sim.url, "--start-slot", str(FIRST),
                       "--end-slot", str(FIRST + slots - 1), "--subscriptions", subscriptions,
                       "--progress-interval", "0"])
        wall = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"simsync run exited {rc}: {err.getvalue()[-2000:]}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{slots} {peak_mib:.1f} {slots / wall:.1f} {simsync.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default="1000,5000,20000",
                        help="comma list of slot counts (default 1000,5000,20000)")
    parser.add_argument("--subscriptions", default="transactions",
                        help="simsync run --subscriptions (default transactions)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        one(args.one, args.subscriptions)
        return
    sizes: List[int] = [int(s) for s in args.slots.split(",") if s]
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"--subscriptions {args.subscriptions}")
    print("peak RSS = getrusage ru_maxrss of a fresh process running the simulator and "
          "`simsync run` together")
    print(f"{'slots':>8} {'peak RSS MiB':>13} {'slots/s':>9}")
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n),
                               "--subscriptions", args.subscriptions],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{n:>8} failed: {proc.stderr.strip()[-500:]}")
            continue
        _, peak, rate, _ = proc.stdout.split()
        print(f"{n:>8} {float(peak):>13.1f} {float(rate):>9.1f}", flush=True)


if __name__ == "__main__":
    main()
