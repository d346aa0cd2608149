"""simsync: a blocking Python client for the hosted Solana backtest simulator.

``Client(url, api_key).start_session(start_slot=..., end_slot=...)`` gives a ``Session``
whose ``next_event()`` returns every event in order, exactly once, across dropped
connections. See README.md.

The public names below are imported on first use (PEP 562), so a process that needs only a
part (the local simulator's server and worker processes, ``simsync serve``) does not pay for
the client's imports (about 0.3 s a process on a loaded 2-core VM). ``from simsync import X``
and ``simsync.X`` work as for eager imports; type checkers see the imports under
``TYPE_CHECKING``.
"""
from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import TYPE_CHECKING, Any, List

from simsync._version import __version__

if TYPE_CHECKING:
    from simsync.client import Client
    from simsync.config import ClientConfig
    from simsync.control import SessionInfo
    from simsync.cursor import SessionCursor, SubscriptionCursor
    from simsync.errors import (
        ControlFailed,
        EventTimeout,
        ForkedSessionError,
        InvalidArgumentError,
        InvalidArgumentTypeError,
        ProtocolError,
        RpcConnectionError,
        RpcError,
        RpcTimeout,
        SessionClosed,
        SessionCreateError,
        SimsyncError,
        SlowConsumerError,
        SubscriptionFailed,
    )
    from simsync.overrides import AccountOverrideError, AccountOverrideTypeError
    from simsync.parallel import ParallelSession, SubSession
    from simsync.protocol import (
        AccountData,
        AccountDiff,
        AccountUpdate,
        AvailableRange,
        Completed,
        CreateSessionParams,
        DiscoveryBatch,
        EncodedData,
        Event,
        Logs,
        Paused,
        ProgramAccountUpdate,
        ReadyForContinue,
        ServerError,
        SignatureResult,
        Slot,
        SlotUpdate,
        Status,
        Summary,
        Transaction,
        UnknownEvent,
    )
    from simsync.protocol.types import (
        AgentStatsReport,
        DiscoveryFilter,
        OracleUpdate,
        ProgramExecuted,
    )
    from simsync.recorder import record
    from simsync.recording_format import Recording, RecordingError
    from simsync.recording_rpc import record_rpc
    from simsync.session import Session
    from simsync.solana_rpc import SolanaRpc
    from simsync.subscriptions import ReconnectCoordinator
    from simsync.sweep import (
        SweepJob,
        SweepJobFailed,
        SweepResult,
        jobs_for_builds,
        jobs_for_range,
        run_job,
        sweep,
        sweep_results,
    )
    from simsync.transport import ConnectionStatus, State
    from simsync.usage import UsageReport

