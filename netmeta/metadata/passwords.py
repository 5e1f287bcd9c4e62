"""Where a guest's ``POST /openstack/latest/password`` ends up: the server.

Nova keeps the password in the instance's system metadata; netmeta keeps it on
the instance in the server's store, so the owner can read it back through the
instances API and every metadata process sees it through the change feed.
"""

from __future__ import annotations

import aiohttp

from netmeta.credentials import AuthFailed, TokenSource


class PasswordRejected(Exception):
    """The server refused the password for a reason other than "already set"."""


class ApiPasswordStore:
    """Sets an instance's password once, through the server's instances API."""

    def __init__(self, api_url: str, tokens: TokenSource | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.tokens = tokens

    async def set_password(self, instance_id: str, value: str) -> bool:
        """True when stored; False when the instance already had one (409)."""
        url = f"{self.api_url}/netmeta/v1/instances/{instance_id}/password"
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            headers = {"X-Auth-Token": await self.tokens.aget()} if self.tokens is not None else {}
        except AuthFailed as exc:
            raise PasswordRejected(str(exc)) from exc
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, json={"password": value}, headers=headers) as resp:
                if resp.status == 401 and self.tokens is not None:
                    self.tokens.invalidate()
                if resp.status == 409:
                    return False
                if resp.status >= 400:
                    raise PasswordRejected(f"server answered {resp.status}")
                return True
