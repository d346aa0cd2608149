"""simsync.localsim: the embedded local backtest simulator (server side of PROTOCOL.md).

A real aiohttp server on loopback serving, on one host:port, the control channel
(``/backtest``), per-session JSON-RPC (``POST /backtest/<id>``) and PubSub
(``GET /backtest/<id>`` WebSocket), ``/available-ranges``, ``/health`` and ``/ready``. Sessions
execute a deterministic synthetic history (see `history`) plus the user's transactions in
LiteSVM. One background thread runs the asyncio loop; it speaks only the wire and imports nothing
from the simsync client.

    with LocalSimulator(port=0, seed=0, faults=FaultPlan()) as sim:
        sim.url                 # ws://127.0.0.1:PORT/backtest
        sim.http_url            # http://127.0.0.1:PORT
        sim.faults.add(Fault("drop", after_frames=5))
        sim.produced_slots(a, b), sim.executed(session_id), sim.session_ids(), sim.stats
        sim.requests_seen()     # [SeenRequest(method, path, host, header_names, ...)]

    LocalSimulator(ssl_context=ctx)                # wss:// and https:// with ctx's certificate
    LocalSimulator(rpc_endpoint_host="localhost")  # rpc_endpoint http://localhost:PORT/backtest/ID

Module map: `server` (LocalSimulator, routes, thread), `control` (control requests),
`registry` (sessions, groups, detach windows, stats), `session` (stepping, sequencing, the
position model and frame order), `pubsub`, `rpc_methods`, `chain` (LiteSVM wrapper),
`history`, `discovery`, `faults`, `connection` (ordered output, fault execution), `accounts`,
`wire`, `jsonrpc`, `cli` (`serve`, ``python -m simsync.localsim``), `testing` (plain
wire clients for tests).

The names below are imported on first use (PEP 562), so ``simsync.localsim.faults`` (plain
Python, used by ``simsync serve --help``) loads without aiohttp or solders.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simsync.localsim.chain import ExecutedTx
    from simsync.localsim.cli import main, serve
    from simsync.localsim.faults import Fault, FaultPlan, FiredFault, parse_fault
    from simsync.localsim.history import (
        DISCOVERY_PROGRAM_ID,
        MEMO_PROGRAM_ID,
        ORACLE_ACCOUNT,
        SYSTEM_PROGRAM_ID,
        TOKEN_PROGRAM_ID,
        UPGRADEABLE_LOADER_ID,
    )
    from simsync.localsim.registry import SimStats
    from simsync.localsim.server import LocalSimulator, SeenRequest

_WHERE = {
    "ExecutedTx": "chain", "main": "cli", "serve": "cli", "Fault": "faults",
    "FaultPlan": "faults", "FiredFault": "faults", "parse_fault": "faults",
    "DISCOVERY_PROGRAM_ID": "history", "MEMO_PROGRAM_ID": "history",
    "ORACLE_ACCOUNT": "history", "SYSTEM_PROGRAM_ID": "history",
    "TOKEN_PROGRAM_ID": "history", "UPGRADEABLE_LOADER_ID": "history",
    "SimStats": "registry", "LocalSimulator": "server", "SeenRequest": "server",
}

__all__ = [
    "DISCOVERY_PROGRAM_ID", "MEMO_PROGRAM_ID", "ORACLE_ACCOUNT", "SYSTEM_PROGRAM_ID",
    "TOKEN_PROGRAM_ID", "UPGRADEABLE_LOADER_ID", "ExecutedTx", "Fault", "FaultPlan",
    "FiredFault", "LocalSimulator", "SeenRequest", "SimStats", "main", "parse_fault", "serve",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'simsync.localsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"simsync.localsim.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
