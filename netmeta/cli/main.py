"""The ``netmeta`` command.

One entry point for every component and for the people using them::

    netmeta up                 server + agent + metadata, in the foreground
    netmeta server|agent|metadata   one component, as in production
    netmeta vm boot|exec|renew|list|delete   test guests with real DHCP
    netmeta vm boot --image debian-12 …      a real VM (QEMU, cloud-init)
    netmeta image build|list   cloud images for real VMs
    netmeta explain GUEST      how a guest reaches 169.254.169.254, and why
    netmeta status [--json]    each component's health, networks, listeners, guests
    netmeta demo               the seed report, replayed for real
    netmeta down [--purge]     remove everything netmeta made on this host

Every command takes ``--config FILE`` (an INI file with Neutron's option
names, as ``dhcp_agent.ini``) and flags that override it: only the settings
that command reads (see :mod:`netmeta.cli.options`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from netmeta import logs
from netmeta.cli.options import (
    AGENT, COMPONENTS, EXPLAIN, GUESTS, METADATA, SERVER, STATUS, TEARDOWN, add_settings, overrides,
)
from netmeta.client import ApiError
from netmeta.config import Config, ConfigError, load
from netmeta.drivers.errors import DriverError
from netmeta.errors import NetmetaError

Handler = Callable[[argparse.Namespace, Config], int]


def config_from(args: argparse.Namespace) -> Config:
    return load(getattr(args, "config", None), **overrides(args))


def build_parser() -> argparse.ArgumentParser:
    from netmeta.cli import commands, demo, explain, status, vms

    parser = argparse.ArgumentParser(prog="netmeta", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str, roles: tuple[str, ...],
            parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
        add_settings(p, roles)
        p.set_defaults(handler=handler)
        return p

    add("server", commands.cmd_server, "serve the Neutron-compatible API and the change feed", (SERVER,))
    add("agent", commands.cmd_agent, "converge this host's namespaces, links, dnsmasq and iptables", (AGENT,))
    add("metadata", commands.cmd_metadata, "serve 169.254.169.254 inside every qdhcp/qrouter namespace", (METADATA,))
    add("up", commands.cmd_up, "run server, agent and metadata together until Ctrl-C", COMPONENTS)
    down = add("down", commands.cmd_down, "remove everything netmeta created on this host", (TEARDOWN,))
    down.add_argument("--purge", action="store_true", help="also delete the store (all API data)")

    vms.add_image_parsers(sub, add)
    vm = sub.add_parser("vm", help="test guests: namespaces with a real DHCP client, or real VMs (QEMU)",
                        description="test guests: namespaces with a real DHCP client, or real VMs (QEMU)")
    vm_sub = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")

    def add_vm(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        return add(name, handler, help_, (GUESTS,), vm_sub)

    boot = add_vm("boot", commands.cmd_vm_boot, "create an instance and a guest that takes a DHCP lease")
    boot.add_argument("name", help="the guest's name (also the instance's)")
    boot.add_argument("--network", required=True, help="network name or id")
    boot.add_argument("--user-data", dest="user_data", metavar="FILE", help="file served as user_data")
    boot.add_argument("--key-name", dest="key_name", help="name of the key pair in the metadata")
    boot.add_argument("--public-key", dest="public_key", metavar="FILE", help="public key file (OpenSSH format)")
    boot.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                      help="instance metadata item; repeat for more")
    boot.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the lease")
    vms.add_vm_options(boot, add_vm)
    ex = add_vm("exec", commands.cmd_vm_exec, "run a command inside the guest")
    ex.add_argument("name", help="the guest's name")
    ex.add_argument("argv", nargs="*", metavar="-- CMD ...", help="the command, after --")
    renew = add_vm("renew", commands.cmd_vm_renew, "renew the guest's DHCP lease (fresh options and routes; a VM renews "
                  "from inside, over SSH)")
    renew.add_argument("name", help="the guest's name")
    add_vm("list", commands.cmd_vm_list, "list the guests on this host")
    delete = add_vm("delete", commands.cmd_vm_delete, "remove a guest and its instance")
    delete.add_argument("name", help="the guest's name")

    ex_p = add("explain", explain.cmd_explain, "explain how a guest reaches 169.254.169.254", (EXPLAIN,))
    ex_p.add_argument("guest", help="guest name, instance id or IP")
    ex_p.add_argument("--json", action="store_true", help="machine-readable output")

    st = add("status", status.cmd_status, "each component's state and health, networks, routers, listeners, guests",
             (STATUS,))
    st.add_argument("--json", action="store_true", help="machine-readable output")

    d = add("demo", demo.cmd_demo, "replay the seed report for real, narrated", (*COMPONENTS, GUESTS, EXPLAIN))
    d.add_argument("--keep", action="store_true", help="leave the demo's namespaces running at the end")
    d.add_argument("--vm", action="store_true", help="the same story with real VMs (QEMU, cloud-init)")
    d.add_argument("--hosts", type=int, default=1, metavar="N",
                   help="the seed on N simulated controllers (own namespaces, agents, VXLAN between them)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the guest's command (`vm exec NAME -- CMD`),
    # so options may come before or after the guest's name.
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    if command:
        if getattr(args, "argv", None) is None:
            parser.error("'--' is only used as `netmeta vm exec NAME -- CMD ...`")
        args.argv = [*args.argv, *command]
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 2
    # A component logs to its file under the state directory (and stderr);
    # the commands a person runs log to stderr only.
    component = args.command in COMPONENTS
    logs.setup(
        args.command, config.state_dir if component else None, log_format=config.log_format,
        verbose=getattr(args, "verbose", False), console=config.log_console or not component,
        max_bytes=config.log_max_bytes, backup_count=config.log_backup_count,
    )
    handler: Any = args.handler
    try:
        return int(handler(args, config) or 0)
    except ConfigError as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (NetmetaError, DriverError, ApiError) as exc:
        # The environment stopped us (a port taken, a namespace gone, no API):
        # one line that says what and what to do, never a traceback.
        print(f"netmeta {_command(args)}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"netmeta {_command(args)}: {describe_os_error(exc)}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> str:
    return " ".join(p for p in (args.command, getattr(args, "vm_command", None)) if p)


def describe_os_error(exc: OSError) -> str:
    """``read-only file system: /var/lib/netmeta/x (make the state directory writable, or choose another)``."""
    import errno

    what = (exc.strerror or str(exc)).lower()
    where = f": {exc.filename}" if exc.filename else ""
    hint = {
        errno.EROFS: " (the state directory must be writable: remount it or choose another --state-dir)",
        errno.EACCES: " (run as root, or choose a --state-dir this user may write)",
        errno.EPERM: " (netmeta needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN)",
        errno.ENOSPC: " (the disk is full)",
    }.get(exc.errno or 0, "")
    return f"{what}{where}{hint}"


if __name__ == "__main__":
    sys.exit(main())
