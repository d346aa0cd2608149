"""What a test leaves behind: threads, sockets, child processes (checked after every test)."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Dict, FrozenSet, List, Sequence, Tuple

import psutil


def socket_fds() -> FrozenSet[str]:
    """The open socket file descriptors of this process (``fd:inode``)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(f"{name}:{target}")
    return frozenset(found)


def describe_socket(entry: str) -> str:
    """``fd:inode`` with its addresses when psutil can tell them."""
    fd = int(entry.split(":")[0])
    for conn in psutil.Process().net_connections(kind="all"):
        if conn.fd == fd:
            return f"fd {fd} {conn.laddr} -> {conn.raddr} {conn.status}"
    return f"fd {entry}"


def threads() -> FrozenSet[threading.Thread]:
    return frozenset(t for t in threading.enumerate() if t.is_alive())


def children() -> FrozenSet[int]:
    """Live child processes, except multiprocessing's resource tracker: a singleton the
    spawn context starts once per interpreter and reuses (it is not a test's to stop)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE or any(
                    "resource_tracker" in part for part in child.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        found.add(child.pid)
    return frozenset(found)


Snapshot = Tuple[FrozenSet[threading.Thread], FrozenSet[str], FrozenSet[int]]


def snapshot() -> Snapshot:
    return threads(), socket_fds(), children()


def leftovers(before: Snapshot) -> List[str]:
    """What exists now that did not before."""
    new_threads = threads() - before[0]
    new_sockets = socket_fds() - before[1]
    new_children = children() - before[2]
    out = [f"thread {t.name}" for t in new_threads]
    out += [f"socket {describe_socket(s)}" for s in sorted(new_sockets)]
    out += [f"child process {pid}" for pid in sorted(new_children)]
    return out


def wait_until(condition: Callable[[], object], timeout: float, step: float = 0.01) -> bool:
    """Poll ``condition`` until it is truthy or ``timeout`` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def above(now: Sequence[int], baseline: Sequence[int]) -> Dict[int, Tuple[int, int]]:
    """The counts (by position) that exceed their baseline, as ``{index: (now, baseline)}``.
    A leak is *more* than the baseline; a count below it (a thread of an earlier test that
    ended meanwhile) is not one."""
    return {i: (n, b) for i, (n, b) in enumerate(zip(now, baseline)) if n > b}
