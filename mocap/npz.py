"""Opening a file that must be an ``.npz`` archive.

``np.load`` chooses what a file is by its first bytes, not its name: one that starts as a
``.npy`` array comes back as an ndarray, however it is named and whatever else it holds (a zip
directory at its end too). A reader that expects an archive gets a ValueError instead, which the
readers of untrusted files already turn into their one-line error.
"""

from os import PathLike

import numpy as np


def open_npz(path: str | PathLike[str]) -> np.lib.npyio.NpzFile:
    """``np.load(path)`` without pickles, refused (ValueError) unless it is an ``.npz`` archive;
    use it as a context manager, as ``np.load``."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single .npy array, not an .npz archive")
    return loaded
