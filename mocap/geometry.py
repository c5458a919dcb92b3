"""Rotations, cameras and Procrustes alignment as pure functions.

Conventions (used across every module boundary of mocap):
    * Rotation matrices act on column vectors: ``x_world = R @ x_local``.
    * 6D rotations follow HMR2.0: ``a1 = x[..., 0:3]``, ``a2 = x[..., 3:6]`` are the first two
      **columns** of the matrix before Gram-Schmidt (not interleaved).
    * Axis-angle vectors are ``axis * angle`` (radians).
    * Quaternions are ``(w, x, y, z)`` with ``w`` first, unit norm; functions returning quaternions
      pick the representative with ``w >= 0``.

All torch functions are batched over leading dimensions (``...``) and differentiable; they keep
the input's dtype and device.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# HMR2.0's crop camera: focal length 5000 px for a 256 px crop.
CROP_FOCAL_LENGTH = 5000.0
CROP_SIZE = 256


def rot6d_to_rotmat(x: Tensor) -> Tensor:
    """6D rotation (HMR2.0 convention) -> rotation matrix by Gram-Schmidt.

    Arguments:
        x: (..., 6) with ``a1 = x[..., 0:3]``, ``a2 = x[..., 3:6]``.
    Returns:
        (..., 3, 3) proper rotation whose columns are ``b1, b2, b3 = b1 x b2``.
    """
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def rotmat_to_rot6d(rotmat: Tensor) -> Tensor:
    """Rotation matrix -> 6D (first column, then second column); inverse of :func:`rot6d_to_rotmat`.

    Arguments:
        rotmat: (..., 3, 3).
    Returns:
        (..., 6).
    """
    return torch.cat((rotmat[..., :, 0], rotmat[..., :, 1]), dim=-1)


def axis_angle_to_rotmat(aa: Tensor) -> Tensor:
    """Axis-angle -> rotation matrix (Rodrigues), smooth at zero angle.

    Arguments:
        aa: (..., 3) axis times angle in radians.
    Returns:
        (..., 3, 3).
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    # sin(t)/t and (1 - cos t)/t^2, with their Taylor series near zero.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(aa.shape + (3,))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def rotmat_to_quat(rotmat: Tensor) -> Tensor:
    """Rotation matrix -> unit quaternion ``(w, x, y, z)`` with ``w >= 0``.

    Uses the numerically stable branch (largest of w, x, y, z) for every input.

    Arguments:
        rotmat: (..., 3, 3).
    Returns:
        (..., 4).
    """
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2)
    sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1
    )
    root = torch.sqrt(torch.clamp(sq, min=1e-12))  # 2 * |component|
    # Row i: 4 * q * q_i, i.e. the quaternion scaled by 4 q_i, computed without dividing.
    cand = torch.stack(
        (
            torch.stack((sq[..., 0], m21 - m12, m02 - m20, m10 - m01), -1),
            torch.stack((m21 - m12, sq[..., 1], m10 + m01, m02 + m20), -1),
            torch.stack((m02 - m20, m10 + m01, sq[..., 2], m12 + m21), -1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, sq[..., 3]), -1),
        ),
        dim=-2,
    ) / (2.0 * root[..., None])
    best = sq.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_rotmat(q: Tensor) -> Tensor:
    """Quaternion ``(w, x, y, z)`` (normalised here) -> rotation matrix.

    Arguments:
        q: (..., 4).
    Returns:
        (..., 3, 3).
    """
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )  # fmt: skip
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


def quat_to_axis_angle(q: Tensor) -> Tensor:
    """Quaternion ``(w, x, y, z)`` -> axis-angle with angle in [0, pi].

    Arguments:
        q: (..., 4).
    Returns:
        (..., 3).
    """
    q = F.normalize(q, dim=-1)
    q = torch.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    sin_half2 = (v * v).sum(-1, keepdim=True)
    small = sin_half2 < 1e-12
    sin_half = torch.sqrt(torch.where(small, torch.ones_like(sin_half2), sin_half2))
    angle = 2.0 * torch.atan2(sin_half, q[..., :1])
    # angle / sin(angle/2) -> 2 / w as the angle goes to zero.
    factor = torch.where(small, 2.0 / q[..., :1], angle / sin_half)
    return v * factor


