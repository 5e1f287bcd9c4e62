"""A network's segment: Neutron's provider extension and ML2's type drivers.

Every network has one segment, shown as ``provider:network_type``,
``provider:physical_network`` and ``provider:segmentation_id``:

* **local** — the default while ``vni_ranges`` is empty: the network exists
  on one host only, which is exactly what netmeta did before it knew hosts.
* **vxlan** — the default for tenant networks once ``vni_ranges`` is set:
  the lowest free VNI of the ranges, unless an admin names one (any VNI of
  1 to 2^24-1, inside the ranges or not, as in ML2). Its MTU is the
  underlay's less 50 bytes of VXLAN over IPv4 (``global_physnet_mtu``).
* **flat** — an admin's, on a named physical network, one network each.

The ``vxlan_allocations`` table's primary key makes a VNI one network's
across every server sharing the database. Errors are ML2's: 400
``InvalidInput`` for a malformed or contradictory segment, 409
``TunnelIdInUse`` / ``FlatNetworkInUse`` for a taken one, 503
``NoNetworkAvailable`` when the ranges are exhausted. Segments are fixed
once made (ML2 updates only VLAN segments).
"""

from __future__ import annotations

from typing import Any, Mapping

from netmeta.config import parse_vni_ranges
from netmeta.server.errors import Conflict, NeutronError, invalid
from netmeta.store.database import Txn

NETWORK_TYPE = "provider:network_type"
PHYSICAL_NETWORK = "provider:physical_network"
SEGMENTATION_ID = "provider:segmentation_id"
PROVIDER_ATTRS = (NETWORK_TYPE, PHYSICAL_NETWORK, SEGMENTATION_ID)
LOCAL, FLAT, VXLAN = "local", "flat", "vxlan"
TYPES = (LOCAL, FLAT, VXLAN)
VNI_MAX = 2**24 - 1
# Neutron's VXLAN overhead over an IPv4 underlay (p_const.VXLAN_ENCAP_OVERHEAD + IP header).
VXLAN_OVERHEAD = 50


class NoNetworkAvailable(NeutronError):
    status = 503

    def __init__(self) -> None:
        super().__init__("Unable to create the network. No project network is available for allocation.",
                         "NoNetworkAvailable")


def _ranges(settings: Any) -> tuple[tuple[int, int], ...]:
    return parse_vni_ranges(getattr(settings, "vni_ranges", "") or "")


def _given(body: Mapping[str, Any]) -> dict[str, Any]:
    """The provider attributes the body really sets (None counts as not set, as ATTR_NOT_SPECIFIED)."""
    return {k: body[k] for k in PROVIDER_ATTRS if body.get(k) is not None}


def _segmentation_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise invalid(f"'{value}' is not an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise invalid(f"'{value}' is not an integer") from exc


def _text(value: Any, key: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise invalid(f"'{value}' is not a valid string for {key}")
    if len(value) > max_len:
        raise invalid(f"'{value[:40]}...' exceeds maximum length of {max_len}")
    return value


def assign(txn: Txn, obj: dict[str, Any], body: Mapping[str, Any]) -> None:
    """Give a new network its segment (and a vxlan network its MTU); see the module docstring."""
    settings = txn.settings
    given = _given(body)
    if not given:
        ntype = VXLAN if _ranges(settings) else LOCAL
        segment: dict[str, Any] = {NETWORK_TYPE: ntype, PHYSICAL_NETWORK: None, SEGMENTATION_ID: None}
        if ntype == VXLAN:
            segment[SEGMENTATION_ID] = _allocate(txn, obj["id"], _ranges(settings))
    else:
        segment = _provider_segment(txn, obj["id"], given)
    obj.update(segment)
    if segment[NETWORK_TYPE] == VXLAN:
        physnet_mtu = int(getattr(settings, "global_physnet_mtu", 1500) or 1500)
        biggest = physnet_mtu - VXLAN_OVERHEAD
        if "mtu" not in body:
            obj["mtu"] = biggest
        elif obj["mtu"] > biggest:
            raise invalid(f"Requested MTU is too big, maximum is {biggest}")


def _provider_segment(txn: Txn, network_id: str, given: dict[str, Any]) -> dict[str, Any]:
    if NETWORK_TYPE not in given:
        raise invalid("network_type required")
    ntype = _text(given[NETWORK_TYPE], NETWORK_TYPE, 32)
    if ntype not in TYPES:
        raise invalid(f"network_type value '{ntype}' not supported")
    physnet = _text(given[PHYSICAL_NETWORK], PHYSICAL_NETWORK, 64) if PHYSICAL_NETWORK in given else None
    seg_id = _segmentation_id(given[SEGMENTATION_ID]) if SEGMENTATION_ID in given else None
    if ntype == LOCAL:
        for key in (PHYSICAL_NETWORK, SEGMENTATION_ID):
            if given.get(key):
                raise invalid(f"{key} prohibited for local provider network")
        return {NETWORK_TYPE: LOCAL, PHYSICAL_NETWORK: None, SEGMENTATION_ID: None}
    if ntype == FLAT:
        if not physnet:
            raise invalid("physical_network required for flat provider network")
        if seg_id:
            raise invalid(f"{SEGMENTATION_ID} prohibited for flat provider network")
        for other in txn.select("networks"):
            if other.get(NETWORK_TYPE) == FLAT and other.get(PHYSICAL_NETWORK) == physnet:
                raise Conflict(f"Unable to create the flat network. Physical network {physnet} is in use.",
                               "FlatNetworkInUse")
        return {NETWORK_TYPE: FLAT, PHYSICAL_NETWORK: physnet, SEGMENTATION_ID: None}
    if physnet:
        raise invalid("provider:physical_network specified for vxlan network")
    if seg_id is None:
        return {NETWORK_TYPE: VXLAN, PHYSICAL_NETWORK: None,
                SEGMENTATION_ID: _allocate(txn, network_id, _ranges(txn.settings))}
    if not 1 <= seg_id <= VNI_MAX:
        raise invalid(f"provider:segmentation_id {seg_id} is not a VXLAN VNI (1 to {VNI_MAX})")
    if txn.vni_owner(seg_id) is not None:
        raise Conflict(f"Unable to create the network. The tunnel ID {seg_id} is in use.", "TunnelIdInUse")
    txn.claim_vni(seg_id, network_id)
    return {NETWORK_TYPE: VXLAN, PHYSICAL_NETWORK: None, SEGMENTATION_ID: seg_id}


def _allocate(txn: Txn, network_id: str, ranges: tuple[tuple[int, int], ...]) -> int:
    """The lowest free VNI of the ranges (a few indexed reads per range)."""
    for lo, hi in ranges:
        candidate = txn.lowest_free_vni(lo, hi)
        if candidate is not None:
            txn.claim_vni(candidate, network_id)
            return candidate
    raise NoNetworkAvailable()


def check_update(obj: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    """ML2 updates only VLAN segments: any other change of a provider attribute is refused."""
    for key in PROVIDER_ATTRS:
        if key in body and body[key] != obj.get(key):
            raise invalid("Only VLAN type networks can be updated.")


def release(txn: Txn, network_id: str) -> None:
    txn.release_vnis(network_id)
