"""User-facing errors.

Anything a user can cause (bad input, missing files, no network) is raised as :class:`MocapError`
with one sentence that names the problem and the fix. The CLI prints it as one line and exits
non-zero; everything else is a bug and keeps its traceback. Native libraries that print their own
chatter to file descriptor 2 (MediaPipe's start-up, Ray's C++ client) are run under
:func:`native_stderr_silenced`, so that line stays the only one.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class MocapError(Exception):
    """An error caused by input or environment, reported to the user as one line."""


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: what native code prints there too. Python's
    own errors are raised, not printed, so nothing a user needs is lost."""
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        saved = os.dup(2)
    except OSError:
        os.close(null)
        raise
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
