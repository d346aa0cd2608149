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
    ProtocolError,
    RpcError,
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
from simsync.session import Session
from simsync.subscriptions import ReconnectCoordinator
from simsync.transport import ConnectionStatus, State

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AccountData", "AccountDiff", "AccountUpdate", "Logs", "ProgramAccountUpdate",
    "SignatureResult", "SlotUpdate", "AccountOverrideError", "AccountOverrideTypeError",
    "AvailableRange", "Client", "ClientConfig", "Completed", "ConnectionStatus",
    "ControlFailed", "CreateSessionParams", "DiscoveryBatch", "EncodedData", "Event",
    "EventTimeout", "ForkedSessionError", "ParallelSession", "Paused", "ProtocolError",
    "ReadyForContinue", "ReconnectCoordinator", "RpcError", "ServerError", "Session",
    "SessionClosed",
    "SessionCreateError", "SessionCursor", "SessionInfo", "SimsyncError",
    "SlowConsumerError", "Slot", "State", "Status", "SubSession", "SubscriptionCursor",
    "SubscriptionFailed", "Summary", "Transaction", "UnknownEvent",
    "__version__",
]
