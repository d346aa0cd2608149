"""Replay speed (issue 26): a recording of SLOTS slots (default 10,000) replayed by the local
simulator vs the synthetic history of the same range, and each one's peak RSS.

Records the range once from a local simulator whose one bundle holds it (``bundle_size`` =
SLOTS: a non-parallel range lies in one bundle), then runs each phase in a fresh process
(so each peak RSS is its own): a client on loopback subscribed to the System and SPL Token
programs' transactions and diffs steps ``--advance-count`` blocks at a time to
``completed``. Prints slots/s and peak RSS (MiB) per phase.

    python benchmarks/replay_speed.py [--slots 10000] [--advance-count 10] [--file F]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

START = 400_000_000


def _drive(url: str, slots: int, advance: int) -> float:
    import simsync
    from simsync.localsim import SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID

    programs = [SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID]
    began = time.perf_counter()
    with simsync.Client(url) as client, client.start_session(
            start_slot=START, end_slot=START + slots - 1, send_summary=True) as session:
        session.subscribe_transactions(programs)
        session.subscribe_account_diffs(programs)
        while True:
            event = session.next_event(120)
            if isinstance(event, simsync.Completed):
                return time.perf_counter() - began
            if isinstance(event, (simsync.ReadyForContinue, simsync.Paused)):
                session.send_continue(advance_count=advance, timeout=120)


def _peak_mib() -> float:
    """This process's peak RSS: ``VmHWM`` (Linux; ``ru_maxrss`` survives ``execve``, so a
    child would report its parent's peak), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(kind: str, path: str, slots: int, advance: int) -> None:
    from simsync.localsim import LocalSimulator

    began = time.perf_counter()
    sim = (LocalSimulator(recording=path) if kind == "replay"
           else LocalSimulator(bundle_size=slots, bundles=1))
    loaded = time.perf_counter() - began
    with sim:
        secs = _drive(sim.url, slots, advance)
    peak = _peak_mib()
    print(f"{kind:9s}: {slots / secs:8.1f} slots/s ({secs:.1f} s; load {loaded:.1f} s), "
          f"peak RSS {peak:.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--advance-count", type=int, default=10)
    parser.add_argument("--file", help="an existing recording of the range (skip recording)")
    parser.add_argument("--phase", choices=("replay", "synthetic"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase is not None:
        _phase(args.phase, args.file, args.slots, args.advance_count)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or os.path.join(tmp, "range.simrec")
        if args.file is None:
            import simsync
            from simsync.localsim import SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID, LocalSimulator

            began = time.perf_counter()
            with LocalSimulator(bundle_size=args.slots, bundles=1) as sim:
                simsync.record(sim.url, path, START, START + args.slots - 1,
                               program_ids=[SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID])
            print(f"recorded {args.slots} slots in {time.perf_counter() - began:.1f} s "
                  f"({os.path.getsize(path) / 2**20:.1f} MiB)", flush=True)
        for kind in ("synthetic", "replay"):
            subprocess.run([sys.executable, __file__, "--phase", kind, "--file", path,
                            "--slots", str(args.slots), "--advance-count",
                            str(args.advance_count)], check=True)


if __name__ == "__main__":
    main()
