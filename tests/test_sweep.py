"""Sweeps (``simsync.sweep``, ``simsync sweep``): job building, retries and exactly-once
outcomes, the local spawn pool, a Dask ``LocalCluster`` (2 worker processes, loopback only),
worker processes killed mid-session, and the CLI under both executors.

Dask note: ``distributed`` offloads some work to a process-wide single-thread executor whose
thread (``Dask-Offload_0``) starts on first use and lives until the interpreter exits, like
multiprocessing's resource tracker. The module fixture ``dask_offload_thread`` starts it before
any test's leak snapshot; every other Dask thread, socket and process must end with the
cluster (the leak guard checks that after each test).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import pickle
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import distributed
import pytest
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

import simsync
from simsync.cli import parse_args
from simsync.localsim import MEMO_PROGRAM_ID, TOKEN_PROGRAM_ID, LocalSimulator
from simsync.sweep import SweepJob, SweepJobFailed, SweepResult, split_range
from tests import sweep_workers
from tests.support import FAST, START

pytestmark = pytest.mark.timeout(300)

KEY = "sweep-test-key-3b9d5e21c7"
Json = Dict[str, Any]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def dask_offload_thread() -> None:
    """Start distributed's process-wide offload thread before the leak snapshots (see above)."""
    from distributed.utils import _offload_executor

    _offload_executor.submit(int).result(timeout=30)


@pytest.fixture
def sim() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=100, bundles=2) as server:
        yield server


