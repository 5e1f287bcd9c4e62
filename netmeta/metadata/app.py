"""The metadata application: one request in, one deliberate response out.

Dispatch order, and why:

1. **signed listener** — requests from a Neutron-style proxy carry their
   identity in signed headers; they skip address lookup, tokens and rate
   limits (the proxy in front owns those).
2. **identity lookup** — (listener, source IP) → one port (two dict reads);
   a failure is kept and raised at step 8, after ``/``.
3. **rate limit** per (listener, resolved port), or per address for a caller
   no port is found for — before any work, as in Neutron where haproxy
   refuses before the agent.
4. **``/``** — Nova answers the EC2 version list without knowing the caller.
5. **token PUT** (``/latest/api/token``) — tokens are bound to the listener
   and the resolved port, never to a bare address: a new port that is given a
   deleted port's IP does not inherit its tokens. An unknown caller gets 404.
6. **token check** on EC2 paths (``required``: missing/invalid → 401;
   ``optional``: a present-but-invalid token → 401, like AWS). The
   ``/openstack`` tree is never token-gated: no OpenStack client sends tokens.
7. **methods** — GET/HEAD everywhere, POST only on ``password``.
8. **identity** — the lookup's 404, saying why, for a caller with no instance.
9. **tree** — local data, or forwarded to Nova when ``metadata_backend=nova``.

Rendered EC2 leaves and the per-instance view are cached until the snapshot
object changes, so a steady stream of guest requests costs a dict lookup.
An answer that depends only on the snapshot, the caller and the request's
bytes also carries a :class:`~netmeta.metadata.http.Replay`: the listener
then answers the same request again from memory, asking this app only for
the rate limit, meta_data.json's fresh seed and the metrics (see
:meth:`MetadataApp._replay`). Not so: token requests and EC2 requests
carrying a token (a token expires), passwords (set through this process),
the signed listener, the Nova backend, 429s and 5xx.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from typing import Any, Awaitable, Callable, Protocol, Union

from netmeta.config import Config
from netmeta.metadata import metrics
from netmeta.metadata.http import ListenerContext, Replay, Request, Response
from netmeta.metadata.nova import NovaForwarder, SignedHeaderError, check_signed_headers
from netmeta.model.metadata import ec2, openstack
from netmeta.model.metadata.identity import Index, IdentityError, resolve
from netmeta.model.metadata.ratelimit import RateLimiter
from netmeta.model.metadata.tokens import (
    TOKEN_HEADER,
    TOKEN_PATH,
    TTL_HEADER,
    TokenIssuer,
    TokenRequestError,
    parse_ttl,
)
from netmeta.model.ip import canonical_ip
from netmeta.model.metadata.tree import JSON, TEXT, InstanceData, Leaf, PathNotFound, instance_data, split_path
from netmeta.model.types import Instance, InstanceId, Port, Snapshot

# What a request gets: the response now, or (password POST, Nova) later.
Answer = Union[Response, Awaitable[Response]]

LOG = logging.getLogger(__name__)

MAX_PASSWORD = 1020  # Nova: 4 chunks of 255 characters
_CACHE_LIMIT = 20000
_READ = ("GET", "HEAD")


class PasswordStore(Protocol):
    async def set_password(self, instance_id: str, value: str) -> bool:
        """Store the first password; False when one is already set (→ 409)."""
        ...


def load_vendordata(path: str) -> dict[str, Any]:
    """Nova's StaticJSON provider: a JSON object from a file, else ``{}``."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        LOG.warning("metadata: cannot use vendordata_jsonfile_path %s: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        LOG.warning("metadata: %s does not hold a JSON object; serving {}", path)
        return {}
    return data


class RandomPool:
    """``os.urandom(n)``, read from the kernel ``chunk`` bytes at a time: one getrandom for many seeds.

    Every meta_data.json carries 512 fresh random bytes (Nova's
    ``random_seed``); a syscall for each cost more than the rest of the
    answer. Bytes handed out are never handed out again, and a forked child
    (a metadata worker) starts with an empty pool, so no two workers or
    guests ever get the same bytes.
    """

    def __init__(self, chunk: int = 64 * 1024) -> None:
        self.chunk = chunk
        self.pool = b""
        self.at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self.pool, self.at = b"", 0

    def __call__(self, n: int) -> bytes:
        at = self.at
        if at + n > len(self.pool):
            if n > self.chunk:
                return os.urandom(n)
            self.pool, at = os.urandom(self.chunk), 0
        self.at = at + n
        return self.pool[at : at + n]


