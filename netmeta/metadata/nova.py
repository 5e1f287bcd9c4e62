"""Talking to a real Nova metadata API, and being talked to like one.

Outbound (``metadata_backend = nova``): netmeta identifies the guest itself,
then forwards the request to Nova exactly as Neutron's metadata agent does —
``X-Instance-ID``, ``X-Tenant-ID``, ``X-Forwarded-For`` and
``X-Instance-ID-Signature`` — after deleting any of those headers the guest
sent (Neutron bug #1865036: a guest could otherwise claim another instance).
Nova's status, body and content type pass through unchanged; a Nova that
cannot be reached is a 503, never a hang or a traceback.

Inbound (the ``signed`` listener): a Neutron-style proxy in front of netmeta
sends the same signed headers; :func:`check_signed_headers` validates them
with Nova's rules and messages before the app serves that instance's tree.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from yarl import URL

from netmeta.config import Config
from netmeta.metadata.http import Request, Response
from netmeta.model.metadata.signing import sign, verify
from netmeta.model.types import Instance

LOG = logging.getLogger(__name__)

# Headers a guest may not choose: identity headers (spoofing) and hop-by-hop.
_STRIPPED = frozenset(
    {
        "x-instance-id",
        "x-instance-id-signature",
        "x-tenant-id",
        "x-forwarded-for",
        "x-neutron-network-id",
        "x-neutron-router-id",
        "x-metadata-provider",
        "x-metadata-provider-signature",
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-connection",
        "accept-encoding",
        "expect",
    }
)


class NovaForwarder:
    """Forwards one guest request to Nova with Neutron's signed headers."""

    def __init__(self, config: Config, timeout: float = 10.0) -> None:
        self.config = config
        self.base = f"{config.nova_metadata_protocol}://{config.nova_metadata_host}:{config.nova_metadata_port}"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession must be made inside the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, auto_decompress=True)
        return self._session

    def headers_for(self, request: Request, instance: Instance) -> list[tuple[str, str]]:
        out = [(k, v) for k, v in request.headers if k.lower() not in _STRIPPED]
        out += [
            ("X-Instance-ID", instance.id),
            ("X-Tenant-ID", instance.project_id),
            ("X-Forwarded-For", request.peer_ip),
            ("X-Instance-ID-Signature", sign(self.config.metadata_proxy_shared_secret, instance.id)),
        ]
        return out

    async def forward(self, request: Request, instance: Instance) -> Response:
        url = self.base + quote(request.path, safe="/:@!$&'()*+,;=-._~")
        if request.query:
            url += "?" + quote(request.query, safe="=&;:@!$'()*+,/?-._~%")
        try:
            async with self._client().request(
                request.method,
                URL(url, encoded=True),
                headers=self.headers_for(request, instance),
                data=request.body if request.body else None,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                content_type = resp.headers.get("Content-Type", "text/plain; charset=UTF-8")
                return Response(resp.status, body, content_type)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            LOG.warning("metadata: Nova at %s unreachable for %s: %s", self.base, instance.id, exc)
            return Response(503, b"The metadata backend (Nova) is unavailable; try again.\n")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True)
class SignedIdentity:
    instance_id: str
    tenant_id: str
    forwarded_for: str | None


class SignedHeaderError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_signed_headers(request: Request, secret: str) -> SignedIdentity:
    """Nova's ``_handle_instance_id_request`` checks, in Nova's order."""
    ids = request.header_all("X-Instance-ID")
    sigs = request.header_all("X-Instance-ID-Signature")
    tenants = request.header_all("X-Tenant-ID")
    if not ids:
        raise SignedHeaderError(400, "X-Instance-ID header is missing from request.")
    if not sigs:
        raise SignedHeaderError(400, "X-Instance-ID-Signature header is missing from request.")
    if not tenants:
        raise SignedHeaderError(400, "X-Tenant-ID header is missing from request.")
    if len(ids) > 1:
        raise SignedHeaderError(400, "Multiple X-Instance-ID headers found within request.")
    if len(tenants) > 1:
        raise SignedHeaderError(400, "Multiple X-Tenant-ID headers found within request.")
    if len(sigs) > 1:
        raise SignedHeaderError(400, "Multiple X-Instance-ID-Signature headers found within request.")
    if not verify(secret, ids[0], sigs[0]):
        raise SignedHeaderError(403, "Invalid proxy request signature.")
    return SignedIdentity(ids[0], tenants[0], request.header("X-Forwarded-For"))
