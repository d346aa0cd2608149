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
"""
from __future__ import annotations

from simsync.localsim.chain import ExecutedTx
from simsync.localsim.cli import main, serve
from simsync.localsim.faults import Fault, FaultPlan
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

__all__ = [
    "DISCOVERY_PROGRAM_ID", "MEMO_PROGRAM_ID", "ORACLE_ACCOUNT", "SYSTEM_PROGRAM_ID",
    "TOKEN_PROGRAM_ID", "UPGRADEABLE_LOADER_ID", "ExecutedTx", "Fault", "FaultPlan",
    "LocalSimulator", "SeenRequest", "SimStats", "main", "serve",
]
