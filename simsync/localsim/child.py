"""A local simulator in a child process, for a command that needs one for its own run.

``simsync run`` and ``simsync ranges`` without ``--url`` start one: the simulator's event loop
then runs on its own core beside the client (and its memory is its own), instead of sharing
the command's interpreter lock. The child is ``python -m simsync.localsim --port 0
--until-stdin-closes`` in a session of its own: Ctrl-C at the terminal reaches only the
command, which stops the child on its way out; if the command dies, the child reads the end
of its standard input and stops too.
"""
from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import sys
import time
from types import TracebackType
from typing import List, Optional, Sequence, Type

from simsync.errors import SimsyncError

_URL_LINE = re.compile(r"simsync local simulator: (ws://\S+)")


def parallel_run_args(start_slot: int, end_slot: int) -> List[str]:
    """The child's arguments for one parallel run of ``[start_slot, end_slot]`` on the default
    history: ``--workers N`` with N = min(CPUs, the sub-sessions the range splits into, one a
    bundle it overlaps); no arguments when that is 1."""
    from simsync.localsim.cli import build_parser

    defaults = build_parser().parse_args([])
    first, size = defaults.first_slot, defaults.bundle_size
    last = first + size * defaults.bundles - 1
    lo, hi = max(start_slot, first), min(end_slot, last)
    subs = (hi - first) // size - (lo - first) // size + 1 if lo <= hi else 1
    workers = min(os.cpu_count() or 1, subs)
    return ["--workers", str(workers)] if workers > 1 else []


class ChildSimulator:
    """``with ChildSimulator() as sim: sim.url`` — a local simulator in a child process.

    ``args`` are extra ``python -m simsync.localsim`` arguments (``--bundle-size`` …).
    Entering blocks (user thread) until the child printed its URL, at most
    ``startup_timeout`` seconds, and raises ``SimsyncError`` with the child's output if it
    did not. Leaving closes the child's standard input and waits ``stop_timeout`` seconds
    for it to exit, then kills it: nothing is left running.
    """

    def __init__(self, args: Sequence[str] = (), startup_timeout: float = 30.0,
                 stop_timeout: float = 5.0) -> None:
        self._args = list(args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._child: Optional[subprocess.Popen[bytes]] = None
        self.url = ""

    @property
    def pid(self) -> Optional[int]:
        return None if self._child is None else self._child.pid

    def __enter__(self) -> ChildSimulator:
        self.launch()
        return self.wait_ready()

    def launch(self) -> ChildSimulator:
        """Start the child process without waiting for it (caller's thread); `wait_ready`
        then waits for its URL. Starting several children before waiting for any lets them
        import in parallel."""
        if self._child is not None:
            raise RuntimeError("ChildSimulator already launched")
        command = [sys.executable, "-m", "simsync.localsim", "--port", "0",
                   "--until-stdin-closes", *self._args]
        # PYTHONSAFEPATH (Python 3.11+): ``-m`` would put the working directory first on the
        # child's sys.path, so a ``simsync/`` folder there (another checkout) would be the
        # simulator that runs instead of the parent's own simsync
        env = {**os.environ, "PYTHONSAFEPATH": "1"}
        self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       start_new_session=True, env=env)
        return self

    def wait_ready(self) -> ChildSimulator:
        """Block until the launched child printed its URL (at most ``startup_timeout``
        seconds); raise ``SimsyncError`` with its output, after stopping it, if it did not."""
        if self._child is None:
            raise RuntimeError("ChildSimulator not launched")
        try:
            self.url = self._read_url(self._child)
        except BaseException:
            self.stop()
            raise
        return self

    def poll(self) -> Optional[int]:
        """The child's exit code, None while it runs (or before `launch`)."""
        return None if self._child is None else self._child.poll()

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.stop()

    def _read_url(self, child: subprocess.Popen[bytes]) -> str:
        assert child.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        seen: List[bytes] = []
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not selector.select(min(left, 0.5)):
                    continue
                chunk = os.read(child.stdout.fileno(), 4096)
                if not chunk:
                    break                       # the child exited
                seen.append(chunk)
                match = _URL_LINE.search(b"".join(seen).decode(errors="replace"))
                if match:
                    return match.group(1)
        output = b"".join(seen).decode(errors="replace").strip()
        raise SimsyncError(f"the local simulator (child process {child.pid}) printed no URL "
                           f"within {self.startup_timeout:g}s (exit code {child.poll()})"
                           + (f": {output}" if output else ""))

    def end_input(self) -> None:
        """Close the child's input (it then stops on its own) without waiting for it: a
        parent stopping several children ends every input first, then `stop`s each, so
        they shut down in parallel (idempotent; any thread)."""
        child = self._child
        if child is not None:
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def stop(self) -> None:
        """Stop the child (idempotent; any thread): end of input, then a bounded wait, then
        SIGKILL."""
        self.end_input()
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
