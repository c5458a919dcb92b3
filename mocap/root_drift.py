"""Root drift removal: the body stops sliding over its planted feet (the first step of foot locking).

As in GVHMR's post-processing, the confidence-weighted displacement of the contact points is
taken off the root. Horizontally it works on velocities (the correction's step cancels the step of
the points in contact on both frames), which never pits one foot's span against the other's;
vertically on positions (the soles in contact on the floor). Points that move or float far more
than the stillest one of the frame count exponentially less (a foot wrongly taken as planted must
not drag the body). The correction is the solution of one small banded least-squares problem
per axis: close to those targets, smooth in time (second differences), and pulled to zero,
weakly near contacts (long-term drift returns over about a second) and strongly away from them
(frames far from any contact keep their motion). The weights are per frame at 30 fps and scaled
with the frame rate so that the correction is the same in seconds.
"""

import numpy as np
from scipy import sparse
from scipy.linalg import solveh_banded
from scipy.ndimage import distance_transform_edt

SMOOTHNESS = 3.0  # weight of the correction's second differences (per frame, at 30 fps)
NEAR_PULL = 1e-3  # pull of the correction to zero near contacts (per frame, at 30 fps)
FAR_PULL = 1.0  # ... and further from any contact
OUTLIER_STEP_M = 0.005  # a contact point stepping this much more (a frame, at 30 fps) than the
OUTLIER_HEIGHT_M = 0.02  # stillest, or this much higher, counts e times less


def _solve_banded(matrix: sparse.spmatrix, rhs: np.ndarray) -> np.ndarray:
    """Solve the symmetric positive definite pentadiagonal system ``matrix @ x = rhs`` (T,K)."""
    t = matrix.shape[0]
    ab = np.zeros((3, t))
    for k in range(min(3, t)):
        ab[2 - k, k:] = matrix.diagonal(k)
    return solveh_banded(ab, rhs)


def _stillest_mean(
    values: np.ndarray, size: np.ndarray, weight: np.ndarray, scale: float
) -> np.ndarray:
    """Per frame the weighted mean over points of ``values`` (T,P,K), points counting less the
    more their ``size`` (T,P) exceeds the smallest of the frame's contact points (exp(-excess /
    scale)): a foot wrongly taken as planted (moving, or in the air) must not drag the body."""
    low = np.min(np.where(weight > 0, size, np.inf), axis=1, keepdims=True)
    excess = np.where(weight > 0, size - np.where(np.isfinite(low), low, 0.0), 0.0)
    w = weight * np.exp(-excess / scale)
    return (w[..., None] * values).sum(1) / np.maximum(w.sum(1), 1e-12)[:, None]


def root_correction(
    points: np.ndarray,
    clearance: np.ndarray,
    contacts: np.ndarray,
    confidence: np.ndarray,
    floor: float,
    fps: float,
    near_s: float = 0.1,
) -> np.ndarray:
    """(T,3) root offset that keeps contact points still and their soles on the floor.

    Horizontally, least squares on velocities (GVHMR's drift removal, conflict-free between the
    feet): the correction's step cancels the confidence-weighted step of the points in contact on
    both frames. Vertically, on positions: the soles in contact on the floor. Both with a penalty
    on the correction's second differences and a pull to zero, weak near contacts (a time
    constant of about a second: long-term drift returns slowly) and strong away from them.

    Arguments:
        points: (T,P,3) world positions of the contact points. clearance: (P,) their height
            above the sole. contacts, confidence: (T,P) flags and weights in [0, 1].
        floor: the floor's height. fps: frame rate. near_s: seconds from a contact within which
            the correction is free (a lock's blend window); further away it is pulled to zero.
    """
    t = len(points)
    w = np.where(contacts, confidence, 0.0)
    pair = np.minimum(w[1:], w[:-1])  # (T-1,P) points in contact on both frames
    moves = np.diff(points, axis=0)
    speed = np.linalg.norm(moves, axis=-1)
    step = _stillest_mean(moves, speed, pair, OUTLIER_STEP_M * 30.0 / fps)
    pair_sum = pair.sum(1)
    total = w.sum(1)
    sole = points[..., 1] - clearance - floor
    height = _stillest_mean(sole[..., None], sole, w, OUTLIER_HEIGHT_M)[:, 0]
    scale = 30.0 / fps
    near = distance_transform_edt(~contacts.any(1)) <= near_s * fps
    pull = np.where(near, NEAR_PULL * scale**2, FAR_PULL)
    d1 = sparse.diags([-np.ones(t - 1), np.ones(t - 1)], [0, 1], shape=(t - 1, t))
    d2 = sparse.diags(
        [np.ones(t - 2), -2.0 * np.ones(t - 2), np.ones(t - 2)], [0, 1, 2], shape=(max(t - 2, 0), t)
    )
    smooth = SMOOTHNESS * scale**-4 * (d2.T @ d2)
    out = np.zeros((t, 3))
    vel_w = sparse.diags(np.minimum(pair_sum, 1.0))
    a_h = d1.T @ vel_w @ d1 + smooth + sparse.diags(pull)
    out[:, [0, 2]] = _solve_banded(a_h, -(d1.T @ vel_w @ step[:, [0, 2]]))
    pos_w = np.minimum(total, 1.0)
    a_v = smooth + sparse.diags(pos_w + pull)
    out[:, 1] = _solve_banded(a_v, -(pos_w * height)[:, None])[:, 0]
    return out