@pytest.fixture
def dask_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A LocalCluster of 2 single-thread worker processes on 127.0.0.1, and its client; both
    closed (workers, nannies, scheduler, event loop) before the leak guard looks. Indirect
    parametrization sets the scheduler's ``allowed-failures`` (default 3: the scheduler itself
    reruns a task whose worker died, up to 3 times, before ``KilledWorker``)."""
    import dask

    allowed = getattr(request, "param", None)
    settings = {"distributed.scheduler.allowed-failures": allowed} if allowed is not None else {}
    with dask.config.set(settings):
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           host="127.0.0.1", dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close(timeout=30)


def jobs(url: str, n: int = 6, **common: Any) -> List[SweepJob]:
    """``n`` jobs over 60 slots. The default ClientConfig: the workers share 2 loaded cores
    with the simulator and the Dask scheduler, and FAST's 1.5 s keepalive would turn a stall
    into reconnects (not what these tests are about)."""
    return simsync.jobs_for_range(START, START + 59, n, url=url, **common)


def comparable(doc: Json) -> Json:
    """A run output document without what differs between runs (time, session ids)."""
    meta = {k: v for k, v in doc["metadata"].items() if k not in ("timestamp", "session_ids")}
    return {**doc, "metadata": meta}


def one_by_one(job_list: List[SweepJob]) -> List[Json]:
    """The reference: every job run in this process, in order."""
    return [comparable(simsync.run_job(job)) for job in job_list]


def by_index(outcomes: List[Any], count: int) -> Dict[int, Any]:
    """The outcomes keyed by job index, after checking each job ended exactly once."""
    indexes = sorted(o.index for o in outcomes)
    assert indexes == list(range(count)), indexes
    return {o.index: o for o in outcomes}


# ----------------------------------------------------------------------------- building jobs


@pytest.mark.parametrize("start,end,n", [(0, 0, 1), (0, 9, 3), (5, 104, 7), (10, 12, 5),
                                          (START, START + 59, 6)])
def test_split_range_covers_the_range_once_in_near_equal_parts(start: int, end: int,
                                                               n: int) -> None:
    parts = split_range(start, end, n)
    assert len(parts) == min(n, end - start + 1)
    assert parts[0][0] == start and parts[-1][1] == end
    assert all(b[0] == a[1] + 1 for a, b in zip(parts, parts[1:]))
    sizes = [b - a + 1 for a, b in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_split_range_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="n must be"):
        split_range(0, 9, 0)
    with pytest.raises(ValueError, match="after end"):
        split_range(9, 0, 2)


def test_jobs_for_builds_crosses_builds_with_ranges() -> None:
    elf = b"\x7fELF" + b"\0" * 60
    made = simsync.jobs_for_builds(START, START + 29, [None, "/builds/a.so", elf], 3,
                                   program_id=TOKEN_PROGRAM_ID, url="ws://127.0.0.1:1/backtest")
    assert [(j.build, j.start_slot, j.end_slot) for j in made] == [
        (build, START + 10 * i, START + 10 * i + 9)
        for build in ("original", "a.so", "build2") for i in range(3)]
    assert {j.elf for j in made} == {None, "/builds/a.so", elf}
    assert all(j.program_id == TOKEN_PROGRAM_ID for j in made)
    labelled = simsync.jobs_for_builds(START, START + 9, {"base": None, "exp": elf},
                                       program_id=TOKEN_PROGRAM_ID, url="h")
    assert [j.build for j in labelled] == ["base", "exp"]
    with pytest.raises(ValueError, match="share a label"):
        simsync.jobs_for_builds(START, START + 9, ["/x/a.so", "/y/a.so"],
                                program_id=TOKEN_PROGRAM_ID, url="h")


@pytest.mark.parametrize("fields,message", [
    ({"create": {"start_slot": 1}}, "must not set"),
    ({"create": {"parallel": True}}, "must not set"),
    ({"create": {"disconnect_timeout_secs": 901}}, "between 0 and 900"),
    ({"create": {"no_such_field": 1}}, "no_such_field"),
    ({"subscriptions": ("logs",)}, "unknown subscription"),
    ({"elf": b"\x7fELF"}, "needs program_id"),
    ({"elf": b"MZ..", "program_id": TOKEN_PROGRAM_ID}, "not an ELF"),
    ({"end_slot": START - 1}, "after end_slot"),
    ({"advance_count": 0}, "advance_count"),
])
def test_a_bad_job_is_refused_where_it_is_made(fields: Dict[str, Any], message: str) -> None:
    base: Dict[str, Any] = {"start_slot": START, "end_slot": START + 9, "url": "h"}
    with pytest.raises((ValueError, TypeError), match=message):
        SweepJob(**{**base, **fields})


def test_jobs_and_failures_pickle_and_show_no_elf() -> None:
    elf = b"\x7fELF" + b"\xab" * 1000
    job = SweepJob(START, START + 9, "ws://127.0.0.1:1/backtest", program_id=TOKEN_PROGRAM_ID,
                   elf=elf, build="exp", create={"extra_compute_units": 5},
                   params={"k": [1]}, config=FAST)
    assert pickle.loads(pickle.dumps(job)) == job
    assert "xab" not in repr(job) and "build='exp'" in repr(job)
    failure = SweepJobFailed(3, job, simsync.ControlFailed("gone"), 2)
    again = pickle.loads(pickle.dumps(failure))
    assert (again.index, again.job, again.attempts, str(again.cause)) == (3, job, 2, "gone")
    assert str(again) == (f"job 3 (slots {START}-{START + 9} exp) failed after 2 attempts: "
                          "ControlFailed: gone")


# ----------------------------------------------------------------------------- retries


def flaky_jobs(tmp_path: Path, error: str, fails: Dict[int, int]) -> List[SweepJob]:
    return [SweepJob(START + 10 * i, START + 10 * i + 9, "h",
                     params={"dir": str(tmp_path), "error": error, "fail": fails.get(i, 0)})
            for i in range(6)]


@pytest.mark.parametrize("error", ["ControlFailed", "ConnectionRefusedError"])
def test_a_transient_failure_runs_again_and_every_job_ends_once(tmp_path: Path,
                                                                error: str) -> None:
    job_list = flaky_jobs(tmp_path, error, {1: 1, 4: 2})
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(simsync.sweep(job_list, sweep_workers.flaky, pool, retries=1,
                                      progress=False))
    ended = by_index(outcomes, 6)
    assert [type(ended[i]) for i in range(6)] == [SweepResult] * 4 + [SweepJobFailed,
                                                                        SweepResult]
    assert [ended[i].attempts for i in range(6)] == [1, 2, 1, 1, 2, 1]
    assert ended[1].value[:2] == (START + 10, START + 19)
    failure = ended[4]
    assert isinstance(failure.cause, getattr(simsync, error, None) or ConnectionRefusedError)
    assert failure.job is job_list[4] and "attempt 1 of job" in str(failure.cause)


def test_other_failures_end_the_job_at_once(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    job_list = flaky_jobs(tmp_path, "ValueError", {2: 1})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(simsync.sweep(job_list, sweep_workers.flaky, pool, retries=3))
    bar = capsys.readouterr().err          # the bar over jobs (and no thread of its own left)
    assert "simsync sweep: 100%" in bar and "6/6" in bar and "failed=1" in bar
    ended = by_index(outcomes, 6)
    assert isinstance(ended[2], SweepJobFailed) and ended[2].attempts == 1
    assert isinstance(ended[2].cause, ValueError)
    with pytest.raises(SweepJobFailed, match="job 2 .* ValueError"):
        simsync.sweep_results(iter(outcomes))
    assert sum(isinstance(o, SweepResult) for o in outcomes) == 5


def test_retries_zero_and_a_shut_down_executor(tmp_path: Path) -> None:
    job_list = flaky_jobs(tmp_path, "ControlFailed", {0: 1})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        ended = by_index(list(simsync.sweep(job_list, sweep_workers.flaky, pool, retries=0,
                                            progress=False)), 6)
    assert isinstance(ended[0], SweepJobFailed) and ended[0].attempts == 1
    ended = by_index(list(simsync.sweep(job_list, sweep_workers.flaky, pool,
                                        progress=False)), 6)      # shut down: nothing runs
    assert all(isinstance(o, SweepJobFailed) and isinstance(o.cause, RuntimeError)
               for o in ended.values())
    with pytest.raises(ValueError, match="retries"):
        next(simsync.sweep(job_list, retries=-1))
    with pytest.raises(TypeError, match="executor"):
        next(simsync.sweep(job_list, executor=object()))


# ----------------------------------------------------------------------------- local processes


def test_the_local_pool_gives_the_results_of_one_by_one_runs(sim: LocalSimulator) -> None:
    job_list = jobs(sim.url, subscriptions=("transactions", "account-diff"))
    results = simsync.sweep_results(simsync.sweep(job_list, workers=2, progress=False))
    assert [comparable(r.value) for r in results] == one_by_one(job_list)
    assert all(r.attempts == 1 for r in results)
    assert sum(r.value["summary"]["total"] for r in results) > 0


def test_a_pool_process_killed_mid_session_is_replaced_and_the_job_retried(
        sim: LocalSimulator, tmp_path: Path) -> None:
    marker = str(tmp_path / "killed")
    job_list = [j if i != 2 else dataclasses.replace(j, params={"kill": marker})
                for i, j in enumerate(jobs(sim.url))]
    outcomes = list(simsync.sweep(job_list, sweep_workers.kill_mid_session, workers=2,
                                  retries=1, progress=False))
    ended = by_index(outcomes, 6)
    assert os.path.exists(marker)                       # the kill happened
    assert all(isinstance(o, SweepResult) for o in outcomes), outcomes
    assert ended[2].attempts == 2
    assert [comparable(ended[i].value) for i in range(6)] == one_by_one(job_list)


def test_a_broken_pool_the_sweep_does_not_own_fails_its_jobs_once(tmp_path: Path) -> None:
    job_list = [SweepJob(START + i, START + i, "h",
                         params={"exit": str(tmp_path / "x")} if i == 0 else {})
                for i in range(4)]
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        outcomes = list(simsync.sweep(job_list, sweep_workers.exit_once, pool, retries=2,
                                      progress=False))
    ended = by_index(outcomes, 4)
    assert all(isinstance(o, SweepJobFailed) for o in ended.values())
    assert isinstance(ended[0].cause, concurrent.futures.process.BrokenProcessPool)


# ----------------------------------------------------------------------------- Dask


def test_a_dask_sweep_gives_the_results_of_one_by_one_runs(sim: LocalSimulator,
                                                           dask_client: Any) -> None:
    job_list = jobs(sim.url)
    outcomes = list(simsync.sweep(job_list, executor=dask_client, progress=False))
    ended = by_index(outcomes, 6)
    assert all(isinstance(o, SweepResult) and o.attempts == 1 for o in outcomes), outcomes
    assert [comparable(ended[i].value) for i in range(6)] == one_by_one(job_list)


@pytest.mark.parametrize("dask_client", [0], indirect=True, ids=["allowed_failures=0"])
def test_a_dask_worker_killed_mid_session_is_retried_by_the_sweep(
        sim: LocalSimulator, dask_client: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "killed")
    job_list = [j if i != 3 else dataclasses.replace(j, params={"kill": marker})
                for i, j in enumerate(jobs(sim.url))]
    outcomes = list(simsync.sweep(job_list, sweep_workers.kill_mid_session,
                                  executor=dask_client.get_executor(pure=False), retries=1,
                                  progress=False))
    ended = by_index(outcomes, 6)
    assert os.path.exists(marker)
    assert all(isinstance(o, SweepResult) for o in outcomes), outcomes
    # allowed-failures 0: the scheduler gives up at once (KilledWorker) on every task the dead
    # worker held (the killed one and any the scheduler had queued on it: how many depends on
    # its placement), so each second run is the sweep's retry.
    attempts = [ended[i].attempts for i in range(6)]
    assert attempts[3] == 2 and max(attempts) == 2, attempts
    assert [comparable(ended[i].value) for i in range(6)] == one_by_one(job_list)


@pytest.mark.parametrize("dask_client", [0], indirect=True, ids=["allowed_failures=0"])
def test_without_retries_a_killed_dask_job_is_one_typed_failure(
        sim: LocalSimulator, dask_client: Any, tmp_path: Path) -> None:
    job = dataclasses.replace(jobs(sim.url, n=1)[0], params={"kill": str(tmp_path / "k")})
    outcomes = list(simsync.sweep([job], sweep_workers.kill_mid_session, executor=dask_client,
                                  retries=0, progress=False))
    assert len(outcomes) == 1 and isinstance(outcomes[0], SweepJobFailed), outcomes
    assert type(outcomes[0].cause).__name__ == "KilledWorker"
    assert outcomes[0].attempts == 1 and outcomes[0].job == job


# ----------------------------------------------------------------------------- the command


def simsync_cmd(*args: str, env: Optional[Dict[str, str]] = None,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "SIMULATOR_API_KEY"}
    return subprocess.run([sys.executable, "-m", "simsync", *args], capture_output=True,
                          text=True, timeout=timeout, env={**clean, **(env or {})},
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def builds(tmp_path: Path) -> List[str]:
    """Two real SBF ELFs for the Token program id: the Token program itself and SPL Memo
    (which fails every token instruction)."""
    svm = LiteSVM()
    token = bytes(svm.get_account(Pubkey.from_string(TOKEN_PROGRAM_ID)).data)
    programdata = bytes(svm.get_account(Pubkey.from_bytes(token[4:36])).data)
    paths = [tmp_path / "spl_token.so", tmp_path / "spl_memo.so"]
    paths[0].write_bytes(programdata[45:])      # after the upgradeable loader's header
    paths[1].write_bytes(bytes(svm.get_account(Pubkey.from_string(MEMO_PROGRAM_ID)).data))
    return [str(p) for p in paths]


def read_outputs(directory: Path) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix == ".json" and path.name != "summary.json":
            out[path.name] = comparable(json.loads(path.read_text()))
        elif path.suffix == ".json":
            out[path.name] = json.loads(path.read_text())
        else:
            out[path.name] = path.read_text()
    return out


def test_the_command_writes_the_same_files_with_local_workers_and_dask(
        dask_client: Any, tmp_path: Path, builds: List[str]) -> None:
    common = ["sweep", "--start-slot", str(START), "--end-slot", str(START + 59),
              "--split", "3", "--program-id", TOKEN_PROGRAM_ID, "--program-so", builds[0],
              "--program-so", builds[1]]
    local = simsync_cmd(*common, "--workers", "2", "--output-dir", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    address = dask_client.cluster.scheduler_address
    dask = simsync_cmd(*common, "--scheduler", address, "--output-dir", str(tmp_path / "dask"))
    assert dask.returncode == 0, dask.stderr
    assert f"on Dask scheduler {address}" in dask.stderr
    assert "on 2 local worker processes" in local.stderr

    files = read_outputs(tmp_path / "local")
    assert files == read_outputs(tmp_path / "dask")
    names = [f"{i:03d}-{build}-{a}-{b}.json" for i, (build, (a, b)) in enumerate(
        (build, part) for build in ("spl_token.so", "spl_memo.so")
        for part in split_range(START, START + 59, 3))]
    assert sorted(files) == sorted(names + ["summary.json", "compare.txt",
                                            "compare-spl_memo.so.txt"])
    summary = files["summary.json"]
    assert [e["file"] for e in summary["jobs"]] == names
    assert all(e["status"] == "ok" and e["attempts"] == 1 for e in summary["jobs"])
    token_txs = sum(len(files[n]["transactions"]) for n in names[:3])
    assert token_txs > 0 and summary["totals"]["total"] == 2 * token_txs
    table = files["compare.txt"].splitlines()
    assert table[1].split()[:7] == ["spl_token.so", "(base)", "3", str(token_txs),
                                    str(token_txs), "0", "0"]
    # Memo installed at the Token program id fails every token transfer: all regress.
    assert table[2].split()[:6] == ["spl_memo.so", "3", str(token_txs), "0", str(token_txs),
                                    str(token_txs)]
    assert table == [line for line in local.stdout.splitlines() if line in table]


def test_the_command_gives_workers_the_key_and_never_shows_it(tmp_path: Path) -> None:
    with LocalSimulator(bundle_size=100, bundles=1, api_key=KEY) as server:
        ok = simsync_cmd("sweep", "--url", server.url, "--api-key", KEY, "--start-slot",
                         str(START), "--end-slot", str(START + 19), "--split", "2",
                         "--workers", "2", "--output-dir", str(tmp_path / "out"))
        refused = simsync_cmd("sweep", "--url", server.url, "--start-slot", str(START),
                              "--end-slot", str(START + 19), "--split", "2", "--workers", "1",
                              "--retries", "0", "--output-dir", str(tmp_path / "refused"))
    assert ok.returncode == 0, ok.stderr
    written = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert KEY not in ok.stdout + ok.stderr + written
    assert len(json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]) == 2
    plain = sorted(line for line in ok.stderr.splitlines() if " done in " in line)
    assert [line.split(": job ")[1].split(" [")[0] for line in plain] == [
        f"0 (slots {START}-{START + 9}) done in 1 attempt: 000-{START}-{START + 9}.json",
        f"1 (slots {START + 10}-{START + 19}) done in 1 attempt: 001-{START + 10}-{START + 19}"
        ".json"]
    assert "\r" not in ok.stderr           # not a terminal: plain lines, no bar
    assert refused.returncode == 1                    # no key in the workers' environment
    assert "2 of 2 jobs failed" in refused.stderr
    summary = json.loads((tmp_path / "refused" / "summary.json").read_text())
    assert [e["status"] for e in summary["jobs"]] == ["failed", "failed"]


def test_the_command_shows_a_bar_over_jobs_on_a_terminal(sim: LocalSimulator,
                                                         tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simsync", "sweep", "--url", sim.url, "--start-slot",
             str(START), "--end-slot", str(START + 29), "--split", "3", "--workers", "2",
             "--output-dir", str(tmp_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:     # until every process holding the terminal ended (EIO on Linux)
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, shown
    assert "simsync sweep:" in shown and "3/3" in shown and "job/s" in shown and "\r" in shown
    assert " done in " not in shown                 # the bar replaces the plain lines
    assert b"jobs: 3 (3 completed, 0 failed)" in stdout


@pytest.mark.parametrize("argv,message", [
    (["--program-so", "ELF"], "needs --program-id"),
    (["--program-id", TOKEN_PROGRAM_ID, "--program-so", "ELF", "--program-so", "ELF"],
     "same name"),
    (["--program-id", TOKEN_PROGRAM_ID, "--program-so", "missing.so"], "missing.so"),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "not allowed with"),
    (["--scheduler", "tcp://127.0.0.1:1", "--api-key", "k"], "workers' environment"),
    (["--split", "0"], "must be >= 1"),
    (["--end-slot", "1"], "after --end-slot"),
])
def test_usage_errors(argv: List[str], message: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    elf = tmp_path / "a.so"
    elf.write_bytes(b"\x7fELF\x02\x01" + bytes(12) + (247).to_bytes(2, "little") + bytes(44))
    base = ["sweep", "--start-slot", "5", "--end-slot", "9", "--output-dir", "o"]
    with pytest.raises(SystemExit) as exited:
        parse_args(base + [str(elf) if arg == "ELF" else arg for arg in argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
