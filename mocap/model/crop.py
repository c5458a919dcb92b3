"""HMR2.0 preprocessing: person box -> normalised 256x192 crop, and the crop <-> image mapping.

Exactly HMR2.0's demo pipeline (reference-spec section 5):

1. centre = box midpoint; the box is enlarged (never shrunk) to the 192:256 aspect and the crop
   is the square of side ``size = max(h, w * 256 / 192)`` around the centre (no 2.5x rescale);
2. when the crop downsamples by d = size / 256 / 2 > 1.1, the image is first blurred with a
   Gaussian of sigma (d - 1) / 2 (anti-aliasing; radius 4 sigma, edge pixels repeated);
3. the affine map image -> crop sends the centre to pixel (128, 128) of a 256x256 patch with scale
   256 / size (bilinear, zeros outside the image), of which columns 32:224 are kept;
4. BGR -> RGB and ImageNet normalisation ``(x - 255 mean) / (255 std)``.

Coordinates are pixel centres (OpenCV's convention): crop pixel (u, v), u in [0, 192), maps to
image pixel ``center + (u - 96, v - 128) * size / 256``. :class:`Crop` carries both directions so
the image transform and the coordinate transform cannot drift apart.

The blur is applied to the part of the image the crop reads (plus the kernel radius), not to the
whole frame: identical result, much cheaper for a small person in a 4K frame.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from mocap.errors import MocapError

CROP_HEIGHT, CROP_WIDTH = 256, 192
PATCH = 256  # HMR2.0 warps to a 256x256 patch and keeps columns 32:224
ASPECT = CROP_WIDTH / CROP_HEIGHT
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


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
    """Box (4,) x1, y1, x2, y2 -> (centre (2,), side of the square crop), enlarged to 192:256."""
    box = np.asarray(box_xyxy, np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise MocapError(f"person box {box_xyxy!r} is not 4 finite numbers; pass x1, y1, x2, y2")
    w, h = box[2] - box[0], box[3] - box[1]
    if w <= 0 or h <= 0:
        raise MocapError(f"person box {box.tolist()} is empty; pass x1 < x2 and y1 < y2")
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    return center, float(max(h, w / ASPECT))


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
    patch = _warp(image_bgr, center, size)
    rgb = patch[:, :, ::-1]
    normalised = (rgb - 255.0 * IMAGENET_MEAN) / (255.0 * IMAGENET_STD)
    image = np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)
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


def _warp(image: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """(H, W, 3) uint8 -> (256, 192, 3) float32 crop, anti-aliased, zeros outside the image."""
    scale = PATCH / size
    sigma = (size / PATCH / 2 - 1) / 2
    blur = sigma > (1.1 - 1) / 2  # i.e. downsampling factor d > 1.1
    radius = int(4.0 * sigma + 0.5) if blur else 0
    # Region the crop reads: its footprint, +1 px for bilinear taps, + the blur radius.
    half = np.array([CROP_WIDTH, CROP_HEIGHT]) / 2 / scale + 1 + radius
    h, w = image.shape[:2]
    x0, y0 = np.floor(center - half).astype(int).clip(0, [w, h])
    x1, y1 = np.ceil(center + half + 1).astype(int).clip(0, [w, h])
    out_size = (CROP_WIDTH, CROP_HEIGHT)
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the image
        return np.zeros((CROP_HEIGHT, CROP_WIDTH, 3), np.float32)
    region: np.ndarray = image[y0:y1, x0:x1].astype(np.float32)
    if blur:
        k = 2 * radius + 1
        region = cv2.GaussianBlur(region, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)
    cx, cy = center[0] - x0, center[1] - y0
    affine = np.array(
        [[scale, 0.0, CROP_WIDTH / 2 - scale * cx], [0.0, scale, CROP_HEIGHT / 2 - scale * cy]]
    )
    return cv2.warpAffine(
        region, affine, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