#: each lazily imported public name → the module that defines it
_WHERE = {
    "Client": "simsync.client",
    "ClientConfig": "simsync.config",
    "SessionInfo": "simsync.control",
    "SessionCursor": "simsync.cursor",
    "SubscriptionCursor": "simsync.cursor",
    "ControlFailed": "simsync.errors",
    "EventTimeout": "simsync.errors",
    "ForkedSessionError": "simsync.errors",
    "InvalidArgumentError": "simsync.errors",
    "InvalidArgumentTypeError": "simsync.errors",
    "ProtocolError": "simsync.errors",
    "RpcConnectionError": "simsync.errors",
    "RpcError": "simsync.errors",
    "RpcTimeout": "simsync.errors",
    "SessionClosed": "simsync.errors",
    "SessionCreateError": "simsync.errors",
    "SimsyncError": "simsync.errors",
    "SlowConsumerError": "simsync.errors",
    "SubscriptionFailed": "simsync.errors",
    "AccountOverrideError": "simsync.overrides",
    "AccountOverrideTypeError": "simsync.overrides",
    "ParallelSession": "simsync.parallel",
    "SubSession": "simsync.parallel",
    "AccountData": "simsync.protocol",
    "AccountDiff": "simsync.protocol",
    "AccountUpdate": "simsync.protocol",
    "AvailableRange": "simsync.protocol",
    "Completed": "simsync.protocol",
    "CreateSessionParams": "simsync.protocol",
    "DiscoveryBatch": "simsync.protocol",
    "EncodedData": "simsync.protocol",
    "Event": "simsync.protocol",
    "Logs": "simsync.protocol",
    "Paused": "simsync.protocol",
    "ProgramAccountUpdate": "simsync.protocol",
    "ReadyForContinue": "simsync.protocol",
    "ServerError": "simsync.protocol",
    "SignatureResult": "simsync.protocol",
    "Slot": "simsync.protocol",
    "SlotUpdate": "simsync.protocol",
    "Status": "simsync.protocol",
    "Summary": "simsync.protocol",
    "Transaction": "simsync.protocol",
    "UnknownEvent": "simsync.protocol",
    "AgentStatsReport": "simsync.protocol.types",
    "DiscoveryFilter": "simsync.protocol.types",
    "OracleUpdate": "simsync.protocol.types",
    "ProgramExecuted": "simsync.protocol.types",
    "record": "simsync.recorder",
    "Recording": "simsync.recording_format",
    "RecordingError": "simsync.recording_format",
    "record_rpc": "simsync.recording_rpc",
    "Session": "simsync.session",
    "SolanaRpc": "simsync.solana_rpc",
    "ReconnectCoordinator": "simsync.subscriptions",
    "SweepJob": "simsync.sweep",
    "SweepJobFailed": "simsync.sweep",
    "SweepResult": "simsync.sweep",
    "jobs_for_builds": "simsync.sweep",
    "jobs_for_range": "simsync.sweep",
    "run_job": "simsync.sweep",
    "sweep": "simsync.sweep",
    "sweep_results": "simsync.sweep",
    "ConnectionStatus": "simsync.transport",
    "State": "simsync.transport",
    "UsageReport": "simsync.usage",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``simsync.sweep`` is the function `simsync.sweep.sweep` (as it was with eager
    imports), even after the submodule of that name is imported: the import system sets a
    package's attribute to each submodule it loads, and here that one is replaced by the
    function (the module stays in ``sys.modules``, so ``from simsync.sweep import ...``
    works)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


#: public functions named like the submodule that defines them
_SHADOWED = frozenset({"sweep"})

sys.modules[__name__].__class__ = _Package
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AccountData", "AccountDiff", "AccountUpdate", "Logs", "ProgramAccountUpdate",
    "SignatureResult", "SlotUpdate", "AccountOverrideError", "AccountOverrideTypeError",
    "AvailableRange", "Client", "ClientConfig", "Completed", "ConnectionStatus",
    "ControlFailed", "CreateSessionParams", "DiscoveryBatch", "EncodedData", "Event",
    "EventTimeout", "ForkedSessionError", "InvalidArgumentError", "InvalidArgumentTypeError",
    "ParallelSession", "Paused", "ProtocolError",
    "ReadyForContinue", "ReconnectCoordinator", "RpcError", "ServerError", "Session",
    "SessionClosed",
    "SessionCreateError", "SessionCursor", "SessionInfo", "SimsyncError",
    "SlowConsumerError", "Slot", "State", "Status", "SubSession", "SubscriptionCursor",
    "SubscriptionFailed", "Summary", "SweepJob", "SweepJobFailed", "SweepResult", "Transaction",
    "UnknownEvent", "__version__", "jobs_for_builds", "jobs_for_range", "run_job", "sweep",
    "sweep_results",
    # issue 17: create options, typed reports, usage
    "AgentStatsReport", "DiscoveryFilter", "OracleUpdate", "ProgramExecuted", "UsageReport",
    # issue 27: the blocking Solana JSON-RPC client
    "RpcConnectionError", "RpcTimeout", "SolanaRpc",
    # issue 26: recordings
    "Recording", "RecordingError", "record",
    "record_rpc",                   # issue 26 item 4: a recording from any JSON-RPC endpoint
]
