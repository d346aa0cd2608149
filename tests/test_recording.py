"""Recordings (issue 26): ``simsync.record`` / ``simsync record`` against a local simulator on
loopback; the file's format, a crash mid-record then ``--resume``, prefixes and bad files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import zstandard

import simsync
from simsync.localsim import (
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    Fault,
    FaultPlan,
    LocalSimulator,
)
from simsync.recording_format import VERSION, Recording, RecordingError, RecordingWriter, read
from tests.leaks import wait_until
from tests.support import START

pytestmark = pytest.mark.timeout(120)

KEY = "rec26-secret-key-4b1d"
PROGRAMS = [SYSTEM_PROGRAM_ID, TOKEN_PROGRAM_ID]
SIMSYNC = str(Path(sys.executable).parent / "simsync")     # the installed console script


def content(recording: Recording) -> Dict[str, Any]:
    """What a recording holds of the history: each connection's events in order, the
    blocks, the end record (not the cursors: they name the session; not how the separate
    connections' events interleave)."""
    return {"streams": recording.streams(), "blocks": recording.blocks(),
            "end": recording.records[-1] if recording.complete else None}


def clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SIMULATOR_API_KEY"}


def test_a_recording_holds_every_event_block_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "r.simrec"
    with LocalSimulator(bundle_size=100, bundles=1, api_key=KEY) as sim:
        done = simsync.record(sim.url, str(out), START, START + 39, program_ids=PROGRAMS,
                              accounts=["11111111111111111111111111111112"], api_key=KEY)
        again = simsync.record(sim.url, str(tmp_path / "again.simrec"), START, START + 39,
                               program_ids=PROGRAMS,
                               accounts=["11111111111111111111111111111112"], api_key=KEY)
    assert done.complete and read(str(out)) == done
    header = done.header
    assert header["format"] == "simsync-recording" and header["version"] == VERSION
    assert header["start_slot"] == START and header["end_slot"] == START + 39
    assert header["programs"] == PROGRAMS and header["host"].startswith("127.0.0.1:")
    assert KEY.encode() not in zstandard.ZstdDecompressor().decompressobj().decompress(
        out.read_bytes()) and KEY.encode() not in out.read_bytes()
    methods = [e["method"] for e in done.events()]
    slots = [e["params"] for e in done.events() if e["method"] == "slotNotification"]
    assert slots == sorted(slots) and slots[0] == START and slots[-1] <= START + 39
    assert methods[-1] == "completed" and done.events()[-1]["params"]["summary"] is not None
    txs = [e["params"]["result"] for e in done.events()
           if e["method"] == "transactionNotification"]
    diffs = [e["params"]["result"] for e in done.events()
             if e["method"] == "accountDiffNotification"]
    assert txs and all(t["meta"] is not None and "fee" in t["meta"] for t in txs)
    assert diffs and all("pre" in d or "post" in d for d in diffs)
    blocks = [r for r in done.records if r["type"] == "block"]
    assert len(blocks) == methods.count("readyForContinue") + methods.count("paused") > 0
    assert all(len(b["blockhash"]) >= 32 for b in blocks)
    assert done.records[-1] == {"type": "end",
                                "accounts_not_touched": ["11111111111111111111111111111112"]}
    assert content(again) == content(done)     # the same range records the same history


def test_killed_recorder_resumes_to_the_uninterrupted_recording(tmp_path: Path) -> None:
    cut = tmp_path / "cut.simrec"
    whole = tmp_path / "whole.simrec"
    end = START + 199
    with LocalSimulator(bundle_size=200, bundles=1, slot_delay=0.02) as sim:
        args = [SIMSYNC, "record", "--url", sim.url, "--start-slot", str(START),
                "--end-slot", str(end), "--output", str(cut), "--program-id",
                SYSTEM_PROGRAM_ID, "--program-id", TOKEN_PROGRAM_ID]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=clean_env())

        def cursors() -> int:
            assert proc.poll() is None, "the recorder ended before it was killed"
            try:
                return sum(r["type"] == "cursor" for r in read(str(cut)).records)
            except (OSError, RecordingError):
                return 0                   # not even the header flushed yet

        try:     # well into the range (200 slots at >= 20 ms each), then kill it
            assert wait_until(lambda: cursors() >= 30, timeout=60, step=0.05), \
                "the recorder made no progress"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        prefix = read(str(cut))
        assert not prefix.complete and prefix.events()[-1]["method"] != "completed"
        resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True,
                                 timeout=100, env=clean_env(), stdin=subprocess.DEVNULL)
        assert resumed.returncode == 0, resumed.stderr
        assert "recorded slots" in resumed.stdout
        simsync.record(sim.url, str(whole), START, end, program_ids=PROGRAMS)
    finished, uninterrupted = read(str(cut)), read(str(whole))
    assert finished.complete and uninterrupted.complete
    assert content(finished) == content(uninterrupted)
    for name, events in content(prefix)["streams"].items():
        assert finished.streams()[name][:len(events)] == events


