"""Control-channel throughput: events/s through ``Session.next_event`` on small control
frames, next to a plain websocket-client baseline measured in the same run on the same frames.

Run: ``python benchmarks/control_throughput.py [--events N] [--repeat R]``

The server (``benchmarks/_frameserver.py``) runs in a separate process and sends ``N``
pre-built sequenced control frames (per slot: ``status executingBlockTransactions``,
``status executedBlockTransactions``, ``slotNotification``; 60-75 bytes each) with one
``sendall``, then ``completed``. Per repeat, alternately:

* **baseline**: a reader thread doing websocket-client ``recv`` → ``json.loads`` →
  ``queue.Queue``; this (consumer) thread takes from the queue until ``completed``;
* **simsync**: ``Client.start_session`` (create → ``sessionCreated``), ``next_event()`` for the
  first ``ReadyForContinue``, then the clock starts, ``send_continue()`` (the server streams),
  ``next_event()`` until ``Completed``, the clock stops.

Both clocks run from the request that starts the stream to the end frame in the consumer's
hands; events/s = N / that. Best (and median) of ``--repeat``; the ratio best vs best, and per
adjacent pair. Target (issue 25): simsync >= 1.5 x baseline, median of the adjacent pairs.
Also printed: the client's CPU time and voluntary context switches per event, and a raw
socket reader draining the same bytes with no decoding, which shows the server emits far
faster than either client consumes.

``--breakdown`` adds the per-frame CPU cost of each stage after the WebSocket layer, in one
thread without sockets (simsync internals wired as ``start_session`` wires them).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import queue
import sys
import time
from typing import Any, Callable, List

from _frameserver import (
    CONTROL,
    FrameServer,
    Run,
    baseline_run,
    control_frames,
    measured,
    raw_drain,
    report,
)

import simsync
from simsync.protocol import decode_response

TARGET = 1.5


def simsync_run(client: simsync.Client, expected: int) -> float:
    """Seconds from ``send_continue`` to ``Completed`` in hand, for one session."""
    with client.start_session(start_slot=400_000_000, end_slot=400_000_000 + expected,
                              disconnect_timeout_secs=60) as session:
        first = session.next_event(30)
        assert isinstance(first, simsync.ReadyForContinue), first
        got = 0
        started = time.perf_counter()
        session.send_continue()
        while True:
            event = session.next_event(60)
            if isinstance(event, simsync.Completed):
                break
            got += 1
        elapsed = time.perf_counter() - started
    if got != expected:
        raise SystemExit(f"simsync delivered {got} events, expected {expected}")
    return elapsed


def _per_frame_us(stages: List[Callable[[], Callable[[], None]]], count: int, repeat: int
                  ) -> List[float]:
    """Best per-frame microseconds of each ``make()()`` (a fresh pipeline each run), the
    stages interleaved round by round (so a slow spell of the machine hits them all), the
    garbage collector off while timing (as ``timeit`` does)."""
    best = [float("inf")] * len(stages)
    for _ in range(repeat):
        for index, make in enumerate(stages):
            run = make()
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                run()
                best[index] = min(best[index], time.perf_counter() - started)
            finally:
                gc.enable()
    return [b / count * 1e6 for b in best]


def breakdown(count: int = 30_000, repeat: int = 9) -> None:
    """Per-frame CPU cost of each stage after the WebSocket layer (which both share), in one
    thread without sockets: where simsync spends more than the baseline. Uses simsync
    internals (``ControlLink``, ``Session``) exactly as ``start_session`` wires them."""
    from simsync.control import ControlLink
    from simsync.protocol import Continue, CreateSessionParams, ReadyForContinue
    from simsync.session import Inbox

    texts = control_frames(count)
    config = simsync.ClientConfig()
    create = CreateSessionParams(400_000_000, 400_000_000 + count, disconnect_timeout_secs=60)

    def loads() -> Callable[[], None]:
        return lambda: [json.loads(t) for t in texts] and None

    def decode() -> Callable[[], None]:
        return lambda: [decode_response(t) for t in texts] and None

    def queue_put_get() -> Callable[[], None]:
        q: queue.Queue[Any] = queue.Queue()
        objs = [None] * count

        def run() -> None:
            for o in objs:
                q.put(o)
            for _ in objs:
                q.get()
        return run

    def pipeline(consume: bool, decoded: bool) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            inbox = Inbox(config, create.start_slot)
            link = ControlLink("ws://127.0.0.1:1/backtest", None, create, config,
                               inbox.on_control_event)
            link.gate.admit(None, ReadyForContinue(), 1)
            link.gate.begin_step(Continue(), Continue(), lambda remaining: None, None)
            frames = [decode_response(t) for t in texts] if decoded else None

            def run() -> None:
                if frames is not None:
                    for seq, event in frames:
                        link._route(seq, event)
                else:
                    for text in texts:
                        link.on_frame(text)
                if consume:
                    for _ in texts:
                        inbox.mailbox.get(0)
            return run
        return make

    loads_us, queue_us, decode_us, route_us, reader_us, total_us = _per_frame_us(
        [loads, queue_put_get, decode, pipeline(False, True), pipeline(False, False),
         pipeline(True, False)], count, repeat)
    print()
    print(f"per-frame CPU after the WebSocket layer, one thread, no sockets "
          f"({count} frames, best of {repeat}), microseconds:")
    print(f"  baseline: json.loads {loads_us:.2f} + Queue.put/get {queue_us:.2f} "
          f"= {loads_us + queue_us:.2f}")
    print(f"  simsync:  decode_response {decode_us:.2f} + ControlLink._route (StepGate, "
          f"Inbox.on_control_event, Mailbox.put) {route_us:.2f} + Mailbox.get "
          f"{total_us - reader_us:.2f} = {total_us:.2f}")
    print(f"  reader thread alone: baseline {loads_us + queue_us / 2:.2f} (put ~ half of "
          f"put/get), simsync {reader_us:.2f}")


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000,
                        help="control frames per run (default 100000)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each (default 7)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print the per-frame CPU cost of each stage (no sockets)")
    args = parser.parse_args(argv)
    count = args.events

    print(f"simsync {simsync.__version__}, Python {platform.python_version()} "
          f"({platform.python_implementation()}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs, loopback")
    with FrameServer(CONTROL, count) as server:
        print(f"stream: {count} control frames, {server.frame_bytes / count:.1f} bytes of JSON "
              f"each on average, {server.stream_bytes / 1e6:.2f} MB on the wire "
              f"(pre-built by the server process, one sendall)")
        drains = [raw_drain(server) for _ in range(3)]
        client = simsync.Client(server.url)
        base: List[Run] = []
        mine: List[Run] = []

        def baseline() -> float:
            elapsed, got = baseline_run(server, "completed")
            if got != count:
                raise SystemExit(f"baseline consumed {got} frames, expected {count}")
            return elapsed

        for _ in range(args.repeat):
            base.append(measured(baseline, count))
            mine.append(measured(lambda: simsync_run(client, count), count))

    report(count, min(drains), count, server.stream_bytes,
           [("baseline: ws recv -> json.loads -> Queue -> thread", base),
            ("simsync: Session.next_event", mine)], "events", TARGET)
    if args.breakdown:
        breakdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
