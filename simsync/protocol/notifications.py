"""Typed views of the standard Solana PubSub notifications a session's endpoint serves.

Each class is a ``Notification`` (``method``, ``subscription``, ``result`` exactly as received,
so nothing is lost and the wire form round-trips) with typed accessors and the key that tells
a replayed notification from a new one within its slot (``dedup_key``).

* ``logsSubscribe`` → ``Logs``: key the signature; replayed.
* ``accountSubscribe`` → ``AccountUpdate``: key the account state (two identical states of
  one account in one slot count as one); replayed.
* ``programSubscribe`` → ``ProgramAccountUpdate``: key the pubkey and its state; replayed.
* ``signatureSubscribe`` → ``SignatureResult``: key the slot; one notification, then the
  subscription ends; replayed.
* ``slotSubscribe`` → ``SlotUpdate``: key the slot; NOT replayed (a slot stream resumes
  with the slots after the reconnect).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from simsync.protocol.types import Notification


def _value(result: Any) -> Any:
    return result.get("value") if isinstance(result, dict) else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Logs(Notification):
    """``logsNotification``: the log messages of one executed transaction."""

    @property
    def signature(self) -> str:
        value = _value(self.result)
        return str(value.get("signature", "")) if isinstance(value, dict) else ""

    @property
    def err(self) -> Any:
        """``None`` when the transaction succeeded, else Solana's error value."""
        value = _value(self.result)
        return value.get("err") if isinstance(value, dict) else None

    @property
    def logs(self) -> List[str]:
        value = _value(self.result)
        logs = value.get("logs") if isinstance(value, dict) else None
        return [str(line) for line in logs] if isinstance(logs, list) else []

    @property
    def dedup_key(self) -> str:
        return self.signature


@dataclass(frozen=True)
class AccountUpdate(Notification):
    """``accountNotification``: the new state of the subscribed account (Solana's
    ``UiAccount``: ``lamports``, ``owner``, ``data``, ``executable``, ``rentEpoch``, ``space``)."""

    @property
    def account(self) -> Dict[str, Any]:
        value = _value(self.result)
        return value if isinstance(value, dict) else {}

    @property
    def lamports(self) -> Optional[int]:
        lamports = self.account.get("lamports")
        return lamports if isinstance(lamports, int) else None

    @property
    def dedup_key(self) -> str:
        return _canonical(self.account)


@dataclass(frozen=True)
class ProgramAccountUpdate(Notification):
    """``programNotification``: the new state of one account owned by the program."""

    @property
    def pubkey(self) -> str:
        value = _value(self.result)
        return str(value.get("pubkey", "")) if isinstance(value, dict) else ""

    @property
    def account(self) -> Dict[str, Any]:
        value = _value(self.result)
        account = value.get("account") if isinstance(value, dict) else None
        return account if isinstance(account, dict) else {}

    @property
    def dedup_key(self) -> Tuple[str, str]:
        return (self.pubkey, _canonical(self.account))


@dataclass(frozen=True)
class SignatureResult(Notification):
    """``signatureNotification``: the transaction was executed; ``err`` is ``None`` on
    success. The last notification of its subscription."""

    @property
    def err(self) -> Any:
        value = _value(self.result)
        return value.get("err") if isinstance(value, dict) else None

    @property
    def dedup_key(self) -> Optional[int]:
        return self.slot


@dataclass(frozen=True)
class SlotUpdate(Notification):
    """``slotNotification`` (PubSub): a slot was processed (``slot``, ``parent``, ``root``)."""

    @property
    def parent(self) -> Optional[int]:
        return self._field("parent")

    @property
    def root(self) -> Optional[int]:
        return self._field("root")

    def _field(self, name: str) -> Optional[int]:
        value = self.result.get(name) if isinstance(self.result, dict) else None
        return value if isinstance(value, int) else None

    @property
    def dedup_key(self) -> Optional[int]:
        return self.slot


#: Notification method → typed class (others stay plain ``Notification``).
NOTIFICATION_TYPES: Dict[str, type] = {
    "logsNotification": Logs,
    "accountNotification": AccountUpdate,
    "programNotification": ProgramAccountUpdate,
    "signatureNotification": SignatureResult,
    "slotNotification": SlotUpdate,
}

__all__ = ["AccountUpdate", "Logs", "NOTIFICATION_TYPES", "ProgramAccountUpdate",
           "SignatureResult", "SlotUpdate"]
