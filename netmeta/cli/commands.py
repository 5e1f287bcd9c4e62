"""Handlers for the component, lifecycle and guest commands."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from netmeta.config import Config

def prepare_state_dir(config: Config) -> None:
    # dnsmasq reads its files as "nobody": the state directory must be traversable.
    os.makedirs(config.state_dir, exist_ok=True)
    os.chmod(config.state_dir, 0o755)


def cmd_server(args: argparse.Namespace, config: Config) -> int:
    from netmeta.server import app

    prepare_state_dir(config)
    app.run(config)
    return 0


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    from netmeta.agent import service

    prepare_state_dir(config)
    service.run(config)
    return 0


def cmd_metadata(args: argparse.Namespace, config: Config) -> int:
    from netmeta.metrics import use_multiprocess

    # Workers count into files that one scrape sums: chosen before
    # prometheus_client is imported (netmeta.metrics).
    use_multiprocess(os.path.join(config.state_dir, "metadata", "prometheus"))
    from netmeta.metadata import service

    service.run(config)
    return 0


def start_stack(args: argparse.Namespace, config: Config, log_dir: str | None = None) -> list["Component"]:
    from netmeta.cli.options import child_argv
    from netmeta.drivers.supervise import Component

    prepare_state_dir(config)
    logs = log_dir or config.paths.log_dir
    os.makedirs(logs, exist_ok=True)
    components = [
        # The child writes its own rotated <name>.log; <name>.out keeps only
        # what it prints before its logging is set up (a crash at start).
        Component(name, [name, *child_argv(args, name), "--no-log-console"], os.path.join(logs, f"{name}.out"))
        for name in ("server", "agent", "metadata")
    ]
    components[0].start()
    from netmeta.client import Client
    from netmeta.cli.waiting import wait_for_api

    wait_for_api(Client.for_config(config))
    for component in components[1:]:
        component.start()
    return components


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace, config: Config) -> int:
    import signal

    from netmeta.drivers.supervise import stop_all, watch

    # Ctrl-C and a service manager's SIGTERM both stop the three components
    # (a shell's background job would otherwise ignore SIGINT).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    components = start_stack(args, config)
    print(f"netmeta is up: API {config.api_url}  state {config.state_dir}  logs {config.state_dir}/log")
    if config.embedded_identity:
        clouds = os.path.join(config.state_dir, "clouds.yaml")
        print(f"  export OS_CLIENT_CONFIG_FILE={clouds} OS_CLOUD=netmeta; openstack network list")
    elif config.auth_strategy == "keystone":
        print(f"  tokens from {config.keystone_authtoken.auth_url}; openstack --os-cloud <yours> network list")
    else:
        print(f"  openstack --os-auth-type none --os-endpoint {config.api_url} network list")
    try:
        watch(components)
    except KeyboardInterrupt:
        print("\nstopping (namespaces and dnsmasq stay; `netmeta down` removes them)")
    finally:
        stop_all(components)
    return 0


def teardown_host(config: Config, *, purge: bool = False) -> list[str]:
    """Remove every namespace, link, process and runtime file netmeta made here."""
    from netmeta.agent.ledger import Ledger
    from netmeta.drivers import dnsmasq, netns
    from netmeta.vm.guests import Guests

    from netmeta.vm.machines import Machines

    removed = [f"guest {name}" for name in Guests(config).teardown_all_local()]
    removed += [f"VM {name}" for name in Machines(config).teardown_all_local()]
    dhcp_root = config.paths.dhcp_root
    if os.path.isdir(dhcp_root):
        for net_id in os.listdir(dhcp_root):
            pid = dnsmasq.running_pid(config.paths.dhcp_file(net_id, "pid"), net_id)
            if pid is not None:
                dnsmasq.stop(pid)
                removed.append(f"dnsmasq {pid}")
        shutil.rmtree(dhcp_root, ignore_errors=True)
    ledger = Ledger.load(config.state_dir)
    if not config.fabric_namespace:
        # Bridges and veth ends in the host's own namespace: deleting namespaces
        # does not remove them, so delete exactly the ones the agent recorded.
        from netmeta.drivers import links

        for link in sorted(ledger.fabric_links):
            if links.delete_link(None, link):
                removed.append(f"link {link}")
    for ns in sorted(ledger.namespaces, key=lambda n: n == config.fabric_namespace):
        if netns.namespace_exists(ns):
            netns.delete_namespace(ns)
            removed.append(ns)
    ledger.namespaces.clear()
    ledger.fabric_links.clear()
    ledger.save()
    for runtime in (config.paths.component_dir("agent"), config.paths.component_dir("metadata"), config.paths.log_dir):
        shutil.rmtree(runtime, ignore_errors=True)
    if purge:
        shutil.rmtree(config.state_dir, ignore_errors=True)
        removed.append(config.state_dir)
    return removed


def cmd_down(args: argparse.Namespace, config: Config) -> int:
    from netmeta.agent.service import read_status
    from netmeta.drivers import processes

    status = read_status(config.state_dir) or {}
    pid = status.get("pid")
    if isinstance(pid, int) and processes.matches(pid, "netmeta"):
        print(f"netmeta: an agent (pid {pid}) still runs for {config.state_dir} and would re-create "
              "what `down` removes: stop `netmeta up` first", file=sys.stderr)
        return 1
    removed = teardown_host(config, purge=args.purge)
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to remove")
    return 0


# --- guests -----------------------------------------------------------------


def _guests(config: Config) -> "Guests":
    from netmeta.vm.guests import Guests

    return Guests(config)


def cmd_vm_boot(args: argparse.Namespace, config: Config) -> int:
    from netmeta.client import ApiError
    from netmeta.vm.guests import GuestError

    meta: dict[str, str] = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"netmeta: --meta {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        meta[key] = value
    try:
        user_data = _read_bytes(args.user_data) if args.user_data else None
        public_key = _read_bytes(args.public_key).decode().strip() if args.public_key else None
        if getattr(args, "image", None):
            from netmeta.cli import vms

            return vms.cmd_vm_boot(args, config, user_data, public_key, meta)
        guest = _guests(config).boot(
            args.name, args.network, user_data=user_data, key_name=args.key_name,
            public_key=public_key, meta=meta, timeout=args.timeout,
        )
    except (GuestError, ApiError, OSError) as exc:
        print(f"netmeta: vm boot {args.name}: {exc}", file=sys.stderr)
        return 1
    print(f"{guest.name}  ip {guest.ip}  instance {guest.instance_id}  namespace {guest.namespace}")
    return 0


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def cmd_vm_exec(args: argparse.Namespace, config: Config) -> int:
    from netmeta.drivers import netns
    from netmeta.vm.guests import GuestError

    argv = args.argv
    if not argv:
        print("netmeta: vm exec NAME -- CMD ...: no command given", file=sys.stderr)
        return 2
    from netmeta.cli import vms

    if vms.is_machine(config, args.name):
        return vms.cmd_vm_exec(args, config)
    try:
        guest = _guests(config).get(args.name)
    except GuestError as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 1
    return netns.run_in_namespace(guest.namespace, argv, check=False, capture=False).returncode


def cmd_vm_renew(args: argparse.Namespace, config: Config) -> int:
    from netmeta.vm.guests import GuestError

    try:
        guest = _guests(config).renew(args.name)
    except GuestError as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 1
    print(f"{guest.name}: lease renewed")
    return 0


def cmd_vm_list(args: argparse.Namespace, config: Config) -> int:
    from netmeta.cli import vms

    print(f"{'NAME':16} {'IP':16} {'INSTANCE':36} {'KIND':10} {'STATE':28} WHERE")
    for name, kind, state, ip, instance, where in vms.list_rows(config):
        print(f"{name:16} {ip:16} {instance:36} {kind:10} {state:28} {where}")
    return 0


def cmd_vm_delete(args: argparse.Namespace, config: Config) -> int:
    from netmeta.cli import vms
    from netmeta.client import ApiError
    from netmeta.vm.guests import GuestError

    if vms.is_machine(config, args.name):
        return vms.cmd_vm_delete(args, config)
    try:
        _guests(config).delete(args.name)
    except (GuestError, ApiError) as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: deleted")
    return 0


if False:  # pragma: no cover - names for type checkers only
    from netmeta.drivers.supervise import Component
    from netmeta.vm.guests import Guests
