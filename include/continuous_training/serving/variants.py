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


class ShadowScorer:
    """A bounded queue of :class:`ShadowJob` and the one thread that scores them with ``score``."""

    def __init__(self, size: int, score: Callable[[ShadowJob], None], on_dropped: Callable[[], None]) -> None:
        self._jobs: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=size)
        self._score = score
        self._on_dropped = on_dropped
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
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._score(job)
            except Exception:  # a scoring bug must not end the thread: the next job may be fine
                log.exception("shadow scoring of %s version %s failed", job.variant, job.model.version)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the jobs already queued (at most ``timeout`` seconds)."""
        if not self._thread.is_alive():
            return
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            return  # still busy after the timeout: the thread is a daemon and ends with the process
        self._thread.join(timeout=timeout)
