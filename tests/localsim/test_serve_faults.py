"""``simsync serve`` / ``python -m simsync.localsim``: every fault from ``--fault SPEC``, the URL
to pass to ``--url``, a port out of range as a usage error, help on every option."""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from typing import Dict, List

import pytest
import websocket

from simsync.cli import build_parser
from simsync.localsim import Fault
from simsync.localsim.cli import build_parser as localsim_parser
from simsync.localsim.faults import ACTIONS

pytestmark = pytest.mark.timeout(60)

#: One spec per action, with the options that action takes.
SPECS: Dict[str, str] = {
    "drop": "drop:after_frames=5,how=rst,on_connection=2",
    "close": "close:after_frames=2,close_code=4000,close_reason=go away",
    "stall": "stall:at=after_session_created",
    "stop_reading": "stop_reading:at=after_continue_received",
    "malformed": "malformed:after_frames=1,payload={oops",
    "unknown_method": "unknown_method:after_frames=1",
    "delay": "delay:delay_secs=0.1",
    "invalid_utf8": "invalid_utf8:after_frames=3",
    "binary": "binary:channel=pubsub",
    "oversize": "oversize:size=2000000",
    "fragment": "fragment:size=16",
    "duplicate": "duplicate:times=0",
    "heartbeat": "heartbeat:channel=pubsub,interval_secs=1,timeout_secs=2,times=0",
    "slow_reply": "slow_reply:at=before_session_created,delay_secs=40",
    "refuse": "refuse:status=429,retry_after=3,on_connection=1",
    "silent": "silent:on_connection=2",
    "trickle_upgrade": "trickle_upgrade:interval_secs=0.2",
    "error": "error:slot=400000003,error=advanceSlotFailed",
    "reject_step": "reject_step:step=2,error=invalidTransactionEncoding",
    "reannounce": "reannounce:mode=never,times=0",
    "expire_detach": "expire_detach:window_secs=0.5",
    "late_notifications": "late_notifications:slot=400000002",
    "replay_window": "replay_window:slots=5",
    "signature_field": "signature_field",
    "rpc_delay": "rpc_delay:delay_secs=2",
    "rpc_trickle": "rpc_trickle:part=headers,interval_secs=0.1",
    "rpc_status": "rpc_status:status=502",
    "rpc_non_json": "rpc_non_json:on_connection=3",
}


def test_a_spec_for_every_action() -> None:
    assert sorted(SPECS) == sorted(ACTIONS)


@pytest.mark.parametrize("action", sorted(SPECS))
def test_serve_accepts_every_fault(action: str) -> None:
    for parse in (lambda a: build_parser().parse_args(["serve", *a]),
                  lambda a: localsim_parser().parse_args(a)):
        args = parse(["--fault", SPECS[action], "--fault", "drop"])
        assert [f.action for f in args.fault] == [action, "drop"]
        assert all(isinstance(f, Fault) for f in args.fault)


def test_help_names_every_action_and_every_option_has_help() -> None:
    parser = build_parser()
    serve = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                 ).choices["serve"]
    text = serve.format_help()
    assert all(f"  {action}: " in text for action in ACTIONS)
    for parser_ in (serve, localsim_parser()):
        undocumented = [a.option_strings for a in parser_._actions
                        if a.option_strings and not a.help]
        assert undocumented == []


@pytest.mark.parametrize("argv", [["-m", "simsync", "serve"], ["-m", "simsync.localsim"]])
@pytest.mark.parametrize("bad", [["--port", "99999"], ["--port", "-1"],
                                 ["--fault", "drop:how=sideways"], ["--fault", "nope"]])
def test_bad_serve_arguments_are_usage_errors(argv: List[str], bad: List[str]) -> None:
    proc = subprocess.run([sys.executable, *argv, *bad], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr
    assert f"argument {bad[0]}:" in proc.stderr


def test_serve_prints_the_url_and_applies_its_faults() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simsync", "serve", "--port", "0",
                             "--bundle-size", "10", "--bundles", "2",
                             "--fault", "refuse:status=429,retry_after=3",
                             "--fault", "close:after_frames=1,close_code=4001"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"pass --url (ws://127\.0\.0\.1:\d+/backtest)\b", first)
        assert found, first
        url = found.group(1)
        assert "refuse (control)" in proc.stdout.readline()
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(url, timeout=10)
        assert info.value.status_code == 429
        assert (info.value.resp_headers or {}).get("retry-after") == "3"
        ws = websocket.create_connection(url, timeout=10)
        try:
            ws.send('{"method":"createBacktestSession","params":{"startSlot":400000000,'
                    '"endSlot":400000005}}')
            opcode, data = ws.recv_data(control_frame=True)
            while opcode != websocket.ABNF.OPCODE_CLOSE:
                opcode, data = ws.recv_data(control_frame=True)
            assert int.from_bytes(data[:2], "big") == 4001
        finally:
            ws.close()
            ws.shutdown()  # close() skips it after a server close
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
