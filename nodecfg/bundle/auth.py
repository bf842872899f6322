"""Registry auth: WWW-Authenticate challenges and ~/.docker/config.json credentials (pure, apart
from reading that file).

Docker Hub, registry.k8s.io, quay.io and ghcr.io answer an anonymous request with `401` +
`WWW-Authenticate: Bearer realm="https://auth.docker.io/token",service="registry.docker.io",
scope="repository:library/busybox:pull"`; the client then GETs realm?service=...&scope=... (with
Basic credentials when it has some) and retries with `Authorization: Bearer <token>`. A registry
answering `Basic realm=...` wants the credentials themselves.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from nodecfg.errors import UsageError
from nodecfg.inventory import Secret

_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TCHARS})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TCHARS}))\s*(?:,|$)')
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: Mapping[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a WWW-Authenticate header (RFC 7235: a scheme, then comma-separated
    key=value or key="quoted \\"value\\"" parameters), or None when there is none."""
    match = re.match(rf"\s*({_TCHARS})(?:\s+|$)", header or "")
    if not match:
        return None
    scheme, rest, params = match.group(1).lower(), header[match.end():], {}
    while rest.strip():
        param = _PARAM.match(rest)
        if not param:
            break  # a second challenge, or junk: keep what was read
        value = param.group(3) if param.group(2) is None else re.sub(r"\\(.)", r"\1", param.group(2))
        params[param.group(1).lower()] = value
        rest = rest[param.end():]
    return Challenge(scheme, params)


def token_url(challenge: Challenge, repository: str) -> str:
    """Where a bearer token is asked for: the realm, with the challenge's service and scope (the
    pull scope of `repository` when the challenge names none, as on a /v2/ ping)."""
    realm = challenge.params.get("realm", "")
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the registry's token realm {realm!r} is not an http(s) URL")
    query = {k: v for k, v in (("service", challenge.params.get("service")),
                                ("scope", challenge.params.get("scope") or f"repository:{repository}:pull")) if v}
    return f"{realm}{'&' if parts.query else '?'}{urlencode(query)}"


def token_from(body: bytes) -> str:
    """The token of a token server's JSON answer (`token`, or OAuth's `access_token`)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise ValueError("the token server's answer holds no token")
    return token


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret

    def basic(self) -> str:
        raw = f"{self.username}:{self.password.reveal()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def docker_config_path() -> Path:
    """$DOCKER_CONFIG/config.json, else ~/.docker/config.json, as the docker CLI reads them."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path("~/.docker/config.json").expanduser()


def parse_docker_auths(text: str, path: str) -> dict[str, Credentials]:
    """`auths` of a docker config: {registry key: {"auth": base64(user:password)} or
    {"username", "password"}} -> credentials by host (keys like https://host/v1/ reduced to host).
    Credential helpers (credsStore, credHelpers) are not run."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    out: dict[str, Credentials] = {}
    for key, entry in (auths or {}).items() if isinstance(auths, dict) else ():
        if not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise UsageError(f"{path}: auths.{key}.auth is not base64 of user:password") from None
        if isinstance(user, str) and user and isinstance(password, str):
            host = urlsplit(key).netloc if "://" in key else key.split("/")[0]
            out[host] = Credentials(user, Secret(password))
    return out


def credentials_for(auths: Mapping[str, Credentials], netloc: str) -> Credentials | None:
    """The credentials stored for the registry at `netloc` (Docker Hub's under any of its names)."""
    if netloc in auths:
        return auths[netloc]
    if netloc in _HUB_KEYS:
        for key in _HUB_KEYS:
            found = auths.get(urlsplit(key).netloc or key)
            if found:
                return found
    return None


def load_docker_auths(path: Path | None = None) -> dict[str, Credentials]:
    """Credentials from the docker config; none when there is no such file."""
    path = path or docker_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    return parse_docker_auths(text, str(path))
