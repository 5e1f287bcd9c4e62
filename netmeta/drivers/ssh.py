"""OpenSSH for ``netmeta vm exec`` on real VMs: netmeta's key pair, and ssh run in a namespace.

The key pair is made once per state directory with ``ssh-keygen`` and its
public half reaches the VM the way any key does on OpenStack: through the
instance's ``public_keys`` in the metadata, which cloud-init writes to the
default user's ``authorized_keys``.

ssh runs *inside* a namespace that sits on the VM's network — never in the
host's own namespace — and checks the VM's host key against a known_hosts
file netmeta wrote from the keys cloud-init printed on the serial console
(``StrictHostKeyChecking=yes``): the console is a channel the guest cannot
share with anyone else on the network, so a host on the tenant network that
answers for the VM's address is refused.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Mapping, Sequence

from netmeta.drivers.errors import PermanentDriverError, translate
from netmeta.drivers.netns import namespace_argv

Result = subprocess.CompletedProcess[str]


def ensure_key(path: str, comment: str = "netmeta") -> str:
    """An ed25519 key pair at ``path`` (made if absent); the public key's text."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise translate(exc, "ssh-keygen") from exc
        if done.returncode != 0:
            raise PermanentDriverError(f"ssh-keygen failed: {done.stderr.strip()}")
    with open(path + ".pub", encoding="ascii") as handle:
        return handle.read().strip()


def ssh_argv(key: str, known_hosts: str, user: str, host: str, command: Sequence[str],
             connect_timeout: int = 10) -> list[str]:
    options = [
        "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "LogLevel=ERROR",
    ]
    # ssh hands the remote shell one string: quote each word so the VM runs
    # exactly this argv, as `vm exec` on a namespace guest does.
    return ["ssh", *options, f"{user}@{host}", "--", " ".join(shlex.quote(word) for word in command)]


def run(namespace: str, argv: Sequence[str], *, capture: bool, timeout: float | None = None,
        input: str | None = None) -> Result:
    """Run an ssh argv inside ``namespace``; the remote command's exit code comes back."""
    full = namespace_argv(namespace, argv)
    env = dict(os.environ) if not capture else {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}
    try:
        return subprocess.run(full, capture_output=capture, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None or not capture else subprocess.DEVNULL,
                              env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PermanentDriverError(f"ssh did not finish in {timeout}s") from exc
    except OSError as exc:
        raise translate(exc, "run ssh") from exc


# Several commands over one SSH connection (a handshake costs seconds on an
# emulated CPU): each one's output is followed by a line naming it and its
# exit code, on a line of its own even when the output ends without a newline.
_END = "@@netmeta-end"


def batch_script(commands: Mapping[str, Sequence[str]]) -> list[str]:
    """A ``sh -c`` argv that runs each named argv in turn and marks where its output ends."""
    lines = []
    for key, argv in commands.items():
        if not key.isidentifier():
            raise ValueError(f"batch key {key!r}: use letters, digits and '_'")
        lines.append(f"{' '.join(shlex.quote(word) for word in argv)}; printf '\\n{_END} {key} %d\\n' $?")
    return ["sh", "-c", "\n".join(lines)]


def split_batch(stdout: str) -> dict[str, tuple[int, str]]:
    """The output of :func:`batch_script`: key → (exit code, output). A command cut short is absent."""
    found: dict[str, tuple[int, str]] = {}
    rest = stdout
    while True:
        head, sep, tail = rest.partition(f"\n{_END} ")
        if not sep:
            return found
        line, _, rest = tail.partition("\n")
        key, _, code = line.partition(" ")
        found[key] = (int(code) if code.lstrip("-").isdigit() else -1, head)
