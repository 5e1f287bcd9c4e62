"""The server process: the aiohttp application and how it is run.

Entry points:

* :func:`build_app` — the application for a :class:`~netmeta.config.Config`;
  the database is opened (and migrated) on startup and closed on cleanup.
* :func:`serve` — run until cancelled; ``ready`` is set once the socket is
  bound, and ``on_bound`` receives the actual ``host:port`` (useful with
  port 0).
* :func:`run` — blocking, for the CLI; SIGINT/SIGTERM stop it cleanly. It
  first sets the umask to 077, refuses store and identity files that others
  can read, and creates the embedded identity's files on first start
  (:mod:`.identity`); :mod:`.auth` decides who each request comes from.

The error middleware is the one place exceptions become HTTP answers: a
:class:`~netmeta.server.errors.NeutronError` is rendered in Neutron's shape,
aiohttp's own 404/405 get the same shape, and anything else is logged and
answered as a 500 that says nothing about the internals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from netmeta.config import Config, ConfigError
from netmeta.errors import StartupError
from netmeta.metrics import FAILING, OK, Endpoint, Health
from netmeta.server import agents, auth, identity, metrics, netmeta_api, neutron_api
from netmeta.server.changes import KEEP, ChangeHub
from netmeta.server.context import CTX, ServerContext, dump
from netmeta.server.errors import MethodNotAllowed, NeutronError, NotFound
from netmeta.status import write_status
from netmeta.store.database import Database, current_revision
from netmeta.store.notify import Listener

log = logging.getLogger("netmeta.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def neutron_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NeutronError as exc:
        return dump(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status == 404:
            error: NeutronError = NotFound("The resource could not be found.", "HTTPNotFound")
        elif exc.status == 405:
            error = MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}.")
        elif exc.status >= 400:
            error = NeutronError(exc.reason, f"HTTP{exc.reason.replace(' ', '')}")
            error.status = exc.status
        else:
            raise
        response = dump(error.body(), status=error.status)
        if exc.status == 405:
            allow = exc.headers.get("Allow")
            if allow:
                response.headers["Allow"] = allow
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        body = {"NeutronError": {"type": "HTTPInternalServerError",
                                 "message": "Request Failed: internal server error while processing your request.",
                                 "detail": ""}}
        return dump(body, status=500)


def check_private_files(config: Config) -> None:
    """Refuse to start on secrets other users can read (they were made elsewhere).

    The state directory itself too: 0700, so that other users cannot even
    list what it holds (guest names, logs). netmeta makes it so; a wider one
    was made or widened by someone else (an older netmeta made it 0755 for
    dnsmasq, whose files now live outside it).
    """
    try:
        mode = os.stat(config.state_dir).st_mode & 0o777
    except FileNotFoundError:
        mode = 0
    if mode & 0o077:
        raise ConfigError(f"state directory {config.state_dir} is mode {mode:04o}: other users could look inside; "
                          f"run `chmod 700 {config.state_dir}`")
    for path in config.paths.private_files:
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            raise ConfigError(f"{path} is mode {mode:04o}: other users could read it; "
                              f"run `chmod 600 {path}` (and check who read it)")


def prepare_state(config: Config) -> None:
    """Before serving: private files only, then the identity files (once)."""
    os.umask(0o077)  # everything this process creates is its own: no window
    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    check_private_files(config)
    if config.embedded_identity:
        identity.bootstrap(config.state_dir, config.api_url)


def build_app(config: Config) -> web.Application:
    # observe (metrics, access log) is outermost: it sees the answer the error middleware made.
    middlewares = [metrics.observe, neutron_errors, auth.auth_middleware(config)]
    app = web.Application(middlewares=middlewares, client_max_size=config.max_request_body_size)
    if config.embedded_identity:
        app[auth.IDENTITY] = identity.Identity(config.state_dir).load()
        auth.add_identity_routes(app)
    elif config.auth_strategy == "keystone":
        from netmeta.credentials import TokenSource, service_credentials

        source = TokenSource(service_credentials(config))
        app[auth.EXTERNAL] = auth.ExternalValidator(config, source.aget, source.invalidate)

        async def close_validator(app: web.Application) -> None:
            await app[auth.EXTERNAL].close()

        app.on_cleanup.append(close_validator)

    async def database(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        db = await loop.run_in_executor(
            None, lambda: Database(config.db_url, retention=config.change_log_retention)
        )
        if config.embedded_identity and not db.is_sqlite:
            # Several servers on one PostgreSQL are one cloud: one identity (its key, users, clouds).
            from netmeta.server.shared_identity import SharedIdentity

            await loop.run_in_executor(None, SharedIdentity(db, config.state_dir).join, app[auth.IDENTITY])
        hub = ChangeHub(keep=min(KEEP, config.change_log_retention))
        hub.reader = lambda since: db.read(netmeta_api.read_log(since))
        app[CTX] = ServerContext(config=config, db=db, hub=hub)
        revision, _ = await db.read(current_revision)
        hub.start(revision)
        tasks = [asyncio.create_task(agents.watch_agents(app))]
        if config.embedded_identity and app[auth.IDENTITY].sync is not None:
            tasks.append(asyncio.create_task(_sync_identity(app[auth.IDENTITY])))
        if not db.is_sqlite:
            revoked = app[auth.IDENTITY].revoked.add if config.embedded_identity else None
            listener = Listener(db.url, app[CTX].hub.committed, on_revoked=revoked)
            app[CTX].hub.listening = listener.listening
            tasks.append(asyncio.create_task(listener.run()))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.run_in_executor(None, db.close)

    async def wake_watchers(app: web.Application) -> None:
        if CTX in app:
            await app[CTX].hub.close()

    app.cleanup_ctx.append(database)
    app.on_shutdown.append(wake_watchers)
    agents.add_routes(app)  # before the generic /v2.0/{kind}/{id} routes
    neutron_api.add_routes(app)
    netmeta_api.add_routes(app)
    return app


async def _sync_identity(ident: identity.Identity) -> None:
    """Every few seconds, what changed in the shared identity, both ways (netmeta.server.shared_identity)."""
    from netmeta.server.shared_identity import SYNC_INTERVAL

    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SYNC_INTERVAL)
        sync = ident.sync
        if sync is None:
            return
        try:
            await loop.run_in_executor(None, sync, ident)
        except Exception as exc:  # noqa: BLE001 - the store away a moment: next time
            log.warning("identity: cannot exchange changes with the store: %s", exc)


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(
    config: Config,
    ready: asyncio.Event | None = None,
    on_bound: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; see the module docstring."""
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
    except (ConfigError, StartupError):
        raise
    except Exception as exc:  # noqa: BLE001 - the store cannot be opened: say so in one line
        raise StartupError(f"server: cannot open the store {safe_url(config.db_url)}: {_reason(exc)}") from exc
    endpoint: Endpoint | None = None
    try:
        host, port = split_bind(config.bind)
        site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"server: cannot listen on {config.bind}: {_reason(exc)} "
                               "(another netmeta server? choose another --bind)") from exc
        addresses = runner.addresses
        actual = addresses[0][1] if addresses else port
        bound = f"{host}:{actual}" if ":" not in host else f"[{host}]:{actual}"
        if config.embedded_identity:
            identity.refresh_auth_url(config.state_dir, f"http://{bound}")
        status: dict[str, object] = {"pid": os.getpid(), "bind": bound, "metrics": ""}
        if config.server_metrics_bind:
            endpoint = Endpoint("server", config.server_metrics_bind, _health(app))
            status["metrics"] = await endpoint.start()
        try:
            write_status(config.state_dir, "server", status)
        except OSError as exc:  # a diagnostics file must never stop the API
            log.warning("cannot write the server status file: %s", exc)
        log.info("listening on http://%s (metrics %s)", bound, status["metrics"] or "off")
        if on_bound is not None:
            on_bound(bound)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        if endpoint is not None:
            await endpoint.stop()
        await runner.cleanup()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    cause = getattr(exc, "orig", None) or exc
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def safe_url(url: str) -> str:
    """The store's URL without its password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


def _health(app: web.Application) -> Health:
    async def health() -> tuple[str, dict[str, object]]:
        server = app[CTX]
        try:
            revision, _ = await asyncio.wait_for(server.db.read(current_revision), 2.0)
        except Exception as exc:  # noqa: BLE001 - the store does not answer: failing
            return FAILING, {"store": f"not answering: {_reason(exc)}"}
        return OK, {"store": "ok", "revision": revision}

    return health


def run(config: Config, on_bound: Callable[[str], None] | None = None) -> None:
    """Blocking entry point for the CLI: serve until SIGINT or SIGTERM."""

    prepare_state(config)

    async def main() -> None:
        task = asyncio.create_task(serve(config, on_bound=on_bound))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
