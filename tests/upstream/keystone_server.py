"""A real Keystone (from PyPI, in .cache/keystone-venv) on 127.0.0.1, for one test.

Run with the Keystone venv's interpreter, never netmeta's:
``python keystone_server.py CONF_DIR PORT``. It serves Keystone's own public
WSGI application (keystone 30 ships no ``keystone-wsgi-public`` script any
more) with the standard library's threaded WSGI server, prints ``ready`` once
it listens, and adds two paths of its own, for the test only:

* ``GET /_test/validations`` — how many token validations
  (``GET``/``HEAD /v3/auth/tokens``) Keystone has answered, as JSON: the test
  counts them to see netmeta's cache at work;
* ``POST /_test/expired-token`` with ``{"user_id", "project_id"}`` — a
  Fernet token for that user and project, made by Keystone's own formatter
  with its own keys, that expired an hour ago (Keystone gives no way to ask
  for one, and waiting for a real expiry would take its whole lifetime).
"""

from __future__ import annotations

import json
import os
import socketserver
import sys
import threading
from datetime import datetime, timedelta, timezone
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


class ThreadedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main() -> None:
    conf_dir, port = sys.argv[1], int(sys.argv[2])
    os.environ["OS_KEYSTONE_CONFIG_DIR"] = conf_dir
    del sys.argv[1:]  # oslo.config parses the command line too
    from keystone.server import wsgi

    keystone_app = wsgi.initialize_public_application()
    lock = threading.Lock()
    counted = {"validations": 0}

    def expired_token(body: dict[str, str]) -> str:
        from keystone.token import provider, token_formatters

        expires = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        with keystone_app.app_context():
            token = token_formatters.TokenFormatter().create_token(
                body["user_id"], expires, [provider.random_urlsafe_str()], token_formatters.ProjectScopedPayload,
                methods=["password"], project_id=body["project_id"],
            )
        return str(token)

    def app(environ: dict, start_response):  # type: ignore[no-untyped-def]
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/_test/validations":
            with lock:
                body = json.dumps(counted).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == "/_test/expired-token" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            token = expired_token(json.loads(environ["wsgi.input"].read(length)))
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"token": token}).encode()]
        if path.rstrip("/") == "/v3/auth/tokens" and method in ("GET", "HEAD"):
            with lock:
                counted["validations"] += 1
        return keystone_app(environ, start_response)

    server = make_server("127.0.0.1", port, app, server_class=ThreadedWSGIServer, handler_class=QuietHandler)
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
