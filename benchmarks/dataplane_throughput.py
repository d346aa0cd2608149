"""Data-plane throughput: transaction notifications/s through ``Session.next_event`` with a
``subscribe_transactions`` subscription, next to a plain websocket-client baseline measured in
the same run on the same frames; then RSS over a long run.

Run: ``python benchmarks/dataplane_throughput.py [--events N] [--repeat R] [--rss-events M]``

The server (``benchmarks/_frameserver.py``) runs in a separate process and holds ``N``
pre-built ~4.4 KB ``transactionNotification`` frames (the realistic payload of
``benchmarks/decode.py``, each with its own signature, 20 per slot). Per repeat, alternately:

* **baseline**: a reader thread doing websocket-client ``recv`` → ``json.loads`` →
  ``queue.Queue``; this (consumer) thread takes from the queue until ``subscriptionComplete``;
* **simsync**: ``Client.start_session`` (control create), ``next_event()`` for the first
  ``ReadyForContinue``, ``subscribe_transactions([...])`` (PubSub connect + ack), then the clock
  starts, ``send_continue()`` (the server streams the notifications on PubSub, then
  ``subscriptionComplete`` there and ``completed`` on control), ``next_event()`` until
  ``Completed``, the clock stops.

notifications/s = N / seconds from the request that starts the stream to the end in the
consumer's hands. Best (and median) of ``--repeat``. Target (issue 25): simsync >=
1.3 x baseline, median of the adjacent pairs.

RSS: first of all (in a process that has not run a session yet), one simsync session of
``--rss-events`` notifications: RSS (psutil) read before the step, sampled every 10 ms
during it (peak), at ``Completed``, after ``close()`` and after ``gc.collect()``. The
consumer keeps no reference to the events it takes.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import threading
import time
from typing import Any, List, Optional, Tuple

import psutil
from _frameserver import (
    DATA,
    DATA_ZSTD,
    FrameServer,
    Run,
    baseline_run,
    measured,
    raw_drain,
    report,
)

import simsync

TARGET = 1.3
PROGRAM = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds on a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def simsync_run(client: simsync.Client, expected: int, sample_rss: bool = False
                ) -> Tuple[float, Optional[List[int]]]:
    """Seconds from ``send_continue`` to ``Completed`` in hand; with ``sample_rss``, also
    [before, peak, at Completed, after close, after gc.collect] in bytes."""
    session = client.start_session(start_slot=400_000_000, end_slot=400_000_000 + expected,
                                   disconnect_timeout_secs=60)
    try:
        first = session.next_event(30)
        assert isinstance(first, simsync.ReadyForContinue), first
        session.subscribe_transactions([PROGRAM])
        got = 0
        gc.collect()
        before = rss()
        sampler = RssSampler() if sample_rss else None
        if sampler is not None:
            sampler.__enter__()
        started = time.perf_counter()
        session.send_continue()
        while True:
            event = session.next_event(60)
            if type(event) is simsync.Transaction:
                got += 1
            elif isinstance(event, simsync.Completed):
                break
        elapsed = time.perf_counter() - started
        event = None
        at_completed = rss()
        if sampler is not None:
            sampler.__exit__()
    finally:
        session.close()
    if got != expected:
        raise SystemExit(f"simsync delivered {got} notifications, expected {expected}")
    if sampler is None:
        return elapsed, None
    after_close = rss()
    gc.collect()
    return elapsed, [before, sampler.peak, at_completed, after_close, rss()]


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000,
                        help="notifications per throughput run (default 30000)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each (default 7)")
    parser.add_argument("--rss-events", type=int, default=100_000,
                        help="notifications in the RSS run (default 100000; 0: skip)")
    parser.add_argument("--zstd", action="store_true",
                        help="the notifications as one streaming zstd context (binary frames); "
                             "simsync with ClientConfig(pubsub_compression='zstd'), the "
                             "baseline decompressing before json.loads")
    args = parser.parse_args(argv)
    count = args.events
    held = max(count, args.rss_events)

    print(f"simsync {simsync.__version__}, Python {platform.python_version()} "
          f"({platform.python_implementation()}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs, loopback")
    kind = DATA_ZSTD if args.zstd else DATA
    with FrameServer(kind, held) as server:
        print(f"server: {held} transactionNotification frames pre-built by the server process "
              f"({server.frame_bytes / held:,.0f} bytes of JSON each on average, "
              f"{server.stream_bytes / 1e6:.1f} MB on the wire); a run streams the first N "
              "with one sendall")
        client = simsync.Client(server.url, config=simsync.ClientConfig(
            pubsub_compression="zstd" if args.zstd else None))
        # The RSS run comes first, in a process that has not run a session yet.
        memory = (simsync_run(client, args.rss_events, sample_rss=True)[1]
                  if args.rss_events else None)
        drains = [raw_drain(server) for _ in range(3)]
        base: List[Run] = []
        mine: List[Run] = []

        def baseline() -> float:
            elapsed, got = baseline_run(server, "subscriptionComplete", count)
            if got != count:
                raise SystemExit(f"baseline consumed {got} frames, expected {count}")
            return elapsed

        for _ in range(args.repeat):
            base.append(measured(baseline, count))
            mine.append(measured(lambda: simsync_run(client, count)[0], count))

    print(f"throughput: N = {count} notifications per run")
    report(count, min(drains), held, server.stream_bytes,
           [("baseline: ws recv -> " + ("zstd -> " if args.zstd else "") + "json.loads -> "
             "Queue -> thread", base),
            ("simsync: subscribe_transactions + next_event" + (" (zstd)" if args.zstd else ""),
             mine)],
           "notifications", TARGET)
    if memory is not None:
        before, peak, at_completed, after_close, after_gc = memory
        mib = 1024 * 1024
        print()
        print(f"RSS over one {args.rss_events:,}-notification session, the process's first "
              "(MiB; psutil, sampled every 10 ms for the peak; growth in brackets):")
        print(f"  {'before the step':<16}{before / mib:8.1f}")
        for label, value in (("peak", peak), ("at Completed", at_completed),
                             ("after close()", after_close), ("after gc", after_gc)):
            print(f"  {label:<16}{value / mib:8.1f}  ({(value - before) / mib:+.1f})")
        print(f"  bound by design: max_buffered_events = "
              f"{client.config.max_buffered_events:,} notifications x "
              f"~{server.frame_bytes / held / 1024:.1f} KB of JSON each, decoded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
