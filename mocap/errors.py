"""User-facing errors.

Anything a user can cause (bad input, missing files, no network) is raised as :class:`MocapError`
with one sentence that names the problem and the fix. The CLI prints it as one line and exits
non-zero; everything else is a bug and keeps its traceback.
"""


class MocapError(Exception):
    """An error caused by input or environment, reported to the user as one line."""
