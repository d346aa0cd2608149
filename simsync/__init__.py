"""simsync: a blocking Python client for the hosted Solana backtest simulator."""
from simsync._version import __version__
from simsync.config import ClientConfig
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

__all__ = [
    "ClientConfig", "ControlFailed", "EventTimeout", "ForkedSessionError", "ProtocolError",
    "RpcError", "SessionClosed", "SessionCreateError", "SimsyncError", "SlowConsumerError",
    "SubscriptionFailed", "__version__",
]
