"""A folder of images as a video source: frames in natural name order at a fixed frame rate.

Used by :func:`mocap.pipeline.video.open_video` when it is given a folder: ``frame2.png`` comes
before ``frame10.png``, frame ``i`` is at ``i / fps`` seconds, EXIF orientation is applied, and
every image must share the first one's size.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from mocap.errors import MocapError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_FPS = 30.0  # also the rate of a video whose stream states none


def natural_key(path: Path) -> list[int | str]:
    """Sort key so that frame2.png comes before frame10.png."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def list_frames(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` in natural order; MocapError when there are none."""
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=natural_key,
    )
    if not files:
        raise MocapError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a video or a folder of frames"
        )
    return files


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR, upright; MocapError when the file does not decode."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if image is None:
        raise MocapError(f"cannot read image {path}; remove it from the folder or re-save it")
    return image


def iter_folder(
    files: list[Path],
    fps: float,
    size: tuple[int, int],
    start: float | None = None,
    end: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time, image)`` of the files with ``start <= i / fps < end``, reading only those.

    Arguments:
        files: the images in order (:func:`list_frames`).
        fps: frame rate of the folder.
        size: (width, height) every image must have (the first one's).
    Raises:
        MocapError: an image does not decode or has another size.
    """
    width, height = size
    for i, path in enumerate(files):
        time = i / fps
        if start is not None and time < start - 1e-6:
            continue  # skip reading images before the range
        if end is not None and time >= end - 1e-6:
            return
        image = read_image(path)
        if image.shape[:2] != (height, width):
            raise MocapError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but {files[0]} is "
                f"{width}x{height}; all images of a folder must share one size"
            )
        yield time, image
