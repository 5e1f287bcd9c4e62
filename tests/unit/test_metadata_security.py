"""Tokens, rate limits and signatures, with a fake clock."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from netmeta.config import RateLimitConfig
from netmeta.model.metadata.ratelimit import RateLimiter, table_size
from netmeta.model.metadata.signing import sign, verify
from netmeta.model.metadata.tokens import TokenIssuer, TokenRequestError, parse_ttl


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BIND = ("network", "net-1", "10.0.0.5")


KEY = bytes(range(32))

# --- tokens -------------------------------------------------------------------


def test_token_lifecycle() -> None:
    clock = Clock()
    issuer = TokenIssuer(clock, KEY)
    token = issuer.issue(BIND, 60)
    assert issuer.valid(BIND, token)
    clock.now += 59.9
    assert issuer.valid(BIND, token)
    clock.now += 0.2
    assert not issuer.valid(BIND, token)


@pytest.mark.parametrize(
    "other",
    [("network", "net-1", "10.0.0.6"), ("network", "net-2", "10.0.0.5"), ("router", "net-1", "10.0.0.5")],
)
def test_token_is_bound_to_listener_and_address(other: tuple[str, str, str]) -> None:
    issuer = TokenIssuer(Clock(), KEY)
    assert not issuer.valid(other, issuer.issue(BIND, 60))


@pytest.mark.parametrize("junk", ["", "x", "!!!!", "A" * 200, "AAAA" * 7, "é"])
def test_junk_tokens_are_invalid_not_errors(junk: str) -> None:
    assert not TokenIssuer(Clock(), KEY).valid(BIND, junk)


def test_tokens_die_with_the_process_key() -> None:
    clock = Clock()
    token = TokenIssuer(clock, b"k1" * 16).issue(BIND, 60)
    assert not TokenIssuer(clock, b"k2" * 16).valid(BIND, token)


def test_a_token_key_is_never_short() -> None:
    with pytest.raises(ValueError):
        TokenIssuer(Clock(), b"")


@pytest.mark.parametrize("raw, ttl", [("1", 1), ("21600", 21600), (" 60 ", 60)])
def test_ttl_accepted(raw: str, ttl: int) -> None:
    assert parse_ttl(raw) == ttl


@pytest.mark.parametrize("raw", [None, "", "0", "21601", "-1", "1.5", "abc", "٣"])
def test_ttl_refused_with_400(raw: str | None) -> None:
    with pytest.raises(TokenRequestError) as err:
        parse_ttl(raw)
    assert err.value.status == 400


# --- rate limits ------------------------------------------------------------------


def limiter(clock: Clock, **kw: object) -> RateLimiter:
    config = RateLimitConfig(rate_limit_enabled=True, **kw)  # type: ignore[arg-type]
    return RateLimiter(config, clock)


def test_disabled_and_per_ip_version() -> None:
    clock = Clock()
    off = RateLimiter(RateLimitConfig(rate_limit_enabled=False), clock)
    assert all(off.check("k", "10.0.0.5").allowed for _ in range(100))
    v4_only = limiter(clock, base_query_rate_limit=1, burst_query_rate_limit=1, ip_versions=(4,))
    assert all(v4_only.check("k6", "fd00::5").allowed for _ in range(10))
    assert v4_only.check("k4", "10.0.0.5").allowed and not v4_only.check("k4", "10.0.0.5").allowed


def test_base_window_limits_and_retry_after() -> None:
    clock = Clock()
    rl = limiter(clock, base_window_duration=10, base_query_rate_limit=3, burst_window_duration=10, burst_query_rate_limit=3)
    results = []
    for _ in range(4):
        results.append(rl.check("g", "10.0.0.5"))
        clock.now += 1
    assert [r.allowed for r in results] == [True, True, True, False]
    # haproxy's rate: 4 in this period; back at 3 when a quarter of the next has passed.
    assert results[-1].retry_after == 10
    assert rl.check("other", "10.0.0.6").allowed  # per guest
    clock.now = 1000 + 10 + 3  # 4 + 1 (denied ones count, like haproxy) weighted by 0.7: still above 3
    assert not rl.check("g", "10.0.0.5").allowed
    clock.now = 1000 + 10 + 8  # 5 × 0.2 + 2
    assert rl.check("g", "10.0.0.5").allowed


def test_burst_window_refuses_short_bursts_too() -> None:
    clock = Clock()
    rl = limiter(clock, base_window_duration=60, base_query_rate_limit=100, burst_window_duration=1, burst_query_rate_limit=2)
    assert [rl.check("g", "10.0.0.5").allowed for _ in range(3)] == [True, True, False]
    clock.now += 2.01
    assert rl.check("g", "10.0.0.5").allowed


def test_one_table_for_every_worker_one_limit_per_guest() -> None:
    # Two workers, each with its own limiter on the same table: the guest's
    # requests count together, whichever worker they reach.
    clock = Clock()
    config = RateLimitConfig(rate_limit_enabled=True, base_query_rate_limit=4, burst_query_rate_limit=4)
    table = bytearray(table_size(2))
    workers = [RateLimiter(config, clock, table=table, workers=2, worker=i) for i in (0, 1)]
    assert [workers[i % 2].check("g", "10.0.0.5").allowed for i in range(5)] == [True] * 4 + [False]
    assert not workers[0].check("g", "10.0.0.5").allowed and not workers[1].check("g", "10.0.0.5").allowed
    assert workers[1].check("h", "10.0.0.6").allowed
    alone = RateLimiter(config, clock, table=bytearray(table_size(2)), workers=2, worker=0)
    assert all(alone.check("g", "10.0.0.5").allowed for _ in range(4))  # another table knows nothing


def test_memory_is_bounded() -> None:
    clock = Clock()
    rl = RateLimiter(RateLimitConfig(rate_limit_enabled=True), clock, slots=50)
    assert len(rl.table) == table_size(1, 50)
    for i in range(500):
        rl.check(("net", f"10.0.{i // 250}.{i % 250}"), "10.0.0.1")
    assert len(rl) <= 50
    assert len(rl.table) == table_size(1, 50)


# --- signatures ---------------------------------------------------------------------


def test_sign_matches_neutron_definition() -> None:
    expected = hmac.new(b"secret", b"uuid-1", hashlib.sha256).hexdigest()
    assert sign("secret", "uuid-1") == expected
    assert verify("secret", "uuid-1", expected)


@pytest.mark.parametrize("signature", [None, "", "0" * 64, sign("other", "uuid-1"), sign("secret", "uuid-2"), "é" * 64])
def test_verify_refuses(signature: str | None) -> None:
    assert not verify("secret", "uuid-1", signature)


def test_asking_whether_a_guest_is_over_its_limit_counts_nothing() -> None:
    clock = Clock()
    config = RateLimitConfig(rate_limit_enabled=True, base_query_rate_limit=3, burst_query_rate_limit=3)
    rl = RateLimiter(config, clock)
    for _ in range(3):
        assert rl.check("g", "10.0.0.5", record=False).allowed  # one more would pass
        assert rl.check("g", "10.0.0.5").allowed
    assert not rl.check("g", "10.0.0.5", record=False).allowed  # the next would be refused ...
    assert not rl.check("g", "10.0.0.5", record=False).allowed  # ... and asking did not count:
    assert not rl.check("g", "10.0.0.5").allowed  # the 4th request is the first refused
