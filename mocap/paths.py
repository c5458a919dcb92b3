"""Where mocap keeps downloaded weights, models and caches; writing files atomically.

Every file mocap writes goes to a temporary sibling first and is renamed into place, and every
write that fails for a reason of the machine (a full disk, a quota, a read-only folder) becomes one
:class:`~mocap.errors.MocapError` line from :func:`write_error`, whichever writer met it.
"""

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mocap.errors import MocapError


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; left as given when that user does not
    exist (``Path.expanduser`` raises there), so the caller's "does not exist" error names it."""
    return Path(os.path.expanduser(os.fspath(path)))


def mocap_home() -> Path:
    """Cache root: ``$MOCAP_HOME`` or ``~/.cache/mocap``."""
    env = os.environ.get("MOCAP_HOME")
    return user_path(env) if env else Path.home() / ".cache" / "mocap"


def atomic_path(path: Path) -> Path:
    """Temporary sibling of ``path`` to write to before ``os.replace`` renames it into place.

    The suffix is kept so that writers that pick a format from the extension still work.
    """
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


_TEMPORARY = re.compile(r"(^|/)\.([^/]+)\.partial-\d+(?=/|$|\.)")


class StorageError(MocapError):
    """The storage refused a write (full, over quota, file too large, read-only): every later
    write would fail too, so writers stop instead of reporting it once per file."""


_STORAGE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def write_error(path: str | Path, exc: OSError) -> MocapError:
    """The one-line error for a write of ``path`` that failed with ``exc`` (a
    :class:`StorageError` for a full or read-only disk); a staging folder or temporary name in
    ``path`` is shown as the name it was to get (``.clip.partial-12/x`` -> ``clip/x``)."""
    reason = exc.strerror or type(exc).__name__
    shown = _TEMPORARY.sub(r"\1\2", str(path))
    kind = StorageError if exc.errno in _STORAGE else MocapError
    return kind(f"cannot write {shown} ({reason}); free some space or choose another folder")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield :func:`atomic_path` of ``path`` to write; rename it onto ``path`` when the block ends.

    Readers never see half a file: if the block raises, ``path`` is left as it was and the
    temporary file is removed. An ``OSError`` of the block or of the rename (disk full, folder
    read-only) is raised as :func:`write_error`'s MocapError.

        with atomic_output(out) as tmp:
            tmp.write_text(text)
    """
    path = Path(path)
    tmp = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):  # e.g. the folder is missing or not a folder
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_output`; returns ``path``."""
    path = Path(path)
    with atomic_output(path) as tmp:  # (a clip name that was no UTF-8 is escaped, not fatal)
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
    return path


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (also when it belongs to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
