"""Sweeps: many backtest sessions, each a picklable job, run by worker processes of one
machine (a spawn ``ProcessPoolExecutor``, the default) or of a Dask cluster.

    jobs = simsync.jobs_for_range(400_000_000, 400_009_999, 20, url=URL)
    for outcome in simsync.sweep(jobs, executor=distributed.Client("tcp://host:8786")):
        if isinstance(outcome, simsync.SweepJobFailed):
            print("failed:", outcome)            # outcome.job, outcome.cause
        else:
            print(outcome.job.label, outcome.value["summary"])

A job is plain data (:class:`SweepJob`); the worker function runs it on a session of its own
in the worker process and returns a picklable value (default :func:`run_job`: the run output
document of ``simsync run``). The API key is never part of a job: the worker reads it from its
own environment (``SIMULATOR_API_KEY`` unless ``SweepJob.api_key_env`` names another variable).

Every job ends exactly once, as a :class:`SweepResult` or a :class:`SweepJobFailed`. A job whose
worker process died (``BrokenProcessPool``, Dask's ``KilledWorker``) or whose session failed
transiently (``ControlFailed``, ``SubscriptionFailed``, ``ConnectionError``) runs again, on a
new session, up to ``retries`` more times.

The package exports these names (``simsync.sweep`` is the function, which shadows this module
as an attribute of the package: import from it with ``from simsync.sweep import ...``).
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from tqdm import tqdm

from simsync import runoutput
from simsync.config import ClientConfig
from simsync.errors import ControlFailed, SimsyncError, SubscriptionFailed
from simsync.protocol import CreateSessionParams

API_KEY_ENV = "SIMULATOR_API_KEY"
SUBSCRIPTION_KINDS = ("transactions", "account-diff")
#: Create fields a job may not set in ``create`` (they are the job's own, or one session each).
_RESERVED = frozenset({"start_slot", "end_slot", "parallel"})

#: Failures raised inside a worker that are worth a new session: the control connection or a
#: subscription failed for good, or the simulator could not be reached.
TRANSIENT_ERRORS: Tuple[type, ...] = (ControlFailed, SubscriptionFailed, ConnectionError)

Worker = Callable[["SweepJob"], Any]


class ProgressBar(tqdm):  # type: ignore[misc] # tqdm is untyped
    """A tqdm bar on stderr without tqdm's process-wide monitor thread (which never ends; the
    bar is refreshed on every job outcome anyway), 100 columns wide on a terminal that reports
    no size (a fresh pty says 0 x 0, and tqdm would draw nothing)."""

    monitor_interval = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            columns, rows = os.get_terminal_size(sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            columns = rows = 1
        if not (columns and rows):
            kwargs.update(ncols=100, nrows=24)
        super().__init__(*args, file=sys.stderr, **kwargs)


@dataclass(frozen=True)
class SweepJob:
    """One backtest of a sweep: picklable plain data, run by a worker on a session of its own.

    * ``start_slot``/``end_slot``: the slot range (inclusive).
    * ``url``: the simulator as every worker reaches it (a host or a ``ws(s)://`` URL).
    * ``program_id``: the program whose transactions are collected (default: the System
      program) and where ``elf`` is installed.
    * ``elf``: an optional program override installed before the first step: the ELF bytes, or
      the path of an ``.so`` file the worker reads (it must exist on the worker's machine).
    * ``build``: a label for the override (file names, compare tables); ``None`` without one.
    * ``subscriptions``: what is collected: ``"transactions"`` and/or ``"account-diff"``.
    * ``create``: further ``start_session`` fields (``extra_compute_units``,
      ``disconnect_timeout_secs``, ``signer_filter``, ...; not the range, not ``parallel``).
    * ``advance_count``: blocks per step.
    * ``params``: anything a custom worker needs (picklable); the default worker ignores it.
    * ``api_key_env``: the environment variable the worker reads the API key from.
    * ``config``: the worker's ``ClientConfig`` (default: ``ClientConfig()``).

    Raises ``ValueError`` on construction when a field is invalid.
    """

    start_slot: int
    end_slot: int
    url: str
    program_id: Optional[str] = None
    elf: Union[bytes, str, None] = field(default=None, repr=False)
    build: Optional[str] = None
    subscriptions: Tuple[str, ...] = ("transactions",)
    create: Mapping[str, Any] = field(default_factory=dict)
    advance_count: int = 10
    params: Mapping[str, Any] = field(default_factory=dict)
    api_key_env: str = API_KEY_ENV
    config: Optional[ClientConfig] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subscriptions", tuple(self.subscriptions))
        unknown = [k for k in self.subscriptions if k not in SUBSCRIPTION_KINDS]
        if unknown:
            raise ValueError(f"unknown subscription kinds {unknown}; choose from "
                             f"{list(SUBSCRIPTION_KINDS)}")
        reserved = _RESERVED.intersection(self.create)
        if reserved:
            raise ValueError(f"create must not set {sorted(reserved)} (a job is one session "
                             "over its own range)")
        # Validates the range and every create field here, not in a worker.
        CreateSessionParams(start_slot=self.start_slot, end_slot=self.end_slot,
                            **dict(self.create))
        if self.elf is not None and not self.program_id:
            raise ValueError("a program override (elf) needs program_id (where to install it)")
        if isinstance(self.elf, bytes) and not self.elf.startswith(b"\x7fELF"):
            raise ValueError("elf is not an ELF image (no \\x7fELF header)")
        if self.advance_count < 1:
            raise ValueError(f"advance_count must be >= 1, got {self.advance_count}")

    @property
    def label(self) -> str:
        """``START-END``, with `` BUILD`` when the job has a build label."""
        return f"{self.start_slot}-{self.end_slot}" + (f" {self.build}" if self.build else "")

    @property
    def slots(self) -> int:
        return self.end_slot - self.start_slot + 1


@dataclass(frozen=True)
class SweepResult:
    """A job that completed: ``value`` is what the worker returned (default: the run output
    document), ``index`` the job's position in the input, ``attempts`` how many runs it took."""

    index: int
    job: SweepJob
    value: Any
    attempts: int


class SweepJobFailed(SimsyncError):
    """A job that ended without a result: ``cause`` is the last exception (raised by the worker,
    or by the executor: ``BrokenProcessPool``, ``KilledWorker``, ...), after ``attempts`` runs."""

    def __init__(self, index: int, job: SweepJob, cause: BaseException, attempts: int) -> None:
        self.index = index
        self.job = job
        self.cause = cause
        self.attempts = attempts
        plural = "s" if attempts != 1 else ""
        super().__init__(f"job {index} (slots {job.label}) failed after {attempts} "
                         f"attempt{plural}: {type(cause).__name__}: {cause}")

    def __reduce__(self) -> Tuple[Any, ...]:
        return SweepJobFailed, (self.index, self.job, self.cause, self.attempts)


SweepOutcome = Union[SweepResult, SweepJobFailed]


# ----------------------------------------------------------------------------- building jobs


def split_range(start: int, end: int, n: int) -> List[Tuple[int, int]]:
    """``start..end`` (inclusive) cut into ``min(n, slots)`` contiguous ranges whose sizes
    differ by at most one. Raises ``ValueError`` when ``n < 1`` or ``start > end``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if start > end:
        raise ValueError(f"start ({start}) is after end ({end})")
    count = end - start + 1
    n = min(n, count)
    size, extra = divmod(count, n)
    out = []
    for i in range(n):
        width = size + (1 if i < extra else 0)
        out.append((start, start + width - 1))
        start += width
    return out


def jobs_for_range(start: int, end: int, n: int, **common: Any) -> List[SweepJob]:
    """``n`` jobs covering ``start..end`` (see :func:`split_range`); ``common`` are the other
    :class:`SweepJob` fields (``url=`` is required)."""
    return [SweepJob(start_slot=a, end_slot=b, **common) for a, b in split_range(start, end, n)]


Build = Union[bytes, str, None]


def build_label(build: Build, index: int) -> str:
    """A build's label: the file name of a path (``a.so``), ``build<index>`` for bytes, and
    ``original`` for ``None`` (the program as deployed)."""
    if build is None:
        return "original"
    if isinstance(build, str):
        return os.path.basename(build)
    return f"build{index}"


def jobs_for_builds(start: int, end: int, builds: Union[Sequence[Build], Mapping[str, Build]],
                    n: int = 1, *, program_id: str, **common: Any) -> List[SweepJob]:
    """Every build crossed with ``n`` sub-ranges of ``start..end``, build by build. A build is
    ELF bytes, the path of an ``.so`` file, or ``None`` (the program as deployed); a mapping
    gives the labels (else :func:`build_label`). Raises ``ValueError`` when two builds share a
    label."""
    labelled = (list(builds.items()) if isinstance(builds, Mapping) else
                [(build_label(b, i), b) for i, b in enumerate(builds)])
    labels = [label for label, _ in labelled]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two builds share a label: {labels}")
    return [SweepJob(start_slot=a, end_slot=b, program_id=program_id, elf=elf, build=label,
                     **common)
            for label, elf in labelled for a, b in split_range(start, end, n)]


# ----------------------------------------------------------------------------- the default worker


def run_job(job: SweepJob) -> Dict[str, Any]:
    """The default worker: ``simsync run`` over the job's range on a session of its own, in
    the calling process and thread; returns the run output document (``metadata``,
    ``transactions``, ``summary``; see the README). Blocks until the session completes. Raises
    what the session raises (``ControlFailed``, ``SessionCreateError``, ...), ``OSError`` or
    ``ValueError`` for an unreadable ELF path."""
    from simsync.client import Client

    create = {"start_slot": job.start_slot, "end_slot": job.end_slot,
              "disconnect_timeout_secs": 900, "send_summary": True, **job.create}
    elf = runoutput.read_elf(job.elf) if isinstance(job.elf, str) else job.elf
    client = Client(job.url, api_key=os.environ.get(job.api_key_env) or None,
                    config=job.config)
    drivers, collector = runoutput.collect_run(
        client, create, program_id=job.program_id, subscriptions=job.subscriptions,
        advance_count=job.advance_count, elf=elf)
    ids = [d.session.info.session_id for d in drivers]
    return runoutput.document(collector.records(), job.start_slot, job.end_slot,
                              job.program_id or runoutput.SYSTEM_PROGRAM_ID, ids,
                              token_changes_measured=collector.token_changes_measured)


# ----------------------------------------------------------------------------- running


def _call(worker: Worker, job: SweepJob, index: int, attempt: int) -> Any:
    """What an executor runs. ``index`` and ``attempt`` make every submission distinct (Dask
    names a pure task by its arguments: a retry must not find the failed one)."""
    return worker(job)


def _executor_lost(exc: BaseException) -> bool:
    """The worker process (or the whole pool) died under the job."""
    if isinstance(exc, concurrent.futures.BrokenExecutor):     # BrokenProcessPool and kin
        return True
    distributed = sys.modules.get("distributed")    # a KilledWorker comes with its module
    killed = getattr(distributed, "KilledWorker", None)
    return isinstance(killed, type) and isinstance(exc, killed)


class _Pool:
    """The executor of one sweep. An owned pool (``executor=None``) is a spawn
    ``ProcessPoolExecutor`` that is replaced when a worker death breaks it, and gets at most one
    job per worker at a time (so a death breaks only the jobs that were running)."""

    def __init__(self, executor: Any, workers: Optional[int]) -> None:
        self.owned = executor is None
        self.workers = workers or os.cpu_count() or 1
        self.generation = 0
        self.executor: concurrent.futures.Executor
        if executor is None:
            self.executor = self._new()
        elif isinstance(executor, concurrent.futures.Executor):
            self.executor = executor
        elif callable(getattr(executor, "get_executor", None)):   # a distributed.Client
            self.executor = executor.get_executor(pure=False)
        else:
            raise TypeError(f"executor must be a concurrent.futures.Executor or a "
                            f"distributed.Client, not {type(executor).__name__}")

    def _new(self) -> concurrent.futures.Executor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))

    def has_room(self, running: int) -> bool:
        return not self.owned or running < self.workers

    def replace(self, generation: int) -> None:
        """The pool of ``generation`` broke: start a new one (once per generation)."""
        if self.owned and generation == self.generation:
            self.executor.shutdown(wait=True)
            self.executor = self._new()
            self.generation += 1

    def close(self, pending: Iterable[concurrent.futures.Future[Any]]) -> None:
        for future in pending:
            future.cancel()
        if self.owned:
            self.executor.shutdown(wait=True, cancel_futures=True)


def sweep(jobs: Iterable[SweepJob], worker: Optional[Worker] = None, executor: Any = None,
          retries: int = 1, *, workers: Optional[int] = None, progress: bool = True,
          retry_on: Tuple[type, ...] = TRANSIENT_ERRORS) -> Iterator[SweepOutcome]:
    """Run every job and yield each one's outcome as it ends, in completion order: a
    :class:`SweepResult` or a :class:`SweepJobFailed` (yielded, not raised), exactly once per
    job.

    * ``worker``: a picklable function ``job -> picklable value`` run in a worker process: a
      module-level function the workers can import (a spawn pool also imports the script's
      ``__main__``, which therefore needs its ``if __name__ == "__main__"`` guard; Dask ships
      ``__main__`` functions by value); default :func:`run_job`.
    * ``executor``: ``None`` (a spawn ``ProcessPoolExecutor`` of ``workers`` processes, default
      ``os.cpu_count()``, owned and shut down by the sweep), any ``concurrent.futures.Executor``
      (used as is, not shut down), or a ``distributed.Client`` (its ``get_executor(pure=False)``).
    * ``retries``: further runs of a job after a worker death (``BrokenProcessPool``,
      ``KilledWorker``) or a worker exception of a ``retry_on`` type; any other exception ends
      the job at once. A death breaks a whole local pool: every job running on it counts one
      attempt. A broken executor the sweep does not own cannot run retries: they fail.
    * ``progress``: a tqdm bar over jobs on stderr.

    Runs on the calling thread and blocks in the executor's futures between outcomes. Closing
    the generator early cancels the jobs not started and waits for the running ones of an owned
    pool. Raises ``TypeError`` for an executor of another kind, ``ValueError`` for
    ``retries < 0``.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    job_list = list(jobs)
    run = worker if worker is not None else run_job
    pool = _Pool(executor, workers)
    todo: Deque[int] = collections.deque(range(len(job_list)))
    attempts = [0] * len(job_list)
    running: Dict[concurrent.futures.Future[Any], Tuple[int, int]] = {}
    bar = ProgressBar(total=len(job_list), unit="job", desc="simsync sweep", disable=not progress,
               miniters=1)
    failed = retried = 0
    try:
        while todo or running:
            while todo and pool.has_room(len(running)):
                index = todo.popleft()
                attempts[index] += 1
                try:
                    future = pool.executor.submit(_call, run, job_list[index], index,
                                                  attempts[index])
                except Exception as exc:  # noqa: BLE001 - shut down or broken executor
                    if pool.owned and _executor_lost(exc):   # broke since the last check
                        attempts[index] -= 1                 # (it never ran)
                        todo.appendleft(index)
                        pool.replace(pool.generation)
                        continue
                    failed += 1
                    bar.update(1)
                    yield SweepJobFailed(index, job_list[index], exc, attempts[index])
                    continue
                running[future] = (index, pool.generation)
            done, _ = concurrent.futures.wait(running, timeout=0.5,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                index, generation = running.pop(future)
                error = _error_of(future)
                if error is None:
                    bar.update(1)
                    yield SweepResult(index, job_list[index], future.result(), attempts[index])
                    continue
                lost = _executor_lost(error)
                if lost:
                    pool.replace(generation)
                if (lost or isinstance(error, retry_on)) and attempts[index] <= retries:
                    todo.appendleft(index)     # a new session (a new submission)
                    retried += 1
                    bar.set_postfix(retried=retried, failed=failed, refresh=False)
                    continue
                failed += 1
                bar.update(1)
                bar.set_postfix(retried=retried, failed=failed, refresh=False)
                yield SweepJobFailed(index, job_list[index], error, attempts[index])
    finally:
        bar.close()
        pool.close(running)


def _error_of(future: concurrent.futures.Future[Any]) -> Optional[BaseException]:
    if future.cancelled():
        return concurrent.futures.CancelledError("the executor cancelled the job")
    return future.exception()


def sweep_results(outcomes: Iterable[SweepOutcome]) -> List[SweepResult]:
    """Every result in job order; raises the first :class:`SweepJobFailed` (by job index)
    after all jobs ended."""
    done: List[SweepResult] = []
    failures: List[SweepJobFailed] = []
    for outcome in outcomes:
        if isinstance(outcome, SweepJobFailed):
            failures.append(outcome)
        else:
            done.append(outcome)
    if failures:
        raise min(failures, key=lambda f: f.index)
    return sorted(done, key=lambda r: r.index)


__all__ = [
    "API_KEY_ENV", "TRANSIENT_ERRORS", "SweepJob", "SweepJobFailed", "SweepOutcome",
    "SweepResult", "build_label", "jobs_for_builds", "jobs_for_range", "run_job",
    "split_range", "sweep", "sweep_results",
]
