"""Recovery time: seconds from a lost control connection to the first event after recovery,
against the local simulator's fault plan.

Run: ``python benchmarks/recovery.py [--drops N] [--stalls M] [--flaps K]``

Three measurements, all with real sockets against ``LocalSimulator`` (same process, its own
loop thread):

1. **drop** (default ``ClientConfig``): ``--drops`` sessions one after another; in each, one
   step (``send_continue``) with ``Fault("drop", at="after_continue_received")`` armed, so the
   server accepts the step and aborts the TCP connection before answering it (the step runs on
   while detached). The clock starts when the fault fires (the simulator's INFO log record,
   taken on its loop thread) and stops when ``next_event()`` returns the first event of that
   step (replayed after attach + resume). Each drop is the first of its outage, so the
   backoff before the reconnect is ``uniform(0, backoff_initial)``; the client's
   ``RECONNECTING ... in X s`` INFO line gives that sleep, and the table also shows the time
   without it (detection + connect + attach + resume + replay).
2. **stall** (half-open: the server stops sending and stops answering pings, no FIN): the same
   with ``Fault("stall", ...)`` and a shortened ``ping_interval``/``dead_after`` (printed);
   detection takes ``dead_after`` since the last inbound frame.
3. **flapping** (default ``ClientConfig``): one session, ``--flaps`` drops in a row, each a
   step after the previous recovery. A connection that had not stayed up ``stable_after``
   (30 s) before dropping counts as one more failed attempt of the same outage, so the backoff
   ceiling doubles per drop (0.25, 0.5, 1, 2, 4, 8 s, capped at ``backoff_max`` 10 s).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, List, Optional, Tuple

import simsync
from simsync.localsim import Fault, LocalSimulator

START = 400_000_000
DELAY = re.compile(r" in ([0-9.]+)s$")


class Clock(logging.Handler):
    """Timestamps (perf_counter, on the emitting thread) of fault firings and of the
    client's RECONNECTING transitions with their chosen backoff."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.faults: List[float] = []
        self.reconnecting: List[Tuple[float, Optional[float]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        now = time.perf_counter()
        message = record.getMessage()
        if record.name == "simsync.localsim.connection" and " fires after " in message:
            self.faults.append(now)
        elif record.name == "simsync.transport" and ": RECONNECTING" in message:
            match = DELAY.search(message)
            self.reconnecting.append((now, float(match.group(1)) if match else None))

    def reset(self) -> None:
        self.faults.clear()
        self.reconnecting.clear()


def install_clock() -> Clock:
    clock = Clock()
    for name in ("simsync.localsim.connection", "simsync.transport"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(clock)
    return clock


def first_pause(session: simsync.Session) -> None:
    while not isinstance(session.next_event(30), simsync.ReadyForContinue):
        pass


def one_recovery(session: simsync.Session, sim: LocalSimulator, clock: Clock, action: str
                 ) -> Tuple[float, float, Optional[float]]:
    """Arm one fault, step, wait for the first event of the step; returns (fault → event,
    fault → RECONNECTING logged, backoff sleep chosen) in seconds. Then finishes the step."""
    clock.reset()
    sim.faults.add(Fault(action, at="after_continue_received"))
    session.send_continue()
    event = session.next_event(60)
    arrived = time.perf_counter()
    if not clock.faults:
        raise SystemExit("the fault did not fire")
    fired = clock.faults[0]
    detected, delay = (clock.reconnecting[0] if clock.reconnecting else (float("nan"), None))
    while not isinstance(event, (simsync.ReadyForContinue, simsync.Completed)):
        event = session.next_event(60)
    return arrived - fired, detected - fired, delay


def summary(values: List[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"{statistics.median(ordered):8.3f} {p99:8.3f} {ordered[-1]:8.3f} "
            f"{statistics.mean(ordered):8.3f}")


def independent(sim: LocalSimulator, clock: Clock, config: simsync.ClientConfig, action: str,
                count: int) -> List[Tuple[float, float, Optional[float]]]:
    """``count`` sessions, one fault each (the first drop of an outage)."""
    client = simsync.Client(sim.url, config=config)
    out = []
    for _ in range(count):
        with client.start_session(start_slot=START, end_slot=START + 50,
                                  disconnect_timeout_secs=120) as session:
            first_pause(session)
            out.append(one_recovery(session, sim, clock, action))
    return out


def print_table(title: str, rows: List[Tuple[float, float, Optional[float]]]) -> None:
    total = [r[0] for r in rows]
    detect = [r[1] for r in rows]
    backoff = [r[2] for r in rows if r[2] is not None]
    rest = [r[0] - r[2] for r in rows if r[2] is not None]
    print(title)
    print(f"  {'seconds, over ' + str(len(rows)) + ' faults':<52}{'p50':>8} {'p99':>8} "
          f"{'max':>8} {'mean':>8}")
    print(f"  {'fault fired -> first event from next_event()':<52}{summary(total)}")
    print(f"  {'  fault fired -> RECONNECTING logged (detection)':<52}{summary(detect)}")
    if backoff:
        print(f"  {'  backoff sleep chosen (tenacity, full jitter)':<52}{summary(backoff)}")
        print(f"  {'  recovery without the backoff sleep':<52}{summary(rest)}")
    print()


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=50, help="drop faults (default 50)")
    parser.add_argument("--stalls", type=int, default=20,
                        help="half-open stall faults (default 20; 0: skip)")
    parser.add_argument("--ping-interval", type=float, default=0.5,
                        help="ping_interval for the stall runs (default 0.5 s)")
    parser.add_argument("--dead-after", type=float, default=1.5,
                        help="dead_after for the stall runs (default 1.5 s)")
    parser.add_argument("--flaps", type=int, default=6,
                        help="consecutive drops in one session (default 6; 0: skip)")
    args = parser.parse_args(argv)

    print(f"simsync {simsync.__version__}, Python {platform.python_version()} "
          f"({platform.python_implementation()}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs, loopback; server: LocalSimulator in this process")
    default = simsync.ClientConfig()
    stall_config = default.replace(ping_interval=args.ping_interval,
                                   dead_after=args.dead_after)
    clock = install_clock()
    print(f"default ClientConfig: backoff_initial={default.backoff_initial}, "
          f"backoff_max={default.backoff_max}, stable_after={default.stable_after}, "
          f"ping_interval={default.ping_interval}, dead_after={default.dead_after}")
    print()
    with LocalSimulator() as sim:
        drops = independent(sim, clock, default, "drop", args.drops)
        print_table("1. drop at after_continue_received, one per session, default "
                    "ClientConfig", drops)
        if args.stalls:
            stalls = independent(sim, clock, stall_config, "stall", args.stalls)
            print_table(f"2. half-open stall at after_continue_received, one per session, "
                        f"ClientConfig(ping_interval={stall_config.ping_interval}, "
                        f"dead_after={stall_config.dead_after}), rest default", stalls)
        if args.flaps:
            client = simsync.Client(sim.url)
            print(f"3. flapping: {args.flaps} drops in a row in one session (each a step after "
                  "the previous recovery), default ClientConfig")
            print(f"  {'drop':>6} {'fault -> event s':>18} {'backoff chosen s':>18} "
                  f"{'ceiling s':>10}")
            with client.start_session(start_slot=START, end_slot=START + 50,
                                      disconnect_timeout_secs=300) as session:
                first_pause(session)
                for k in range(1, args.flaps + 1):
                    total, _, delay = one_recovery(session, sim, clock, "drop")
                    ceiling = min(default.backoff_max, default.backoff_initial * 2 ** (k - 1))
                    chosen = f"{delay:18.3f}" if delay is not None else f"{'n/a':>18}"
                    print(f"  {k:>6} {total:>18.3f} {chosen} {ceiling:>10.2f}")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
