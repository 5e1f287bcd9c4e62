"""The settings ``model`` reads, as protocols: model never imports the config.

``netmeta.config.Config`` (and ``RateLimitConfig``) satisfy these by shape,
so callers pass their configuration as it is; model states exactly which
fields its decisions depend on, and a test may pass any object that has them.
Injected, not imported: the import-linter contract "model is pure" forbids
``netmeta.config`` inside ``netmeta.model``.
"""

from __future__ import annotations

from typing import Protocol


class DataPlaneSettings(Protocol):
    """What decides the qdhcp and qrouter namespaces and the listeners (Neutron's names)."""

    @property
    def enable_isolated_metadata(self) -> bool: ...
    @property
    def force_metadata(self) -> bool: ...
    @property
    def enable_metadata_proxy(self) -> bool: ...
    @property
    def dhcp_lease_duration(self) -> int: ...
    @property
    def dns_domain(self) -> str: ...
    @property
    def metadata_port(self) -> int: ...
    @property
    def metadata_access_mark(self) -> str: ...
    @property
    def min_rtr_adv_interval(self) -> int: ...
    @property
    def max_rtr_adv_interval(self) -> int: ...


class RateLimits(Protocol):
    """Neutron's ``[metadata_rate_limiting]``."""

    @property
    def rate_limit_enabled(self) -> bool: ...
    @property
    def ip_versions(self) -> tuple[int, ...]: ...
    @property
    def base_window_duration(self) -> int: ...
    @property
    def base_query_rate_limit(self) -> int: ...
    @property
    def burst_window_duration(self) -> int: ...
    @property
    def burst_query_rate_limit(self) -> int: ...
