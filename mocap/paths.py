"""Where mocap keeps downloaded weights, models and caches."""

import os
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
