"""Test helper: record what a batch's progress bar receives (tests/test_batch.py, test_ray_batch.py)."""

import contextlib
import time
from collections.abc import Iterator

import pytest

from mocap.pipeline.batch_progress import BatchProgress


@contextlib.contextmanager
def watching_progress() -> Iterator[list[tuple[float, str, str, int | None]]]:
    """Record every frame count and finished clip the batch's progress bar receives."""
    events: list[tuple[float, str, str, int | None]] = []
    add_frames, finish = BatchProgress.add_frames, BatchProgress.finish

    def on_frames(bar: BatchProgress, name: str, count: int) -> None:
        events.append((time.time(), "frames", name, count))
        add_frames(bar, name, count)

    def on_finish(bar: BatchProgress, name: str, frames: int | None) -> None:
        events.append((time.time(), "finished", name, frames))
        finish(bar, name, frames)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BatchProgress, "add_frames", on_frames)
        mp.setattr(BatchProgress, "finish", on_finish)
        yield events
