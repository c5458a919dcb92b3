"""A folder of images as a video source: frames in natural name order at a fixed frame rate.

Used by :func:`mocap.pipeline.video.open_video` when it is given a folder: ``frame2.png`` comes
before ``frame10.png``, frame ``i`` is at ``i / fps`` seconds, EXIF orientation is applied, and
every image must share the first one's size. An image that does not decode, or whose file is cut
short (a JPEG without its end marker, a PNG without its last chunk: a copy that was interrupted),
is skipped, as a damaged video frame is, and one warning names them at the end.
"""

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from mocap.errors import MocapError

log = logging.getLogger("mocap.pipeline.video")  # the video source's warnings (held by callers)
# (file magic, marker after which the image data starts, marker of a complete file after it)
_COMPLETE = (
    (b"\xff\xd8", b"\xff\xda", b"\xff\xd9"),  # JPEG: start of scan ... end of image
    (b"\x89PNG", b"IDAT", b"IEND"),  # PNG: image data ... end chunk
)


def cut_short(data: bytes) -> bool:
    """True when JPEG or PNG bytes lack the end marker after their image data (a cut copy).

    Data after the end marker (camera trailers) is fine; other formats are left to the decoder.
    """
    for magic, start, end in _COMPLETE:
        if data.startswith(magic):
            begin = data.find(start)
            return begin < 0 or data.find(end, begin) < 0
    return False


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
    """(H, W, 3) uint8 BGR, upright; MocapError when the file does not decode or is cut short."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MocapError(f"cannot read image {path} ({exc.strerror}); check the file") from None
    if cut_short(data):
        raise MocapError(f"image {path} is cut short (an interrupted copy?); re-save it")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF
    if image is None:
        raise MocapError(f"cannot read image {path}; remove it from the folder or re-save it")
    return image


def first_readable(files: list[Path]) -> tuple[int, np.ndarray]:
    """Index and pixels of the first image of ``files`` that decodes; MocapError when none does."""
    for i, path in enumerate(files):
        try:
            return i, read_image(path)
        except MocapError:
            continue
    raise MocapError(
        f"none of the {len(files)} images in {files[0].parent} can be read; check the folder"
    )


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
    Images that do not decode or are cut short are skipped (their time stays empty) and named
    in one warning when the iteration ends.

    Raises:
        MocapError: an image has another size than the first.
    """
    width, height = size
    skipped: list[str] = []
    try:
        for i, path in enumerate(files):
            time = i / fps
            if start is not None and time < start - 1e-6:
                continue  # skip reading images before the range
            if end is not None and time >= end - 1e-6:
                return
            try:
                image = read_image(path)
            except MocapError:
                skipped.append(path.name)
                continue
            if image.shape[:2] != (height, width):
                raise MocapError(
                    f"{path} is {image.shape[1]}x{image.shape[0]} but the folder's first image is "
                    f"{width}x{height}; all images of a folder must share one size"
                )
            yield time, image
    finally:
        if skipped:
            names = ", ".join(skipped[:3]) + (
                f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            )
            log.warning(
                "%s: skipped %d image(s) that do not decode or are cut short (%s)",
                files[0].parent,
                len(skipped),
                names,
            )