_RANDOM = RandomPool()


def _text(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, (message + "\n").encode(), TEXT, headers or [])


def _leaf(leaf: Leaf) -> Response:
    return Response(200, leaf.body, leaf.content_type)


class MetadataApp:
    """Serves both metadata trees for whatever listener a request came through."""

    def __init__(
        self,
        config: Config,
        snapshot: Callable[[], Snapshot],
        password_store: PasswordStore,
        clock: Callable[[], float] = time.monotonic,
        *,
        random_bytes: Callable[[int], bytes] = _RANDOM,
        token_key: bytes = b"",
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.password_store = password_store
        self.random_bytes = random_bytes
        # Workers share the key (a token from one is valid at another) and the limiter's table.
        self.tokens = TokenIssuer(clock, key=token_key or os.urandom(32))  # one key per process unless given
        self.limiter = limiter if limiter is not None else RateLimiter(config.rate_limiting, clock)
        self.vendordata = load_vendordata(config.vendordata_jsonfile_path)
        self.architecture = platform.machine() or "x86_64"
        self.nova = NovaForwarder(config) if config.metadata_backend == "nova" else None
        # Passwords set through this process, until the snapshot shows them.
        self._passwords: dict[InstanceId, str] = {}
        self._seen: Snapshot | None = None
        self._index = Index()
        self._views: dict[tuple[str, str], InstanceData] = {}
        self._leaves: dict[tuple[str, str, tuple[str, ...]], Leaf] = {}
        self._meta_data: dict[tuple[str, str, str], openstack.MetaDataTemplate] = {}
        # (listener kind, listener id, caller address) -> who that is, or why nobody
        self._callers: dict[tuple[str, str, str], tuple[Instance, Port] | IdentityError] = {}
        self._resolved = ""  # the instance the request being dispatched resolved to
        # How the request being dispatched may be answered again: its rate-limit key, and
        # meta_data.json's fresh body; None when its answer may not be given again.
        self._repeat: tuple[str, str, str, str] | None = None
        self._fresh: Callable[[], bytes] | None = None

    async def close(self) -> None:
        if self.nova is not None:
            await self.nova.close()

    # --- per-snapshot caches ---------------------------------------------
    def _current(self) -> Snapshot:
        snap = self.snapshot()
        if snap is not self._seen:
            self._seen = snap
            self._index = Index.build(snap)
            self._callers.clear()
            self._views.clear()
            self._leaves.clear()
            self._meta_data.clear()
            # A password set here is kept only until the snapshot speaks for it:
            # once it shows one (or the instance is gone, or it was cleared
            # through the API after showing), the snapshot is the truth.
            for instance_id in list(self._passwords):
                instance = snap.instances.get(instance_id)
                if instance is None or instance.password:
                    del self._passwords[instance_id]
        return snap

    def _view(self, snap: Snapshot, instance: Instance, address: str) -> InstanceData:
        key = (instance.id, address)
        view = self._views.get(key)
        if view is None:
            if len(self._views) > _CACHE_LIMIT:
                self._views.clear()
            view = instance_data(
                snap,
                instance,
                address,
                dhcp_domain=self.config.dhcp_domain,
                vendordata=self.vendordata,
                architecture=self.architecture,
            )
            self._views[key] = view
        return view

    def _resolve(self, snap: Snapshot, context: ListenerContext, ip: str) -> tuple[Instance, Port]:
        """:func:`resolve`, remembered per snapshot: each connection asks (its cap) and each request."""
        key = (context.kind, context.id, ip)
        known = self._callers.get(key)
        if known is None:
            if len(self._callers) > _CACHE_LIMIT:
                self._callers.clear()
            try:
                known = resolve(snap, context.kind, context.id, ip, self._index)
            except IdentityError as exc:
                known = exc.with_traceback(None)  # kept without the frames it was raised in
            self._callers[key] = known
        if isinstance(known, IdentityError):
            raise known.with_traceback(None)  # the same object again: without its last traceback
        return known

    # --- dispatch ----------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        answer = self.dispatch(request)
        return answer if isinstance(answer, Response) else await answer

    def dispatch(self, request: Request) -> Answer:
        """Answer now when no I/O is needed (nearly always), else an awaitable.

        The listener calls this directly: a request that needs no other
        service (everything but a password POST and the Nova backend) is
        answered without creating a task, which is most of the cost of a
        small request in asyncio.
        """
        started = time.perf_counter()
        self._resolved = ""
        self._repeat = self._fresh = None
        try:
            answer = self._dispatch(request)
        except PathNotFound as exc:
            answer = _text(404, exc.message())
        except IdentityError as exc:
            answer = _text(404, f"Not found: {exc}")
        if isinstance(answer, Response):
            self._record(request, answer, self._resolved, started)
            if self._repeat is not None and answer.status < 429:
                answer.replay = self._replay(request, self._repeat, self._resolved, self._fresh)
            return answer
        return self._later(request, answer, self._resolved, started)

    def _replay(self, request: Request, key: tuple[str, str, str, str], instance: str,
                fresh: Callable[[], bytes] | None) -> Replay:
        """How the listener may give this answer again: while the snapshot is this one, after the rate limit."""
        snap, current = self._seen, self.snapshot
        peer = request.peer_ip

        def record(response: Response, started: float) -> None:
            self._record(request, response, instance, started)

        def admit() -> Response | None:
            return self._limit(key, peer)

        return Replay(valid=lambda: current() is snap, record=record,
                      admit=admit if self.limiter.applies_to(peer) else None, fresh=fresh)

    def _limit(self, key: tuple[str, str, str, str], peer: str) -> Response | None:
        """Count one request of a caller; a 429 when it is over its rate limit."""
        decision = self.limiter.check(key, peer)
        if decision.allowed:
            return None
        metrics.RATE_LIMITED.labels(key[0]).inc()
        return _text(429, "Too many metadata requests; slow down.", [("Retry-After", str(decision.retry_after))])

    async def _later(self, request: Request, answer: Awaitable[Response], instance: str, started: float) -> Response:
        response = await answer
        self._record(request, response, instance, started)
        return response

    def _record(self, request: Request, response: Response, instance: str, started: float) -> None:
        """Metrics and the access log, for every answer (see :mod:`.metrics`)."""
        elapsed = time.perf_counter() - started
        ctx = request.context
        metrics.observe(ctx.kind, request.path, response.status, elapsed)
        metrics.access(request.peer_ip, ctx.kind, ctx.id, instance, request.method, request.path[:200],
                       response.status, len(response.body), elapsed)

    def _dispatch(self, request: Request) -> Answer:
        tokens = split_path(request.path)
        if request.context.kind == "signed":
            return self._signed(request, tokens)
        peer = request.peer_ip
        snap = self._current()
        # Who is asking comes first: the rate limit and tokens belong to the
        # resolved port, never to a bare address, so a port that takes over a
        # deleted port's IP starts clean, and a caller nobody can be tied to
        # shares no state with any guest.
        port: Port | None
        try:
            instance, port = self._resolve(snap, request.context, peer)
            self._resolved = instance.id
        except IdentityError as exc:
            unknown: IdentityError | None = exc
            port = None
        else:
            unknown = None
        key = (request.context.kind, request.context.id, "port", port.id) if port is not None else (
            request.context.kind, request.context.id, "address", peer)
        refusal = self._limit(key, peer)
        if refusal is not None:
            return refusal
        is_ec2 = not tokens or tokens[0] != "openstack"
        if tuple(tokens) == TOKEN_PATH and self.config.imds_tokens != "off":
            return self._token(request, port, unknown)
        if is_ec2 and self.config.imds_tokens != "off":
            refusal = self._check_token(request, port)
            if refusal is not None:
                return refusal
        if self._repeatable(request, tokens, is_ec2):
            self._repeat = key
        refusal = self._check_method(request, tokens)
        if refusal is not None:
            return refusal
        if not tokens:
            return _leaf(ec2.version_listing())
        if unknown is not None:
            raise unknown
        if self.nova is not None:
            return self.nova.forward(request, instance)
        return self._serve(request, tokens, self._view(snap, instance, canonical_ip(peer)))

    def _repeatable(self, request: Request, tokens: tuple[str, ...], is_ec2: bool) -> bool:
        """Whether what follows the rate limit answers this request the same while the snapshot stays."""
        if request.method not in _READ or request.body or self.nova is not None:
            return False
        if is_ec2 and self.config.imds_tokens != "off" and request.header_all(TOKEN_HEADER):
            return False  # the token expires
        return not (len(tokens) == 3 and tokens[0] == "openstack" and tokens[2] == openstack.PASSWORD)

    def port_of(self, context: ListenerContext, ip: str) -> str | None:
        """The port a caller resolves to on this listener, or None (for connection caps)."""
        if context.kind == "signed":
            return None
        try:
            _, port = self._resolve(self._current(), context, ip)
        except IdentityError:
            return None
        return port.id

    def over_rate_limit(self, context: ListenerContext, ip: str, port_id: str | None) -> bool:
        """Whether a new connection from this caller comes while it is over its rate limit.

        Its request then waits a second before it is read (see
        :class:`~netmeta.metadata.http.HttpProtocol`), as after a 429 on a
        kept-alive connection: a flood of short connections slows to one
        request per connection per second instead of one per round trip.
        Nothing is counted here; the request is, when it is read.
        """
        if context.kind == "signed" or not self.limiter.config.rate_limit_enabled:
            return False
        key = (context.kind, context.id, "port", port_id) if port_id is not None else (
            context.kind, context.id, "address", ip)
        return not self.limiter.check(key, ip, record=False).allowed

    def _check_method(self, request: Request, tokens: tuple[str, ...]) -> Response | None:
        if request.method in _READ:
            return None
        if len(tokens) == 3 and tokens[0] == "openstack" and tokens[2] == openstack.PASSWORD:
            return None  # the password handler answers every method itself
        if tuple(tokens) == TOKEN_PATH:
            # Token endpoint switched off: answer like Nova, which has none.
            return _text(404, f"Not found: {request.path} (session tokens are disabled)")
        return _text(405, f"Method {request.method} is not allowed here; use GET.", [("Allow", "GET, HEAD")])

    # --- tokens --------------------------------------------------------------
    def _binding(self, request: Request, port: Port) -> tuple[str, str, str]:
        return (request.context.kind, request.context.id, port.id)

    def _token(self, request: Request, port: Port | None, unknown: IdentityError | None) -> Response:
        if request.method != "PUT":
            return _text(405, "Use PUT to get a session token.", [("Allow", "PUT")])
        if request.header_all("X-Forwarded-For"):
            # AWS refuses forwarded token requests: a token must not leave the guest.
            return _text(403, "Forbidden: a token request may not carry X-Forwarded-For.")
        try:
            ttl = parse_ttl(request.header(TTL_HEADER))
        except TokenRequestError as exc:
            return _text(exc.status, f"Bad request: {exc}")
        if port is None:
            assert unknown is not None
            raise unknown  # a token for nobody would be a token for whoever holds the address next
        token = self.tokens.issue(self._binding(request, port), ttl)
        metrics.TOKENS_ISSUED.inc()
        return Response(
            200,
            token.encode(),
            TEXT,
            [(TTL_HEADER, str(ttl))],
            ttl=self.config.imds_token_hop_limit,
        )

    def _check_token(self, request: Request, port: Port | None) -> Response | None:
        values = request.header_all(TOKEN_HEADER)
        if not values:
            if self.config.imds_tokens == "required":
                return _text(401, f"Unauthorized: a session token is required (PUT /latest/api/token, then send {TOKEN_HEADER}).")
            return None
        if len(values) == 1 and port is not None and self.tokens.valid(self._binding(request, port), values[0].strip()):
            return None
        return _text(401, "Unauthorized: the session token is invalid or expired; fetch a new one.")

    # --- trees -----------------------------------------------------------------
    def _serve(self, request: Request, tokens: tuple[str, ...], view: InstanceData) -> Answer:
        if tokens[0] == "openstack":
            if len(tokens) == 3 and tokens[2] == openstack.MD_JSON:
                return self._meta_data_json(view, tokens[1])
            cache_key = None
            if len(tokens) == 3 and tokens[2] not in (openstack.MD_JSON, openstack.PASSWORD):
                cache_key = (view.instance.id, view.address, tuple(tokens))
                cached = self._leaves.get(cache_key)
                if cached is not None:
                    return _leaf(cached)
            # meta_data.json (the only file with a seed) was answered above.
            result = openstack.lookup(view, tokens[1:], b"")
            if isinstance(result, str):
                return self._password(request, view)
            if cache_key is not None:
                self._remember(cache_key, result)
            return _leaf(result)
        ec2_tokens = tokens[1:] if tokens[0] == "ec2" else tokens
        key = (view.instance.id, view.address, tuple(ec2_tokens))
        leaf = self._leaves.get(key)
        if leaf is None:
            leaf = ec2.lookup(view, ec2_tokens)
            self._remember(key, leaf)
        return _leaf(leaf)

    def _meta_data_json(self, view: InstanceData, version_token: str) -> Response:
        key = (view.instance.id, view.address, version_token)
        template = self._meta_data.get(key)
        if template is None:
            if len(self._meta_data) > _CACHE_LIMIT:
                self._meta_data.clear()
            template = openstack.meta_data_template(view, version_token)
            self._meta_data[key] = template

        def fresh() -> bytes:
            return template.render(self.random_bytes(512))
        self._fresh = fresh
        return Response(200, fresh(), JSON)

    def _remember(self, key: tuple[str, str, tuple[str, ...]], leaf: Leaf) -> None:
        if len(self._leaves) > _CACHE_LIMIT:
            self._leaves.clear()
            self._meta_data.clear()
        self._leaves[key] = leaf

    def _password(self, request: Request, view: InstanceData) -> Answer:
        instance_id = view.instance.id
        current = self._passwords.get(instance_id) or view.instance.password or ""
        if request.method in _READ:
            return Response(200, current.encode(), TEXT)
        if request.method != "POST":
            return _text(400, "GET and POST only are supported.")
        if current:
            return _text(409, "Conflict: the password is already set.")
        if len(request.body) > MAX_PASSWORD:
            return _text(400, "Request is too large.")
        try:
            value = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return _text(400, "The password must be UTF-8 text.")
        return self._store_password(instance_id, value)

    async def _store_password(self, instance_id: InstanceId, value: str) -> Response:
        try:
            stored = await self.password_store.set_password(instance_id, value)
        except Exception as exc:  # the store is remote: say so, never a traceback
            LOG.warning("metadata: cannot store password for %s: %s", instance_id, exc)
            return _text(503, "The password could not be stored; try again.")
        if not stored:
            return _text(409, "Conflict: the password is already set.")
        self._passwords[instance_id] = value
        return Response(200, b"", TEXT)

    # --- the signed listener ------------------------------------------------------
    def _signed(self, request: Request, tokens: tuple[str, ...]) -> Answer:
        if not tokens and request.method in _READ:
            return _leaf(ec2.version_listing())
        try:
            ident = check_signed_headers(request, self.config.metadata_proxy_shared_secret)
        except SignedHeaderError as exc:
            return _text(exc.status, exc.message)
        snap = self._current()
        instance = snap.instances.get(InstanceId(ident.instance_id))
        if instance is None or instance.project_id != ident.tenant_id:
            return _text(404, f"Not found: no instance {ident.instance_id} in project {ident.tenant_id}")
        refusal = self._check_method(request, tokens)
        if refusal is not None:
            return refusal
        if not tokens:
            return _leaf(ec2.version_listing())
        address = _instance_address(snap, instance)
        self._resolved = instance.id
        return self._serve(request, tokens, self._view(snap, instance, address))


def _instance_address(snap: Snapshot, instance: Instance) -> str:
    """The instance's own first IPv4 (by port id): what local-ipv4 should say."""
    for port in snap.ports_of_device(instance.id):
        for fixed in port.fixed_ips:
            if ":" not in fixed.ip_address:
                return fixed.ip_address
    return ""
