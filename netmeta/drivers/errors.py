"""Errors raised by the drivers, the only layer that touches the kernel.

The agent decides what to do with a failure by its class alone, so the
hierarchy is shallow (httpx and mitmproxy both found deeper trees did not pay
off)::

    DriverError                    anything a driver could not do
    ├── TemporaryDriverError       retry later: a race, a busy kernel object,
    │   │                          a namespace not created yet, a slow process
    │   └── ProcessGone            the process we meant to signal has exited
    └── PermanentDriverError       retrying the same call cannot help: a bad
                                   name, a refused request (root namespace),
                                   a binary that rejects its arguments

Library errors (pyroute2's ``NetlinkError``, ``OSError``,
``subprocess.CalledProcessError``) are translated at the boundary with
:func:`translate` and chained with ``raise … from exc`` so the original
traceback stays visible in logs.
"""

from __future__ import annotations

import errno

# errnos that describe a transient state of the kernel or of a race with
# another actor (the namespace or link being created/removed concurrently).
_TEMPORARY_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ENOBUFS,
        errno.ETIMEDOUT,
        errno.ENOENT,
        errno.ENODEV,
        errno.ESRCH,
        errno.EEXIST,
    }
)


class DriverError(Exception):
    """A driver could not bring the kernel or a process into the asked state."""


class TemporaryDriverError(DriverError):
    """Worth retrying after a delay; the state may converge by itself."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        # A hint for the agent's per-object queue, as kopf's TemporaryError.
        self.delay = delay


class ProcessGone(TemporaryDriverError):
    """The pid we were asked to signal no longer runs (the agent respawns)."""


class PermanentDriverError(DriverError):
    """Retrying the same request cannot succeed; the input must change."""


def error_code(exc: BaseException) -> int | None:
    """The errno carried by an OSError or a pyroute2 NetlinkError, if any."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    code = getattr(exc, "errno", None)
    return code if isinstance(code, int) else None


def translate(exc: BaseException, what: str) -> DriverError:
    """Map a library exception to the hierarchy; the caller chains it.

    Usage: ``except (OSError, NetlinkError) as exc: raise translate(exc, "…") from exc``.
    """
    if isinstance(exc, DriverError):
        return exc
    code = error_code(exc)
    detail = f"{what}: {exc}"
    if isinstance(exc, TimeoutError) or code in _TEMPORARY_ERRNOS:
        return TemporaryDriverError(detail)
    return PermanentDriverError(detail)
