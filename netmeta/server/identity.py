"""The embedded identity service's data: users, projects, roles, and tokens.

Everything lives in three files under the state directory, all 0600, all
created that way (``O_EXCL`` with mode 0600, then ``rename``, so there is no
moment when another user could open them):

``identity.json``
    ``{"projects": [{"id", "name", "domain_id"}],
    "users": [{"id", "name", "domain_id", "password_hash", "enabled",
    "roles": {"<project id>": ["member", …]}}],
    "application_credentials": [{"id", "name", "user_id", "project_id",
    "secret_hash", "roles", "expires_at"}]}`` — read again whenever its mtime
    changes, so an operator edits it (or uses :func:`add_user`) without a
    restart.
``token.key``
    32 random bytes: the HMAC key tokens are signed with.
``clouds.yaml``
    what :func:`bootstrap` wrote for people and for netmeta's own
    components: the ``netmeta`` cloud (the admin) and ``netmeta-service``
    (the service user the agent, metadata process and ``netmeta vm`` use).
    It is JSON, which YAML reads unchanged, so no YAML library is needed.

A token is ``nm1.<payload>.<mac>``: base64url JSON (user, project, roles,
expiry) and a truncated HMAC-SHA256 over it. Validation is a MAC check and
a clock comparison — no I/O, no lookup — which is what keeps its cost per
request near zero. Roles are expanded at issue time with Keystone's default
implications (``admin`` ⇒ ``member`` ⇒ ``reader``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netmeta.drivers.files import replace_file
from netmeta.model.paths import StatePaths

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}
TOKEN_TTL = 3600.0
IMPLIED = {"admin": ("member", "reader"), "member": ("reader",)}
ADMIN_CLOUD, SERVICE_CLOUD = "netmeta", "netmeta-service"


class IdentityError(Exception):
    """Authentication failed; the message is safe to show (it names no secret)."""


# --- files --------------------------------------------------------------------


def write_private(path: str, data: bytes) -> None:
    """Write ``path`` as 0600 from its first byte, atomically."""
    replace_file(path, data, 0o600)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(got.hex(), digest)


def _load_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object")
    return data


def _save_json(path: str, data: dict[str, Any]) -> None:
    write_private(path, (json.dumps(data, indent=2) + "\n").encode())


def add_user(state_dir: str, name: str, password: str, project: str, roles: list[str],
             project_id: str | None = None) -> dict[str, Any]:
    """Add (or reset) a user with ``roles`` on ``project`` (created if new, with ``project_id`` if given)."""
    path = StatePaths(state_dir).identity_file
    data = _load_json(path)
    projects = data.setdefault("projects", [])
    proj = next((p for p in projects if p["name"] == project), None)
    if proj is None:
        proj = {"id": project_id or uuid.uuid4().hex, "name": project, "domain_id": "default"}
        projects.append(proj)
    users = data.setdefault("users", [])
    user = next((u for u in users if u["name"] == name), None)
    if user is None:
        user = {"id": uuid.uuid4().hex, "name": name, "domain_id": "default", "enabled": True, "roles": {}}
        users.append(user)
    user["password_hash"] = hash_secret(password)
    user.setdefault("roles", {})[proj["id"]] = sorted(set(roles))
    _save_json(path, data)
    return {"user": user, "project": proj}


def add_application_credential(state_dir: str, user: str, project: str, name: str, secret: str,
                               roles: list[str] | None = None) -> str:
    """Give ``user`` an application credential on ``project``; returns its id."""
    path = StatePaths(state_dir).identity_file
    data = _load_json(path)
    found = next(u for u in data["users"] if u["name"] == user)
    proj = next(p for p in data["projects"] if p["name"] == project)
    cred_id = uuid.uuid4().hex
    data.setdefault("application_credentials", []).append({
        "id": cred_id, "name": name, "user_id": found["id"], "project_id": proj["id"],
        "secret_hash": hash_secret(secret), "roles": roles or found["roles"].get(proj["id"], []),
        "expires_at": None,
    })
    _save_json(path, data)
    return cred_id


def cloud_entry(auth_url: str, user: str, password: str, project: str) -> dict[str, Any]:
    return {
        "auth": {"auth_url": auth_url, "username": user, "password": password, "project_name": project,
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3,
    }


def bootstrap(state_dir: str, api_url: str) -> bool:
    """Create the identity files once: an admin and a service user. True if created."""
    path = StatePaths(state_dir).identity_file
    key = StatePaths(state_dir).token_key
    if not os.path.exists(key):
        write_private(key, secrets.token_bytes(32))
    if os.path.exists(path):
        return False
    admin_pw, service_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    _save_json(path, {"projects": [], "users": [], "application_credentials": []})
    add_user(state_dir, "admin", admin_pw, "admin", ["admin"])
    add_user(state_dir, "netmeta", service_pw, "service", ["service"])
    auth_url = f"{api_url.rstrip('/')}/identity/v3"
    clouds = {"clouds": {ADMIN_CLOUD: cloud_entry(auth_url, "admin", admin_pw, "admin"),
                         SERVICE_CLOUD: cloud_entry(auth_url, "netmeta", service_pw, "service")}}
    _save_json(StatePaths(state_dir).clouds_file, clouds)
    return True


def refresh_auth_url(state_dir: str, api_url: str) -> None:
    """Point clouds.yaml at where the API listens now (port 0 picks a new one)."""
    path = StatePaths(state_dir).clouds_file
    try:
        data = _load_json(path)
    except (OSError, ValueError):
        return
    auth_url = f"{api_url.rstrip('/')}/identity/v3"
    changed = False
    for cloud in data.get("clouds", {}).values():
        auth = cloud.get("auth", {})
        if auth.get("auth_url", "").endswith("/identity/v3") and auth.get("auth_url") != auth_url:
            auth["auth_url"] = auth_url
            changed = True
    if changed:
        _save_json(path, data)


# --- tokens ---------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: tuple[str, ...]
    expires: float
    issued: float
    methods: tuple[str, ...]
    audit_id: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def expand_roles(roles: list[str]) -> tuple[str, ...]:
    out = set(roles)
    for role in roles:
        out.update(IMPLIED.get(role, ()))
    return tuple(sorted(out))


@dataclass
class Identity:
    """The loaded files; see the module docstring."""

    state_dir: str
    key: bytes = b""
    data: dict[str, Any] = field(default_factory=dict)
    _mtime: float = -1.0
    revoked: set[str] = field(default_factory=set)
    _seen: dict[str, TokenInfo] = field(default_factory=dict)
    # Set when the store is shared (netmeta.server.shared_identity): called
    # before each login instead of the file's mtime check, it exchanges
    # changes with the store and leaves ``data`` current.
    sync: Callable[["Identity"], None] | None = None
    # Set with ``sync``: records a revocation in the store (in a worker
    # thread), where every other server learns of it.
    publish_revocation: Callable[["TokenInfo"], None] | None = None

    def load(self) -> "Identity":
        with open(StatePaths(self.state_dir).token_key, "rb") as handle:
            self.key = handle.read()
        self._seen.clear()
        self._reload()
        return self

    def _reload(self) -> None:
        if self.sync is not None:
            self.sync(self)
            return
        path = StatePaths(self.state_dir).identity_file
        mtime = os.stat(path).st_mtime
        if mtime != self._mtime:
            self.data = _load_json(path)
            self._mtime = mtime

    # --- lookups ----------------------------------------------------------
    def _project(self, ref: dict[str, Any]) -> dict[str, Any]:
        for proj in self.data.get("projects", []):
            if ref.get("id") == proj["id"] or (
                ref.get("name") == proj["name"] and _in_default_domain(ref.get("domain"))
            ):
                return dict(proj)
        raise IdentityError("The request you have made requires authentication.")

    def _user(self, ref: dict[str, Any]) -> dict[str, Any]:
        for user in self.data.get("users", []):
            if ref.get("id") == user["id"] or (
                ref.get("name") == user["name"] and _in_default_domain(ref.get("domain"))
            ):
                if not user.get("enabled", True):
                    break
                return dict(user)
        raise IdentityError("The request you have made requires authentication.")

    # --- authentication ---------------------------------------------------
    def authenticate(self, auth: Any, now: float) -> TokenInfo:
        """A Keystone v3 ``auth`` object to a scoped token, or IdentityError."""
        self._reload()
        if not isinstance(auth, dict) or not isinstance(auth.get("identity"), dict):
            raise IdentityError("Expecting to find identity in auth.")
        identity = auth["identity"]
        methods = identity.get("methods")
        if methods == ["password"]:
            pw = identity.get("password", {}).get("user") if isinstance(identity.get("password"), dict) else None
            if not isinstance(pw, dict) or not isinstance(pw.get("password"), str):
                raise IdentityError("Expecting to find password in identity.")
            user = self._user(pw)
            if not check_secret(pw["password"], user.get("password_hash", "")):
                raise IdentityError("The request you have made requires authentication.")
            scope = auth.get("scope")
            if not isinstance(scope, dict) or not isinstance(scope.get("project"), dict):
                raise IdentityError("netmeta issues project-scoped tokens only: give a project to scope to.")
            project = self._project(scope["project"])
            roles = user.get("roles", {}).get(project["id"])
            if not roles:
                raise IdentityError("The request you have made requires authentication.")
        elif methods == ["application_credential"]:
            ref = identity.get("application_credential")
            if not isinstance(ref, dict) or not isinstance(ref.get("secret"), str):
                raise IdentityError("Expecting to find application_credential in identity.")
            cred = self._app_credential(ref)
            if not check_secret(ref["secret"], cred["secret_hash"]):
                raise IdentityError("The request you have made requires authentication.")
            user = self._user({"id": cred["user_id"]})
            project = self._project({"id": cred["project_id"]})
            roles = cred.get("roles") or []
        else:
            raise IdentityError("Supported auth methods: password, application_credential (one at a time).")
        return TokenInfo(user_id=user["id"], user_name=user["name"], project_id=project["id"],
                         project_name=project["name"], roles=expand_roles(list(roles)), expires=now + TOKEN_TTL,
                         issued=now, methods=tuple(methods), audit_id=_b64(secrets.token_bytes(12)))

    def _app_credential(self, ref: dict[str, Any]) -> dict[str, Any]:
        for cred in self.data.get("application_credentials", []):
            if ref.get("id") == cred["id"]:
                return dict(cred)
            if ref.get("name") == cred["name"] and isinstance(ref.get("user"), dict):
                try:
                    owner = self._user(ref["user"])
                except IdentityError:
                    continue
                if owner["id"] == cred["user_id"]:
                    return dict(cred)
        raise IdentityError("The request you have made requires authentication.")

    # --- tokens -------------------------------------------------------------
    def issue(self, info: TokenInfo) -> str:
        payload = json.dumps([info.user_id, info.user_name, info.project_id, info.project_name, list(info.roles),
                              int(info.expires), int(info.issued), list(info.methods), info.audit_id],
                             separators=(",", ":")).encode()
        body = "nm1." + _b64(payload)
        mac = hmac.new(self.key, body.encode(), hashlib.sha256).digest()[:24]
        return body + "." + _b64(mac)

    def verify(self, token: str, now: float) -> TokenInfo | None:
        """The token's content if it is ours, intact, unexpired and not revoked.

        A token seen before is a dictionary lookup (the MAC was checked then).
        """
        hit = self._seen.get(token)
        if hit is not None:
            return hit if hit.expires > now and hit.audit_id not in self.revoked else None
        info = self._verify(token, now)
        if info is not None:
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen[token] = info
        return info

    def _verify(self, token: str, now: float) -> TokenInfo | None:
        body, _, mac = token.rpartition(".")
        if not body.startswith("nm1.") or len(token) > 2048:
            return None
        want = hmac.new(self.key, body.encode(), hashlib.sha256).digest()[:24]
        try:
            if not hmac.compare_digest(_unb64(mac), want):
                return None
            fields = json.loads(_unb64(body[4:]))
            info = TokenInfo(fields[0], fields[1], fields[2], fields[3], tuple(fields[4]), float(fields[5]),
                             float(fields[6]), tuple(fields[7]), fields[8])
        except (ValueError, TypeError, IndexError):
            return None
        if info.expires <= now or info.audit_id in self.revoked:
            return None
        return info

    def revoke(self, info: TokenInfo) -> None:
        self.revoked.add(info.audit_id)


def _in_default_domain(domain: Any) -> bool:
    if domain is None:
        return True
    if not isinstance(domain, dict):
        return False
    return domain.get("id", "default") == "default" and domain.get("name", "Default") in ("Default", "default")


def now() -> float:
    return time.time()
