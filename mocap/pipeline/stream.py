"""Streaming helpers of the pipeline: per-stage timing, the decoder thread and its bounded queue.

The decoder runs ahead of the model in its own thread (:class:`Prefetcher`), holding at most a
fixed number of frames, so memory stays flat in video length and only the time the pipeline
actually waits for frames counts against it (the ``decode_wait`` stage of :class:`StageTimer`).
"""

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

_END = object()


class StageTimer:
    """Wall-clock seconds per pipeline stage (thread-safe: the decoder adds from its thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)


class Prefetcher:
    """Decode in a background thread into a bounded queue, so the model never waits on decoding.

    At most ``maxsize`` frames are buffered. Errors of the decoder (e.g. MocapError) re-raise in the
    consumer; :meth:`close` stops the thread early (error, Ctrl-C). Time the consumer spends blocked
    on an empty queue is recorded as the ``decode_wait`` stage.
    """

    def __init__(self, frames: Iterator[Any], maxsize: int, timer: StageTimer) -> None:
        self._frames, self._timer = frames, timer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mocap-decode", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while True:
                t0 = time.perf_counter()
                item = next(self._frames, _END)
                self._timer.add("decode", time.perf_counter() - t0)
                if not self._put(item) or item is _END:
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)

    def __iter__(self) -> Iterator[Any]:
        while True:
            t0 = time.perf_counter()
            item = self._queue.get()
            self._timer.add("decode_wait", time.perf_counter() - t0)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