def rotmat_to_axis_angle(rotmat: Tensor) -> Tensor:
    """Rotation matrix -> axis-angle (angle in [0, pi]), stable near 0 and pi.

    Arguments:
        rotmat: (..., 3, 3).
    Returns:
        (..., 3).
    """
    return quat_to_axis_angle(rotmat_to_quat(rotmat))


def quat_slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    """Spherical linear interpolation along the shorter arc.

    Arguments:
        q0, q1: (..., 4) quaternions ``(w, x, y, z)``.
        t: scalar or tensor broadcastable to (...,); 0 gives ``q0``, 1 gives ``q1`` (up to sign).
    Returns:
        (..., 4) unit quaternions.
    """
    q0 = F.normalize(q0, dim=-1)
    q1 = F.normalize(q1, dim=-1)
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    near = dot > 0.9995  # nearly parallel: normalised lerp is exact to first order
    omega = torch.acos(torch.where(near, torch.zeros_like(dot), dot))
    sin_omega = torch.where(near, torch.ones_like(omega), torch.sin(omega))
    w0 = torch.where(near, 1.0 - t, torch.sin((1.0 - t) * omega) / sin_omega)
    w1 = torch.where(near, t, torch.sin(t * omega) / sin_omega)
    return F.normalize(w0 * q0 + w1 * q1, dim=-1)


def crop_camera_translation(
    cam_crop: Tensor, focal_length: float = CROP_FOCAL_LENGTH, crop_size: int = CROP_SIZE
) -> Tensor:
    """Weak-perspective crop camera ``(s, tx, ty)`` -> translation in the crop's camera.

    With this translation, focal ``focal_length / crop_size`` and principal point 0, projection
    gives normalised crop coordinates in about [-0.5, 0.5] (HMR2.0).

    Arguments:
        cam_crop: (..., 3).
    Returns:
        (..., 3) ``[tx, ty, 2 f / (crop_size * s + 1e-9)]``.
    """
    s, tx, ty = cam_crop.unbind(-1)
    tz = 2.0 * focal_length / (crop_size * s + 1e-9)
    return torch.stack((tx, ty, tz), dim=-1)


def default_focal_length(image_size: Tensor) -> Tensor:
    """HMR2.0's full-image focal length ``5000 / 256 * max(W, H)``.

    Arguments:
        image_size: (..., 2) as (width, height) in pixels.
    Returns:
        (...,).
    """
    return CROP_FOCAL_LENGTH / CROP_SIZE * image_size.max(dim=-1).values


def video_focal_length(width: float, height: float) -> float:
    """A realistic default focal length in pixels for a video of unknown camera: the image diagonal.

    HMR2.0's 5000/256 * max(W, H) (:func:`default_focal_length`) is a telephoto lens that puts
    people 50-300 m away, where every error in the predicted scale becomes metres of depth motion in
    exported animation. The diagonal (as CLIFF assumes: 53 degrees diagonal field of view, about 47
    horizontal at 16:9) is close to ordinary phone and camcorder lenses. Image-plane motion is
    unchanged; only depth is scaled.
    """
    return float(math.hypot(width, height))


def cam_crop_to_full(
    cam_crop: Tensor,
    box_center: Tensor,
    box_size: Tensor,
    image_size: Tensor,
    focal_length: Tensor | float | None = None,
) -> Tensor:
    """Crop camera -> camera translation in the full image, exactly as HMR2.0.

    Arguments:
        cam_crop: (B, 3) predicted ``(s, tx, ty)``.
        box_center: (B, 2) crop centre in pixels (x, y).
        box_size: (B,) crop side in pixels.
        image_size: (B, 2) full image (width, height).
        focal_length: scalar or (B,) pixels; default :func:`default_focal_length`.
    Returns:
        (B, 3) translation ``(tx, ty, tz)`` of the SMPL origin in the full camera, metres.
    """
    s, tx, ty = cam_crop.unbind(-1)
    w, h = image_size[..., 0], image_size[..., 1]
    if focal_length is None:
        focal = default_focal_length(image_size)
    else:
        focal = torch.as_tensor(focal_length, dtype=cam_crop.dtype, device=cam_crop.device)
    bs = box_size * s + 1e-9
    tz = 2.0 * focal / bs
    full_x = 2.0 * (box_center[..., 0] - w / 2.0) / bs + tx
    full_y = 2.0 * (box_center[..., 1] - h / 2.0) / bs + ty
    return torch.stack((full_x, full_y, tz.expand_as(full_x)), dim=-1)


