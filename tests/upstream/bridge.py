"""Runs OpenStack's own code on JSON shapes: one request per stdin line, one answer per stdout line.

This file runs under the *upstream* interpreter (``.cache/upstream-venv``,
made by ``scripts/setup.sh --test``), which holds the ``neutron`` and
``nova`` releases from PyPI; it never imports netmeta. The test venv starts
it once per session (tests/upstream/conftest.py) and compares its answers
with netmeta's on the same inputs.

Each operation drives a real upstream class or function the way that
project's own unit tests do, replacing only disk, process, kernel and
database access:

* ``dnsmasq``: Neutron's ``Dnsmasq`` writes its opts, host and addn_hosts
  files (``replace_file`` captured, the tap's addresses given as
  ``get_devices_with_ip`` would list them), and its ``DeviceManager`` sets the
  qdhcp default route (``IPDevice`` recorded).
* ``dns_assignment`` / ``dns_name_error``: the ML2 ``dns`` extension driver's
  ``dns_assignment`` and neutron-lib's ``dns_name`` validator.
* ``hostname``: Nova's ``API._populate_instance_names`` (``sanitize_hostname``
  and its ``Server-<uuid>`` fallback).
* ``metadata``: Nova's ``API._build_vif_model`` turns Neutron port, subnet and
  network dicts into its network model (the Neutron client is a fake that
  answers from those dicts), then ``InstanceMetadata.lookup`` answers paths;
  the instance is a plain object with the fields those methods read instead
  of a database row.
* ``l3``: Neutron's L3 agent ``RouterInfo`` with a real ``IptablesManager``
  (``iptables-save``/``-restore`` captured) runs ``process()``; the answer is
  the filter, nat and mangle rules it would apply.
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from unittest import mock

warnings.simplefilter("ignore")


# --- Neutron: dnsmasq -----------------------------------------------------------

def _neutron_conf(overrides):
    from oslo_config import cfg

    from neutron.agent.linux import dhcp as _dhcp  # noqa: F401  (registers nothing by itself)
    from neutron.conf.agent import common as config
    from neutron.conf.agent import dhcp as dhcp_config
    from neutron.conf import common as base_config

    conf = config.setup_conf()
    conf.register_opts(base_config.core_opts)
    conf.register_opts(dhcp_config.DHCP_OPTS)
    conf.register_opts(dhcp_config.DNSMASQ_OPTS)
    conf.register_opts(config.DHCP_PROTOCOL_OPTS)
    config.register_external_process_opts(conf)
    config.register_interface_driver_opts_helper(conf)
    conf.register_opt(cfg.BoolOpt("enable_isolated_metadata", default=False))
    conf.register_opt(cfg.BoolOpt("force_metadata", default=False))
    conf.register_opt(cfg.BoolOpt("enable_metadata_network", default=False))
    conf([], project="neutron")
    for key, value in overrides.items():
        conf.set_override(key, value)
    return conf


def _net_model(network):
    from neutron.agent.linux import dhcp

    net = dict(network)
    net.setdefault("namespace", "qdhcp-" + net["id"])
    for subnet in net["subnets"]:
        subnet.setdefault("ipv6_address_mode", None)
        subnet.setdefault("ipv6_ra_mode", None)
        subnet.setdefault("subnetpool_id", None)
        subnet.setdefault("segment_id", None)
        subnet["host_routes"] = [dict(r) for r in subnet.get("host_routes", [])]
    for port in net["ports"]:
        port.setdefault("extra_dhcp_opts", [])
        for opt in port["extra_dhcp_opts"]:
            opt.setdefault("ip_version", 4)
    return dhcp.NetModel(net)


def op_dnsmasq(req):
    from neutron.agent.linux import dhcp, ip_lib

    conf = _neutron_conf(req.get("conf", {}))
    written = {}

    def replace_file(name, data, *a, **k):
        written[name.rsplit("/", 1)[-1]] = data

    network = _net_model(req["network"])
    tap = [{"cidr": c} for c in req.get("tap", [])]
    with mock.patch("neutron_lib.utils.file.replace_file", replace_file), \
            mock.patch("neutron.agent.linux.dhcp.DeviceManager") as mgr, \
            mock.patch.object(ip_lib, "get_devices_with_ip", return_value=tap), \
            mock.patch("os.makedirs"), \
            mock.patch("neutron.agent.linux.external_process.ProcessManager"):
        mgr.return_value.driver.bridged = True
        mgr.return_value.plugin.get_ports.return_value = []
        dm = dhcp.Dnsmasq(conf, network, process_monitor=mock.Mock())
        dm._output_hosts_file()
        dm._output_addn_hosts_file()
        dm._output_opts_file()

    # The qdhcp default route, as DeviceManager sets it on a fresh tap.
    calls = []
    device = mock.Mock()
    device.route.get_gateway.return_value = None
    device.route.add_gateway.side_effect = lambda gw, *a, **k: calls.append(["default", gw])
    device.route.add_route.side_effect = lambda cidr, *a, **k: calls.append(["onlink", cidr])
    with mock.patch.object(dhcp.ip_lib, "IPDevice", return_value=device), \
            mock.patch("neutron.agent.linux.dhcp.agent_common_utils.load_interface_driver"):
        manager = dhcp.DeviceManager(conf, mock.Mock())
        manager._set_default_route_ip_version(network, "tap", 4)

    def lines(kind):
        text = written.get(kind, "")
        return [line for line in text.split("\n") if line]

    return {"opts": lines("opts"), "host": lines("host"), "addn_hosts": lines("addn_hosts"), "routes": calls}


def _core_opts(conf):
    from neutron.conf import common as base_config

    for opt in base_config.core_opts:
        if opt.dest not in conf:
            conf.register_opt(opt)


def op_dns_assignment(req):
    from oslo_config import cfg

    from neutron.plugins.ml2.extensions import dns_integration

    _core_opts(cfg.CONF)
    cfg.CONF.set_override("dns_domain", req["dns_domain"])
    driver = dns_integration.DNSExtensionDriverML2.__new__(dns_integration.DNSExtensionDriverML2)
    data = None
    if req.get("dns_name"):
        data = types.SimpleNamespace(dns_name=req["dns_name"], current_dns_domain="")
    return driver._get_dns_names_for_port([{"ip_address": ip} for ip in req["ips"]], data)


def op_dns_name_error(req):
    from neutron_lib.api.validators import dns
    from oslo_config import cfg

    _core_opts(cfg.CONF)
    cfg.CONF.set_override("dns_domain", req["dns_domain"])
    return dns.validate_dns_name(req["name"])


def op_extra_dhcp_opt_error(req):
    from neutron_lib.api.definitions import extra_dhcp_opt
    from neutron_lib.api import validators

    validator = extra_dhcp_opt.RESOURCE_ATTRIBUTE_MAP["ports"][extra_dhcp_opt.EXTRADHCPOPTS]["validate"]
    (name, arg), = validator.items()
    return validators.validators[name](req["opts"], arg)


# --- Neutron: the L3 agent ------------------------------------------------------------

def op_l3(req):
    """A router processed once by the L3 agent: its qr- devices, routes and iptables rules."""
    from neutron.agent.l3 import router_info
    from neutron.agent.linux import ip_lib
    from neutron.agent.metadata import driver as metadata_driver
    from neutron.conf.agent import common as config
    from neutron.conf.agent.l3 import config as l3_config

    conf = config.setup_conf()
    l3_config.register_l3_agent_config_opts(l3_config.OPTS, conf)
    conf([], project="neutron")
    conf.set_override("metadata_access_mark", req.get("mark", "0x1"))
    router = dict(req["router"])
    router.setdefault("routes", [])
    router["_interfaces"] = req["interfaces"]
    plugged, routes = [], []
    driver = mock.Mock(DEV_NAME_LEN=14)
    driver.plug.side_effect = lambda network_id, port_id, device_name, *a, **k: plugged.append(device_name)

    def add_route(namespace, destination, via=None, **_):
        routes.append({"destination": destination, "via": via})

    with mock.patch("neutron.agent.linux.ip_lib.IPWrapper"), \
            mock.patch("neutron.agent.linux.ip_lib.IPDevice"), \
            mock.patch("neutron.agent.linux.ip_lib.device_exists", return_value=False), \
            mock.patch.object(ip_lib, "add_ip_route", side_effect=add_route), \
            mock.patch.object(ip_lib, "delete_ip_route"), \
            mock.patch("neutron.agent.linux.iptables_manager.IptablesManager.apply"), \
            mock.patch("neutron.agent.linux.iptables_manager.IptablesManager._apply"), \
            mock.patch("neutron.agent.linux.ip_lib.send_ip_addr_adv_notif"), \
            mock.patch("neutron.agent.l3.router_info.RouterInfo._get_gw_ips_cidr", return_value=set(), create=True):
        ri = router_info.RouterInfo(mock.Mock(), router["id"], router, conf, driver, use_ipv6=False)
        ri.router_namespace = mock.Mock()
        proxy = types.SimpleNamespace(metadata_port=req.get("metadata_port", 9697),
                                      metadata_access_mark=req.get("mark", "0x1"))
        if req.get("metadata_proxy", True):
            metadata_driver.apply_metadata_nat_rules(ri, proxy)
        ri.process()
    rules = {}
    for table in ("filter", "nat", "mangle"):
        chains: dict[str, list[str]] = {}
        tbl = ri.iptables_manager.ipv4[table]
        for chain in sorted(tbl.chains):
            chains[f"neutron-l3-agent-{chain}"] = []
        for rule in tbl.rules:
            chain = f"neutron-l3-agent-{rule.chain}" if rule.wrap else rule.chain
            chains.setdefault(chain, []).append(str(rule).split(" ", 2)[2])
        rules[table] = chains
    return {"devices": plugged, "routes": routes, "rules": rules}


# --- Nova -------------------------------------------------------------------------

_nova_ready = False


def _nova():
    global _nova_ready
    if not _nova_ready:
        from nova import config, objects

        objects.register_all()
        config.parse_args([], configure_db=False, init_rpc=False)
        _nova_ready = True


def op_hostname(req):
    _nova()
    from nova.compute import api as compute_api
    from nova import objects

    inst = objects.Instance(uuid=req["uuid"], display_name=req["name"])
    compute_api.API._populate_instance_names(None, inst, 1, 0)
    return inst.hostname


class _FakeNeutron:
    """The two list calls Nova's port-to-model code makes, answered from the shapes."""

    def __init__(self, subnets, ports):
        self.subnets, self.ports = subnets, ports

    def list_subnets(self, id=(), **_):
        return {"subnets": sorted((s for s in self.subnets if s["id"] in id), key=lambda s: s["id"])}

    def list_ports(self, network_id=None, device_owner=None, **_):
        return {"ports": [p for p in self.ports if p["network_id"] == network_id
                          and p.get("device_owner") == device_owner]}


