"""``ClientConfig``: every timeout, backoff, budget and buffer limit simsync uses.

Defaults follow the reference client (PROTOCOL.md §11). A config is a frozen, picklable
dataclass validated on construction; derive variants with :meth:`ClientConfig.replace`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from simsync.urls import parse_proxy

SERVER_DETACH_CEILING_SECS = 900
#: ``ClientConfig.proxy``'s default: follow ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY``.
PROXY_FROM_ENVIRONMENT = "environment"


@dataclass(frozen=True)
class ClientConfig:
    """Tunables of a :class:`simsync.Client`. All durations are in seconds."""

    connect_timeout: float = 30.0
    """Bound on one whole connect: TCP connect + TLS + WebSocket upgrade."""
    handshake_timeout: float = 30.0
    """Wait for each handshake reply: create, attach, resume, subscribe ack, close ack."""
    parallel_create_frame_timeout: float = 900.0
    """Wait for each frame of a parallel create (the server may park waiting for capacity)."""
    ping_interval: float = 15.0
    """Keepalive: a WebSocket ping is sent this often."""
    dead_after: float = 45.0
    """A connection with no inbound frame of any kind for this long is declared dead."""
    reconnect_budget: float = 840.0
    """Total wall-clock time one outage may spend reconnecting (below the server's 900 s),
    including an attempt in progress."""
    initial_connect_budget: float = 5.0
    """Total wall-clock time the first connection of a link (before it was ever up: nothing
    to resume yet) may spend connecting and retrying, including an attempt in progress: a
    refused port or an unknown host fails within it. Once a link was up, an outage has
    ``reconnect_budget``."""
    backoff_initial: float = 0.25
    """First backoff ceiling; each further attempt doubles it (full jitter below it)."""
    backoff_max: float = 10.0
    """Cap on one backoff sleep."""
    stable_after: float = 30.0
    """A connection up this long resets the reconnect budget and the backoff."""
    drain_timeout: float = 60.0
    """After ``completed``, the longest a subscription may stay silent before its end-of-stream."""
    replay_window_slots: int = 100
    """Slots of notifications the server keeps for a re-subscribe's ``replayFromSlot``; a
    subscription down for longer fails with ``SubscriptionFailed`` (never a silent gap)."""
    pubsub_compression: Optional[str] = None
    """``"zstd"``: ask for PubSub notifications as one streaming zstd context per
    connection (needs ``pip install 'simsync[zstd]'``); ``None``: plain text frames."""
    rpc_timeout: float = 30.0
    """Bound on one whole JSON-RPC HTTP call (name resolution, connect, send, headers, body)
    and on each ``/available-ranges`` and ``/usage`` request."""
    rpc_retries: int = 0
    """Further attempts of a JSON-RPC *read* (``get…``, ``simulateTransaction``, …) after a
    connection failure or an HTTP 408/429/502/503/504, backing off as for reconnects and at
    least the server's ``Retry-After``. 0: off. Writes (``sendTransaction``,
    ``requestAirdrop``, ``modifyAccounts``) are never retried."""
    max_buffered_events: int = 10_000
    """Data-plane events that may wait in a session's mailbox before its readers hold back."""
    slow_consumer_timeout: float = 30.0
    """How long a reader may hold back for a full mailbox before ``SlowConsumerError``."""
    close_timeout: float = 5.0
    """Bound on ``close()``: the close handshake plus joining the internal threads."""
    coordinator_quick_attempts: int = 3
    """Reconnect attempts a shared-link subscription makes before queueing behind siblings."""
    allow_foreign_rpc_host: bool = False
    """Accept an ``rpc_endpoint`` on a different host than the control URL."""
    ca_bundle: Optional[str] = None
    """Path of a CA bundle (PEM) trusted for every wss/https channel instead of the system's
    store (default ``None``: the system's store, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured;
    never certifi's or ``REQUESTS_CA_BUNDLE``)."""
    proxy: Optional[str] = PROXY_FROM_ENVIRONMENT
    """The HTTP proxy of every channel: ``"environment"`` (``HTTP(S)_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, read as requests reads them), an ``http://[USER:PASS@]HOST:PORT`` URL for
    all channels (WebSockets tunnel with HTTP CONNECT), or ``None``: connect directly."""
    extra_headers: dict[str, str] = field(default_factory=dict)
    """Extra HTTP headers on the control upgrade (never logged)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            self._check_number(f.name, f.type, getattr(self, f.name))
        positive = ("connect_timeout", "handshake_timeout", "parallel_create_frame_timeout",
                    "ping_interval", "dead_after", "backoff_initial", "backoff_max",
                    "initial_connect_budget",
                    "drain_timeout", "rpc_timeout", "slow_consumer_timeout", "close_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"ClientConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("reconnect_budget", "stable_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"ClientConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.reconnect_budget > SERVER_DETACH_CEILING_SECS:
            raise ValueError("ClientConfig.reconnect_budget must not exceed the server's detach "
                             f"ceiling of {SERVER_DETACH_CEILING_SECS}s, got "
                             f"{self.reconnect_budget}")
        if self.dead_after <= self.ping_interval:
            raise ValueError("ClientConfig.dead_after must exceed ping_interval "
                             f"({self.dead_after} <= {self.ping_interval})")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("ClientConfig.backoff_max must be >= backoff_initial")
        if self.pubsub_compression not in (None, "zstd"):
            raise ValueError("ClientConfig.pubsub_compression must be None or 'zstd', got "
                             f"{self.pubsub_compression!r}")
        if self.pubsub_compression == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise ValueError("ClientConfig.pubsub_compression='zstd' needs the zstandard "
                                 "package: pip install 'simsync[zstd]'") from None
        if self.replay_window_slots < 1:
            raise ValueError("ClientConfig.replay_window_slots must be >= 1")
        if self.max_buffered_events < 1:
            raise ValueError("ClientConfig.max_buffered_events must be >= 1")
        if self.rpc_retries < 0:
            raise ValueError("ClientConfig.rpc_retries must be >= 0")
        if self.proxy is not None and self.proxy != PROXY_FROM_ENVIRONMENT:
            parse_proxy(self.proxy)
        if self.coordinator_quick_attempts < 0:
            raise ValueError("ClientConfig.coordinator_quick_attempts must be >= 0")

    @staticmethod
    def _check_number(name: str, kind: Any, value: Any) -> None:
        if kind not in ("float", "int"):
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"ClientConfig.{name} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"ClientConfig.{name} must be a finite number, not {value!r}")
        if kind == "int" and not isinstance(value, int):
            raise ValueError(f"ClientConfig.{name} must be an integer, not {value!r}")

    def replace(self, **changes: Any) -> ClientConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown: dict[str, Any] = {f.name: getattr(self, f.name)
                                 for f in dataclasses.fields(self) if f.name != "extra_headers"}
        if self.proxy not in (None, PROXY_FROM_ENVIRONMENT):
            shown["proxy"] = parse_proxy(self.proxy).shown     # never its credentials
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"ClientConfig({inner}, extra_headers=<{len(self.extra_headers)} hidden>)"