def perspective_projection(
    points: Tensor,
    translation: Tensor,
    focal_length: Tensor | float,
    principal_point: Tensor | None = None,
    rotation: Tensor | None = None,
) -> Tensor:
    """Pinhole projection of camera-frame points (x right, y down, z forward).

    Arguments:
        points: (B, N, 3).
        translation: (B, 3) added to the (rotated) points.
        focal_length: scalar, (B,) or (B, 2) pixels (fx, fy).
        principal_point: (B, 2) pixels; default 0.
        rotation: (B, 3, 3) applied before the translation; default identity.
    Returns:
        (B, N, 2) pixel coordinates.
    """
    if rotation is not None:
        points = points @ rotation.transpose(-1, -2)
    p = points + translation[:, None, :]
    f = torch.as_tensor(focal_length, dtype=p.dtype, device=p.device)
    if f.ndim < 2:  # scalar or (B,): same focal for x and y
        f = f.reshape(-1, 1).expand(p.shape[0], 2)
    uv = f[:, None, :] * p[..., :2] / p[..., 2:3]
    if principal_point is not None:
        uv = uv + principal_point[:, None, :]
    return uv


def procrustes_params(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Similarity transform minimising ``|s R src + t - dst|^2`` (Umeyama, no reflection).

    Arguments:
        src, dst: (B, N, D) corresponding points.
    Returns:
        scale (B,), rotation (B, D, D), translation (B, D).
    """
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs * xs).sum((1, 2))
    u, sigma, vh = torch.linalg.svd(xd.transpose(1, 2) @ xs)  # (B, D, D)
    d = torch.ones_like(sigma)
    d[:, -1] = torch.sign(torch.linalg.det(u @ vh))
    rot = u @ torch.diag_embed(d) @ vh
    scale = (sigma * d).sum(-1) / var_s.clamp(min=1e-12)
    trans = mu_d[:, 0] - scale[:, None] * (rot @ mu_s[:, 0, :, None])[..., 0]
    return scale, rot, trans


def procrustes_align(src: Tensor, dst: Tensor) -> Tensor:
    """``src`` moved by the best similarity transform onto ``dst`` (for PA-MPJPE).

    Arguments:
        src, dst: (B, N, D).
    Returns:
        (B, N, D) aligned copy of ``src``.
    """
    scale, rot, trans = procrustes_params(src, dst)
    return scale[:, None, None] * src @ rot.transpose(1, 2) + trans[:, None, :]


def procrustes_align_np(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """NumPy version of :func:`procrustes_align`; accepts (N, D) or (B, N, D), float64 maths."""
    single = src.ndim == 2
    s = np.asarray(src, dtype=np.float64).reshape((-1,) + src.shape[-2:])
    d = np.asarray(dst, dtype=np.float64).reshape((-1,) + dst.shape[-2:])
    mu_s, mu_d = s.mean(1, keepdims=True), d.mean(1, keepdims=True)
    xs, xd = s - mu_s, d - mu_d
    u, sigma, vh = np.linalg.svd(np.swapaxes(xd, 1, 2) @ xs)
    sign = np.ones_like(sigma)
    sign[:, -1] = np.sign(np.linalg.det(u @ vh))
    rot = u @ (sign[:, :, None] * vh)
    scale = (sigma * sign).sum(-1) / np.maximum((xs * xs).sum((1, 2)), 1e-12)
    out = scale[:, None, None] * (xs @ np.swapaxes(rot, 1, 2)) + mu_d
    return out[0] if single else out
