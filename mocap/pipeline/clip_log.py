"""A batch clip's log, kept in ``OUT/logs/<clip>.log``: the lines logged while it was converted.

:func:`mocap.pipeline.batch_cmd.convert_clip` captures the ``mocap`` logger's records around the
clip (:func:`capture_log`), in the sequential batch and on every Ray worker alike; the batch (under
Ray: the driver) writes the file after each attempt, whole, through a temporary name and a rename,
so a reader never sees half a file. A clip whose Ray worker died is retried: its log then holds the
dead attempt's lines (those that reached the driver), a line saying it was retried, and the next
attempt's lines. The last line is the outcome (done or failed). A finished clip that a later batch
skips keeps the log of the run that converted it. The temporary files of a batch killed while it
wrote a log are removed by the next batch (:func:`clean_stale_logs`).
"""

import contextlib
import logging
import logging.handlers
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mocap.errors import MocapError

log = logging.getLogger("mocap")
LOGS = "logs"  # OUT/logs/: a name no batch gives a clip (batch_cmd.output_names)
MAX_LINES = 10_000  # per attempt; a clip that logs more keeps its first lines


@dataclass(frozen=True)
class LogLine:
    """One log record: when (seconds since the epoch), its level (``logging.INFO``...), its text."""

    time: float
    level: int
    message: str

    def text(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        return f"{stamp} {logging.getLevelName(self.level).lower()}: {self.message}"


def note(level: int, message: str) -> LogLine:
    """A line written by the batch itself (a retry, the outcome), stamped now."""
    return LogLine(time.time(), level, message)


class _Capture(logging.handlers.BufferingHandler):
    """Keeps every record as a :class:`LogLine` and hands it to ``tap`` as it comes. A
    BufferingHandler because run.py holds back only the printing handlers while it writes a
    clip's files: the lines of a clip whose writing failed are kept here all the same."""

    def __init__(self, tap: Callable[[LogLine], None] | None) -> None:
        super().__init__(capacity=MAX_LINES)
        self.lines: list[LogLine] = []
        self.tap = tap

    def shouldFlush(self, record: logging.LogRecord) -> bool:  # noqa: N802 (logging's name)
        return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = LogLine(record.created, record.levelno, record.getMessage())
        except Exception:  # a record that cannot be formatted: logging's own report
            self.handleError(record)
            return
        if len(self.lines) < MAX_LINES:
            self.lines.append(line)
        if self.tap is not None:
            self.tap(line)


@contextmanager
def capture_log(tap: Callable[[LogLine], None] | None = None) -> Iterator[list[LogLine]]:
    """Collect what the ``mocap`` logger emits inside the block into the yielded list (and pass
    each line to ``tap``: a Ray worker sends them to the driver as they come)."""
    handler = _Capture(tap)
    log.addHandler(handler)
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)


def log_path(out: Path, name: str) -> Path:
    """Where clip ``name`` of a batch into ``out`` keeps its log."""
    return out / LOGS / f"{name}.log"


def write_clip_log(out: Path, name: str, lines: list[LogLine]) -> Path | None:
    """Write ``lines`` as ``OUT/logs/<name>.log`` (temporary file, then rename); a log that cannot
    be written is one warning, never a failed clip. Returns the path, or None when not written."""
    from mocap.paths import write_text_atomic

    path = log_path(out, name)
    try:
        path.parent.mkdir(exist_ok=True)
        write_text_atomic(path, "".join(f"{line.text()}\n" for line in lines))
    except OSError as exc:  # OUT/logs is a file, or OUT vanished
        log.warning("%s: its log was not written (%s: %s)", name, path, exc.strerror or exc)
        return None
    except MocapError as exc:  # a full disk, a read-only folder
        log.warning("%s: its log was not written (%s)", name, exc)
        return None
    return path


def clean_stale_logs(out: Path) -> list[str]:
    """Remove the temporary logs (``OUT/logs/.<clip>.partial-<pid>.log``) left by batches that were
    killed while writing one: only mocap's temporary name, and only when its process no longer runs
    on this machine, decided as for clip staging (:func:`mocap.pipeline.staging.clean_stale`).
    Returns what was done."""
    from mocap.pipeline.staging import LEFTOVER, abandoned

    done: list[str] = []
    try:
        entries = list((out / LOGS).iterdir())
    except OSError:  # no OUT/logs yet (or not a folder)
        return done
    for path in entries:
        m = LEFTOVER.match(path.name)
        if m is None or m["kind"] != "partial" or m["suffix"] != ".log" or path.is_dir():
            continue
        if not abandoned(path, int(m["pid"]), m["kind"]):
            continue
        with contextlib.suppress(OSError):  # removed meanwhile by another batch
            path.unlink()
            done.append(
                f"removed {LOGS}/{path.name} left by process {m['pid']}, which no longer runs"
            )
    return done
