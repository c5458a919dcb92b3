"""The worker side of `mocap batch --ray`: the Ray actors that convert clips and carry progress.

A :class:`ClipWorker` loads the engines on its first clip and runs
:func:`mocap.pipeline.batch_cmd.convert_clip` on each clip the driver gives it (one code path for a
clip, sequential or not). While the clip runs it tells the :class:`ProgressFeed` (one small actor
per batch, no CPU reserved) the frames it decoded and the lines it logged, without waiting; the
driver (:mod:`mocap.pipeline.ray_batch`) drains the feed a few times a second. Going through Ray
rather than files in OUT needs no shared-filesystem polling, and the lines of an attempt whose
worker died are kept for the clip's log.
"""

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mocap.pipeline.batch_cmd import ClipOutcome
    from mocap.pipeline.clip_log import LogLine
    from mocap.pipeline.config import RunSettings

log = logging.getLogger("mocap")


@dataclass
class WorkerReport:
    """One clip's result from a worker: the outcome (its log lines inside) and the model label."""

    outcome: "ClipOutcome"
    model: str = ""


class ProgressFeed:
    """A Ray actor's body: what the workers say while their clips run, until the driver drains it.

    Calls from one worker are run in the order sent, one at a time; the workers never wait for
    them (a call that fails is dropped: progress must never fail a clip).
    """

    def __init__(self) -> None:
        self.frames: dict[tuple[str, int], int] = {}  # (clip, attempt) -> frames decoded
        self.lines: list[tuple[str, int, LogLine]] = []

    def add_frames(self, name: str, attempt: int, count: int) -> None:
        self.frames[name, attempt] = self.frames.get((name, attempt), 0) + count

    def add_line(self, name: str, attempt: int, line: "LogLine") -> None:
        self.lines.append((name, attempt, line))

    def drain(self) -> tuple[dict[tuple[str, int], int], list[tuple[str, int, "LogLine"]]]:
        """Everything said since the last drain."""
        said, self.frames, self.lines = (self.frames, self.lines), {}, []
        return said


class ClipWorker:
    """A Ray actor's body: loads the engines on its first clip and keeps them for the next ones."""

    def __init__(self, settings: "RunSettings", level: int, cwd: str, feed: Any) -> None:
        from mocap.pipeline.batch_cmd import engine_loader

        if os.path.isdir(cwd):  # relative inputs / OUT resolve as on the driver (shared storage)
            os.chdir(cwd)
        stream = logging.StreamHandler()  # also in Ray's worker log files (docs/ray.md)
        stream.setFormatter(logging.Formatter("mocap: %(levelname)s: %(message)s"))
        log.handlers[:] = [stream]
        log.setLevel(level)
        log.propagate = False
        self.settings, self.feed = settings, feed
        self.engines, self.loaded = engine_loader(settings)

    def where(self) -> tuple[int, str, str]:
        """This worker's process id, host and Ray node id: its staging is
        ``OUT/.<clip>.partial-<pid>``; the clip's log names the worker."""
        import ray

        return os.getpid(), socket.gethostname(), ray.get_runtime_context().get_node_id()

    def convert(self, clip: str, name: str, out: str, started: float, attempt: int) -> WorkerReport:
        from mocap.pipeline.batch_cmd import convert_clip

        sent: list[Any] = []  # the last call to the feed

        def tell(method: Any, value: Any) -> None:
            with contextlib.suppress(Exception):  # the feed is gone: the clip goes on
                sent[:] = [method.remote(name, attempt, value)]

        outcome = convert_clip(
            Path(clip), name, Path(out), self.settings, self.engines, started,
            on_frames=lambda n: tell(self.feed.add_frames, n),
            on_line=lambda line: tell(self.feed.add_line, line),
        )  # fmt: skip
        if sent:  # the feed runs calls in order: once the last is in, all this clip's progress is,
            import ray  # before the driver hears the result

            with contextlib.suppress(Exception):
                ray.get(sent[0], timeout=5)
        model = self.loaded[0].model_label if self.loaded else ""
        return WorkerReport(outcome, model)
