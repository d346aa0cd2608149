"""The local simulator against its floor: `simsync run` of N slots (no ``--url``: an embedded
local simulator; the whole process, a subprocess) ÷ `sim_floor.py --no-check` of the same
slots (the same history's transactions built, signed and executed in LiteSVM directly; the
whole process too). Runs alternate floor/run; the figure is the median of each adjacent pair's
ratio, next to best vs best. Also prints the peak RSS of each `simsync run` (the child's
``ru_maxrss``) and its slots/s.

    python benchmarks/sim_ratio.py                   # 5,000 slots, 5 pairs
    python benchmarks/sim_ratio.py --slots 1000 10000 --pairs 3

The embedded simulator's history holds 10,000 slots (`LocalSimulator()`: 10 bundles of 1,000),
so ``--slots`` is at most 10000; a range lies in one bundle, so above 1,000 slots the run is
``--parallel`` (one sub-session a bundle, each starting from the state the history reaches
there). The embedded simulator runs in a child process of `simsync run`
(``simsync.localsim.child``): the peak RSS is the larger of the two processes'.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

HERE = Path(__file__).resolve().parent
FIRST_SLOT = 400_000_000     # LocalSimulator()'s default first slot (sim_floor checks it)
BUNDLE_SIZE = 1000           # LocalSimulator()'s default bundle: a longer run is --parallel


def timed(argv: List[str]) -> Tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process run to completion."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[5000])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--parallel", action="store_true", help="simsync run --parallel")
    args = parser.parse_args()
    import simsync
    print(f"simsync {simsync.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; each figure a whole child process, wall clock")
    for slots in args.slots:
        end = FIRST_SLOT + slots - 1
        floor_argv = [sys.executable, str(HERE / "sim_floor.py"), "--slots", str(slots),
                      "--no-check"]
        run_argv = [sys.executable, "-m", "simsync", "run", "--start-slot", str(FIRST_SLOT),
                    "--end-slot", str(end), "--progress-interval", "3600"]
        parallel = args.parallel or slots > BUNDLE_SIZE
        if parallel:
            run_argv.append("--parallel")
        floors: List[float] = []
        runs: List[float] = []
        rss: List[float] = []
        for _ in range(args.pairs):
            floors.append(timed(floor_argv)[0])
            seconds, peak = timed(run_argv)
            runs.append(seconds)
            rss.append(peak)
        ratios = [r / f for f, r in zip(floors, runs)]
        print(f"\n{slots} slots ({args.pairs} pairs, alternating floor, run):")
        print(f"  floor  sim_floor.py --no-check   best {min(floors):7.2f} s  median "
              f"{statistics.median(floors):7.2f} s")
        print(f"  simsync run{' --parallel' if parallel else ''} (embedded simulator)"
              f"   best {min(runs):7.2f} s  median {statistics.median(runs):7.2f} s  "
              f"{slots / statistics.median(runs):,.0f} slots/s  peak RSS median "
              f"{statistics.median(rss):.0f} MiB")
        print(f"  run / floor: median pair {statistics.median(ratios):.2f} (range "
              f"{min(ratios):.2f}-{max(ratios):.2f}), best vs best "
              f"{min(runs) / min(floors):.2f}; goal <= 1.5: "
              f"{'met' if statistics.median(ratios) <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
