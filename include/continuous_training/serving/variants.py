"""Scoring off the response path: the variant that did not answer a request scores it in the background.

In ``shadow`` mode the champion answers every request and the candidate scores a sample of them; in
``canary`` mode the variant that did not answer a record scores a sample too, so both scores of the
same live request reach the inference log (same ``prediction_id``, ``served=false`` for this one).
Jobs wait in a bounded queue served by one thread per worker: when the queue is full the sample
is dropped and counted (``ct_shadow_dropped_total``), never waited for, so a slow or failing
variant costs the caller nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.continuous_training.serving.model_store import ServedModel

log = logging.getLogger(__name__)
VARIANTS = ("champion", "candidate")


@dataclass(frozen=True)
class ShadowJob:
    """One request's records for ``model`` to score off the path (their ids are the answered ones)."""

    model: ServedModel
    variant: str  # "champion" or "candidate": which of the two ``model`` is
    records: list[dict[str, Any]]
    prediction_ids: list[str]
    predicted_at: float
    # The records already encoded for ``model`` (the champion's matrix, when both encode alike), and
    # how long that took: the variant's latency is that encoding plus its own prediction.
    matrix: Any = None
    encoded_seconds: float = 0.0


class ShadowScorer:
    """A bounded queue of :class:`ShadowJob` and the one thread that scores them with ``score``.

    The thread lets jobs gather for ``linger`` seconds after the first, then hands ``score`` what is
    waiting, up to ``max_batch`` consecutive jobs of the same model and variant: one prediction call
    for several requests. A prediction call releases the GIL several times, and each time the request
    thread and this one trade it; one call per batch instead of one per request keeps that churn off
    the request path under load (off-path cost figures: the serving rows of ``make bench``). ``score``
    times the first job of a batch alone, so the logged latencies stay single-request ones.
    """

    def __init__(
        self,
        size: int,
        score: Callable[[list[ShadowJob]], None],
        on_dropped: Callable[[], None],
        max_batch: int = 256,
        linger: float = 0.02,
    ) -> None:
        self._jobs: queue.Queue[ShadowJob | object] = queue.Queue(maxsize=size)
        self._score = score
        self._on_dropped = on_dropped
        self._max_batch = max_batch
        self._linger = linger
        self._thread = threading.Thread(target=self._run, name="shadow-scoring", daemon=True)
        self.dropped = 0

    def submit(self, job: ShadowJob) -> bool:
        """Queue ``job`` without waiting; False (and counted) when the queue is full."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            self._on_dropped()
            return False
        return True

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        held: ShadowJob | object | None = None  # taken from the queue, but not part of the last batch
        while True:
            first = held if held is not None else self._jobs.get()
            held = None
            if not isinstance(first, ShadowJob):
                return  # _STOP
            batch = [first]
            if self._linger and self._jobs.qsize() < self._max_batch:
                time.sleep(self._linger)
            while len(batch) < self._max_batch:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, ShadowJob) or more.model is not first.model or more.variant != first.variant:
                    held = more
                    break
                batch.append(more)
            try:
                self._score(batch)
            except Exception:  # a scoring bug must not end the thread: the next job may be fine
                log.exception("shadow scoring of %s version %s failed", first.variant, first.model.version)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the jobs already queued (at most ``timeout`` seconds)."""
        if not self._thread.is_alive():
            return
        try:
            self._jobs.put(_STOP, timeout=timeout)
        except queue.Full:
            return  # still busy after the timeout: the thread is a daemon and ends with the process
        self._thread.join(timeout=timeout)


_STOP = object()
