"""simsync: a blocking Python client for the hosted Solana backtest simulator.

``Client(url, api_key).start_session(start_slot=..., end_slot=...)`` gives a ``Session``
whose ``next_event()`` returns every event in order, exactly once, across dropped
connections. See README.md.
"""
import logging

from simsync._version import __version__
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
