"""One progress bar for a whole `mocap batch`: clips finished, and frames decoded as they go.

The sequential batch and the Ray driver both feed a :class:`BatchProgress`: frames as the pipeline
decodes them (``process_video``'s ``on_frames``; from a Ray worker through the driver's feed), the
frames of an attempt whose worker died taken back (its retry decodes them again), a clip when it
finishes. The bar draws only on a terminal: on a pipe or a CI log it is off (no carriage returns),
and the counts are kept all the same. While it shows, the ``mocap`` logger's lines are printed
above it, each on its own stream (information on stdout, warnings on stderr) as without a bar.
"""

import logging
import sys
import time
from types import TracebackType
from typing import TextIO, TypeGuard

log = logging.getLogger("mocap")
REDRAW = 0.5  # seconds between redraws for frames alone (a finished clip redraws at once)
FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} clips{postfix} [{elapsed}<{remaining}]"
)


class _AboveBar(logging.Handler):
    """A console handler of the ``mocap`` logger, writing through ``tqdm.write`` (above the bar)
    with the same level, filters, format and stream."""

    def __init__(self, inner: "logging.StreamHandler[TextIO]") -> None:
        super().__init__(inner.level)
        self.inner = inner
        self.filters = list(inner.filters)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.inner.format(record), file=self.inner.stream)
        except Exception:
            self.handleError(record)


class BatchProgress:
    """Clips finished out of ``clips``, frames decoded so far (the clips in flight included).

    Arguments:
        clips: the clips this bar counts.
        show: draw the bar (a terminal, not ``-q``); the counts are kept either way.
        stream: where the bar draws (default: stderr).
    """

    def __init__(self, clips: int, show: bool, stream: TextIO | None = None) -> None:
        from tqdm import tqdm

        self.done_frames = 0  # of the finished clips
        self.live: dict[str, int] = {}  # clip name -> frames of its attempt in flight
        self.started = self.drawn = time.monotonic()
        self.bar = tqdm(total=clips, desc="clips", unit="clip", bar_format=FORMAT,
                        file=stream or sys.stderr, disable=not show, dynamic_ncols=True)  # fmt: skip

    @property
    def frames(self) -> int:
        return self.done_frames + sum(self.live.values())

    def add_frames(self, name: str, count: int) -> None:
        """``count`` more frames of clip ``name`` decoded."""
        self.live[name] = self.live.get(name, 0) + count
        self._draw(now=False)

    def restart(self, name: str) -> None:
        """The attempt at ``name`` died: its frames no longer count (the retry decodes them)."""
        self.live.pop(name, None)
        self._draw(now=True)

    def finish(self, name: str, frames: int | None) -> None:
        """Clip ``name`` is finished (done, failed or skipped) with ``frames`` decoded frames."""
        self.live.pop(name, None)
        self.done_frames += frames or 0
        self.bar.update()
        self._draw(now=True)

    def _draw(self, now: bool) -> None:
        if self.bar.disable or (not now and time.monotonic() - self.drawn < REDRAW):
            return
        seconds = max(time.monotonic() - self.started, 1e-6)
        self.bar.set_postfix_str(f"{self.frames} frames, {self.frames / seconds:.1f}/s", False)
        self.bar.refresh()
        self.drawn = time.monotonic()

    def __enter__(self) -> "BatchProgress":
        if not self.bar.disable:  # print the logger's lines above the bar, not through it
            log.handlers = [_AboveBar(h) if _console(h) else h for h in log.handlers]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()
        log.handlers = [h.inner if isinstance(h, _AboveBar) else h for h in log.handlers]


def _console(handler: logging.Handler) -> "TypeGuard[logging.StreamHandler[TextIO]]":
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)
