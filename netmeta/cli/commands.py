"""Handlers for the component, lifecycle and guest commands."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any, Callable

from netmeta.config import Config

def prepare_state_dir(config: Config) -> None:
    # 0700 from creation: it holds the store and the credentials. dnsmasq's
    # files live outside it (Config.dhcp_dir), so nothing else needs to enter.
    # An existing wider one is refused by the server (app.check_private_files).
    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)


def cmd_server(args: argparse.Namespace, config: Config) -> int:
    from netmeta.cli import preflight
    from netmeta.server import app

    preflight.check(config, ("server",))
    prepare_state_dir(config)
    app.run(config)
    return 0


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    from netmeta.agent import service
    from netmeta.cli import preflight

    preflight.check(config, ("agent",))
    prepare_state_dir(config)
    # Two agents on one state directory would undo each other's work.
    lock = preflight.StateLock(config.state_dir, "agent").acquire()
    try:
        service.run(config)
    finally:
        lock.release()
    return 0


def cmd_metadata(args: argparse.Namespace, config: Config) -> int:
    from netmeta.cli import preflight
    from netmeta.metrics import use_multiprocess

    preflight.check(config, ("metadata",))
    lock = preflight.StateLock(config.state_dir, "metadata").acquire()
    # Workers count into files that one scrape sums: chosen before
    # prometheus_client is imported (netmeta.metrics).
    use_multiprocess(os.path.join(config.state_dir, "metadata", "prometheus"))
    from netmeta.metadata import service

    try:
        service.run(config)
    finally:
        lock.release()
    return 0


# How long `up` waits for each component to say it is ready.
READY_TIMEOUT = 60.0


def start_stack(args: argparse.Namespace, config: Config, log_dir: str | None = None) -> list["Component"]:
    """Start server, agent and metadata; return once each is ready.

    Ready means: the API answers, and the agent and the metadata process have
    each written their status file (the agent after its first pass, the
    metadata process once it follows the feed). A component that exits
    first, or is not ready in time, stops everything started here and
    raises :class:`~netmeta.errors.StartupError` with its last words.
    """
    from netmeta.cli.options import child_argv
    from netmeta.drivers.supervise import Component, stop_all
    from netmeta.errors import StartupError

    prepare_state_dir(config)
    logs = log_dir or config.paths.log_dir
    os.makedirs(logs, mode=0o700, exist_ok=True)
    components = [
        # The child writes its own rotated <name>.log; <name>.out keeps only
        # what it prints before its logging is set up (a crash at start).
        Component(name, [name, *child_argv(args, name), "--no-log-console"], os.path.join(logs, f"{name}.out"))
        for name in ("server", "agent", "metadata")
    ]
    try:
        for component in components:
            component.start()
            _wait_ready(config, component)
    except BaseException as exc:
        stop_all(components)
        if isinstance(exc, StartupError):
            raise
        if isinstance(exc, TimeoutError):
            raise StartupError(str(exc)) from exc
        raise
    return components


def _wait_ready(config: Config, component: "Component") -> None:
    import time

    from netmeta.client import ApiUnavailable, Client
    from netmeta.errors import StartupError

    client = Client.for_config(config, timeout=2.0)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if not component.alive():
            code = component.process.returncode if component.process else None
            why = component.last_words() or f"see {component.log_path}"
            raise StartupError(f"{component.name} exited with status {code} while starting: {why}")
        if component.name == "server":
            try:
                client.get("/")
                return
            except ApiUnavailable:
                pass
        else:
            status = component_status(config, component.name) or {}
            if status.get("pid") == component.pid:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{component.name} was not ready after {READY_TIMEOUT:.0f}s; "
                               f"see {config.state_dir}/log/{component.name}.log")
        time.sleep(0.05)


def component_status(config: Config, name: str) -> dict[str, Any] | None:
    """A component's status file; the metadata workers' merged (None until every worker is up)."""
    if name == "metadata":
        from netmeta.metadata.service import read_status as metadata_status

        return metadata_status(config.state_dir)
    from netmeta.status import read_status

    return read_status(config.state_dir, name)


def where(config: Config) -> dict[str, str]:
    """Each component's metrics address, as its status file says (port 0 resolved)."""
    return {name: str((component_status(config, name) or {}).get("metrics") or "")
            for name in ("server", "agent", "metadata")}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace, config: Config) -> int:
    import signal

    from netmeta.cli import preflight
    from netmeta.drivers.supervise import CrashLoop, stop_all, watch
    from netmeta.errors import StartupError

    preflight.check(config, ("server", "agent", "metadata"))
    lock = preflight.StateLock(config.state_dir, "up").acquire()
    # Ctrl-C and a service manager's SIGTERM both stop the three components
    # (a shell's background job would otherwise ignore SIGINT).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        components = start_stack(args, config)
    except KeyboardInterrupt:
        lock.release()
        return 130
    except BaseException:
        lock.release()
        raise
    print(f"netmeta is up: API {config.api_url}  state {config.state_dir}  logs {config.state_dir}/log")
    addresses = where(config)
    shown = "  ".join(f"{name} http://{addr}/metrics" for name, addr in addresses.items() if addr)
    print(f"  metrics  {shown or 'off'}")
    if shown:
        print("  health   the same addresses at /healthz; `netmeta status` shows it all on one screen")
    if config.embedded_identity:
        clouds = config.paths.clouds_file
        print(f"  export OS_CLIENT_CONFIG_FILE={clouds} OS_CLOUD=netmeta; openstack network list")
    elif config.auth_strategy == "keystone":
        print(f"  tokens from {config.keystone_authtoken.auth_url}; openstack --os-cloud <yours> network list")
    else:
        print(f"  openstack --os-auth-type none --os-endpoint {config.api_url} network list")
    sys.stdout.flush()
    try:
        watch(components)
    except KeyboardInterrupt:
        print("\nstopping (namespaces and dnsmasq stay; `netmeta down` removes them)")
    except CrashLoop as exc:
        raise StartupError(f"{exc}; stopped everything (namespaces and dnsmasq stay)") from exc
    finally:
        stop_all(components)
        lock.release()
    return 0


