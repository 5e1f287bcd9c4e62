"""Where netmeta keeps its files: the one owner of the state directory's layout.

Everything a host's netmeta writes lives under one state directory, except
dnsmasq's files, which must stay where dnsmasq's unprivileged user can read them::

    <state_dir>/
        netmeta.sqlite             the server's SQLite store (unless --db says otherwise)
        identity.json token.key    the embedded identity's users and token key (0600)
        clouds.yaml                its credentials for people and components (0600)
        dhcp -> <dhcp_root>        a symbolic link (for the operator) to dnsmasq's files
        agent/ledger.json          what the agent created (it deletes nothing else)
        agent/ledger.journal       what it created or removed since ledger.json was written
        <component>/status.json    what the agent / metadata process did last
        log/<component>.log
        vms/<name>/                a test guest's records, lease and pid files
        machines/<name>/           a real VM's record, overlay, console log, QEMU's pid file
        ssh/id_ed25519             the key pair `vm exec` logs in to VMs with
        images/                    built cloud images (unless image_dir says otherwise)

    <dhcp_root>/                   Config.dhcp_dir: /run/netmeta/<id>/dhcp, outside the
                                   state directory (0700), so that dnsmasq's user reaches it
        <network_id>/              one per qdhcp namespace: Neutron's $dhcp_confs/<net>
            opts host addn_hosts   what dnsmasq reads (written by the agent, 0644)
            pid leases             what dnsmasq writes
            loaded                 digest of the files dnsmasq has last read

Model, agent, CLI and tests all ask a :class:`StatePaths` instead of
spelling a path, so moving a part (dnsmasq's files to a runtime directory,
say) is a change in one place: ``dhcp_root``. Pure: strings only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StatePaths:
    state_dir: str
    # Where the per-network dnsmasq directories live; "" means <state_dir>/dhcp.
    dhcp_root_dir: str = ""

    @property
    def root(self) -> str:
        return self.state_dir.rstrip("/") or "/"

    def _under(self, *parts: str) -> str:
        return "/".join((self.root.rstrip("/"), *parts))

    # --- dnsmasq -------------------------------------------------------------
    @property
    def dhcp_root(self) -> str:
        return self.dhcp_root_dir.rstrip("/") or self._under("dhcp")

    @property
    def dhcp_link(self) -> str:
        """``<state_dir>/dhcp``: where older agents kept dnsmasq's files; now a link to :attr:`dhcp_root`."""
        return self._under("dhcp")

    def dhcp_dir(self, network_id: str) -> str:
        return f"{self.dhcp_root}/{network_id}"

    def dhcp_file(self, network_id: str, name: str) -> str:
        """``opts``, ``host``, ``addn_hosts``, ``pid``, ``leases`` or ``loaded`` of a network."""
        return f"{self.dhcp_dir(network_id)}/{name}"

    # --- the server's private files (0600) ---------------------------------------
    @property
    def store(self) -> str:
        """The embedded SQLite store (unless ``--db`` names another database)."""
        return self._under("netmeta.sqlite")

    @property
    def identity_file(self) -> str:
        return self._under("identity.json")

    @property
    def token_key(self) -> str:
        return self._under("token.key")

    @property
    def clouds_file(self) -> str:
        """The embedded identity's clouds.yaml: the admin's and the service user's credentials."""
        return self._under("clouds.yaml")

    @property
    def private_files(self) -> tuple[str, ...]:
        return (self.store, self.identity_file, self.token_key, self.clouds_file)

    # --- radvd (Neutron's $ra_confs = $state_path/ra) ------------------------------
    @property
    def ra_dir(self) -> str:
        return self._under("ra")

    def radvd_file(self, router_id: str, suffix: str) -> str:
        """``<router>.radvd.conf``, ``.pid`` or ``.log``: one radvd per qrouter."""
        return f"{self.ra_dir}/{router_id}.radvd.{suffix}"

    # --- the components --------------------------------------------------------
    def component_dir(self, component: str) -> str:
        return self._under(component)

    @property
    def ledger(self) -> str:
        return self._under("agent", "ledger.json")

    @property
    def ledger_journal(self) -> str:
        return self._under("agent", "ledger.journal")

    def status_file(self, component: str) -> str:
        return self._under(component, "status.json")

    @property
    def log_dir(self) -> str:
        return self._under("log")

    def log_file(self, component: str) -> str:
        return self._under("log", f"{component}.log")

    @property
    def vms_dir(self) -> str:
        return self._under("vms")

    def guest_record(self, name: str) -> str:
        return self._under("vms", name, "guest.json")

    @property
    def machines_dir(self) -> str:
        return self._under("machines")

    def machine_record(self, name: str) -> str:
        return self._under("machines", name, "machine.json")

    @property
    def ssh_key(self) -> str:
        return self._under("ssh", "id_ed25519")

    @property
    def images_dir(self) -> str:
        return self._under("images")
