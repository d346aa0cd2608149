"""Sweep worker functions for tests: importable by spawned pool processes and Dask workers.

Per-job behaviour is keyed by ``job.params`` and by marker files in a test's ``tmp_path``
(created with O_EXCL, so exactly one attempt of a job claims its marker across processes).
"""
from __future__ import annotations

import os
import signal
from typing import Any, Dict, Tuple

import simsync
from simsync.sweep import SweepJob, run_job

Json = Dict[str, Any]


def claim(marker: str) -> bool:
    """True for the first caller only, across processes."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def kill_mid_session(job: SweepJob) -> Json:
    """``run_job``, except that the first attempt of a job with ``params["kill"]`` starts its
    session, reads up to its first executed slot and SIGKILLs its own process."""
    if job.params.get("kill") and claim(job.params["kill"]):
        client = simsync.Client(job.url, config=job.config)
        session = client.start_session(start_slot=job.start_slot, end_slot=job.end_slot,
                                       disconnect_timeout_secs=30)
        for event in session.events():
            if isinstance(event, simsync.Slot):
                os.kill(os.getpid(), signal.SIGKILL)
            if isinstance(event, simsync.ReadyForContinue):
                session.send_continue()
        raise AssertionError("unreachable: the process is killed at the first slot")
    return run_job(job)


def flaky(job: SweepJob) -> Tuple[int, int, int]:
    """Raises ``params["error"]`` (a class name) on the first ``params["fail"]`` attempts,
    then returns the range and this process id. Counts attempts with marker files."""
    fails = job.params.get("fail", 0)
    for attempt in range(fails):
        if claim(f"{job.params['dir']}/{job.start_slot}.{attempt}"):
            error = {"ControlFailed": simsync.ControlFailed,
                     "ConnectionRefusedError": ConnectionRefusedError,
                     "ValueError": ValueError}[job.params["error"]]
            raise error(f"attempt {attempt} of job {job.start_slot} fails on purpose")
    return job.start_slot, job.end_slot, os.getpid()


def exit_once(job: SweepJob) -> Tuple[int, int]:
    """The first attempt of a job with ``params["exit"]`` ends its process (os._exit)."""
    if job.params.get("exit") and claim(job.params["exit"]):
        os._exit(3)
    return job.start_slot, job.end_slot