def test_resume_of_a_complete_recording_leaves_it(tmp_path: Path) -> None:
    out = tmp_path / "r.simrec"
    with LocalSimulator(bundle_size=20, bundles=1) as sim:
        simsync.record(sim.url, str(out), START, START + 9)
        before = out.read_bytes()
        result = subprocess.run([SIMSYNC, "record", "--url", sim.url, "--start-slot",
                                 str(START), "--end-slot", str(START + 9), "--output",
                                 str(out), "--resume"], capture_output=True, text=True,
                                timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == before


def test_a_truncated_file_reads_as_a_prefix_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "r.simrec"
    with LocalSimulator(bundle_size=50, bundles=1) as sim:
        full = simsync.record(sim.url, str(out), START, START + 29)
    data = out.read_bytes()
    short = tmp_path / "short.simrec"
    for size in (len(data) // 3, len(data) // 2, len(data) - 1):
        short.write_bytes(data[:size])
        prefix = read(str(short))
        assert not prefix.complete
        assert 0 < len(prefix.records) < len(full.records)
        assert prefix.records == full.records[:len(prefix.records)]
        assert prefix.header == full.header


def test_bad_files_raise_recording_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain.simrec"
    plain.write_text('{"type": "header"}\n')
    with pytest.raises(RecordingError, match="not zstandard"):
        read(str(plain))
    future = tmp_path / "future.simrec"
    writer = RecordingWriter(str(future))
    writer.write({"type": "header", "format": "simsync-recording", "version": VERSION + 1})
    writer.close()
    with pytest.raises(RecordingError, match=f"version {VERSION + 1}"):
        read(str(future))
    other = tmp_path / "other.simrec"
    other.write_bytes(zstandard.ZstdCompressor().compress(b'{"type": "header", '
                                                          b'"format": "x", "version": 1}\n'))
    with pytest.raises(RecordingError, match="format 'x'"):
        read(str(other))
    with LocalSimulator(bundle_size=20, bundles=1) as sim:
        simsync.record(sim.url, str(tmp_path / "ok.simrec"), START, START + 4)
    torn = tmp_path / "torn.simrec"
    torn.write_bytes((tmp_path / "ok.simrec").read_bytes()[:12])
    with pytest.raises(RecordingError, match="no complete simsync recording header"):
        read(str(torn))
    assert issubclass(RecordingError, simsync.SimsyncError)


def test_resume_at_a_pause_whose_step_never_arrived_records_it_once(tmp_path: Path) -> None:
    """The server stops reading the first control connection after frame 12: the recorder's
    step from the next pause never arrives, the file ends at that pause's cursor; the resumed
    recorder is told of that pause again (PROTOCOL.md §13) and must not record it twice."""
    cut, whole = tmp_path / "cut.simrec", tmp_path / "whole.simrec"
    frames = 12
    plan = FaultPlan([Fault("stop_reading", after_frames=frames, on_connection=1)])
    with LocalSimulator(bundle_size=50, bundles=1, faults=plan) as sim:
        args = [SIMSYNC, "record", "--url", sim.url, "--start-slot", str(START),
                "--end-slot", str(START + 29), "--output", str(cut)]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=clean_env())

        def stalled_at_its_pause() -> bool:
            if not plan.history or not cut.exists():
                return False
            try:
                found = read(str(cut))
            except RecordingError:
                return False
            # at least `frames` control events recorded: past frame 12, so the last pause
            # recorded is the one the server waits at, and its cursor was flushed
            return (len(found.streams()["control"]) >= frames
                    and found.records[-1]["type"] == "cursor")

        try:
            assert wait_until(stalled_at_its_pause, timeout=60, step=0.05)
            assert proc.poll() is None       # waiting for a step the server never read
        finally:
            proc.kill()
            proc.wait(timeout=30)
        resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True,
                                 timeout=100, env=clean_env(), stdin=subprocess.DEVNULL)
        assert resumed.returncode == 0, resumed.stderr
        simsync.record(sim.url, str(whole), START, START + 29)
    finished, uninterrupted = read(str(cut)), read(str(whole))
    assert finished.complete
    assert content(finished) == content(uninterrupted)
    assert all(b["slot"] is not None for b in finished.blocks())
