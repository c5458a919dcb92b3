"""Training augmentation that keeps the image, 2D/3D joints and SMPL parameters consistent.

Every geometric change is one affine map from the source image to the 256x192 crop; the 2D joints
go through the same matrix, and the in-plane rotation is applied to the 3D joints and the SMPL
global orientation about the camera's optical axis (the crop camera's principal point is the crop
centre), so projecting the augmented 3D joints still lands on the augmented 2D joints.

Crop convention (HMR2.0, reference spec section 5): the box centre maps to pixel (128, 128) of a
256x256 crop whose columns 32:224 are kept, i.e. pixel (96, 128) of the 256x192 crop; normalised
crop coordinates are ``u = (x + 32) / 256 - 0.5``, ``v = y / 256 - 0.5``.

Flip is applied to the finished crop (array reversal), so it is exactly its own inverse: pixel
column ``x -> 191 - x``, i.e. ``u -> -u - 1/256``; 3D ``X -> -X``; joints swap left and right;
SMPL axis-angle ``(x, y, z) -> (x, -y, -z)`` with the SMPL joint swap.

Parameter ranges follow HMR2.0's training defaults (scale 0.3, rotation 30 deg with probability 0.6,
translation 0.02, colour 0.2, flip 0.5).
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from mocap.body.joints import SMPL_FLIP_PERM

CROP_H, CROP_W = 256, 192
# Column offset of the kept 192-wide strip inside HMR2.0's 256x256 crop.
CROP_X0 = 32
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# SPIN's 24 ground-truth joints (LSP 14, MPII pelvis/thorax, H36M spine/jaw/head, nose, eyes, ears)
# mirrored left <-> right.
SPIN24_FLIP_PERM: tuple[int, ...] = (
    5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22,
)  # fmt: skip


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation; ``enabled=False`` gives the plain HMR2.0 crop."""

    enabled: bool = True
    scale_factor: float = 0.3
    rot_factor: float = 30.0
    rot_prob: float = 0.6
    trans_factor: float = 0.02
    flip_prob: float = 0.5
    color_scale: float = 0.2


@dataclass(frozen=True)
class AugmentParams:
    """One draw of augmentation parameters.

    Attributes:
        scale: multiplies the box size (>1 zooms out).
        rot_deg: in-plane rotation of the crop content, degrees, counter-clockwise on screen.
        shift: (2,) box-centre shift in units of the box size.
        flip: mirror the crop left/right.
        color: (3,) per-channel (RGB) gain.
    """

    scale: float = 1.0
    rot_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip: bool = False
    color: tuple[float, float, float] = field(default=(1.0, 1.0, 1.0))


def sample_params(cfg: AugmentConfig, rng: np.random.Generator) -> AugmentParams:
    """Draw augmentation parameters (a fixed number of draws, so the stream never shifts)."""
    draws = rng.standard_normal(4)
    uniform = rng.random(2)
    color = rng.uniform(1.0 - cfg.color_scale, 1.0 + cfg.color_scale, size=3)
    if not cfg.enabled:
        return AugmentParams()
    rot = float(np.clip(draws[1], -2.0, 2.0) * cfg.rot_factor) if uniform[0] < cfg.rot_prob else 0.0
    return AugmentParams(
        scale=float(np.clip(draws[0], -1.0, 1.0) * cfg.scale_factor + 1.0),
        rot_deg=rot,
        shift=(
            float(np.clip(draws[2], -1.0, 1.0) * cfg.trans_factor),
            float(np.clip(draws[3], -1.0, 1.0) * cfg.trans_factor),
        ),
        flip=bool(uniform[1] < cfg.flip_prob),
        color=(float(color[0]), float(color[1]), float(color[2])),
    )


def box_size_from_scale(scale: float) -> float:
    """SPIN ``scale`` (square box side / 200) -> HMR2.0 box size after widening to 192:256."""
    side = 200.0 * scale
    # A square box is already wider than 192:256, so only its height grows.
    return max(side, side * CROP_H / CROP_W)


def crop_matrix(center: np.ndarray, box_size: float, params: AugmentParams) -> np.ndarray:
    """Affine map from source pixels to 256x192 crop pixels (before any flip).

    Arguments:
        center: (2,) box centre in source pixels.
        box_size: side of the (widened) box in source pixels, mapped to 256 crop pixels.
        params: scale, rotation and shift to apply.

    Returns:
        (2, 3) float64 matrix ``M`` with ``crop_xy = M @ [x, y, 1]``.
    """
    size = box_size * params.scale
    c = np.asarray(center, dtype=np.float64) + np.asarray(params.shift) * size
    s = 256.0 / size
    # Screen y points down, so a counter-clockwise on-screen rotation is R(-theta) in pixel axes.
    t = np.deg2rad(params.rot_deg)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    linear = s * rot
    out_centre = np.array([128.0 - CROP_X0, 128.0])
    return np.concatenate([linear, (out_centre - linear @ c)[:, None]], axis=1)


