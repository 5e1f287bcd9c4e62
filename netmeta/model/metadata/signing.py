"""Neutron's ``X-Instance-ID-Signature``: hex HMAC-SHA256 of the instance id.

The same function signs what netmeta forwards to a real Nova and checks what
a Neutron-style proxy sends to netmeta's signed listener, so both directions
agree by construction. Verification is constant-time (``hmac.compare_digest``)
so response timing leaks nothing about the expected signature.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, instance_id: str) -> str:
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, instance_id: str, signature: str | None) -> bool:
    if not signature:
        return False
    expected = sign(secret, instance_id)
    # compare_digest refuses non-ASCII str; such a signature is wrong anyway.
    try:
        return hmac.compare_digest(expected, signature)
    except TypeError:
        return False
