"""Where mocap keeps downloaded weights, models and caches; writing files atomically."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def mocap_home() -> Path:
    """Cache root: ``$MOCAP_HOME`` or ``~/.cache/mocap``."""
    env = os.environ.get("MOCAP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mocap"


def atomic_path(path: Path) -> Path:
    """Temporary sibling of ``path`` to write to before ``os.replace`` renames it into place.

    The suffix is kept so that writers that pick a format from the extension still work.
    """
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield :func:`atomic_path` of ``path`` to write; rename it onto ``path`` when the block ends.

    Readers never see half a file: if the block raises, ``path`` is left as it was and the
    temporary file is removed.

        with atomic_output(out) as tmp:
            tmp.write_text(text)
    """
    path = Path(path)
    tmp = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
