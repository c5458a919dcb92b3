"""Data of FeatUp pretraining: a folder of photos -> 256x192 crops through HMR2.0's own crop.

Every image of ``--images`` (recursively) becomes one crop made by
:func:`mocap.model.crop.crop_person`, the preprocessing the upsamplers see at inference:
``center`` takes the largest 3:4 window in the middle of the image, ``whole`` the whole image with
black borders. torch-free: the data-loader workers import only numpy and OpenCV.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from mocap.errors import MocapError

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CROPS = ("center", "whole")


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); MocapError when there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise MocapError(f"--images {root} is not a folder; give a folder of photos (e.g. COCO)")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise MocapError(
            f"no {'/'.join(IMAGE_SUFFIXES)} images in {root}; point --images at photos"
        )
    return paths


def crop_box(width: int, height: int, mode: str) -> tuple[float, float, float, float]:
    """The box handed to HMR2.0's crop: whole image, or its largest centred 3:4 window."""
    if mode == "whole":
        return (0.0, 0.0, float(width), float(height))
    w, h = min(width, height * 0.75), min(height, width / 0.75)
    x0, y0 = (width - w) / 2, (height - h) / 2
    return (x0, y0, x0 + w, y0 + h)


class ImageCrops:
    """Map-style dataset: index -> (3, 256, 192) float32 ImageNet-normalised RGB crop.

    Indices are ``(image, seed)`` pairs as yielded by
    :class:`~mocap.train.data.MixtureBatchSampler` (the seed is unused: no augmentation here).
    """

    def __init__(self, paths: list[Path], crop: str = "center") -> None:
        if crop not in CROPS:
            raise MocapError(f"--crop {crop!r} is unknown; use one of {', '.join(CROPS)}")
        self.paths, self.crop = paths, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> "np.ndarray":
        import cv2
        import numpy as np

        from mocap.model.crop import crop_person

        path = self.paths[item[0]]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise MocapError(f"cannot decode {path}; remove it from the --images folder")
        h, w = image.shape[:2]
        return crop_person(image, np.array(crop_box(w, h, self.crop))).image
