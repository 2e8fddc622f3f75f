"""Pure rules about credentials: a client's `Authorization`, and where credentials may go.

- A `Credential` is what a registry client sent the cache (basic or bearer, or nothing).
  The cache forwards it upstream to learn what that client may read (nic_cache/access.py).
- `realm_allowed`: a token endpoint named by an upstream's `WWW-Authenticate: Bearer
  realm=...` gets credentials only when it is on the upstream's own host, or it is a realm
  the operator listed (`realms:`), and never over plain http on another host. Otherwise the
  token is asked for anonymously.
- `redirect_allowed`: a redirect (blob storage) is followed to the same host, or to another
  host over https only; `Authorization` never leaves the upstream's host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Credential:
    """A client's `Authorization` header value ("" for an anonymous client)."""

    header: str = ""

    @property
    def anonymous(self) -> bool:
        return not self.header

    @property
    def key(self) -> str:
        """A stable name for this credential (never the secret itself)."""
        return hashlib.sha256(self.header.encode()).hexdigest() if self.header else "anonymous"

    @property
    def basic(self) -> tuple[str, str] | None:
        """(user, password) of a Basic credential, else None."""
        scheme, _, value = self.header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    @property
    def bearer(self) -> str | None:
        """The header to forward as is for a Bearer credential, else None."""
        scheme, _, value = self.header.partition(" ")
        return self.header if scheme.lower() == "bearer" and value.strip() else None

    @property
    def usable(self) -> bool:
        """Anonymous, or a credential the cache knows how to forward."""
        return self.anonymous or self.basic is not None or self.bearer is not None


ANONYMOUS = Credential()


def from_registry_auth(value: str) -> Credential:
    """OpenFaaS `registryAuth` (base64 of user:password) as a Basic credential."""
    return Credential(f"Basic {value.strip()}") if value.strip() else ANONYMOUS


def _origin(url: str) -> tuple[str, str]:
    """(scheme, host without port): another port of the same host is the same machine."""
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower()


def realm_allowed(realm: str, upstream_url: str, listed: tuple[str, ...] = ()) -> bool:
    """Whether the upstream's (or a client's) credentials may be sent to token endpoint `realm`."""
    scheme, host = _origin(realm)
    up_scheme, up_host = _origin(upstream_url)
    if scheme not in ("http", "https") or not host:
        return False
    if host == up_host and (scheme == "https" or up_scheme == "http"):
        return True
    return scheme == "https" and any(realm == r or realm.startswith(r.rstrip("/") + "/") for r in listed)


def redirect_allowed(source: str, target: str) -> tuple[bool, bool]:
    """(follow it, keep Authorization) for a redirect from `source` to `target`."""
    scheme, host = _origin(target)
    src_scheme, src_host = _origin(source)
    if scheme not in ("http", "https") or not host:
        return False, False
    if host == src_host:
        follow = not (src_scheme == "https" and scheme == "http")
        return follow, follow
    return scheme == "https", False
