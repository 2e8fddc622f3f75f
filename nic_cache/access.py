"""Tenant isolation: a client gets content of a repository only if its own credential can read
that repository upstream, and a blob only through a repository that references it.

The model (README, "Who may read what"):
- The client's `Authorization` (basic or bearer; none for an anonymous client) is forwarded
  to the upstream as a probe (`GET /v2/<repo>/tags/list?n=1`, through the upstream's token
  flow for a basic credential). The answer is remembered per (credential, upstream,
  repository) for `access_ttl`, in the index so every worker shares it; the credential is
  stored only as an HMAC under a key of this cache. A repository that answers an anonymous
  client is public. While the upstream cannot be reached, a credential that was allowed
  before keeps its access (the cache serves what it holds, as it serves stale tags).
- A blob or a manifest by digest is served for `<upstream>/<repository>` only if a manifest
  recorded for that repository references it (`repo_manifests`, filled whenever a manifest
  is fetched or served for a repository), or the upstream confirms, as the client, that the
  repository holds it. Content is shared on disk by digest, never across repositories.
- Clients learn to send credentials by the distribution token flow: `/v2/` and a denied
  request answer 401 with `Bearer realm="<cache>/v2/token"`; the client asks that endpoint
  (with its basic credentials, or none) and gets a token that wraps its credential, signed
  and short-lived, which it then sends as `Bearer`. A basic credential sent directly works
  too; a bearer token the cache did not issue is forwarded upstream as is.
- Denied: 401 UNAUTHORIZED; a digest the repository does not hold: 404, whether the cache
  holds it or not.
- The cache's own upstream credentials only fill; they never decide what a client reads.
- `public: true` on an upstream turns all of this off for it.
This is a separate step before the mirror is asked, so other serving paths compose with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable

from .config import Config
from .credentials import Credential
from .errors import BlobUnknown, ManifestUnknown, StoreError, Unauthorized, UpstreamError
from .reference import Route
from .store import Store
from .upstream import Upstreams

log = logging.getLogger(__name__)
TOKEN_PATH = "/v2/token"
TOKEN_PREFIX = "nca1."
TOKEN_TTL = 300
KEEP_DECISIONS = 7 * 86400.0  # rows older than this are pruned (stale access ends there)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS access (
    upstream   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    credential TEXT NOT NULL,
    allowed    INTEGER NOT NULL,
    checked_at REAL NOT NULL,
    PRIMARY KEY (upstream, subject, credential)
);
CREATE TABLE IF NOT EXISTS repo_manifests (
    upstream   TEXT NOT NULL,
    repository TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    PRIMARY KEY (upstream, repository, manifest)
);
CREATE INDEX IF NOT EXISTS repo_manifests_manifest ON repo_manifests (manifest);
"""
_REFERENCED = """
SELECT 1 FROM repo_manifests WHERE upstream = :u AND repository = :r AND manifest = :d
UNION ALL
SELECT 1 FROM repo_manifests rm JOIN manifest_refs a ON a.manifest = rm.manifest
 WHERE rm.upstream = :u AND rm.repository = :r AND a.child = :d
UNION ALL
SELECT 1 FROM repo_manifests rm JOIN manifest_refs a ON a.manifest = rm.manifest
 JOIN manifest_refs b ON b.manifest = a.child
 WHERE rm.upstream = :u AND rm.repository = :r AND b.child = :d
LIMIT 1
"""
_SOURCE = "SELECT source FROM derived WHERE digest = ?"


