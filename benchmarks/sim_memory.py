"""The local simulator's memory: peak RSS and slots/s of ``simsync run`` against slot count.

Run: ``python benchmarks/sim_memory.py [--slots 1000,5000,20000] [--layout one,apart]
[--subscriptions KINDS] [--parallel-bundles K]``

Two layouts, each size in fresh processes:

* ``one``: one process (``python benchmarks/sim_memory.py --one N``) starts
  ``LocalSimulator(bundle_size=N, bundles=1)`` in itself (as the embedded ``simsync run`` does:
  the server runs in the client's process) and runs ``simsync run --url <it> --start-slot F
  --end-slot F+N-1`` through ``simsync.cli.main``. Peak RSS is
  ``getrusage(RUSAGE_SELF).ru_maxrss`` (client and server together).
* ``apart``: ``python -m simsync serve --port 0 --bundle-size N --bundles 1`` and
  ``python -m simsync run --url <it> …`` as two processes; each one's peak RSS is the
  ``ru_maxrss`` `os.wait4` reports for it. While it runs, the server's open SQLite temporary
  files (the sessions' transaction logs: unlinked files under the temp directory, found through
  ``/proc/PID/fd``) are sampled every second: the peak disk they use, and how many are still
  open once the run ended (0: the logs were removed). With ``--parallel-bundles K`` the history
  is K bundles of N/K slots and the run passes ``--parallel`` (one sub-session per bundle).

slots/s is N over the wall time of the run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

FIRST = 400_000_000
_SQLITE_TEMP = "etilqs_"  # SQLite's prefix for temporary files (a "" database spills there)


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


def _log_files(pid: int) -> List[int]:
    """Bytes on disk of each SQLite temporary file process ``pid`` holds open."""
    sizes = []
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if _SQLITE_TEMP in os.readlink(f"{fd_dir}/{fd}"):
                    sizes.append(os.stat(f"{fd_dir}/{fd}").st_blocks * 512)
    return sizes


class _DiskSampler(threading.Thread):
    """Samples the server's SQLite temporary files every second (peak total bytes)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="sim-memory-disk")
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.peak = max(self.peak, sum(_log_files(self.pid)))


def _wait_rss(proc: subprocess.Popen[str]) -> Tuple[int, float]:
    """``(exit status, peak RSS MiB)`` of a child, from `os.wait4`."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def apart(slots: int, subscriptions: str, parallel_bundles: int,
          progress: bool) -> Tuple[float, float, float, int, int]:
    """``(serve MiB, run MiB, slots/s, peak log bytes, log files left open)``."""
    bundles = max(1, parallel_bundles)
    size = -(-slots // bundles)
    serve = subprocess.Popen(
        [sys.executable, "-m", "simsync", "serve", "--port", "0", "--bundle-size", str(size),
         "--bundles", str(bundles)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, text=True)
    run: Optional[subprocess.Popen[str]] = None
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        found = re.search(r"--url (\S+);", line)
        if found is None:
            raise SystemExit(f"simsync serve printed {line!r}")
        sampler = _DiskSampler(serve.pid)
        sampler.start()
        cmd = [sys.executable, "-m", "simsync", "run", "--url", found.group(1),
               "--start-slot", str(FIRST), "--end-slot", str(FIRST + slots - 1),
               "--subscriptions", subscriptions,
               "--progress-interval", "30" if progress else "0"]
        if parallel_bundles:
            cmd.append("--parallel")
        start = time.perf_counter()
        run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                               stderr=None if progress else subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
        err = "" if progress or run.stderr is None else run.stderr.read()
        rc, run_mib = _wait_rss(run)
        wall = time.perf_counter() - start
        if rc != 0:
            raise SystemExit(f"simsync run exited {rc}: {err[-2000:]}")
        sampler.stop.set()
        sampler.join()
        left = _files_left(serve.pid)
        serve.send_signal(signal.SIGINT)
        _, serve_mib = _wait_rss(serve)
        return serve_mib, run_mib, slots / wall, sampler.peak, left
    finally:
        for proc in (run, serve):
            if proc is not None and proc.returncode is None:
                proc.kill()
                proc.wait()
        if serve.stdout is not None:
            serve.stdout.close()


def _files_left(pid: int, deadline_secs: float = 30.0) -> int:
    """How many log files the server still holds once the run ended (it frees a session's
    chain when the session ends, which may follow the client's exit by a moment)."""
    end = time.monotonic() + deadline_secs
    while True:
        left = len(_log_files(pid))
        if left == 0 or time.monotonic() > end:
            return left
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default="1000,5000,20000",
                        help="comma list of slot counts (default 1000,5000,20000)")
    parser.add_argument("--layout", default="one,apart",
                        help="comma list of one (simulator and client in one process) and "
                             "apart (simsync serve + simsync run --url); default both")
    parser.add_argument("--subscriptions", default="transactions",
                        help="simsync run --subscriptions (default transactions)")
    parser.add_argument("--parallel-bundles", type=int, default=0, metavar="K",
                        help="apart layout: K bundles and simsync run --parallel (default 0: "
                             "one bundle, one session)")
    parser.add_argument("--progress", action="store_true",
                        help="apart layout: let simsync run print progress to stderr")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        one(args.one, args.subscriptions)
        return
    sizes: List[int] = [int(s) for s in args.slots.split(",") if s]
    layouts = [s for s in args.layout.split(",") if s]
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"--subscriptions {args.subscriptions}", flush=True)
    if "one" in layouts:
        print("one process (simulator and `simsync run` together), peak RSS = ru_maxrss")
        print(f"{'slots':>8} {'peak RSS MiB':>13} {'slots/s':>9}", flush=True)
        for n in sizes:
            proc = subprocess.run([sys.executable, __file__, "--one", str(n),
                                   "--subscriptions", args.subscriptions],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{n:>8} failed: {proc.stderr.strip()[-500:]}", flush=True)
                continue
            _, peak, rate, _ = proc.stdout.split()
            print(f"{n:>8} {float(peak):>13.1f} {float(rate):>9.1f}", flush=True)
    if "apart" in layouts:
        what = (f"{args.parallel_bundles} bundles, --parallel" if args.parallel_bundles
                else "one bundle, one session")
        print(f"apart (`simsync serve` + `simsync run --url`, {what}), peak RSS of each")
        print(f"{'slots':>8} {'serve MiB':>10} {'run MiB':>8} {'slots/s':>9} "
              f"{'log disk MiB':>13} {'logs left':>10}", flush=True)
        for n in sizes:
            serve_mib, run_mib, rate, disk, left = apart(
                n, args.subscriptions, args.parallel_bundles, args.progress)
            print(f"{n:>8} {serve_mib:>10.1f} {run_mib:>8.1f} {rate:>9.1f} "
                  f"{disk / 2**20:>13.1f} {left:>10}", flush=True)


if __name__ == "__main__":
    main()
