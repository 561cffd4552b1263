"""The inference log: every prediction's features, score, version and time, as Parquet in S3.

Rows are appended to an in-memory buffer on the request path (a list append under a lock) and a
background thread writes them to ``inference/date=YYYY-MM-DD/`` when ``flush_rows`` are waiting or
``flush_seconds`` have passed. When S3 is down the rows stay buffered, up to ``buffer_rows``; rows
beyond that are dropped and counted, and the endpoint keeps serving. The drift DAG reads this log.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from include.continuous_training.config import Settings

log = logging.getLogger(__name__)


class InferenceLog:
    def __init__(
        self,
        settings: Settings,
        columns: Callable[[], list[str]],
        client_factory: Callable[[], Any] | None = None,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._columns = columns
        self._client_factory = client_factory or (lambda: _s3_client(settings))
        self._client: Any = None
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._worker = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._sequence = 0
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Buffer rows (never blocks on S3); rows over the buffer bound are dropped and counted."""
        with self._lock:
            room = self.settings.inference_buffer_rows - len(self._rows)
            accepted = rows[: max(room, 0)]
            self._rows.extend(accepted)
            waiting = len(self._rows)
        lost = len(rows) - len(accepted)
        if lost:
            self.dropped += lost
            self._on_dropped(lost)
        if waiting >= self.settings.inference_flush_rows:
            self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def _run(self) -> None:
        last_flush = time.monotonic()
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=max(self.settings.inference_flush_seconds, backoff))
            self._wake.clear()
            due = time.monotonic() - last_flush >= self.settings.inference_flush_seconds
            if self._rows and (due or len(self._rows) >= self.settings.inference_flush_rows):
                backoff = 0.0 if self.flush() else min(max(backoff * 2, 1.0), 30.0)
                last_flush = time.monotonic()

    def flush(self) -> bool:
        """Write what is buffered as one Parquet object; on failure keep the rows (bounded)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return True
        try:
            self._write(rows)
        except Exception as error:  # S3 down or refusing: keep serving, keep the rows while there is room
            log.warning("inference log: writing %d rows failed (%s); keeping them buffered", len(rows), error)
            self._client = None
            with self._lock:
                keep = rows[: max(self.settings.inference_buffer_rows - len(self._rows), 0)]
                self._rows = keep + self._rows
            lost = len(rows) - len(keep)
            if lost:
                self.dropped += lost
                self._on_dropped(lost)
            return False
        self.written += len(rows)
        self._on_written(len(rows))
        return True

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = self._columns()
        table = pa.table({name: [row.get(name) for row in rows] for name in names})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        now = datetime.now(UTC)
        self._sequence += 1
        key = (
            f"{self.settings.inference_prefix}date={now:%Y-%m-%d}/"
            f"{now:%H%M%S}-{self._worker}-{self._sequence:06d}.parquet"
        )
        if self._client is None:
            self._client = self._client_factory()
        self._client.put_object(Bucket=self.settings.s3_bucket, Key=key, Body=buffer.getvalue())

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def _s3_client(settings: Settings) -> Any:
    """Short timeouts and few retries: an S3 outage must not stall the flush thread for minutes."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
