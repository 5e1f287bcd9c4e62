"""iptables inside a namespace, applied atomically with iptables-restore.

The agent renders a namespace's whole rule set (``model``, pure) into one
``iptables-restore`` payload and applies it in one call: the kernel swaps the
tables in one transaction, so a guest never sees half the rules. These
functions refuse the root namespace outright — the host's firewall is not
ours to change. ``family=6`` does the same with ``ip6tables-restore``/``-save``.
"""

from __future__ import annotations

from netmeta.drivers.errors import PermanentDriverError
from netmeta.drivers.netns import check_name, run_in_namespace


def _namespace(ns: str | None) -> str:
    if not ns:
        raise PermanentDriverError("iptables: refusing the root namespace")
    return check_name(ns)


def restore(ns: str, payload: str, *, noflush: bool = False, timeout: float = 30.0, family: int = 4) -> None:
    """Apply ``payload`` (iptables-save format, ending in COMMIT) atomically.

    Without ``noflush`` every table named in the payload is replaced whole,
    which is what a reconciler wants: rules that are no longer desired vanish.
    """
    argv = ["ip6tables-restore" if family == 6 else "iptables-restore"]
    if noflush:
        argv.append("--noflush")
    if not payload.endswith("\n"):
        payload += "\n"  # iptables-restore ignores a COMMIT without newline
    run_in_namespace(_namespace(ns), argv, input=payload, timeout=timeout)


def save(ns: str, table: str | None = None, *, timeout: float = 30.0, family: int = 4) -> str:
    """The namespace's current rules in iptables-save format (``family=6``: ip6tables-save)."""
    argv = ["ip6tables-save" if family == 6 else "iptables-save"]
    if table:
        argv += ["-t", table]
    return run_in_namespace(_namespace(ns), argv, timeout=timeout).stdout
