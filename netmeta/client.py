"""A small synchronous client for netmeta's own API, for the CLI and guests.

Operators drive networks with the real ``openstack`` CLI; netmeta's own
commands (``vm boot``, ``explain``, ``demo``) need only a handful of calls,
so this stays on the standard library. Errors come back as :class:`ApiError`
carrying Neutron's error type and message, never a raw traceback.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from netmeta.config import Config
from netmeta.credentials import AuthFailed, TokenSource, admin_tokens, service_tokens


class ApiError(Exception):
    """The API refused a request; ``status`` and Neutron's ``type`` say why."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message


class ApiUnavailable(ApiError):
    """Nothing answers at the API address.

    ``sent`` says whether the request may have reached the server (the
    connection broke after it was sent): a POST then may or may not have
    happened, and only the caller can find out which.
    """

    def __init__(self, status: int, type_: str, message: str, *, sent: bool = False) -> None:
        super().__init__(status, type_, message)
        self.sent = sent


# Methods that may be sent again after a broken connection: doing them twice
# is the same as doing them once.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


class Client:
    """``tokens`` (see :mod:`netmeta.credentials`) adds ``X-Auth-Token``; None: noauth.

    ``retry_for``: seconds to keep retrying while the API is unavailable (a
    server restart); a POST is retried only when it surely never arrived.
    """

    def __init__(self, api_url: str, timeout: float = 10.0, tokens: TokenSource | None = None, *,
                 retry_for: float = 0.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.tokens = tokens
        self.retry_for = retry_for

    @classmethod
    def for_config(cls, config: Config, *, admin: bool = False, timeout: float = 10.0,
                   retry_for: float = 0.0) -> "Client":
        """A client that logs in as netmeta's service user (or the bootstrap admin)."""
        tokens = admin_tokens(config) if admin else service_tokens(config)
        return cls(config.api_url, timeout=timeout, tokens=tokens, retry_for=retry_for)

    def request(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        deadline = time.monotonic() + self.retry_for
        delay = 0.1
        while True:
            try:
                return self._request_once(method, path, body, **query)
            except ApiUnavailable as exc:
                if (exc.sent and method not in IDEMPOTENT) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _request_once(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        url = self.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            req = urllib.request.Request(url, data=data, method=method)
            if data is not None:
                req.add_header("Content-Type", "application/json")
            if self.tokens is not None and path != "/":
                try:
                    req.add_header("X-Auth-Token", self.tokens.get())
                except AuthFailed as exc:
                    cause = exc.__cause__
                    if isinstance(cause, (ConnectionError, TimeoutError)) or (
                            isinstance(cause, urllib.error.URLError) and not isinstance(cause, urllib.error.HTTPError)):
                        # the identity service (often this same server) does not answer: a
                        # restart, waited out like any other; our request never left
                        raise ApiUnavailable(0, "Unavailable", str(exc), sent=False) from None
                    raise ApiError(401, "Unauthorized", str(exc)) from None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.tokens is not None and attempt == 0:
                    self.tokens.invalidate()  # expired or from a reset identity: log in once more
                    continue
                raise _error_from(exc) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                # Refused or unreachable: the request never left. Anything else
                # (a reset, a timeout) may have reached the server.
                sent = not isinstance(reason, (ConnectionRefusedError, FileNotFoundError, socket.gaierror))
                raise ApiUnavailable(0, "Unavailable", f"no API at {self.api_url}: {reason}", sent=sent) from exc
        return json.loads(raw) if raw else None

    # --- convenience ---------------------------------------------------
    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, **query)

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/netmeta/v1/state")
        return result

    def find(self, collection: str, name_or_id: str) -> dict[str, Any]:
        """Find one Neutron resource by id or unique name, like the CLI does."""
        singular = collection[:-1]
        try:
            found: dict[str, Any] = self.get(f"/v2.0/{collection}/{name_or_id}")[singular]
            return found
        except ApiError as exc:
            if exc.status != 404:
                raise
        matches = self.get(f"/v2.0/{collection}", name=name_or_id)[collection]
        if len(matches) == 1:
            match: dict[str, Any] = matches[0]
            return match
        if not matches:
            raise ApiError(404, "NotFound", f"no {singular} named or with id {name_or_id!r}")
        raise ApiError(409, "Conflict", f"more than one {singular} is named {name_or_id!r}; use its id")

    def create_instance(self, **fields: Any) -> dict[str, Any]:
        created: dict[str, Any] = self.request("POST", "/netmeta/v1/instances", {"instance": fields})["instance"]
        return created

    def delete_instance(self, instance_id: str) -> None:
        """Delete; an instance already gone counts as deleted (a retried DELETE)."""
        try:
            self.request("DELETE", f"/netmeta/v1/instances/{instance_id}")
        except ApiError as exc:
            if exc.status != 404:
                raise


def _error_from(exc: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(exc.read() or b"{}")
        err = body.get("NeutronError") or (body.get("error") if isinstance(body.get("error"), dict) else {})
        if "title" in err:
            err = {"type": err["title"], "message": err.get("message", "")}
        return ApiError(exc.code, err.get("type", "Error"), err.get("message", exc.reason))
    except (ValueError, AttributeError):
        return ApiError(exc.code, "Error", str(exc.reason))
