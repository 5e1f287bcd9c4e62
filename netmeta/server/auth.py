"""Who is calling: ``auth_strategy``, the embedded Keystone v3 subset, tokens.

``auth_strategy = noauth``
    Neutron's noauth: every caller is an admin, of the project named by the
    ``X-Project-Id`` header (or ``default_project_id``). The config refuses
    it on anything but a loopback bind.
``auth_strategy = keystone`` (the default)
    Every request but version discovery (``GET /``) and the identity routes
    needs ``X-Auth-Token``; without a valid one the answer is
    keystonemiddleware's 401 with ``WWW-Authenticate: Keystone uri=…``.
    Tokens come from:

    * the **embedded identity service** (no ``[keystone_authtoken]
      auth_url``): ``/identity/v3`` on the API's own address — version
      discovery, ``POST /identity/v3/auth/tokens`` (``password`` and
      ``application_credential``, project-scoped), ``GET``/``HEAD``/``DELETE``
      of ``/identity/v3/auth/tokens`` with ``X-Subject-Token``. The catalog
      names this API as the ``network`` service, so an ordinary clouds.yaml
      works with ``openstack`` and openstacksdk. Data: :mod:`.identity`.
    * an **external Keystone**: each new token is validated once with
      ``GET {auth_url}/v3/auth/tokens`` (netmeta's service token in
      ``X-Auth-Token``, the caller's in ``X-Subject-Token``) and the answer is
      cached for ``token_cache_time`` seconds — keystonemiddleware's logic.

The caller is stored on the request for :meth:`ServerContext.caller`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from netmeta.config import Config
from netmeta.server.bodies import parse_body
from netmeta.server.identity import Identity, IdentityError, TokenInfo, now
from netmeta.server.standard_attrs import Caller

log = logging.getLogger("netmeta.server.auth")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER = "netmeta.caller"
IDENTITY: web.AppKey[Identity] = web.AppKey("netmeta_identity", Identity)
EXTERNAL: web.AppKey["ExternalValidator"] = web.AppKey("netmeta_keystone", object)  # type: ignore[arg-type]
# Answered without a token: Neutron's version discovery, the identity service itself.
PUBLIC_PREFIXES = ("/identity",)
PUBLIC_PATHS = {"/"}


def unauthorized(uri: str, message: str = "The request you have made requires authentication.") -> web.Response:
    body = {"error": {"code": 401, "title": "Unauthorized", "message": message}}
    response = web.json_response(body, status=401)
    response.headers["WWW-Authenticate"] = f'Keystone uri="{uri}"'
    return response


def caller_of(info: TokenInfo) -> Caller:
    return Caller(project_id=info.project_id, roles=frozenset(info.roles), user_id=info.user_id)


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def auth_middleware(config: Config) -> Any:
    external_uri = config.keystone_authtoken.www_authenticate_uri or config.keystone_authtoken.auth_url

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if config.auth_strategy == "noauth":
            project = request.headers.get("X-Project-Id") or config.default_project_id
            request[CALLER] = Caller(project_id=project)
            return await handler(request)
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        uri = external_uri or f"{base_url(request)}/identity/v3"
        token = request.headers.get("X-Auth-Token", "")
        if not token:
            return unauthorized(uri)
        if config.embedded_identity:
            info = request.app[IDENTITY].verify(token, now())
            caller = caller_of(info) if info is not None else None
        else:
            caller = await request.app[EXTERNAL].validate(token)
        if caller is None:
            return unauthorized(uri)
        request[CALLER] = caller
        return await handler(request)

    return authenticate


# --- the embedded Keystone v3 subset ---------------------------------------------


def _version(request: web.Request) -> dict[str, Any]:
    return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base_url(request)}/identity/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}


async def identity_versions(request: web.Request) -> web.Response:
    return web.json_response({"versions": {"values": [_version(request)]}}, status=300)


async def identity_v3(request: web.Request) -> web.Response:
    return web.json_response({"version": _version(request)})


def _catalog(request: web.Request) -> list[dict[str, Any]]:
    base = base_url(request)

    def endpoints(url: str, service: str) -> list[dict[str, Any]]:
        return [{"id": f"{service}-{iface}", "interface": iface, "region": "RegionOne", "region_id": "RegionOne",
                 "url": url} for iface in ("public", "internal", "admin")]

    return [
        {"id": "network", "type": "network", "name": "neutron", "endpoints": endpoints(base, "network")},
        {"id": "identity", "type": "identity", "name": "keystone",
         "endpoints": endpoints(f"{base}/identity/v3", "identity")},
    ]


def token_body(request: web.Request, info: TokenInfo, catalog: bool = True) -> dict[str, Any]:
    domain = {"id": "default", "name": "Default"}
    token: dict[str, Any] = {
        "methods": list(info.methods),
        "user": {"id": info.user_id, "name": info.user_name, "domain": domain, "password_expires_at": None},
        "project": {"id": info.project_id, "name": info.project_name, "domain": domain},
        "roles": [{"id": role, "name": role} for role in info.roles],
        "expires_at": _iso(info.expires),
        "issued_at": _iso(info.issued),
        "audit_ids": [info.audit_id],
        "is_domain": False,
    }
    if catalog:
        token["catalog"] = _catalog(request)
    return {"token": token}


def _identity_error(status: int, message: str) -> web.Response:
    titles = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}
    return web.json_response({"error": {"code": status, "title": titles[status], "message": message}},
                             status=status)


async def issue_token(request: web.Request) -> web.Response:
    identity = request.app[IDENTITY]
    try:
        body = parse_body(await request.read())
    except Exception:  # noqa: BLE001 - any unreadable body is Keystone's 400
        return _identity_error(400, "Expecting to find auth in request body.")
    if not isinstance(body, dict) or not isinstance(body.get("auth"), dict):
        return _identity_error(400, "Expecting to find auth in request body.")
    loop = asyncio.get_running_loop()
    try:
        # scrypt takes tens of milliseconds: keep it off the event loop.
        info = await loop.run_in_executor(None, identity.authenticate, body["auth"], now())
    except IdentityError as exc:
        return _identity_error(401, str(exc))
    token = identity.issue(info)
    nocatalog = "nocatalog" in request.query
    response = web.json_response(token_body(request, info, catalog=not nocatalog), status=201)
    response.headers["X-Subject-Token"] = token
    return response


def _validated(request: web.Request) -> tuple[TokenInfo | None, web.Response | None]:
    identity = request.app[IDENTITY]
    caller = identity.verify(request.headers.get("X-Auth-Token", ""), now())
    if caller is None:
        return None, _identity_error(401, "The request you have made requires authentication.")
    subject = identity.verify(request.headers.get("X-Subject-Token", ""), now())
    if subject is None:
        return None, _identity_error(404, "Could not find token.")
    allowed = {"admin", "service"} & set(caller.roles) or subject.audit_id == caller.audit_id
    if not allowed:
        return None, _identity_error(404, "Could not find token.")
    return subject, None


async def validate_token(request: web.Request) -> web.StreamResponse:
    subject, error = _validated(request)
    if error is not None:
        return error
    assert subject is not None
    if request.method == "HEAD":
        return web.Response(status=200, headers={"X-Subject-Token": request.headers["X-Subject-Token"]})
    if request.method == "DELETE":
        ident = request.app[IDENTITY]
        ident.revoke(subject)
        if ident.publish_revocation is not None:
            # Servers sharing the store refuse it too: answered once it is recorded there.
            try:
                await asyncio.get_running_loop().run_in_executor(None, ident.publish_revocation, subject)
            except Exception as exc:  # noqa: BLE001 - the store away: say so, the token stays revoked here
                log.warning("identity: cannot record a revocation in the store: %s", exc)
                return _identity_error(503, "The token is revoked at this server only: the shared store "
                                            "cannot be written now; revoke it again.")
        return web.Response(status=204)
    response = web.json_response(token_body(request, subject, catalog="nocatalog" not in request.query))
    response.headers["X-Subject-Token"] = request.headers["X-Subject-Token"]
    return response


def add_identity_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity", identity_versions)
    r.add_get("/identity/", identity_versions)
    r.add_get("/identity/v3", identity_v3)
    r.add_get("/identity/v3/", identity_v3)
    r.add_post("/identity/v3/auth/tokens", issue_token)
    r.add_get("/identity/v3/auth/tokens", validate_token, allow_head=True)
    r.add_delete("/identity/v3/auth/tokens", validate_token)


# --- an external Keystone --------------------------------------------------------------


class ExternalValidator:
    """keystonemiddleware's job: validate a token against Keystone, cache the answer."""

    CACHE_MAX = 10000
    NEGATIVE_TTL = 10.0

    def __init__(self, config: Config, service_token: Callable[[], Awaitable[str]],
                 invalidate: Callable[[], None]) -> None:
        self.ks = config.keystone_authtoken
        base = self.ks.auth_url.rstrip("/")
        self.url = (base if base.endswith("/v3") else base + "/v3") + "/auth/tokens"
        self.service_token = service_token
        self.invalidate = invalidate
        self.cache: dict[str, tuple[float, Caller | None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def validate(self, token: str) -> Caller | None:
        mono = time.monotonic()
        hit = self.cache.get(token)
        if hit is not None and hit[0] > mono:
            return hit[1]
        try:
            caller, expires = await self._ask(token)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as exc:
            log.warning("cannot validate a token at %s: %s", self.url, exc)
            return None
        ttl = min(self.ks.token_cache_time, max(0.0, expires - time.time())) if caller else self.NEGATIVE_TTL
        if len(self.cache) >= self.CACHE_MAX:
            self.cache = {k: v for k, v in self.cache.items() if v[0] > mono}
            if len(self.cache) >= self.CACHE_MAX:
                self.cache.clear()
        self.cache[token] = (mono + ttl, caller)
        return caller

    async def _ask(self, token: str) -> tuple[Caller | None, float]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for attempt in range(2):
            headers = {"X-Auth-Token": await self.service_token(), "X-Subject-Token": token}
            async with self._session.get(self.url, headers=headers, params={"nocatalog": "1"}) as resp:
                if resp.status == 401 and attempt == 0:
                    self.invalidate()  # our own service token expired: log in again, once
                    continue
                if resp.status != 200:
                    return None, 0.0
                body = await resp.json()
            tok = body["token"]
            project = tok.get("project")
            if not project:
                return None, 0.0
            expires = datetime.fromisoformat(tok["expires_at"].replace("Z", "+00:00")).timestamp()
            roles = frozenset(r["name"] for r in tok.get("roles", []))
            return Caller(project_id=project["id"], roles=roles, user_id=tok["user"]["id"]), expires
        return None, 0.0
