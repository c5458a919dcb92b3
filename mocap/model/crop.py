"""HMR2.0 preprocessing: person box -> normalised 256x192 crop, and the crop <-> image mapping.

Identical (to float32 rounding, < 1e-4 in normalised units) to the crops 4D-Humans' demo feeds
HMR2.0 (``ViTDetDataset``; reference-spec section 5):

1. the box is taken in float32, as 4D-Humans stores it: centre = box midpoint; its width and
   height go through HMR2.0's ``scale = side / 200`` and back (float32); the box is enlarged
   (never shrunk) to the 192:256 aspect and the crop is the square of side
   ``size = max(h, w * 256 / 192)`` around the centre (no 2.5x rescale);
2. when the crop downsamples by d = size / 256 / 2 > 1.1, the frame is first blurred with
   skimage's ``gaussian`` (sigma (d - 1) / 2 over rows and columns, none across channels, radius
   ``int(4 sigma + 0.5)``, edge pixels repeated), computed in float64, and the float64 result is
   warped; otherwise the uint8 frame is warped and the crop is rounded to uint8, as OpenCV does;
3. the affine image -> patch is OpenCV's solution for three float32 point pairs (centre ->
   (128, 128), centre + (0, size/2) -> (128, 256), centre + (size/2, 0) -> (256, 128)); the
   warp is bilinear on OpenCV's 1/32-pixel grid, zeros outside the frame, into a 256x256 patch
   of which columns 32:224 are kept (HMR2.0 slices its input so; warping straight into a
   192-wide crop would move that sampling grid);
4. BGR -> RGB and ImageNet normalisation ``(x - 255 mean) / (255 std)`` in float32.

Coordinates are pixel centres (OpenCV's convention): crop pixel (u, v), u in [0, 192), maps to
image pixel ``center + (u - 96, v - 128) * size / 256``. :class:`Crop` carries both directions so
the image transform and the coordinate transform cannot drift apart.

The blur is applied to the part of the frame the crop reads (plus the kernel radius), not to the
whole frame: the same numbers (the filter is separable and position-independent), much cheaper
for a small person in a 4K frame.
"""

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from mocap.errors import MocapError

CROP_HEIGHT, CROP_WIDTH = 256, 192
PATCH = 256  # HMR2.0 warps to a 256x256 patch and keeps columns 32:224
PATCH_LEFT = (PATCH - CROP_WIDTH) // 2
ASPECT = CROP_WIDTH / CROP_HEIGHT
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# 4D-Humans' constants: 255 * mean / std in float64, applied to a float32 crop (float32 result).
_MEAN_255 = (255.0 * np.array([0.485, 0.456, 0.406])).astype(np.float32)
_STD_255 = (255.0 * np.array([0.229, 0.224, 0.225])).astype(np.float32)
BLUR_ABOVE = 1.1  # downsampling factor above which the frame is anti-aliased first
TRUNCATE = 4.0  # Gaussian radius in sigmas (skimage / scipy default)


