"""Clip folders in ``OUT``: their names, who owns them, per-clip locks, staging and publishing.

A clip is written into a hidden staging folder ``OUT/.<clip>.partial-<pid>/`` (with a marker file
naming the process) and renamed to ``OUT/<clip>`` when complete. Around that:

- **names** (:func:`clip_name`) come from the resolved path and are never empty, ``.`` or ``..``;
- **ownership**: only a folder that mocap wrote (``run.json``, ``.done`` or the staging marker,
  :func:`is_mocap_output`) is ever replaced; anything else in its place is an error;
- **locks** (:class:`FileLock`): one process at a time converts a clip (``OUT/.<clip>.lock``,
  ``flock``: released by the kernel even when the holder is killed; the file is removed by its
  holder, and a waiter that locked a removed file tries again);
- **stale staging** (:func:`clean_stale`): staging folders and temporary files left by processes
  that no longer exist (SIGKILL, power loss) are removed by the next run, and a previous result
  moved aside by a publish that was killed halfway is put back.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from types import TracebackType

from mocap.errors import MocapError
from mocap.paths import pid_alive, user_path, write_error

DONE = ".done"
MARKER = ".mocap"  # written into every staging folder (and so every result): pid, host, time
LEFTOVER = re.compile(r"^\.(?P<clip>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)(?P<suffix>\.[^.]*)?$")


class ClipBusy(MocapError):
    """Another mocap process is converting this clip right now."""


class ClipFinished(MocapError):
    """The clip is finished already (and ``--overwrite`` was not given)."""


def clip_name(video: Path) -> str:
    """Output folder name of a clip: the file stem, or the folder name for an image folder.

    Taken from the resolved path, so ``.`` (inside an image folder) gives that folder's name;
    leading dots are dropped (``..mp4`` -> ``mp4``) so that a name is never empty, ``.``, ``..``
    or hidden; ``clip`` when nothing is left.
    """
    path = user_path(video).resolve()
    name = path.name if path.is_dir() else path.stem
    name = name.lstrip(".").strip() or path.name.lstrip(".").strip()
    return name or "clip"


def check_clip_name(name: str) -> str:
    """``name`` when it is a usable folder name inside ``OUT``; MocapError otherwise."""
    if not name or name.strip(".") == "" or "/" in name or "\\" in name or "\0" in name:
        raise MocapError(f"{name!r} cannot name a clip folder; give the clip a name with letters")
    return name


def is_done(out_dir: Path) -> bool:
    """True when ``out_dir`` holds a finished run (its ``.done`` marker exists)."""
    return (out_dir / DONE).is_file()


def is_mocap_output(out_dir: Path) -> bool:
    """True when ``out_dir`` is a folder that mocap wrote: run.json, .done or a staging marker."""
    return (
        out_dir.is_dir()
        and not out_dir.is_symlink()
        and any((out_dir / n).is_file() for n in ("run.json", DONE, MARKER))
    )


class FileLock:
    """An exclusive ``flock`` on ``path``, created and removed by its holder.

    ``FileLock(path).acquire(wait=False)`` raises :class:`ClipBusy` when another process holds it.
    Where ``fcntl`` is missing (Windows) locking is skipped.
    """

    def __init__(self, path: Path, what: str = "") -> None:
        self.path, self.what, self.fd = path, what or str(path), -1

    def acquire(self, wait: bool = False) -> "FileLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not Linux / macOS
            return self
        deadline = time.monotonic() + 600
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise write_error(self.path, exc) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                by = f" (pid {holder})" if holder.isdigit() else ""
                raise ClipBusy(
                    f"{self.what} is being converted by another mocap process{by}; "
                    "wait for it to finish or choose another -o"
                ) from None
            try:  # the previous holder may have removed the file while we waited
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                with contextlib.suppress(OSError):  # who holds it, for the others' message
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, str(os.getpid()).encode(), 0)
                self.fd = fd
                return self
            os.close(fd)
            if time.monotonic() > deadline:
                raise MocapError(f"could not lock {self.path}; remove it if no mocap is running")

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                self.path.unlink()  # before unlocking: a waiter then sees a removed file
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def clip_lock(output: Path, clip: str) -> FileLock:
    """Hold the lock of ``output/clip`` (ClipBusy when another process converts it)."""
    return FileLock(output / f".{clip}.lock", str(output / clip)).acquire(wait=False)


def staging_path(output: Path, clip: str) -> Path:
    """This process's staging folder for ``clip`` (``OUT/.<clip>.partial-<pid>``)."""
    return output / f".{clip}.partial-{os.getpid()}"


