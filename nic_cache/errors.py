"""Every error the cache raises, in one tree.

    NicCacheError
    ├── ConfigError                 bad nic-cache.yml / environment (names the key and line)
    ├── RegistryError               rendered as OCI error JSON, carries `code` and `status`
    │   ├── NameInvalid             400 NAME_INVALID
    │   ├── NameUnknown             404 NAME_UNKNOWN
    │   ├── ManifestUnknown         404 MANIFEST_UNKNOWN
    │   ├── ManifestInvalid         400 MANIFEST_INVALID
    │   ├── BlobUnknown             404 BLOB_UNKNOWN
    │   ├── DigestInvalid           400 DIGEST_INVALID
    │   ├── TagInvalid              400 TAG_INVALID
    │   ├── RangeNotSatisfiable     416 RANGE_INVALID
    │   ├── Unsupported             405 UNSUPPORTED
    │   ├── Unauthorized            401 UNAUTHORIZED
    │   ├── Denied                  403 DENIED
    │   ├── NoRoom                  503 UNAVAILABLE (no disk or budget for a fill; `reason`)
    │   └── UpstreamError           502 UPSTREAM_UNAVAILABLE (anything that went wrong upstream)
    │       ├── UpstreamUnavailable     connection refused, reset, timeout
    │       ├── UpstreamRejected        upstream answered with an unexpected status
    │       ├── DigestMismatch          upstream bytes do not hash to the digest asked for
    │       └── FillAborted             a fill another reader was following failed
    ├── StoreError                  the local blob store or index is unusable
    └── TranscodeError              a layer could not be re-encoded (never reaches a client:
                                    the original layer is served instead)

Third-party exceptions (requests, sqlite3) are mapped into this tree once, where they are
caught: `upstream.py` for requests, `store.py` for sqlite3.
"""

from __future__ import annotations


class NicCacheError(Exception):
    """Base of every error raised by nic_cache."""


class ConfigError(NicCacheError):
    """The configuration file or environment is invalid."""


class StoreError(NicCacheError):
    """The local store or its index cannot be used."""


class TranscodeError(NicCacheError):
    """A layer could not be re-encoded: corrupt gzip, unknown encoding, diff_id mismatch."""


class RegistryError(NicCacheError):
    """An error a registry client sees, as OCI error JSON."""

    code = "UNKNOWN"
    status = 500

    def __init__(self, message: str, *, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_json(self) -> dict[str, object]:
        """The OCI distribution error body for this error."""
        err: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return {"errors": [err]}


class NameInvalid(RegistryError):
    code, status = "NAME_INVALID", 400


class NameUnknown(RegistryError):
    code, status = "NAME_UNKNOWN", 404


class ManifestUnknown(RegistryError):
    code, status = "MANIFEST_UNKNOWN", 404


class ManifestInvalid(RegistryError):
    code, status = "MANIFEST_INVALID", 400


class BlobUnknown(RegistryError):
    code, status = "BLOB_UNKNOWN", 404


class DigestInvalid(RegistryError):
    code, status = "DIGEST_INVALID", 400


class TagInvalid(RegistryError):
    code, status = "TAG_INVALID", 400


class RangeNotSatisfiable(RegistryError):
    code, status = "RANGE_INVALID", 416


class Unsupported(RegistryError):
    code, status = "UNSUPPORTED", 405


class Unauthorized(RegistryError):
    code, status = "UNAUTHORIZED", 401


class Denied(RegistryError):
    code, status = "DENIED", 403


class NoRoom(RegistryError):
    """A blob cannot be stored: `reason` is "too_big" (larger than the cache keeps), "budget"
    (fills in flight take the room) or "disk_full". The mirror then streams it through
    uncached when it can; `stream` carries the upstream response already opened, if any."""

    code, status = "UNAVAILABLE", 503

    def __init__(self, message: str, *, reason: str, detail: object = None) -> None:
        super().__init__(message, detail=detail)
        self.reason = reason
        self.stream: object | None = None


class UpstreamError(RegistryError):
    """Something went wrong talking to an upstream registry."""

    code, status = "UPSTREAM_UNAVAILABLE", 502


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached (refused, reset, timed out)."""


class UpstreamRejected(UpstreamError):
    """The upstream answered with a status the cache cannot pass on as a known error."""

    def __init__(self, message: str, *, upstream_status: int, detail: object = None) -> None:
        super().__init__(message, detail=detail)
        self.upstream_status = upstream_status


class DigestMismatch(UpstreamError):
    """The upstream's bytes do not match the digest (or size) they were asked for."""

    code = "DIGEST_INVALID"


class FillAborted(UpstreamError):
    """The fill a reader was streaming from failed or vanished."""