def crop_to_image(points: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """Crop pixels (..., 2) (x in [0, 192), y in [0, 256)) -> image pixels (..., 2)."""
    offset = np.array([CROP_WIDTH / 2, CROP_HEIGHT / 2])
    return (np.asarray(points, np.float64) - offset) * (size / PATCH) + np.asarray(center)


def image_to_crop(points: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """Image pixels (..., 2) -> crop pixels (..., 2); inverse of :func:`crop_to_image`."""
    offset = np.array([CROP_WIDTH / 2, CROP_HEIGHT / 2])
    return (np.asarray(points, np.float64) - np.asarray(center)) * (PATCH / size) + offset


@dataclass
class Crop:
    """One person's network input and where it came from.

    Attributes:
        image: (3, 256, 192) float32, RGB, ImageNet-normalised.
        center: (2,) crop centre in image pixels (x, y).
        size: side in image pixels of the square crop (HMR2.0's ``box_size``).
    """

    image: np.ndarray
    center: np.ndarray
    size: float

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) -> image pixels (..., 2)."""
        return crop_to_image(points, self.center, self.size)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) -> crop pixels (..., 2)."""
        return image_to_crop(points, self.center, self.size)


@dataclass
class CropBatch:
    """Crops of several people in one image.

    Attributes:
        images: (N, 3, 256, 192) float32 normalised crops.
        centers: (N, 2) crop centres, image pixels.
        sizes: (N,) crop sides, image pixels.
    """

    images: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray


def box_to_crop(box_xyxy: np.ndarray) -> tuple[np.ndarray, float]:
    """Box (4,) x1, y1, x2, y2 -> (centre (2,), side of the square crop), enlarged to 192:256.

    Float32 arithmetic where 4D-Humans has it: a different last bit of the side moves OpenCV's
    1/32-pixel sampling grid at a few rows, which changes those rows by up to a grey level.
    """
    box = np.asarray(box_xyxy, np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise MocapError(f"person box {box_xyxy!r} is not 4 finite numbers; pass x1, y1, x2, y2")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise MocapError(f"person box {box.tolist()} is empty; pass x1 < x2 and y1 < y2")
    b = box.astype(np.float32)
    center = (b[2:] + b[:2]) / np.float32(2.0)
    w, h = (b[2:] - b[:2]) / np.float32(200.0) * np.float32(200.0)  # HMR2.0's "scale", float32
    if h / w < CROP_HEIGHT / CROP_WIDTH:  # wider than 192:256: the width decides
        size = max(float(w) * CROP_HEIGHT / CROP_WIDTH, float(h))
    else:
        size = float(h)
    return center.astype(np.float64), size


def crop_person(image_bgr: np.ndarray, box_xyxy: np.ndarray) -> Crop:
    """HMR2.0 crop of the person in ``box_xyxy``.

    Arguments:
        image_bgr: (H, W, 3) uint8 frame, BGR (OpenCV / PyAV ``bgr24``).
        box_xyxy: (4,) person box in pixels.
    Returns:
        the normalised crop with its centre and size.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise MocapError(
            f"expected an (H, W, 3) uint8 BGR image, got {image_bgr.dtype} {image_bgr.shape}; "
            "decode frames as bgr24"
        )
    center, size = box_to_crop(box_xyxy)
    patch = _warp(image_bgr, center, size)[:, PATCH_LEFT : PATCH_LEFT + CROP_WIDTH]
    rgb = patch[:, :, ::-1].astype(np.float32)
    normalised = (rgb - _MEAN_255) / _STD_255
    image = np.ascontiguousarray(normalised.transpose(2, 0, 1))
    return Crop(image=image, center=center, size=size)


def crop_people(image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> CropBatch:
    """:func:`crop_person` for every box (N, 4) of one image, stacked."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    crops = [crop_person(image_bgr, box) for box in boxes]
    if not crops:
        return CropBatch(
            np.zeros((0, 3, CROP_HEIGHT, CROP_WIDTH), np.float32), np.zeros((0, 2)), np.zeros(0)
        )
    return CropBatch(
        images=np.stack([c.image for c in crops]),
        centers=np.stack([c.center for c in crops]),
        sizes=np.array([c.size for c in crops]),
    )


def patch_affine(center: np.ndarray, size: float) -> np.ndarray:
    """(2, 3) float64 affine image -> 256x256 patch, from three float32 point pairs (OpenCV)."""
    c = np.asarray(center, np.float32)
    half = np.float32(size * 0.5)
    src = np.stack([c, c + np.array([0, half], np.float32), c + np.array([half, 0], np.float32)])
    dst = np.array([[PATCH / 2, PATCH / 2], [PATCH / 2, PATCH], [PATCH, PATCH / 2]], np.float32)
    return cv2.getAffineTransform(src, dst)


def _warp(image: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """(H, W, 3) uint8 -> (256, 256, 3) patch: uint8, or float64 when anti-aliased."""
    forward = patch_affine(center, size)
    flags, border = cv2.INTER_LINEAR, cv2.BORDER_CONSTANT
    d = size / PATCH / 2
    if d <= BLUR_ABOVE:
        return cv2.warpAffine(image, forward, (PATCH, PATCH), flags=flags, borderMode=border)
    sigma = (d - 1) / 2
    radius = int(TRUNCATE * sigma + 0.5)
    # The part of the frame the patch reads: its footprint, +1 px for bilinear taps, + the radius.
    half = size / 2 + 1 + radius
    h, w = image.shape[:2]
    x0, y0 = np.floor(center - half).astype(int).clip(0, [w, h])
    x1, y1 = np.ceil(center + half + 1).astype(int).clip(0, [w, h])
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the image
        return np.zeros((PATCH, PATCH, 3))
    # The blurred part sits at its place in an otherwise unused (never touched, so never
    # allocated) zero frame: the warp keeps 4D-Humans' matrix. Shifting the matrix instead would
    # re-round its translation, and its float32-born entries often sit on rounding ties.
    blurred = np.zeros((h, w, 3))
    blurred[y0:y1, x0:x1] = gaussian_filter(
        image[y0:y1, x0:x1].astype(np.float64), (sigma, sigma, 0), mode="nearest", truncate=TRUNCATE
    )
    return cv2.warpAffine(blurred, forward, (PATCH, PATCH), flags=flags, borderMode=border)
