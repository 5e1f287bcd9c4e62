"""How netmeta's own components log in: the service user, and a token cache.

Under ``auth_strategy = keystone`` the agent, the metadata process, ``netmeta
vm``, ``explain`` and ``demo`` call the API with a token of the service user:

* with the embedded identity, its credentials are the ``netmeta-service``
  cloud in ``<state_dir>/clouds.yaml`` (0600, root's, written by the server
  on first start; JSON, which YAML reads unchanged);
* with an external Keystone, they are ``[keystone_authtoken]``'s
  ``username``/``password``/``project_name`` — the same account Neutron
  validates tokens with.

:class:`TokenSource` logs in once (``POST …/v3/auth/tokens``), keeps the
token until a minute before it expires, and forgets it when the API says
401 so the next call logs in again. Under ``noauth`` there is no source and
no header.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from netmeta.config import Config

ADMIN_CLOUD, SERVICE_CLOUD = "netmeta", "netmeta-service"
EARLY = 60.0


class AuthFailed(Exception):
    """No token could be had; the message says where and why (never the password)."""


@dataclass(frozen=True)
class Credentials:
    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"

    @property
    def tokens_url(self) -> str:
        base = self.auth_url.rstrip("/")
        return (base if base.endswith("/v3") else base + "/v3") + "/auth/tokens"


def clouds_path(config: Config) -> str:
    return config.paths.clouds_file


def cloud_credentials(config: Config, cloud: str) -> Credentials:
    path = clouds_path(config)
    try:
        with open(path, encoding="utf-8") as handle:
            auth = json.load(handle)["clouds"][cloud]["auth"]
    except FileNotFoundError as exc:
        raise AuthFailed(f"no API at {config.api_url} has run with this state directory ({path} does not "
                         f"exist yet): start it with `netmeta up`") from exc
    except PermissionError as exc:
        raise AuthFailed(f"{path} is readable only by root: run this as root") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuthFailed(f"{path} has no usable cloud {cloud!r}: {exc}") from exc
    return Credentials(auth["auth_url"], auth["username"], auth["password"], auth["project_name"],
                       auth.get("user_domain_name", "Default"), auth.get("project_domain_name", "Default"))


def service_credentials(config: Config) -> Credentials:
    ks = config.keystone_authtoken
    if ks.auth_url:
        return Credentials(ks.auth_url, ks.username, ks.password, ks.project_name, ks.user_domain_name,
                           ks.project_domain_name)
    return cloud_credentials(config, SERVICE_CLOUD)


def _expiry(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class TokenSource:
    """A cached token for one set of credentials; thread-safe, see the module docstring."""

    def __init__(self, creds: Credentials | Callable[[], Credentials], timeout: float = 10.0) -> None:
        # A callable is read at each login: clouds.yaml may not exist yet, or
        # may name a new port after the server restarted.
        self.creds = creds
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def cached(self) -> str | None:
        if self._token is not None and time.time() < self._expires - EARLY:
            return self._token
        return None

    def invalidate(self) -> None:
        self._token = None

    def get(self) -> str:
        with self._lock:
            token = self.cached()
            if token is None:
                token = self._login()
            return token

    async def aget(self) -> str:
        token = self.cached()
        if token is not None:
            return token
        return await asyncio.get_running_loop().run_in_executor(None, self.get)

    def _login(self) -> str:
        c = self.creds if isinstance(self.creds, Credentials) else self.creds()
        body: dict[str, Any] = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain_name}, "password": c.password}}},
            "scope": {"project": {"name": c.project_name, "domain": {"name": c.project_domain_name}}},
        }}
        request = urllib.request.Request(c.tokens_url + "?nocatalog", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                token = response.headers["X-Subject-Token"]
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AuthFailed(f"{c.tokens_url} refused {c.username!r} in project {c.project_name!r}: "
                             f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AuthFailed(f"no identity service at {c.tokens_url}: {exc}") from exc
        if not token:
            raise AuthFailed(f"{c.tokens_url} answered without X-Subject-Token")
        self._token = token
        try:
            self._expires = _expiry(answer["token"]["expires_at"])
        except (KeyError, TypeError, ValueError):
            self._expires = time.time() + 300
        return str(token)


def service_tokens(config: Config) -> TokenSource | None:
    """The service user's token source, or None under noauth."""
    if config.auth_strategy == "noauth":
        return None
    return TokenSource(lambda: service_credentials(config))


def admin_tokens(config: Config) -> TokenSource | None:
    """The bootstrap admin's token source (embedded identity), or None under noauth."""
    if config.auth_strategy == "noauth":
        return None
    if not config.embedded_identity:
        return service_tokens(config)
    return TokenSource(lambda: cloud_credentials(config, ADMIN_CLOUD))
