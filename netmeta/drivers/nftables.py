"""nftables inside netmeta's fabric namespace: port security, applied whole.

The ruleset is rendered by :mod:`netmeta.model.portsec` (pure) and applied
here with one ``nft -f -``: its preamble deletes netmeta's two tables and the
rest creates them again, all in one netlink transaction, so a frame meets
either the old rules or the new ones. The bridge table's ``digest`` chain carries the
ruleset's digest in its comment; :func:`apply` reads it first and does nothing when it is
already the wanted one, so an agent restart, or a pass that changed nothing,
leaves the kernel's rules (handles, counters) exactly as they were.

Only netmeta's own tables (``bridge netmeta``, ``inet netmeta``) are ever
written, and never in the root namespace: the host's firewall is not ours.
"""

from __future__ import annotations

import re

from netmeta.drivers.errors import PermanentDriverError
from netmeta.drivers.netns import check_name, run_in_namespace
from netmeta.model.portsec import DIGEST_CHAIN, DIGEST_PREFIX, TABLE

_COMMENT = re.compile(r'comment "(' + re.escape(DIGEST_PREFIX) + r'[0-9a-f]+)"')


def _namespace(ns: str | None) -> str:
    if not ns:
        raise PermanentDriverError("nftables: refusing the root namespace")
    return check_name(ns)


def current_digest(ns: str, *, timeout: float = 30.0) -> str | None:
    """The digest netmeta's bridge table carries, or None when it has none."""
    done = run_in_namespace(_namespace(ns), ["nft", "list", "chain", "bridge", TABLE, DIGEST_CHAIN],
                            timeout=timeout, check=False)
    if done.returncode != 0:
        return None  # no such table or chain (yet)
    match = _COMMENT.search(done.stdout)
    return match.group(1) if match else None


def apply(ns: str, payload: str, digest: str | None, *, timeout: float = 30.0) -> bool:
    """Make the namespace's netmeta tables equal to ``payload``; True if it changed them.

    ``digest`` is the payload's (None for "no tables"); when the kernel
    already holds that digest — or holds no tables and none are wanted —
    nothing is run.
    """
    if observe(ns, timeout=timeout) == (digest, digest is not None):
        return False
    replace(ns, payload, digest is not None, timeout=timeout)
    return True


def observe(ns: str, *, timeout: float = 30.0) -> tuple[str | None, bool]:
    """(the digest netmeta's bridge table carries, whether any netmeta table exists)."""
    digest = current_digest(ns, timeout=timeout)
    return digest, digest is not None or tables_exist(ns, timeout=timeout)


def replace(ns: str, payload: str, tables_wanted: bool, *, timeout: float = 30.0) -> None:
    """Run the payload (delete both tables, create them again) in one transaction."""
    if tables_wanted:
        # Security groups are seen by the inet table only when the bridge hands
        # IP packets to the IP hooks (br_netfilter). 1 is each namespace's
        # default; say so anyway, in this namespace only.
        run_in_namespace(_namespace(ns), ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1",
                                          "net.bridge.bridge-nf-call-ip6tables=1"], timeout=timeout)
    run_in_namespace(_namespace(ns), ["nft", "-f", "-"], input=payload, timeout=timeout)


def tables_exist(ns: str, *, timeout: float = 30.0) -> bool:
    done = run_in_namespace(_namespace(ns), ["nft", "list", "tables"], timeout=timeout, check=False)
    return done.returncode == 0 and any(line.strip() in (f"table bridge {TABLE}", f"table inet {TABLE}")
                                        for line in done.stdout.splitlines())


def listing(ns: str, family: str, *, timeout: float = 30.0) -> str:
    """``nft list table <family> netmeta`` (tests, ``netmeta explain``); empty if absent."""
    done = run_in_namespace(_namespace(ns), ["nft", "list", "table", family, TABLE], timeout=timeout,
                            check=False)
    return done.stdout if done.returncode == 0 else ""
