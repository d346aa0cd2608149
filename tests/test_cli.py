"""The ``simsync`` command, run as a subprocess against a local simulator started by the test:
every subcommand and flag, exit codes, the output file format, secrets, progress, serve."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pandas as pd  # in the test extra: the README's pandas lines are never skipped
import pytest
import requests
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from simsync.localsim import (
    MEMO_PROGRAM_ID,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    Fault,
    FaultPlan,
    LocalSimulator,
)
from tests.support import START, closed_port

pytestmark = pytest.mark.timeout(120)

KEY = "cli-test-key-7f3a9c1e5b"
TX_KEYS = {"slot", "signature", "success", "error", "logs", "sol_changes", "token_changes",
           "account_diffs"}
PLAIN_LINE = re.compile(r"^simsync run: (\d+)/(\d+) slots \(\d+%\), \d+ events, [\d.]+ events/s, "
                        r"(\d+) reconnects, [\d.]+s$")
REGRESSIONS = re.compile(r"^regressions \(succeeded in BASE, fail in EXP\): (\d+)$", re.M)


def simsync_cmd(*args: str, env: Optional[Dict[str, str]] = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m simsync ARGS`` to completion (reaped; killed on timeout)."""
    return subprocess.run([sys.executable, "-m", "simsync", *args], capture_output=True,
                          text=True, timeout=timeout, env=clean_env(env),
                          stdin=subprocess.DEVNULL)


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SIMULATOR_API_KEY"}
    env.update(extra or {})
    return env


def run_args(url: Optional[str], start: int, end: int, *more: str) -> List[str]:
    head = ["run"] + (["--url", url] if url else [])
    return head + ["--start-slot", str(start), "--end-slot", str(end), *more]


