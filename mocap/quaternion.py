"""Unit quaternions (w, x, y, z) in numpy: conversions, product, log/exp maps, sign continuity.

The numpy counterpart of the quaternion functions of :mod:`mocap.geometry` (torch, for the model),
for filters and exporters that work on whole sequences of rotations on the CPU. All functions
broadcast over leading axes.
"""

import numpy as np
from scipy.spatial.transform import Rotation


def matrix_to_quat(rotmat: np.ndarray) -> np.ndarray:
    """(...,3,3) rotation matrices -> (...,4) unit quaternions (w,x,y,z), w >= 0."""
    shape = rotmat.shape[:-2]
    xyzw = Rotation.from_matrix(rotmat.reshape(-1, 3, 3)).as_quat()
    q = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(*shape, 4)


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """(...,4) quaternions (w,x,y,z), any norm -> (...,3,3) rotation matrices."""
    shape = quat.shape[:-1]
    q = quat.reshape(-1, 4)
    return (
        Rotation.from_quat(np.concatenate([q[:, 1:], q[:, :1]], axis=1))
        .as_matrix()
        .reshape(*shape, 3, 3)
    )


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (...,4) quaternions (broadcasting)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse for unit quaternions) of (...,4)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_log(q: np.ndarray) -> np.ndarray:
    """(...,4) unit quaternions -> (...,3) rotation vectors (axis * angle), shortest rotation."""
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    # angle / s -> 2 / w as s -> 0
    scale = np.where(s > 1e-12, angle / np.maximum(s, 1e-12), 2.0 / np.maximum(q[..., :1], 1e-12))
    return v * scale


def quat_exp(r: np.ndarray) -> np.ndarray:
    """(...,3) rotation vectors -> (...,4) unit quaternions."""
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * angle
    sinc = np.where(angle > 1e-12, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return np.concatenate([np.cos(half), r * sinc], axis=-1)


def sign_continuous(quat: np.ndarray) -> np.ndarray:
    """Flip signs along axis 0 so that consecutive quaternions lie in the same hemisphere.

    Args:
        quat: (T,...,4). Returns a copy of the same shape describing the same rotations.
    """
    if len(quat) < 2:
        return quat.copy()
    dots = np.sum(quat[1:] * quat[:-1], axis=-1)
    flips = np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)
    out = quat.copy()
    out[1:] *= flips[..., None]
    return out