class Access:
    """Decides whether a client may read a repository, a manifest or a blob (see module doc)."""

    def __init__(
        self, config: Config, store: Store, upstreams: Upstreams, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.store = store
        self.upstreams = upstreams
        self.clock = clock
        try:
            store.index.conn().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create the access tables: {exc}") from exc
        self._secret = _secret(os.path.join(store.data_dir, "access.key"))

    # -- the cache's own token flow -------------------------------------------------------

    def issue_token(self, header: str) -> dict[str, object]:
        """A token wrapping the credential in `header` ("" for anonymous), for TOKEN_TTL s."""
        if header and not Credential(header).usable:
            raise Unauthorized("unsupported Authorization scheme: send Basic credentials")
        expires = int(self.clock()) + TOKEN_TTL
        body = base64.urlsafe_b64encode(json.dumps({"a": header, "e": expires}).encode()).decode()
        sig = hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()
        token = f"{TOKEN_PREFIX}{body}.{sig}"
        return {"token": token, "access_token": token, "expires_in": TOKEN_TTL}

    def credential(self, header: str) -> Credential:
        """The credential a request carries: the one a token of ours wraps, else the header."""
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value.startswith(TOKEN_PREFIX):
            return Credential(header)
        body, _, sig = value[len(TOKEN_PREFIX):].rpartition(".")
        good = hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()
        try:
            if not hmac.compare_digest(sig, good):
                raise ValueError("bad signature")
            claims = json.loads(base64.urlsafe_b64decode(body.encode()))
            if float(claims["e"]) < self.clock():
                raise ValueError("expired")
            return Credential(str(claims["a"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise Unauthorized(f"token not accepted ({exc}): ask {TOKEN_PATH} for a new one") from exc

    def public(self, upstream: str) -> bool:
        """Whether the operator made every client a reader of this upstream (`public: true`)."""
        cfg = self.config.upstreams.get(upstream)
        return cfg is not None and cfg.public

    def check_repository(self, route: Route, client: Credential) -> None:
        """Raise Unauthorized unless `client` may pull `route`'s repository."""
        if self.public(route.upstream):
            return
        if not client.usable:
            raise Unauthorized("unsupported Authorization scheme: send Basic credentials")
        up = self.upstreams[route.upstream]
        if not self._decide(route.upstream, route.repository, client,
                            lambda: up.may_read(route.repository, client)):  # fmt: skip
            what = f"{route.upstream}/{route.repository}"
            raise Unauthorized(
                f"authentication required to pull {what}" if client.anonymous
                else f"the credentials given cannot pull {what}",
                detail={"repository": what},
            )

    def check_content(self, route: Route, kind: str, digest: str, client: Credential) -> None:
        """Raise unless `client` may read `digest` (kind "manifests" or "blobs") through
        `route`'s repository: Unauthorized, or Blob/ManifestUnknown when the repository does
        not hold it (the same answer whether the cache has it or not)."""
        if self.public(route.upstream):
            return
        self.check_repository(route, client)
        if self.referenced(route, digest):
            return
        up = self.upstreams[route.upstream]
        subject = f"{route.repository}@{digest}"
        if not self._decide(route.upstream, subject, client,
                            lambda: up.holds(route.repository, kind, digest, client)):  # fmt: skip
            error = BlobUnknown if kind == "blobs" else ManifestUnknown
            raise error(f"{digest} is not in {route.upstream}/{route.repository}", detail={"digest": digest})

    def referenced(self, route: Route, digest: str) -> bool:
        """Whether a manifest recorded for the repository is, or references, `digest` — or the
        blob `digest` was derived from (a re-encoded layer or variant manifest, transcoder.py):
        what the cache derived from a repository's content is that repository's content."""
        try:
            conn = self.store.index.conn()
            for subject in (digest, *(r[0] for r in conn.execute(_SOURCE, (digest,)).fetchall())):
                args = {"u": route.upstream, "r": route.repository, "d": subject}
                if conn.execute(_REFERENCED, args).fetchall():
                    return True
            return False
        except sqlite3.Error as exc:
            raise StoreError(f"index query failed: {exc}") from exc

    def record(self, upstream: str, repository: str, manifest: str) -> None:
        """Remember that `manifest` was fetched or served for the repository (best effort)."""
        self.store.index.best_effort(
            "INSERT OR IGNORE INTO repo_manifests (upstream, repository, manifest) VALUES (?, ?, ?)",
            [(upstream, repository, manifest)],
        )

    def prune(self) -> None:
        """Forget old decisions and records of manifests no longer stored."""
        with self.store.index.transaction() as db:
            db.execute("DELETE FROM access WHERE checked_at < ?", (self.clock() - KEEP_DECISIONS,))
            db.execute("DELETE FROM repo_manifests WHERE manifest NOT IN (SELECT digest FROM blobs)")

    def _key(self, client: Credential) -> str:
        return hmac.new(self._secret, client.header.encode(), hashlib.sha256).hexdigest()

    def _decide(self, upstream: str, subject: str, client: Credential, probe: Callable[[], bool]) -> bool:
        key = self._key(client)
        rows = self.store.index.query(
            "SELECT allowed, checked_at FROM access WHERE upstream = ? AND subject = ? AND credential = ?",
            (upstream, subject, key),
        )
        now = self.clock()
        if rows and now - rows[0]["checked_at"] < self.config.access_ttl:
            return bool(rows[0]["allowed"])
        try:
            allowed = probe()
        except UpstreamError as exc:
            if rows and rows[0]["allowed"]:
                log.warning("upstream %s unreachable; %s stays readable for a credential allowed "
                            "before: %s", upstream, subject, exc)  # fmt: skip
                return True
            raise
        self.store.index.best_effort(
            "INSERT INTO access VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "allowed = excluded.allowed, checked_at = excluded.checked_at",
            [(upstream, subject, key, int(allowed), now)],
        )
        return allowed


def _secret(path: str) -> bytes:
    """This cache's HMAC key for credentials, made once (first worker wins)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            with open(path, "rb") as fh:
                data = fh.read()
            if len(data) == 32:
                return data
            time.sleep(0.01)  # another worker is writing it
        raise StoreError(f"{path} is not a 32-byte key; remove it to make a new one") from None
    try:
        os.write(fd, os.urandom(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(path, "rb") as fh:
        return fh.read()
