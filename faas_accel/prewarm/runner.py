"""One run of a schedule: read its source, prefetch every image in the background, record.

The run is recorded in the cache first (which refuses a scheduler without the lease), then
each image is prefetched with `"priority": "background"`; one image failing does not stop
the others. The result (what was fetched, bytes, seconds, errors) is stored with the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..cacheapi import CacheAPI, CacheAPIError
from .errors import PrewarmConfigError
from .loader import read_stack
from .plan import ImageResult, run_record
from .spec import ImagesSource, Limits, PredictedSource, Schedule, StackSource

log = logging.getLogger(__name__)


def source_images(schedule: Schedule, api: CacheAPI, environ: Mapping[str, str]) -> list[str]:
    """The images a schedule's source gives now; raises PrewarmConfigError or CacheAPIError."""
    src = schedule.source
    if isinstance(src, ImagesSource):
        return list(src.images)
    if isinstance(src, StackSource):
        return read_stack(src, environ)
    if isinstance(src, PredictedSource):
        return [p.image for p in api.predicted(budget=src.budget, horizon=src.horizon)]
    ranked = api.popular(src.top, window=src.window, min_pulls=src.min_pulls, half_life=src.half_life)
    return [p.image for p in ranked]


def run_schedule(
    schedule: Schedule,
    api: CacheAPI,
    *,
    environ: Mapping[str, str],
    holder: str,
    trigger: str,
    scheduled: float | None = None,
    request: int | None = None,
    limits: Limits | None = None,
    wait: float = 3600.0,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run `schedule` once and return the recorded result; raises CacheAPIError (code
    NOT_LEADER) when the cache refuses to start it. `limits` (the prewarm file's) bound the
    images prefetched at once and the budget the cache gives their blobs."""
    limits = limits or Limits()
    budget = {"concurrency": limits.concurrency, "bandwidth": limits.bandwidth}
    run_id = api.start_run(schedule.name, holder=holder, trigger=trigger, scheduled=scheduled,
                           request=request)  # fmt: skip
    started = clock()
    source_error = None
    try:
        images = source_images(schedule, api, environ)
    except (PrewarmConfigError, CacheAPIError) as exc:
        source_error, images = f"source: {exc}", []

    def one(image: str) -> ImageResult:
        try:
            progress = api.prefetch(
                image, wait=wait, platforms=schedule.platforms, background=True, pin=schedule.pin,
                schedule=schedule.name, limits=budget,
            )  # fmt: skip
        except CacheAPIError as exc:
            return ImageResult.failed(image, str(exc))
        return ImageResult.from_progress(progress.as_dict())

    with ThreadPoolExecutor(limits.concurrency, thread_name_prefix=f"prewarm-{schedule.name}") as pool:
        results = list(pool.map(one, images))
    result = run_record(results, pin=schedule.pin, started=started, finished=clock(),
                        source_error=source_error)  # fmt: skip
    result.update({"id": run_id, "name": schedule.name, "trigger": trigger, "scheduled": scheduled})
    try:
        api.finish_run(run_id, result)
    except CacheAPIError as exc:
        log.error("prewarm %s: could not record the result of run %d: %s", schedule.name, run_id, exc)
    return result
