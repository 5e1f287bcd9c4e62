"""The metadata tallies, added to prometheus on the tick, equal what one observe() per request gives."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from netmeta.metadata import metrics


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if line.startswith("h_") and "_created" not in line]


def test_a_batch_of_latencies_equals_one_observe_each(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["listener", "family"], buckets=metrics.LATENCY_BUCKETS, registry=direct_registry)
    batched = Histogram("h", "h", ["listener", "family"], buckets=metrics.LATENCY_BUCKETS, registry=batched_registry)
    metrics.flush()  # earlier tests' tallies go to the real histogram, not this one
    monkeypatch.setattr(metrics, "LATENCY", batched)
    monkeypatch.setattr(metrics, "_histograms", {})
    rng = random.Random(7)
    # every bound exactly (an observation equal to a bound is in that bucket), around them, and past the last
    samples = [*metrics.LATENCY_BUCKETS, *(b * 1.0001 for b in metrics.LATENCY_BUCKETS), 0.0, 9.0,
               *(rng.expovariate(300) for _ in range(500))]
    for seconds in samples:
        direct.labels("network", "openstack").observe(seconds)
        metrics.observe("network", "/openstack/latest/meta_data.json", 200, seconds)
    assert _exposition(batched_registry) != _exposition(direct_registry)  # nothing added before the flush
    metrics.flush()
    got, want = _exposition(batched_registry), _exposition(direct_registry)
    assert [line.rsplit(" ", 1)[0] for line in got] == [line.rsplit(" ", 1)[0] for line in want]
    for mine, theirs in zip(got, want):
        assert abs(float(mine.rsplit(" ", 1)[1]) - float(theirs.rsplit(" ", 1)[1])) < 1e-9, (mine, theirs)


def test_open_connections_reach_the_gauge_on_flush() -> None:
    metrics.flush()
    before = metrics.CONNECTIONS_OPEN._value.get()
    for _ in range(3):
        metrics.connection_opened()
    metrics.connection_closed()
    assert metrics.CONNECTIONS_OPEN._value.get() == before
    metrics.flush()
    assert metrics.CONNECTIONS_OPEN._value.get() == before + 2
    for _ in range(2):
        metrics.connection_closed()
    metrics.flush()
    assert metrics.CONNECTIONS_OPEN._value.get() == before
