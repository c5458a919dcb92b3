"""The ``mocap`` child process: start it, poll it without blocking, parse its progress, stop it.

No ``bpy`` here (and no mocap import): the operators in :mod:`.operators` own one
:class:`MocapJob` and call :meth:`MocapJob.poll` from a modal timer. A job is a queue of command
lines run one after the other (``mocap run`` then, for a chosen armature, ``mocap retarget``).
On POSIX the child writes into a pseudo-terminal, so that the pipeline shows its tqdm frame bar
(which it hides on a pipe); elsewhere a thread drains its pipe (so that it never blocks on a full
one) and stage lines give the progress as they come.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# the pipeline's frame bar (tqdm, unit "frame"): "clip:  40%|####      | 2/5 [00:01<00:02, 1.9frame/s]";
# other bars (a weights download: "... 1/3 [00:01<00:02, 1.0it/s]") are not the run's progress
_BAR = re.compile(r"(\d+)%\|[^|]*\|\s*(\d+)/(\d+)\s*\[[^\]]*frame")
# stage lines of `mocap run` -> rough progress (share of the whole run) and a label
_STAGES = (
    ("mocap: model:", 0.05, "loading the model"),
    ("mocap: camera:", 0.8, "camera and world"),
    ("feet in contact", 0.85, "foot contacts"),
    ("outputs in", 0.95, "writing files"),
    ("retarget", 0.97, "retargeting"),
)


def find_mocap(configured: str = "") -> str | None:
    """The mocap executable: the configured path when it is an executable file, else ``mocap``
    on PATH."""
    if configured:
        path = Path(configured).expanduser()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which("mocap")


def error_line(output: str) -> str:
    """The one line that says what went wrong: the CLI's ``mocap: error:`` line when present."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", output) if ln.strip()]
    for ln in reversed(lines):  # (a progress bar may precede it on the same line)
        if "mocap: error:" in ln:
            return ln.split("mocap: error:", 1)[1].strip()
    for ln in reversed(lines):  # a crash: its last line (the exception), never the traceback
        if "Error" in ln or "error" in ln or "Killed" in ln:
            return ln
    return lines[-1] if lines else "mocap stopped without saying why"


@dataclass
class Progress:
    """What the panel and the status bar show."""

    fraction: float = 0.0  # 0..1 over the whole job
    label: str = "starting"


