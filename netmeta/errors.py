"""Errors an operator can act on: what failed, on which object, what to do.

::

    NetmetaError            one line for the operator; the CLI prints it, exits 1, no traceback
     ├─ StartupError        a component cannot start (port taken, state directory read-only, ...)
     └─ metrics.EndpointError   the metrics endpoint cannot listen

Drivers have their own (:mod:`netmeta.drivers.errors`); the CLI treats a
``DriverError`` and an ``OSError`` from the environment the same way.
"""

from __future__ import annotations


class NetmetaError(Exception):
    """Something in the environment stops a command; the message says what and what to do."""


class StartupError(NetmetaError):
    """A component cannot start; the message names the component and the reason."""
