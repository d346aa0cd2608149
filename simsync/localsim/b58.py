"""Base58 (Bitcoin alphabet) for byte strings of any length.

solders parses and prints base58 only for fixed-size values (pubkeys, signatures, hashes);
Solana JSON-RPC also uses it for instruction data, ``memcmp`` filter bytes and small account
data. Pure functions.
"""
from __future__ import annotations

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    digits = []
    while num:
        num, rem = divmod(num, 58)
        digits.append(ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Decode; raise ValueError on a character outside the alphabet."""
    num = 0
    for char in text:
        if char not in _INDEX:
            raise ValueError(f"invalid base58 character {char!r}")
        num = num * 58 + _INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body