def op_metadata(req):
    _nova()
    from oslo_config import cfg

    from nova.api.metadata import base, vendordata_json
    from nova.network import model as network_model
    from nova.network import neutron as neutron_api
    from nova.virt import netutils

    cfg.CONF.set_override("dhcp_domain", req.get("dhcp_domain", "novalocal"), group="api")
    client = _FakeNeutron(req["subnets"], req["all_ports"])
    api = neutron_api.API()
    vifs = []
    with mock.patch.object(neutron_api, "get_client"), \
            mock.patch.object(api, "_get_physnet_tunneled_info", return_value=(None, False)), \
            mock.patch.object(api, "_get_floating_ips_by_fixed_and_port", return_value=[]):
        for port in req["ports"]:
            port = dict(port, tenant_id=port.get("project_id", ""), status="ACTIVE")
            port["binding:vif_type"] = "unbound"
            vif = api._build_vif_model(None, client, port, req["networks"], [])
            vif["type"] = req.get("vif_type", "bridge")
            vifs.append(vif)
    nwinfo = network_model.NetworkInfo(vifs)

    inst = req["instance"]
    ec2 = types.SimpleNamespace(ami_id="ami-00000001", instance_id=inst["ec2_id"], kernel_id=None, ramdisk_id=None)
    keypair = types.SimpleNamespace(name=inst.get("key_name"), type="ssh", public_key=inst.get("public_key"))
    instance = types.SimpleNamespace(
        uuid=inst["id"], hostname=inst["hostname"], display_name=inst["name"], launch_index=0,
        project_id=inst["project_id"], key_name=inst.get("key_name"), key_data=inst.get("public_key"),
        keypairs=[keypair] if inst.get("key_name") else [], ec2_ids=ec2, reservation_id="r-x",
        device_metadata=None, numa_topology=None, get_flavor=lambda: {"name": "m1.small"},
    )
    md = base.InstanceMetadata.__new__(base.InstanceMetadata)
    md.mappings = {"ami": "vda", "root": "/dev/vda"}
    md.set_mimetype(base.MIME_TYPE_TEXT_PLAIN)
    md.instance, md.extra_md, md.availability_zone = instance, None, "nova"
    md.security_groups, md.userdata_raw, md.address = [], None, req.get("address")
    md.launch_metadata, md.password, md.uuid = {}, None, instance.uuid
    md.content, md.files, md.network_config, md.route_configuration = {}, [], None, None
    md.network_metadata = netutils.get_network_metadata(nwinfo)
    md.ip_info = netutils.get_ec2_ip_info(nwinfo)
    md.vendordata_providers = {"StaticJSON": vendordata_json.JsonFileVendorData()}
    md._get_instance_dedicated_cpus = lambda: []

    out = {}
    for path in req["paths"]:
        try:
            data = md.lookup(path)
        except base.InvalidMetadataPath:
            out[path] = None
            continue
        if isinstance(data, (dict, list)) and not path.endswith(".json"):
            body = base.ec2_md_print(data)
        else:
            body = data
        if isinstance(body, bytes):
            body = body.decode()
        out[path] = {"body": body, "type": md.get_mimetype()}
    return out


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def main():
    # Neutron's iptables chains take the binary's name as their prefix.
    sys.argv[0] = "neutron-l3-agent"
    for line in sys.stdin:
        req = json.loads(line)
        try:
            answer = {"ok": OPS[req["op"]](req)}
        except Exception as exc:  # the caller shows it; a bad shape must not kill the session
            import traceback

            answer = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        sys.stdout.write(json.dumps(answer, default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