def warp_crop(image_bgr: np.ndarray, matrix: np.ndarray, box_size: float) -> np.ndarray:
    """Resample the crop exactly as :mod:`mocap.model.crop` does at inference.

    When the box is shrunk by d = box_size / 256 / 2 > 1.1 the source is first blurred with a
    Gaussian of sigma (d - 1) / 2 (radius 4 sigma, edges replicated), over the region the crop reads
    only; bilinear resampling in float32, zeros outside the image.

    Arguments:
        image_bgr: (H, W, 3) uint8 source image.
        matrix: (2, 3) from :func:`crop_matrix`.
        box_size: source pixels per 256 crop pixels (decides the blur).

    Returns:
        (256, 192, 3) float32 BGR crop in [0, 255].
    """
    sigma = (box_size / 256.0 / 2.0 - 1.0) / 2.0
    blur = sigma > 0.05  # downscale factor > 1.1
    radius = int(4.0 * sigma + 0.5) if blur else 0
    # Source footprint of the crop (+1 px for bilinear taps, + the blur radius).
    inverse = cv2.invertAffineTransform(matrix)
    corners = transform_points(
        np.array([[0, 0], [CROP_W, 0], [0, CROP_H], [CROP_W, CROP_H]], float), inverse
    )
    h, w = image_bgr.shape[:2]
    x0, y0 = np.floor(corners.min(0) - 1 - radius).astype(int).clip(0, [w, h])
    x1, y1 = np.ceil(corners.max(0) + 2 + radius).astype(int).clip(0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return np.zeros((CROP_H, CROP_W, 3), np.float32)
    region: np.ndarray = image_bgr[y0:y1, x0:x1].astype(np.float32)
    if blur:
        k = 2 * radius + 1
        region = cv2.GaussianBlur(region, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], float)
    return cv2.warpAffine(
        region, shifted, (CROP_W, CROP_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine map to (N, 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def pixels_to_normalized(points: np.ndarray) -> np.ndarray:
    """256x192 crop pixels (N, 2) -> HMR2.0 normalised crop coordinates (kp/256 - 0.5)."""
    return (points + np.array([CROP_X0, 0.0])) / 256.0 - 0.5


def normalized_to_pixels(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pixels_to_normalized`."""
    return (points + 0.5) * 256.0 - np.array([CROP_X0, 0.0])


def rotation_z(rot_deg: float) -> np.ndarray:
    """(3, 3) camera-frame rotation about the optical axis matching an on-screen CCW rotation."""
    t = np.deg2rad(rot_deg)
    return np.array([[np.cos(t), np.sin(t), 0.0], [-np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def rotate_global_orient(pose: np.ndarray, rot_deg: float) -> np.ndarray:
    """Rotate the SMPL root (first 3 of the (72,) axis-angle pose) about the camera z axis."""
    if rot_deg == 0.0:
        return pose
    out = pose.copy()
    root, _ = cv2.Rodrigues(pose[:3].astype(np.float64))
    new_root, _ = cv2.Rodrigues(rotation_z(rot_deg) @ root)
    out[:3] = new_root.reshape(3)
    return out


def flip_smpl_pose(pose: np.ndarray) -> np.ndarray:
    """Mirror a (72,) SMPL axis-angle pose: swap left/right joints, negate the y and z components."""
    aa = pose.reshape(24, 3)[list(SMPL_FLIP_PERM)].copy()
    aa[:, 1:] *= -1.0
    return aa.reshape(72)


def flip_keypoints_2d(keypoints: np.ndarray) -> np.ndarray:
    """Mirror (24, 3) normalised crop keypoints (u, v, conf) to match a reversed crop array."""
    out = keypoints[list(SPIN24_FLIP_PERM)].copy()
    out[:, 0] = -out[:, 0] - 1.0 / 256.0
    return out


def flip_joints_3d(joints: np.ndarray) -> np.ndarray:
    """Mirror (24, 4) camera-frame joints (X, Y, Z, conf): ``X -> -X`` with the left/right swap."""
    out = joints[list(SPIN24_FLIP_PERM)].copy()
    out[:, 0] = -out[:, 0]
    return out


def apply_color(crop_rgb: np.ndarray, color: tuple[float, float, float]) -> np.ndarray:
    """Per-channel gain on an (H, W, 3) RGB crop in [0, 255], clipped to [0, 255]; float32."""
    return np.clip(crop_rgb.astype(np.float32) * np.asarray(color, dtype=np.float32), 0.0, 255.0)


def normalize_image(crop_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 255] -> (3, H, W) float32 with ImageNet mean/std (HMR2.0 input)."""
    x = (np.asarray(crop_rgb, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))
