"""One spelling per address: the table every address lookup relies on."""

from __future__ import annotations

import pytest

from netmeta.model.ip import canonical_ip, ip_version


@pytest.mark.parametrize(
    ("given", "canonical", "version"),
    [
        ("10.0.0.5", "10.0.0.5", 4),
        ("::ffff:10.0.0.5", "10.0.0.5", 4),
        ("::FFFF:10.0.0.5", "10.0.0.5", 4),
        ("::ffff:a00:5", "10.0.0.5", 4),  # the same mapped address, hex notation
        ("0:0:0:0:0:FFFF:0A00:0005", "10.0.0.5", 4),
        ("::ffff:1:2", "0.1.0.2", 4),  # inside ::ffff:0:0/96, however short it looks
        ("::ffff:1:2:3", "::ffff:1:2:3", 6),  # 0:0:0:0:ffff:1:2:3, outside the mapped range
        ("::1:ffff:a00:5", "::1:ffff:a00:5", 6),
        ("64:ff9b::a00:5", "64:ff9b::a00:5", 6),  # NAT64 is not IPv4-mapped
        ("FE80::A9FE:A9FE", "fe80::a9fe:a9fe", 6),
        ("2001:DB8::1", "2001:db8::1", 6),
        ("::", "::", 6),
        ("", "", None),
        ("not-an-ip", "not-an-ip", None),
        ("10.0.0.256", "10.0.0.256", None),
    ],
)
def test_canonical_ip(given: str, canonical: str, version: int | None) -> None:
    assert canonical_ip(given) == canonical
    assert ip_version(given) == version
    assert canonical_ip(canonical_ip(given)) == canonical_ip(given)  # idempotent
