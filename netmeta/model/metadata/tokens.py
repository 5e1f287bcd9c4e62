"""IMDSv2-style session tokens, verifiable without storing them.

A token is ``base64url(expiry || HMAC-SHA256(key, binding || expiry)[:20])``
where *binding* is the listener context and the caller's IP. So a token only
works from the address, and through the listener, it was issued to: a token
relayed to another guest or replayed through another router fails. The key
is random per process, so a restart invalidates every token; clients (botocore,
cloud-init) answer a 401 by fetching a new one, as on AWS.

Expiry uses the injected clock (monotonic in production): tokens never
outlive the process, so wall-clock time buys nothing and monotonic time
cannot jump.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Callable

TOKEN_PATH = ("latest", "api", "token")
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MIN_TTL = 1
MAX_TTL = 21600
_MAC_LEN = 20


class TokenRequestError(ValueError):
    """A PUT for a token that AWS would refuse; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# How many verified tokens to remember (a few per guest at most).
VERIFIED_CACHE = 4096


def parse_ttl(raw: str | None) -> int:
    """The TTL header must be an integer from 1 to 21600 (else 400, like AWS)."""
    if raw is None:
        raise TokenRequestError(400, f"{TTL_HEADER} header is required")
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not MIN_TTL <= int(text) <= MAX_TTL:
        raise TokenRequestError(400, f"{TTL_HEADER} must be an integer from {MIN_TTL} to {MAX_TTL}")
    return int(text)


@dataclass
class TokenIssuer:
    """Issues and checks tokens bound to (listener kind, listener id, caller IP)."""

    clock: Callable[[], float]
    # The HMAC key, injected (os.urandom(32) per process): model draws no randomness.
    key: bytes
    # Tokens already verified, with their expiry: a guest sends the same token
    # on every GET, and the HMAC was the whole cost of checking it.
    _verified: dict[tuple[tuple[str, str, str], str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("a token key needs at least 16 bytes")

    def _mac(self, binding: tuple[str, str, str], expiry: int) -> bytes:
        msg = "\0".join(binding).encode() + struct.pack(">Q", expiry)
        return hmac.new(self.key, msg, hashlib.sha256).digest()[:_MAC_LEN]

    def issue(self, binding: tuple[str, str, str], ttl: int) -> str:
        expiry = int(self.clock()) + ttl
        raw = struct.pack(">Q", expiry) + self._mac(binding, expiry)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def valid(self, binding: tuple[str, str, str], token: str) -> bool:
        """True for an unexpired token issued to this binding; never raises."""
        known = self._verified.get((binding, token))
        if known is not None:
            return bool(self.clock() < known)
        if len(token) > 64:
            return False
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(raw) != 8 + _MAC_LEN:
            return False
        (expiry,) = struct.unpack(">Q", raw[:8])
        if not hmac.compare_digest(raw[8:], self._mac(binding, expiry)):
            return False
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()  # bounded: forget, re-verify on next use
        self._verified[(binding, token)] = expiry
        return bool(self.clock() < expiry)
