"""Run netmeta's own components as child processes (``netmeta up``, the demo).

Each component is its own process, as in production, so the agent and the
metadata process can be restarted independently — which is exactly what the
demo shows: an agent restart that changes nothing and interrupts no one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Prepended to the command line: how a simulated host runs it inside
    # itself (``nsenter --target … --mount --net --``, see drivers.simhosts).
    wrapper: tuple[str, ...] = ()
    module: str = "netmeta"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        # What the child prints before its logging starts: 0600 like its log.
        out = open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") \
            if self.log_path else None  # noqa: SIM115 - owned by the child
        try:
            self.process = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", self.module, *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            if out:
                out.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()


    def last_words(self) -> str:
        """The last line the component printed (its one-line error, when it failed)."""
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(self.log_path) - 4096))
                lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines()]
        except OSError:
            return ""
        lines = [line for line in lines if line]
        return lines[-1] if lines else ""


class CrashLoop(Exception):
    """A component keeps exiting; the message names it and its last words."""


def stop_all(components: list[Component]) -> None:
    for component in reversed(components):
        component.stop()


def watch(components: list[Component], poll: float = 0.5, *, limit: int = 3, window: float = 60.0) -> None:
    """Respawn any component that dies, until interrupted (Neutron's process monitor).

    A component that exits ``limit`` times within ``window`` seconds is not
    restarted again: :class:`CrashLoop` says which and why, so ``up`` stops
    with that reason instead of claiming to be up while one part is not.
    """
    exits: dict[str, list[float]] = {c.name: [] for c in components}
    while True:
        for component in components:
            if not component.alive():
                code = component.process.returncode if component.process else None
                now = time.monotonic()
                recent = [t for t in exits[component.name] if now - t < window] + [now]
                exits[component.name] = recent
                why = component.last_words()
                if len(recent) >= limit:
                    raise CrashLoop(f"{component.name} exited {len(recent)} times in {window:.0f}s "
                                    f"(last status {code}): {why or 'see its log'}")
                print(f"netmeta: {component.name} exited ({code}): {why}; restarting it", file=sys.stderr)
                component.start()
        time.sleep(poll)
