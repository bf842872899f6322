"""The registry's login (`registry.auth`), as one value that cannot leak by accident.

`Credentials` holds the user name and the password as a `Secret`: its repr, str and every dataclass
repr that contains it show `***`, so a traceback, a log line or a `--json` dump never carries the
password. Everything that must put the password somewhere says so by name: `curl_config()` (curl's
`-K` file, read on a host from a root-only temp file, never argv), `authorization()` (an HTTP
`Authorization` header for the push and the nodes' configs), `reveal()` (htpasswd, auth.json).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from nodecfg.errors import UsageError
from nodecfg.inventory import RegistryAuth, Secret

_CURL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\v": "\\v"}


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret

    @classmethod
    def of(cls, auth: RegistryAuth | None) -> Credentials | None:
        """The inventory's login, its password read from where `registry.auth` says (a UsageError if it
        is not there, or is not one line without NUL: it goes into headers and config files)."""
        if auth is None:
            return None
        password = auth.password()
        if any(ch in password.reveal() for ch in "\n\r\0"):
            raise UsageError("registry.auth: the password must be a single line without NUL characters")
        return cls(auth.username, password)

    def reveal(self) -> str:
        return self.password.reveal()

    def basic(self) -> str:
        """base64 of `user:password`, as HTTP Basic and docker's config.json `auth` carry it."""
        return base64.b64encode(f"{self.username}:{self.reveal()}".encode()).decode()

    def authorization(self) -> str:
        return f"Basic {self.basic()}"

    def curl_config(self) -> bytes:
        """`user = "name:password"` for a curl config file, in curl's own quoting: one line whatever the
        values hold (a newline would start another curl option)."""
        value = f"{self.username}:{self.reveal()}"
        if "\0" in value:
            raise ValueError("curl credentials cannot hold a NUL character")
        return ('user = "' + "".join(_CURL_ESCAPES.get(ch, ch) for ch in value) + '"\n').encode()