def executed(sim: LocalSimulator, session_ids: List[str], program: str) -> List[str]:
    """What the server executed for ``program`` (its own record), by signature."""
    return [tx.signature for sid in session_ids for tx in sim.executed(sid)
            if program in tx.program_ids]


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("simsync: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def sim() -> Iterator[LocalSimulator]:
    with LocalSimulator(bundle_size=20, bundles=4) as server:
        yield server


@pytest.fixture
def memo_elf(tmp_path: Path) -> Path:
    """A real SBF ELF (SPL Memo v3) to install over another program."""
    path = tmp_path / "memo.so"
    path.write_bytes(bytes(LiteSVM().get_account(Pubkey.from_string(MEMO_PROGRAM_ID)).data))
    return path


# ----------------------------------------------------------------------------- usage


@pytest.mark.parametrize("args", [
    [],
    ["bogus"],
    ["run", "--end-slot", "5"],
    ["run", "--start-slot", "10", "--end-slot", "5"],
    ["run", "--start-slot", "1", "--end-slot", "5", "--program-so", "x.so"],
    ["run", "--start-slot", "1", "--end-slot", "5", "--subscriptions", "blocks"],
    ["run", "--start-slot", "1", "--end-slot", "5", "--program-id", "not-a-key"],
    ["ranges", "--after", "yesterday"],
    ["compare", "a.json", "b.json", "everything"],
])
def test_usage_errors_exit_2(args: List[str]) -> None:
    result = simsync_cmd(*args)
    assert result.returncode == 2, result
    assert "usage: simsync" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that accepts TCP connections into its backlog (never answered), so a
    test can tell whether the command connected at all."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def connected(server: socket.socket) -> bool:
    """Whether any connection is waiting in ``server``'s backlog (one is taken and closed)."""
    try:
        client, _ = server.accept()
    except BlockingIOError:
        return False
    client.close()
    return True


def bad_run_arguments(tmp_path: Path) -> List[Tuple[List[str], str]]:
    """(extra ``run`` arguments, the words the error must name) for each bad argument."""
    not_elf, folder = tmp_path / "x.so", tmp_path / "a-folder"
    not_elf.write_text("text")
    folder.mkdir()
    cases = [
        (["--output-file", str(tmp_path / "missing" / "out.json")], "--output-file"),
        (["--output-file", str(folder)], "is a directory"),
        (["--program-id", TOKEN_PROGRAM_ID, "--program-so", str(tmp_path / "nope.so")],
         "--program-so: cannot read"),
        (["--program-id", TOKEN_PROGRAM_ID, "--program-so", str(not_elf)], "not an ELF file"),
        # an x86 (or ARM) executable: an ELF, but not a Solana program (issue 27 item 10)
        (["--program-id", TOKEN_PROGRAM_ID, "--program-so", os.path.realpath(sys.executable)],
         "not a Solana program (SBF: e_machine 247 EM_BPF or 263 EM_SBF)"),
        (["--program-id", "1" * 31 + "O"], "not a base58 public key"),
        (["--program-id", "1" * 20], "not a base58 public key"),
        (["--disconnect-timeout", "-3"], "--disconnect-timeout: must be >= 0, got -3"),
        (["--url", "http://127.0.0.1:1/"], "--url"),
    ]
    if os.geteuid() != 0:              # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((["--output-file", str(locked / "out.json")], "not writable"))
    return cases


def test_every_run_argument_is_checked_before_any_connection(
        tmp_path: Path, listener: socket.socket) -> None:
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
    for extra, words in bad_run_arguments(tmp_path):
        args = run_args(url, START, START + 1, *extra)
        if "--url" in extra:
            args = ["run", "--start-slot", str(START), "--end-slot", str(START + 1), *extra]
        result = simsync_cmd(*args, timeout=30)
        assert result.returncode == 2, (extra, result.stderr)
        assert words in one_error_line(result.stderr), (extra, result.stderr)
        assert "usage: simsync run" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert not connected(listener), f"{extra}: connected before checking its arguments"


def test_argument_errors_print_the_subcommands_usage_and_name_the_field() -> None:
    swapped = simsync_cmd("run", "--start-slot", "10", "--end-slot", "5")
    assert swapped.returncode == 2
    assert swapped.stderr.startswith("usage: simsync run ")
    assert "--start-slot 10 is after --end-slot 5" in one_error_line(swapped.stderr)
    window = simsync_cmd("run", "--start-slot", "1", "--end-slot", "5",
                         "--disconnect-timeout", "-3")
    line = one_error_line(window.stderr)
    assert "--disconnect-timeout" in line and "slot" not in line
    count = simsync_cmd("run", "--start-slot", "1", "--end-slot", "5", "--advance-count", "x")
    assert "--advance-count: not a whole number" in one_error_line(count.stderr)
    assert simsync_cmd("ranges", "--after", "x").stderr.startswith("usage: simsync ranges ")


def test_connection_errors_name_the_url_and_a_hint() -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    result = simsync_cmd("ranges", "--url", url, timeout=60)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert url in line and "hint:" in line and "simsync serve" in line


def test_run_says_on_stderr_that_it_is_connecting() -> None:
    """Before the first attempt's outcome: the user sees where the command connects."""
    url = f"ws://127.0.0.1:{closed_port()}/backtest"
    proc = subprocess.Popen([sys.executable, "-m", "simsync", *run_args(url, START, START + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=clean_env(), stdin=subprocess.DEVNULL)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first == f"simsync: connecting to {url} ...\n"
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_transport_warnings_reach_stderr_during_a_command(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Each failed connection attempt is a ``simsync.transport`` WARNING: while a command
    runs it goes to stderr (masked)."""
    import logging

    from simsync.cli import _logging

    transport = logging.getLogger("simsync.transport")
    with _logging(debug=False, verbose=0, secrets=[KEY]):
        transport.warning("attempt 1 to ws://127.0.0.1:9 failed: refused (key %s)", KEY)
        transport.info("not shown without -v")
    err = capfd.readouterr().err
    assert "WARNING simsync.transport: attempt 1 to ws://127.0.0.1:9 failed: refused" in err
    assert KEY not in err and "not shown" not in err


def test_help_and_version() -> None:
    result = simsync_cmd("--help")
    assert result.returncode == 0
    for command in ("ranges", "run", "summarize", "compare", "serve"):
        assert command in result.stdout
    assert simsync_cmd("run", "--help").stdout.count("--program-so") >= 1
    assert simsync_cmd("--version").stdout.startswith("simsync ")


# ----------------------------------------------------------------------------- ranges


def test_ranges_text_json_and_date_filters(sim: LocalSimulator) -> None:
    text = simsync_cmd("ranges", "--url", sim.url)
    assert text.returncode == 0, text.stderr
    assert "START SLOT" in text.stdout and str(START + 20) in text.stdout
    listed = json.loads(simsync_cmd("ranges", "--url", sim.url, "--json").stdout)
    assert [r["bundleStartSlot"] for r in listed] == [START, START + 20, START + 40, START + 60]
    assert {"maxBundleEndSlot", "bundleStartSlotUtc", "maxBundleEndSlotUtc"} <= set(listed[0])
    # 20-slot bundles start 8 s apart from 08:00:00 UTC: only the third starts in [10 s, 20 s).
    window = simsync_cmd("ranges", "--url", sim.url, "--json",
                         "--after", "2026-01-10T08:00:10Z", "--before", "2026-01-10T08:00:20")
    assert [r["bundleStartSlot"] for r in json.loads(window.stdout)] == [START + 40]
    later = simsync_cmd("ranges", "--url", sim.url, "--after", "2027-01-01")
    assert later.returncode == 0 and "no available ranges" in later.stdout


# ----------------------------------------------------------------------------- run


def test_run_output_file_format_and_summarize(sim: LocalSimulator, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = simsync_cmd(*run_args(sim.url, START, START + 15, "--program-id", TOKEN_PROGRAM_ID,
                                   "--subscriptions", "transactions,account-diff",
                                   "--extra-compute-units", "1000", "--advance-count", "3",
                                   "--output-file", str(out)))
    assert result.returncode == 0, result.stderr
    assert "completed slots" in result.stdout and f"wrote {out}" in result.stdout
    assert "reconnects: 0" in result.stdout
    doc = json.loads(out.read_text())
    assert set(doc) == {"metadata", "transactions", "summary"}
    meta = doc["metadata"]
    assert set(meta) == {"start_slot", "end_slot", "program_id", "session_ids", "timestamp",
                         "token_changes_measured"}
    assert (meta["start_slot"], meta["end_slot"]) == (START, START + 15)
    assert meta["program_id"] == TOKEN_PROGRAM_ID
    assert len(meta["session_ids"]) == 1 and sim.executed(meta["session_ids"][0])
    txs = doc["transactions"]
    assert [t["signature"] for t in txs] == executed(sim, meta["session_ids"], TOKEN_PROGRAM_ID)
    assert txs, "the range has token transfers"
    for tx in txs:
        assert set(tx) == TX_KEYS
        assert tx["success"] is True and tx["error"] is None and tx["logs"]
        assert all(Pubkey.from_string(k) for k in tx["sol_changes"])    # keyed by pubkey
        assert tx["account_diffs"], "each token transfer changed accounts"
        for diff in tx["account_diffs"].values():
            assert set(diff) == {"before", "after"}
    assert doc["summary"] == {"total": len(txs), "successes": len(txs), "failures": 0}
    # token_changes per owner and mint (the simulator's meta has no token balances: they
    # come from the token-account diffs); every transfer moves tokens between two owners
    for tx in txs:
        changes = tx["token_changes"]
        assert len(changes) == 2 and all(Pubkey.from_string(owner) for owner in changes)
        (mint_a, a), = changes[list(changes)[0]].items()
        (mint_b, b), = changes[list(changes)[1]].items()
        assert mint_a == mint_b and a == -b != 0

    # summarize: totals, and the lamport trace of one account
    payer = next(iter(txs[0]["sol_changes"]))
    net = sum(t["sol_changes"].get(payer, 0) for t in txs)
    summary = simsync_cmd("summarize", str(out), "--accounts", payer)
    assert summary.returncode == 0, summary.stderr
    assert f"transactions: {len(txs)} ({len(txs)} succeeded, 0 failed)" in summary.stdout
    assert f"account {payer}:" in summary.stdout
    assert f"net change: {net:+,d} lamports" in summary.stdout
    assert "largest net lamport changes" in simsync_cmd("summarize", str(out)).stdout


@pytest.fixture
def big_sim() -> Iterator[LocalSimulator]:
    """One 40-slot bundle: a non-parallel range lies in one bundle."""
    with LocalSimulator(bundle_size=40, bundles=1) as server:
        yield server


def test_output_file_adds_up_with_account_diffs(big_sim: LocalSimulator,
                                                tmp_path: Path) -> None:
    """Account diffs of other programs' transactions (a token transfer's fee payer is a
    System account) are no entries of their own; every entry has an outcome."""
    sim = big_sim
    out = tmp_path / "system.json"
    result = simsync_cmd(*run_args(sim.url, START, START + 30, "--subscriptions",
                                   "transactions,account-diff", "--output-file", str(out)))
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    ids, txs = doc["metadata"]["session_ids"], doc["transactions"]
    assert [t["signature"] for t in txs] == executed(sim, ids, SYSTEM_PROGRAM_ID)
    token_signatures = set(executed(sim, ids, TOKEN_PROGRAM_ID))
    assert token_signatures and not token_signatures & {t["signature"] for t in txs}
    assert all(t["success"] in (True, False) for t in txs)
    summary = doc["summary"]
    assert summary["total"] == len(txs) == summary["successes"] + summary["failures"]
    assert all(t["account_diffs"] for t in txs)       # merged into their transaction
    left_out = re.search(r"^left out: 0 transactions .*, (\d+) account diffs", result.stdout,
                         re.M)
    assert left_out and int(left_out.group(1)) > 0


def test_run_without_url_uses_an_embedded_simulator(tmp_path: Path) -> None:
    out = tmp_path / "embedded.json"
    result = simsync_cmd(*run_args(None, START, START + 10, "--output-file", str(out)))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "embedded local simulator" in line]
    assert len(notes) == 1 and "ws://127.0.0.1:" in notes[0]
    doc = json.loads(out.read_text())
    assert doc["metadata"]["program_id"] == SYSTEM_PROGRAM_ID
    assert doc["summary"]["total"] == len(doc["transactions"]) > 0
    ranges = simsync_cmd("ranges", "--json")
    assert ranges.returncode == 0 and json.loads(ranges.stdout)[0]["bundleStartSlot"] == START


def test_plain_progress_lines_when_stderr_is_not_a_terminal() -> None:
    with LocalSimulator(bundle_size=100, bundles=1, slot_delay=0.04) as slow:
        result = simsync_cmd(*run_args(slow.url, START, START + 39, "--advance-count", "1",
                                       "--progress-interval", "0.2"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("simsync run:")]
    assert len(lines) >= 4, result.stderr          # ~1.5 s of stepping, a line every 0.2 s
    parsed = [PLAIN_LINE.match(line) for line in lines]
    assert all(parsed), lines
    done = [int(m.group(1)) for m in parsed if m]
    assert done == sorted(done) and done[-1] == 40 and done[0] < 40
    assert "\r" not in result.stderr


def on_terminal(argv: List[str], columns: int) -> Tuple[int, str, bytes]:
    """Run ``python -m simsync *argv`` with stderr on a pseudo-terminal of ``columns``
    (0: a fresh pty reporting 0 x 0): (exit code, what the terminal showed, stdout)."""
    master, slave = pty.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "simsync", *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=slave, env=clean_env())
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:                 # until the child closed the terminal (EIO on Linux)
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
    return proc.returncode, b"".join(chunks).decode(errors="replace"), stdout


@pytest.mark.parametrize("columns", [0, 100, 120])     # a fresh pty reports 0 x 0
def test_progress_bar_on_a_terminal(sim: LocalSimulator, columns: int) -> None:
    returncode, shown, stdout = on_terminal([*run_args(sim.url, START, START + 10), "-v"],
                                            columns)
    assert returncode == 0, shown
    assert "simsync run:" in shown and "11/11" in shown and "slot/s" in shown
    assert "0 reconnects" in shown and "\r" in shown
    assert "INFO simsync.transport" in shown       # -v log lines pass through the bar
    assert b"completed slots" in stdout
    bars = re.findall(r"%\|([^|]*)\|", shown)
    assert bars and min(len(bar) for bar in bars) >= 12, bars   # the postfix leaves a bar


def test_a_dead_first_connect_is_one_updating_status_line_on_a_terminal() -> None:
    """On a terminal the first connection's retries rewrite one line (no WARNING per
    attempt), which is erased before the error line; the budget still bounds it."""
    began = time.monotonic()
    returncode, shown, _ = on_terminal(["ranges", "--url", f"ws://127.0.0.1:{closed_port()}",
                                        "--connect-timeout", "1.5"], 100)
    assert returncode == 1, shown
    assert time.monotonic() - began < 1.5 + 8.0      # interpreter start-up on a loaded box
    updates = re.findall(r"\r\x1b\[Ksimsync: [^\r\n]*failed \(attempt (\d+)\)", shown)
    assert len(updates) >= 2 and updates == sorted(updates, key=int), shown
    assert "WARNING" not in shown, shown
    error = shown.rsplit("\x1b[K", 1)[-1].strip().splitlines()
    assert len(error) == 1 and error[0].startswith("simsync: error:"), shown


def test_run_parallel_merges_every_sub_session(sim: LocalSimulator, tmp_path: Path) -> None:
    out = tmp_path / "parallel.json"
    result = simsync_cmd(*run_args(sim.url, START, START + 49, "--parallel",
                                   "--output-file", str(out)))
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    ids = doc["metadata"]["session_ids"]
    assert len(ids) == 3                         # 20-slot bundles: 0-19, 20-39, 40-49
    signatures = [t["signature"] for t in doc["transactions"]]
    assert sorted(signatures) == sorted(executed(sim, ids, SYSTEM_PROGRAM_ID))
    slots = [t["slot"] for t in doc["transactions"]]
    assert slots == sorted(slots) and slots[0] < START + 20 and slots[-1] >= START + 40
    assert "sessions: " + ", ".join(ids) in result.stdout


def test_program_override_shows_in_compare_and_summarize(sim: LocalSimulator, tmp_path: Path,
                                                         memo_elf: Path) -> None:
    base, exp = tmp_path / "base.json", tmp_path / "exp.json"
    common = ("--program-id", TOKEN_PROGRAM_ID, "--subscriptions", "transactions,account-diff")
    runs = [subprocess.Popen([sys.executable, "-m", "simsync",
                              *run_args(sim.url, START, START + 29, *common, *extra)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=clean_env(), stdin=subprocess.DEVNULL)
            for extra in (("--output-file", str(base), "--parallel"),  # two bundles
                          ("--output-file", str(exp), "--program-so", str(memo_elf),
                           "--parallel"))]          # the override goes to every sub-session
    for proc in runs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    token_txs = len(json.loads(base.read_text())["transactions"])
    assert token_txs > 0
    assert len(json.loads(exp.read_text())["metadata"]["session_ids"]) == 2

    everything = simsync_cmd("compare", str(base), str(exp))
    assert everything.returncode == 0, everything.stderr
    found = REGRESSIONS.search(everything.stdout)
    assert found and int(found.group(1)) == token_txs      # the Memo ELF fails every transfer
    assert "MissingRequiredSignature" in everything.stdout
    assert "improvements (failed in BASE, succeed in EXP): 0" in everything.stdout
    assert "balance differences" in everything.stdout
    tokens = re.search(r"^token balance differences \(sum of token_changes\): (\d+) accounts",
                       everything.stdout, re.M)
    assert tokens and int(tokens.group(1)) > 0     # the failed transfers moved no tokens

    regressions = simsync_cmd("compare", str(base), str(exp), "regressions")
    assert REGRESSIONS.search(regressions.stdout) and "balance" not in regressions.stdout
    balances = simsync_cmd("compare", str(base), str(exp), "balances")
    assert "balance differences" in balances.stdout and "regressions" not in balances.stdout
    reverse = simsync_cmd("compare", str(exp), str(base), "regressions")
    assert f"improvements (failed in BASE, succeed in EXP): {token_txs}" in reverse.stdout

    summary = simsync_cmd("summarize", str(exp))
    assert f"transactions: {token_txs} (0 succeeded, {token_txs} failed)" in summary.stdout


def test_compare_balance_differences(tmp_path: Path) -> None:
    def doc(alice: int, failing: bool, tokens: int) -> Dict[str, Any]:
        return {"metadata": {}, "summary": {}, "transactions": [
            {"slot": 1, "signature": "sigA", "error": {"Custom": 1} if failing else None,
             "sol_changes": {"Alice": alice, "Bob": 5},
             "token_changes": {"Bob": {"Mint1": tokens}}},
            {"slot": 2, "signature": "sigB", "error": None, "sol_changes": {"Alice": -1}}]}
    base, exp = tmp_path / "base.json", tmp_path / "exp.json"
    base.write_text(json.dumps(doc(-100, False, 7)))     # service files may lack "success"
    exp.write_text(json.dumps(doc(-40, True, 0)))
    result = simsync_cmd("compare", str(base), str(exp))
    assert result.returncode == 0, result.stderr
    assert "regressions (succeeded in BASE, fail in EXP): 1" in result.stdout
    assert "balance differences (sum of sol_changes, lamports): 1 accounts" in result.stdout
    assert "Alice  BASE -101  EXP -41  diff +60" in result.stdout
    assert "Bob  mint Mint1  BASE +7  EXP +0  diff -7" in result.stdout


# ----------------------------------------------------------------------------- failures


def test_failed_run_is_one_line_exit_1_traceback_only_with_debug(sim: LocalSimulator) -> None:
    plain = simsync_cmd(*run_args(sim.url, START + 10_000, START + 10_010))
    assert plain.returncode == 1
    assert "bundleNotFound" in one_error_line(plain.stderr)
    assert "Traceback" not in plain.stderr and plain.stdout == ""
    debug = simsync_cmd("--debug", *run_args(sim.url, START + 10_000, START + 10_010))
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "SessionCreateError" in debug.stderr
    assert "bundleNotFound" in one_error_line(debug.stderr)


def test_bad_files_fail_with_one_line(tmp_path: Path) -> None:
    missing = simsync_cmd("summarize", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "No such file" in one_error_line(missing.stderr)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    wrong = simsync_cmd("compare", str(other), str(other))
    assert wrong.returncode == 1 and "not a backtest output file" in one_error_line(wrong.stderr)



def test_api_key_from_environment_is_never_printed(tmp_path: Path) -> None:
    with LocalSimulator(bundle_size=20, bundles=2, api_key=KEY) as keyed:
        good = simsync_cmd("--debug", *run_args(keyed.url, START, START + 5),
                           env={"SIMULATOR_API_KEY": KEY})
        assert good.returncode == 0, good.stderr
        assert "DEBUG" in good.stderr                   # debug logging was really on
        ranges = simsync_cmd("ranges", "--url", keyed.url, "-v",
                             env={"SIMULATOR_API_KEY": KEY})
        assert ranges.returncode == 0 and str(START) in ranges.stdout
        flag = simsync_cmd("ranges", "--url", keyed.url, "--api-key", KEY, "--debug")
        assert flag.returncode == 0, flag.stderr
        wrong = simsync_cmd(*run_args(keyed.url, START, START + 5),
                            env={"SIMULATOR_API_KEY": KEY + "-wrong"})
        assert wrong.returncode == 1
        assert "rejected the credentials (HTTP 401)" in one_error_line(wrong.stderr)
        wrong_debug = simsync_cmd("run", "--debug", "--url", keyed.url, "--start-slot",
                                  str(START), "--end-slot", str(START + 5),
                                  env={"SIMULATOR_API_KEY": KEY + "-wrong"})
        assert wrong_debug.returncode == 1 and "Traceback" in wrong_debug.stderr
        missing = simsync_cmd("ranges", "--url", keyed.url)
        assert missing.returncode == 1 and "HTTP 401" in one_error_line(missing.stderr)
    for result in (good, ranges, flag, wrong, wrong_debug, missing):
        assert KEY not in result.stdout and KEY not in result.stderr


def test_reconnects_are_counted_and_change_nothing(tmp_path: Path) -> None:
    out = tmp_path / "faulty.json"
    plan = FaultPlan([Fault("drop", after_frames=12, times=2)])
    with LocalSimulator(bundle_size=100, bundles=1, faults=plan) as faulty:
        result = simsync_cmd("-v", *run_args(faulty.url, START, START + 30, "--advance-count",
                                             "2", "--output-file", str(out)))
        assert result.returncode == 0, result.stderr
        ids = json.loads(out.read_text())["metadata"]["session_ids"]
        signatures = [t["signature"] for t in json.loads(out.read_text())["transactions"]]
        assert signatures == executed(faulty, ids, SYSTEM_PROGRAM_ID)   # exactly once
        assert plan.fired == 2
    counted = int(re.search(r"^reconnects: (\d+)$", result.stdout, re.M).group(1))  # type: ignore[union-attr]
    assert 1 <= counted <= 2
    assert "RECONNECTING" in result.stderr                      # -v shows transitions


# ----------------------------------------------------------------------------- serve


def test_serve_prints_its_url_and_stops_on_sigint() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simsync", "serve", "--port", "0",
                             "--api-key", KEY, "--bundle-size", "10", "--bundles", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(), stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"(ws://127\.0\.0\.1:(\d+)/backtest)", first)
        assert found, first
        http = f"http://127.0.0.1:{found.group(2)}"
        with requests.Session() as web:
            assert web.get(f"{http}/health", timeout=10).text == "ok"
            assert web.get(f"{http}/available-ranges", timeout=10).status_code == 401
            ranges = web.get(f"{http}/available-ranges", headers={"X-API-Key": KEY}, timeout=10)
            assert [r["bundleStartSlot"] for r in ranges.json()] == [START, START + 10]
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopping" in out
    assert KEY not in first + out + err


def test_undecodable_transactions_key_changes_by_index() -> None:
    """In-process check of the fallback used without solders or for undecodable bytes."""
    from simsync import runoutput

    meta = {"err": None, "preBalances": [10, 5], "postBalances": [7, 8], "logMessages": []}
    record = runoutput.transaction_record(1, "sig", ["not base64!", "base64"], meta)
    assert record["sol_changes"] == {"0": -3, "1": 3}
    wire = base64.b64encode(b"\x00" * 3).decode()
    assert runoutput.transaction_record(1, "sig", [wire, "base64"], meta)["success"] is True


def ignore_sigint() -> None:
    """What ``cmd &`` / nohup / some CI runners hand a child: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("argv", [["-m", "simsync", "serve"], ["-m", "simsync.localsim"]])
def test_server_started_with_sigint_ignored_still_stops_on_sigint(argv: List[str]) -> None:
    proc = subprocess.Popen([sys.executable, *argv, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=ignore_sigint, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert "ws://127.0.0.1:" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_compare_refuses_runs_of_different_programs_or_slots(sim: LocalSimulator,
                                                             tmp_path: Path) -> None:
    """The README's old walkthrough compared a System run with a Token run: refused."""
    files = {name: tmp_path / f"{name}.json" for name in ("system", "token", "token_short")}
    for name, end, extra in (("system", START + 9, ()),
                             ("token", START + 9, ("--program-id", TOKEN_PROGRAM_ID)),
                             ("token_short", START + 5, ("--program-id", TOKEN_PROGRAM_ID))):
        done = simsync_cmd(*run_args(sim.url, START, end, *extra,
                                     "--output-file", str(files[name])))
        assert done.returncode == 0, done.stderr
    programs = simsync_cmd("compare", str(files["system"]), str(files["token"]))
    assert programs.returncode == 2, programs.stdout
    assert (f"program {SYSTEM_PROGRAM_ID} (BASE) vs {TOKEN_PROGRAM_ID} (EXP)"
            in programs.stderr), programs.stderr
    assert programs.stdout == ""
    slots = simsync_cmd("compare", str(files["token"]), str(files["token_short"]))
    assert slots.returncode == 2
    assert f"slots {START}-{START + 9} (BASE) vs {START}-{START + 5} (EXP)" in slots.stderr
    # Like with like: no account-diff subscription, but the local simulator's meta has the
    # token balances (issue 24 item 8), so token changes are measured from the meta.
    same = simsync_cmd("compare", str(files["token"]), str(files["token"]))
    assert same.returncode == 0, same.stderr
    assert "token balance differences (sum of token_changes)" in same.stdout, same.stdout
    doc = json.loads(files["token"].read_text())
    assert doc["metadata"]["token_changes_measured"] is True
    assert any(entry["token_changes"] for entry in doc["transactions"])
    # A server whose meta lists no token balances, without account diffs: "not measured".
    unmeasured = json.loads(files["token"].read_text())
    unmeasured["metadata"]["token_changes_measured"] = False
    for entry in unmeasured["transactions"]:
        entry["token_changes"] = {}
    files["token"].write_text(json.dumps(unmeasured))
    blind = simsync_cmd("compare", str(files["token"]), str(files["token"]))
    assert "token balance differences: not measured (BASE and EXP" in blind.stdout, blind.stdout
    assert "token balance differences (sum of token_changes)" not in blind.stdout


FLAT = ("slot", "signature", "success", "error", "logs", "sol_changes", "token_changes",
        "account_diffs", "program_id", "run_complete")


def test_run_jsonl_and_summarize_compare_tables_load_flat(sim: LocalSimulator,
                                                          tmp_path: Path) -> None:
    """``--format jsonl`` is one transaction a line with flat columns; ``--json``/``--csv``
    of summarize and compare load with the standard readers (and pandas when installed)."""
    import csv
    import io

    lines, doc = tmp_path / "run.jsonl", tmp_path / "run.json"
    for path, extra in ((lines, ("--format", "jsonl")), (doc, ())):
        done = simsync_cmd(*run_args(sim.url, START, START + 9, "--output-file", str(path),
                                     *extra))
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    expected = json.loads(doc.read_text())["transactions"]
    assert len(rows) == len(expected) > 0
    for row in rows:
        assert tuple(row) == FLAT
        assert all(v is None or isinstance(v, (str, int, bool)) for v in row.values()), row
        assert row["run_complete"] is True and row["program_id"] == SYSTEM_PROGRAM_ID
    assert [r["signature"] for r in rows] == [r["signature"] for r in expected]
    assert json.loads(rows[0]["sol_changes"]) == expected[0]["sol_changes"]

    summary = simsync_cmd("summarize", str(doc), "--json")
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["summary"]["total"] == len(expected)
    table = list(csv.DictReader(io.StringIO(simsync_cmd("summarize", str(doc), "--csv").stdout)))
    assert table and list(table[0]) == ["account", "net_lamports", "transactions"]
    compared = json.loads(simsync_cmd("compare", str(doc), str(doc), "--json").stdout)
    assert compared["in_both"] == len(expected) and compared["regressions"] == []
    outcomes = list(csv.DictReader(io.StringIO(
        simsync_cmd("compare", str(doc), str(doc), "--csv").stdout)))
    assert len(outcomes) == len(expected) and {r["change"] for r in outcomes} == {"same"}

    frame = pd.read_json(lines, lines=True)        # the README's one-liner
    assert frame.shape == (len(expected), len(FLAT)) and tuple(frame.columns) == FLAT
    assert pd.read_csv(io.StringIO(
        simsync_cmd("compare", str(doc), str(doc), "--csv").stdout)).shape[0] == len(expected)


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_ctrl_c_during_run_writes_what_it_has_marked_incomplete(tmp_path: Path,
                                                                fmt: str) -> None:
    """SIGINT mid-run (the child started with SIGINT ignored, as under nohup or ``&``)."""
    out = tmp_path / f"partial.{fmt}"
    with LocalSimulator(slot_delay=0.05) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simsync", *run_args(server.url, START, START + 400,
                                                        "--advance-count", "1",
                                                        "--progress-interval", "0.1",
                                                        "--output-file", str(out),
                                                        "--format", fmt)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
            stdin=subprocess.DEVNULL, preexec_fn=ignore_sigint)
        try:
            assert proc.stderr is not None
            for line in proc.stderr:            # plain progress lines: wait for some slots
                found = PLAIN_LINE.match(line.strip())
                if found and int(found.group(1)) >= 5:
                    break
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, stderr
    assert "marked incomplete" in stdout
    if fmt == "json":
        doc = json.loads(out.read_text())
        assert doc["metadata"]["incomplete"] is True
        assert doc["summary"]["total"] == len(doc["transactions"]) > 0
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows and all(r["run_complete"] is False for r in rows)
