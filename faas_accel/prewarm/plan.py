"""Pure bookkeeping of prewarm runs and plans: per-image results, a run's state and totals.

The cache answers a prefetch with its progress document and a dry run with its plan
document (nic_cache/prefetch.py); these functions turn lists of them into what a run
records and what `faas-accel prewarm plan` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ImageResult:
    """What prewarming one image did."""

    image: str
    state: str  # done | failed | running (still filling when the run stopped waiting)
    digest: str | None = None
    blobs: int = 0
    blobs_fetched: int = 0  # not in the cache when the run started
    bytes: int = 0
    bytes_fetched: int = 0
    seconds: float = 0.0
    errors: tuple[str, ...] = ()

    @classmethod
    def from_progress(cls, doc: Mapping[str, Any]) -> ImageResult:
        """From the cache's answer to `POST /api/v1/prefetch`."""
        blobs, cached = int(doc.get("blobs_total") or 0), int(doc.get("blobs_cached_before") or 0)
        done = int(doc.get("bytes_done") or 0)
        return cls(
            image=str(doc.get("image")),
            state=str(doc.get("state") or "failed"),
            digest=doc.get("digest"),
            blobs=blobs,
            blobs_fetched=max(0, int(doc.get("blobs_done") or 0) - cached),
            bytes=int(doc.get("bytes_total") or 0),
            bytes_fetched=max(0, done - int(doc.get("bytes_cached_before") or 0)),
            seconds=float(doc.get("seconds") or 0.0),
            errors=tuple(str(e) for e in doc.get("errors") or ()),
        )

    @classmethod
    def failed(cls, image: str, error: str) -> ImageResult:
        """An image the cache could not even be asked about."""
        return cls(image=image, state="failed", errors=(error,))


def run_state(results: Sequence[ImageResult], source_error: str | None) -> str:
    """`failed` if the source could not be read or every image failed; `partial` if some
    did not finish; else `done` (also when the source gave no image)."""
    if source_error is not None:
        return "failed"
    unfinished = [r for r in results if r.state != "done"]
    if results and all(r.state == "failed" for r in results):
        return "failed"
    return "partial" if unfinished else "done"


def run_record(
    results: Sequence[ImageResult],
    *,
    pin: bool,
    started: float,
    finished: float,
    source_error: str | None = None,
) -> dict[str, Any]:
    """The result a run stores in the cache: what it fetched, bytes, time and errors."""
    errors = [f"{r.image}: {e}" for r in results for e in r.errors]
    if source_error is not None:
        errors.insert(0, source_error)
    return {
        "state": run_state(results, source_error),
        "pin": pin,
        "source_error": source_error,
        "started": started,
        "finished": finished,
        "seconds": round(finished - started, 3),
        "images_total": len(results),
        "images_done": sum(1 for r in results if r.state == "done"),
        "blobs_fetched": sum(r.blobs_fetched for r in results),
        "bytes_fetched": sum(r.bytes_fetched for r in results),
        "errors": errors,
        "images": [asdict(r) | {"errors": list(r.errors)} for r in results],
    }


def plan_totals(plans: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Totals over dry-run plans, each blob once however many images share it."""
    seen: dict[str, tuple[int, bool]] = {}
    images = 0
    for plan in plans:
        images += 1
        for blob in plan.get("blobs") or ():
            seen[str(blob["digest"])] = (int(blob.get("size") or 0), bool(blob.get("cached")))
    missing = [size for size, cached in seen.values() if not cached]
    return {
        "images": images,
        "blobs": len(seen),
        "blobs_missing": len(missing),
        "bytes": sum(size for size, _ in seen.values()),
        "bytes_missing": sum(missing),
    }