@dataclass
class MocapJob:
    """Command lines run in order; ``poll()`` returns None while running, else the exit code."""

    commands: list[list[str]]
    weights: list[float] = field(default_factory=list)  # share of each command (sums to 1)
    output: str = ""
    progress: Progress = field(default_factory=Progress)
    _index: int = -1
    _proc: subprocess.Popen[bytes] | None = None
    _fd: int | None = None
    _done: float = 0.0  # share of the finished commands
    use_pty: bool = os.name == "posix"  # else a pipe, read by a thread
    _chunks: queue.Queue[bytes | None] | None = None  # the pipe's output (None: its end)
    _reader: threading.Thread | None = None  # copies the pipe into _chunks

    def __post_init__(self) -> None:
        if not self.weights:
            self.weights = [1.0 / len(self.commands)] * len(self.commands)
        self._next()

    def _next(self) -> None:
        self._close()
        if self._index >= 0:
            self._done += self.weights[self._index]
        self._index += 1
        cmd = self.commands[self._index]
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="80")
        if self.use_pty:
            import pty

            master, slave = pty.openpty()
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=slave,
                    stderr=slave,
                    env=env,
                    start_new_session=True,
                )
            except OSError:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            self._fd = master
        else:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=os.name == "posix",
                creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
            )  # fmt: skip
            self._chunks = queue.Queue()
            self._reader = threading.Thread(  # drains the pipe: a talkative child never blocks
                target=_pump, args=(self._proc.stdout, self._chunks), daemon=True
            )
            self._reader.start()
        self.progress.label = Path(cmd[0]).name + " " + (cmd[1] if len(cmd) > 1 else "")

    def _read(self) -> None:
        chunk = b""
        if self._fd is not None:
            try:
                while True:
                    part = os.read(self._fd, 65536)
                    if not part:
                        break
                    chunk += part
            except (BlockingIOError, OSError):  # nothing more now / the child closed the pty
                pass
        elif self._chunks is not None:
            if (
                self._reader is not None
                and self._proc is not None
                and self._proc.poll() is not None
            ):
                self._reader.join(2.0)  # every byte the finished command wrote is queued
            with contextlib.suppress(queue.Empty):
                while True:
                    chunk += self._chunks.get_nowait() or b""
        if chunk:
            text = chunk.decode("utf-8", "replace")
            self.output += text
            self._parse(text)

    def _parse(self, text: str) -> None:
        share = self.weights[self._index]
        for piece in re.split(r"[\r\n]+", text):
            bar = _BAR.search(piece)
            if bar:
                done, total = int(bar.group(2)), max(int(bar.group(3)), 1)
                self._set(0.05 + 0.75 * done / total, share, f"frame {done} of {total}")
                continue
            for marker, at, label in _STAGES:
                if marker in piece:
                    self._set(at, share, label)

    def _set(self, within: float, share: float, label: str) -> None:
        self.progress.fraction = max(self.progress.fraction, self._done + share * within)
        self.progress.label = label

    def poll(self) -> int | None:
        """Read the child's new output; None while running, else the job's exit code."""
        assert self._proc is not None
        self._read()
        code = self._proc.poll()
        if code is None:
            return None
        self._read()
        if code != 0 or self._index + 1 == len(self.commands):
            self._close()
            if code == 0:
                self.progress = Progress(1.0, "done")
            return code
        self._next()
        return None

    def cancel(self, grace: float = 5.0) -> None:
        """Stop the child (SIGTERM: mocap removes its unfinished files), then kill it and its
        process group if it has not stopped within ``grace`` seconds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                if os.name == "posix":
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    if os.name == "posix":
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pump(stream: IO[bytes], chunks: queue.Queue[bytes | None]) -> None:
    """Copy a pipe into ``chunks`` as the child writes it; close it at its end."""
    with contextlib.suppress(OSError, ValueError):
        while part := stream.read1(65536):  # type: ignore[attr-defined]
            chunks.put(part)
    chunks.put(None)
    stream.close()


def run_command(
    mocap: str,
    video: str,
    out: str,
    model: str,
    start: float,
    end: float,
    smooth_strength: float,
    foot_lock: str,
    fmt: str = "blend",
) -> list[str]:
    """``mocap run`` for the panel's settings (end <= start: to the end of the clip), writing one
    combined ``fmt`` scene (blend, or fbx for Blender 4.2-4.4)."""
    cmd = [mocap, "run", video, "-o", out, "--model", model, "--formats", fmt, "--combined"]
    cmd += ["--smooth-strength", f"{smooth_strength:g}", "--foot-lock", foot_lock]
    cmd += ["--no-report", "--overwrite"]
    if start > 0:
        cmd += ["--start", f"{start:g}"]
    if end > start:
        cmd += ["--end", f"{end:g}"]
    return cmd


def export_command(
    mocap: str, motion: str, out: str, foot_lock: str, fmt: str = "blend"
) -> list[str]:
    """``mocap export`` of an earlier run's motion.npz to one combined ``fmt`` scene."""
    return [mocap, "export", motion, "-o", out, "--formats", fmt, "--combined",
            "--foot-lock", foot_lock]  # fmt: skip


def retarget_command(
    mocap: str, motion: str, rig: str, out: str, foot_lock: str, bone_map: str = "auto"
) -> list[str]:
    """``mocap retarget`` onto the saved copy of the chosen armature; ``bone_map`` is a preset
    name, ``auto`` or a saved JSON map."""
    return [mocap, "retarget", motion, "--rig", rig, "-o", out, "--foot-lock", foot_lock,
            "--map", bone_map]  # fmt: skip


__all__: Sequence[str] = (
    "MocapJob",
    "Progress",
    "error_line",
    "export_command",
    "find_mocap",
    "retarget_command",
    "run_command",
)
