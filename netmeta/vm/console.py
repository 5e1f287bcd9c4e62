"""What a VM's serial console says: pure readers of its log.

cloud-init writes its progress to the console (its services log to
``journal+console``), so the log shows, with no agent in the guest:

- the final message, ``Cloud-init v. 22.4.2 finished at … Datasource
  DataSourceOpenStackLocal [net,ver=2].  Up 48.1 seconds`` — the datasource
  name is the one fact that tells a real OpenStack boot from cloud-init's
  silent fallback, ``DataSourceNone``, which also "finishes";
- the host's SSH public keys between ``-----BEGIN SSH HOST KEY KEYS-----``
  and ``-----END …-----`` (cc_keys_to_console), which ``vm exec`` pins;
- whatever a user-data script prints.

Lines may carry a kernel or journal prefix (``[  48.1] cloud-init[412]: ``),
so every reader searches within lines rather than matching them whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FINISHED = re.compile(r"Cloud-init v\. (\S+) finished at (.+?)\. Datasource (\S+)(?: \[([^\]]*)\])?\.\s+Up ([0-9.]+) seconds")
_HOST_KEY = re.compile(r"\b((?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-\S+) AAAA[0-9A-Za-z+/=]+)")
_BEGIN_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
_END_KEYS = "-----END SSH HOST KEY KEYS-----"
# ANSI colour and cursor sequences systemd writes to a console.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@dataclass(frozen=True)
class Finished:
    """cloud-init's final message."""

    version: str
    datasource: str
    detail: str
    uptime: float

    @property
    def openstack(self) -> bool:
        return self.datasource.startswith("DataSourceOpenStack")


def clean(text: str) -> str:
    """The log without terminal escapes, as a person reads it."""
    return _ANSI.sub("", text)


def finished(text: str) -> Finished | None:
    """cloud-init's final message, if it has been printed (the last one, after a reboot)."""
    found = list(_FINISHED.finditer(clean(text)))
    if not found:
        return None
    m = found[-1]
    return Finished(version=m.group(1), datasource=m.group(3), detail=m.group(4) or "", uptime=float(m.group(5)))


def host_keys(text: str) -> list[str]:
    """The SSH host public keys cloud-init printed (``type base64``), the last block."""
    lines = clean(text).splitlines()
    keys: list[str] = []
    inside = False
    for line in lines:
        if _BEGIN_KEYS in line:
            inside, keys = True, []
        elif _END_KEYS in line:
            inside = False
        elif inside:
            m = _HOST_KEY.search(line)
            if m:
                keys.append(m.group(1))
    return keys


def known_hosts(address: str, keys: list[str]) -> str:
    """A known_hosts file that trusts exactly ``keys`` for ``address``."""
    return "".join(f"{address} {key}\n" for key in keys)
