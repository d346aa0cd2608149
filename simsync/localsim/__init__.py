"""simsync.localsim: the embedded local backtest simulator (server side of PROTOCOL.md).

A real aiohttp server on loopback that serves the control channel (``/backtest``), the
per-session JSON-RPC and PubSub (``/backtest/<id>``), ``/available-ranges``, ``/health`` and
``/ready`` on one host:port, executing a deterministic synthetic history plus the user's
transactions in LiteSVM. It speaks only the wire: it imports nothing from the simsync client.

    with LocalSimulator(port=0, faults=FaultPlan()) as sim:
        sim.url            # ws://127.0.0.1:PORT/backtest
        sim.faults.add(Fault("drop", after_frames=5))
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
from simsync.localsim.server import LocalSimulator

__all__ = [
    "DISCOVERY_PROGRAM_ID", "MEMO_PROGRAM_ID", "ORACLE_ACCOUNT", "SYSTEM_PROGRAM_ID",
    "TOKEN_PROGRAM_ID", "UPGRADEABLE_LOADER_ID", "ExecutedTx", "Fault", "FaultPlan",
    "LocalSimulator", "SimStats", "main", "serve",
]