class Teardown:
    """What ``down`` removed and what it could not (with the reason), item by item."""

    def __init__(self) -> None:
        self.removed: list[str] = []
        self.problems: list[str] = []

    def attempt(self, what: str, action: "Callable[..., object]", *args: object) -> bool:
        """Run one removal; a failure is noted and the next item still runs."""
        from netmeta.drivers.errors import DriverError

        try:
            done = action(*args)
        except (DriverError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problems.append(f"{what}: {reason}")
            return False
        if done:
            self.removed.append(what)
        return bool(done)

    def remove_tree(self, what: str, path: str) -> None:
        if not os.path.lexists(path):
            return
        errors: list[str] = []

        def onerror(func: object, failed: str, exc_info: tuple[type, BaseException, object]) -> None:
            if not errors:
                exc = exc_info[1]
                errors.append(f"{exc.strerror if isinstance(exc, OSError) else exc}: {failed}")

        if os.path.islink(path):
            try:
                os.unlink(path)
            except OSError as exc:
                errors.append(f"{exc.strerror}: {path}")
        else:
            shutil.rmtree(path, onerror=onerror)  # noqa: B026 - onexc needs 3.12
        if errors:
            self.problems.append(f"{what}: {errors[0]}")
        elif what:
            self.removed.append(what)


def teardown_host(config: Config, *, purge: bool = False) -> list[str]:
    """Remove every namespace, link, process and runtime file netmeta made here.

    Works whatever state the host is in — namespaces already gone, the fabric
    deleted by hand, processes dead, files unwritable: each item is tried on
    its own (see :func:`teardown`); this returns what was removed.
    """
    return teardown(config, purge=purge).removed


def teardown(config: Config, *, purge: bool = False) -> Teardown:
    from netmeta.agent.ledger import Ledger
    from netmeta.drivers import dhclient, dnsmasq, links, netns, processes
    from netmeta.model import names
    from netmeta.vm.guests import Guests

    done = Teardown()
    fabric = config.fabric_namespace or None
    fabric_there = fabric is None or netns.namespace_exists(fabric)
    guests = Guests(config)
    try:
        recorded = guests.list_all()
    except (OSError, ValueError, TypeError) as exc:
        done.problems.append(f"guest records in {guests.root}: {exc}")
        recorded = []
    for guest in recorded:
        def remove_guest(guest: "Guest" = guest) -> bool:
            dhclient.stop(guest.namespace, guest.paths)
            if fabric_there:  # a link in a deleted fabric went with it
                links.delete_link(fabric, names.guest_outer_name(guest.port_id))
            netns.delete_namespace(guest.namespace)
            return True

        done.attempt(f"guest {guest.name}", remove_guest)

    def remove_machines() -> bool:
        from netmeta.vm.machines import Machines

        done.removed.extend(f"VM {name}" for name in Machines(config).teardown_all_local())
        return False  # each VM is listed by name above

    done.attempt("VMs", remove_machines)
    # Daemons found by the paths they were started with, so one whose pid file
    # is gone, or that still runs in a namespace deleted by hand, is stopped too.
    vms_root = os.path.join(config.state_dir, "vms") + os.sep
    for pid in processes.pids_mentioning("dhclient", vms_root):
        done.attempt(f"dhclient {pid}", processes.stop_pid, pid, vms_root)
    # Older agents started dnsmasq from <state_dir>/dhcp (now a link to dhcp_root).
    dhcp_roots = {config.paths.dhcp_root.rstrip("/") + os.sep, config.paths.dhcp_link + os.sep}
    for root in sorted(dhcp_roots):
        for pid in processes.pids_mentioning("dnsmasq", root):
            done.attempt(f"dnsmasq {pid}", dnsmasq.stop, pid, 5.0, root)
    ra_root = config.paths.ra_dir + os.sep
    for pid in processes.pids_mentioning("radvd", ra_root):
        done.attempt(f"radvd {pid}", processes.stop_pid, pid, ra_root)
    ledger = Ledger.load(config.state_dir)
    if fabric is None:
        # Bridges and veth ends in the host's own namespace: deleting namespaces
        # does not remove them, so delete exactly the ones the agent recorded.
        for link in sorted(ledger.fabric_links):
            done.attempt(f"link {link}", links.delete_link, None, link)
    for ns in sorted(ledger.namespaces, key=lambda n: n == config.fabric_namespace):
        # Also a name whose file was never mounted (an agent killed between creating and mounting it):
        # the ledger is cleared below, so nothing else would ever remove it.
        if netns.namespace_exists(ns) or os.path.lexists(netns.namespace_path(ns)):
            done.attempt(ns, netns.delete_namespace, ns)
    if ledger.namespaces or ledger.fabric_links:
        ledger.namespaces.clear()
        ledger.fabric_links.clear()
        done.attempt("", ledger.save)
    done.remove_tree("", config.paths.dhcp_root)
    try:  # /run/netmeta/<id>, once empty; /run/netmeta may serve other state directories
        os.rmdir(os.path.dirname(config.paths.dhcp_root))
    except OSError:
        pass
    for runtime in ("dhcp", "vms", "agent", "metadata", "server", "log"):
        done.remove_tree("", os.path.join(config.state_dir, runtime))
    if purge:
        done.remove_tree(config.state_dir, config.state_dir)
    return done


def cmd_down(args: argparse.Namespace, config: Config) -> int:
    from netmeta.agent.service import read_status
    from netmeta.cli import preflight
    from netmeta.drivers import processes

    status = read_status(config.state_dir) or {}
    pid = status.get("pid")
    for name in ("up", "agent"):
        holder = preflight.holder(config.state_dir, name)
        if holder is not None:
            pid = holder
            break
    else:
        if not (isinstance(pid, int) and processes.matches(pid, "netmeta")):
            pid = None
    if pid is not None:
        print(f"netmeta down: an agent (pid {pid}) still runs for {config.state_dir} and would re-create "
              "what `down` removes: stop `netmeta up` first", file=sys.stderr)
        return 1
    if not os.path.isdir(config.state_dir):
        print(f"nothing to remove ({config.state_dir} does not exist)")
        return 0
    done = teardown(config, purge=args.purge)
    for item in done.removed:
        print(f"removed {item}")
    for problem in done.problems:
        print(f"netmeta down: could not remove {problem}", file=sys.stderr)
    if not done.removed and not done.problems:
        print("nothing to remove")
    return 1 if done.problems else 0


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


def _owner(config: Config, name: str) -> "Guests | Machines":
    """Whoever keeps ``name`` on this host: the VMs if one of them is called so, else the guests."""
    from netmeta.vm.machines import Machines

    machines = Machines(config)
    return machines if machines.exists(name) else _guests(config)


def cmd_vm_renew(args: argparse.Namespace, config: Config) -> int:
    from netmeta.client import ApiError
    from netmeta.vm.guests import GuestError
    from netmeta.vm.machines import Machines

    from netmeta.cli import vms

    owner = _owner(config, args.name)
    try:
        if isinstance(owner, Machines):
            said = vms.renewed(args.name, owner.renew(args.name))
        else:
            said = f"{owner.renew(args.name).name}: lease renewed"
    except (GuestError, ApiError) as exc:
        print(f"netmeta: vm renew {args.name}: {exc}", file=sys.stderr)
        return 1
    print(said)
    return 0


def cmd_vm_list(args: argparse.Namespace, config: Config) -> int:
    from netmeta.cli import vms

    print(f"{'NAME':16} {'IP':16} {'INSTANCE':36} {'KIND':10} {'STATE':28} WHERE")
    for name, kind, state, ip, instance, where in vms.list_rows(config):
        print(f"{name:16} {ip:16} {instance:36} {kind:10} {state:28} {where}")
    return 0


def cmd_vm_delete(args: argparse.Namespace, config: Config) -> int:
    from netmeta.client import ApiError
    from netmeta.vm.guests import GuestError
    from netmeta.vm.machines import Machines

    owner = _owner(config, args.name)
    try:
        owner.delete(args.name)
    except (GuestError, ApiError) as exc:
        print(f"netmeta: vm delete {args.name}: {exc}", file=sys.stderr)
        return 1
    done = "QEMU stopped, overlay removed, instance deleted" if isinstance(owner, Machines) else "deleted"
    print(f"{args.name}: {done}")
    return 0


if False:  # pragma: no cover - names for type checkers only
    from netmeta.drivers.supervise import Component
    from netmeta.vm.guests import Guest, Guests
    from netmeta.vm.machines import Machines