def make_staging(output: Path, clip: str) -> Path:
    """Create this process's empty staging folder for ``clip`` (marker inside), replacing ours."""
    staging = staging_path(output, clip)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        marker = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        (staging / MARKER).write_text(json.dumps(marker) + "\n")
    except BaseException as exc:  # a full disk, or SIGTERM/Ctrl-C before the caller holds it
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(staging, exc) from exc
        raise
    return staging


def abandoned(path: Path, pid: int, kind: str) -> bool:
    """A leftover of ours whose process is gone from this machine."""
    if pid == os.getpid() or pid_alive(pid):
        return False
    if not path.is_dir():
        return True
    if kind == "old" and not (path / MARKER).is_file():  # a result of an older mocap
        return is_mocap_output(path)
    try:
        marker = json.loads((path / MARKER).read_text())
        host = marker.get("host") if isinstance(marker, dict) else None
    except (OSError, ValueError):
        return not any(path.iterdir())  # killed between mkdir and the marker: empty
    return host in (None, socket.gethostname())


def clean_stale(output: Path, clip: str | None = None) -> list[str]:
    """Remove staging left by dead processes in ``output`` (of ``clip``, or of every clip).

    Staging folders (with mocap's marker, or empty), temporary ``.<name>.partial-<pid>.<ext>``
    files, and previous results moved aside (``.<clip>.old-<pid>``) by a publish that was killed:
    those are moved back when the clip folder is missing, else removed. Returns what was done.
    """
    done: list[str] = []
    try:
        entries = list(output.iterdir())
    except OSError:
        return done
    for path in entries:
        m = LEFTOVER.match(path.name)
        if m is None or (clip is not None and m["clip"] != clip):
            continue
        is_dir = path.is_dir() and not path.is_symlink()
        if (m["suffix"] is None) != is_dir:
            continue  # staging and old results are folders, temporary files have a suffix
        if not is_dir and m["clip"] != "manifest":
            continue  # the only temporary file mocap writes into OUT itself
        if not abandoned(path, int(m["pid"]), m["kind"]):
            continue
        final = output / m["clip"]
        if m["kind"] == "old" and is_mocap_output(path) and not final.exists():
            with contextlib.suppress(OSError):
                os.rename(path, final)
                done.append(f"restored {final} (a replaced result whose update was killed)")
                continue
        if m["kind"] == "old" and not is_mocap_output(path):
            continue
        if is_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        done.append(f"removed {path.name} left by process {m['pid']}, which no longer runs")
    return done


def publish(staging: Path, final: Path) -> None:
    """Rename the finished staging folder to ``final``, replacing an older result of mocap's.

    No exists-then-rename window: the old result is moved aside by a rename that fails when it
    is gone, the new one renamed in by a rename that fails when something new took the place
    (the old result is then put back). A folder mocap did not write is never replaced.
    """
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    moved = False
    if os.path.lexists(final):
        if not is_mocap_output(final):
            raise MocapError(
                f"{final} exists but was not written by mocap; not replaced (move it away or "
                "choose another -o)"
            )
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, old)
            moved = True
    try:
        os.rename(staging, final)
    except OSError as exc:
        if moved:
            with contextlib.suppress(OSError):
                os.rename(old, final)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise MocapError(
                f"{final} was created by someone else while this run was writing; "
                "this result was not published"
            ) from None
        raise write_error(final, exc) from exc
    if moved:
        shutil.rmtree(old, ignore_errors=True)
