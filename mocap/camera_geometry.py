"""Two-view camera geometry for :mod:`mocap.camera`: pure numpy / OpenCV functions.

Conventions: pixels ``x ~ K d`` for a bearing ``d`` in the camera frame (OpenCV axes: x right,
y down, z forward). A relative pose ``(R, t)`` maps key-frame coordinates to the current frame's,
``p_cur = R p_key + t``; for a camera that only turns, ``x_cur ~ K R K^-1 x_key``, which is the
homography of the background, so ``R = K^-1 H K`` up to scale, projected onto SO(3).
"""

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve
from scipy.spatial.transform import Rotation

RANSAC_PX = 1.5  # inlier threshold (working-resolution pixels)
PARALLAX_PX = 0.8  # rotation-only model worse than this (median px): the camera may have moved
ROTATION_SHARE = 0.9  # ... or explaining fewer of the points than this
PARALLAX_GAIN = 1.1  # the essential matrix is used when it explains this many times more points
MIN_POINTS = 12


@dataclass
class PairPose:
    """Relative pose of the current frame to its key frame.

    Attributes:
        rotation: (3,3) ``R``: key-frame coordinates -> current-frame coordinates.
        direction: (3,) unit camera displacement, in key-frame coordinates (centre of the current
            camera seen from the key camera), or None when the rotation alone explains the motion.
        inliers: (N,) bool, the correspondences consistent with the pose.
        residual_px: median reprojection error of the rotation-only model over all points.
    """

    rotation: np.ndarray
    direction: np.ndarray | None
    inliers: np.ndarray
    residual_px: float


def intrinsics(focal: float, width: float, height: float) -> np.ndarray:
    """(3,3) pinhole matrix, principal point at the image centre."""
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def bearings(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N,2) pixels -> (N,3) unit rays in the camera frame."""
    rays = np.column_stack([_normalised(points, K), np.ones(len(points))])
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def project_so3(m: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius norm) to a (3,3) matrix, by SVD."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def rotation_from_homography(H: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``R = K^-1 H K`` scaled to unit determinant and projected onto SO(3)."""
    k_inv = np.array(
        [[1 / K[0, 0], 0, -K[0, 2] / K[0, 0]], [0, 1 / K[1, 1], -K[1, 2] / K[1, 1]], [0, 0, 1]]
    )
    m = k_inv @ H @ K  # (K is a pinhole matrix: its inverse in closed form, no LAPACK call)
    det = np.linalg.det(m)
    m = m / np.cbrt(det) if abs(det) > 1e-12 else m
    return project_so3(m)


def wahba(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3,3) rotation R minimising sum |b_i - R a_i|^2 over unit vectors a, b (N,3) (Kabsch)."""
    return project_so3(b.T @ a)


def angle_deg(r: np.ndarray) -> np.ndarray:
    """Rotation angle in degrees of (...,3,3) matrices."""
    trace = np.trace(r, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def relative_pose(p_key: np.ndarray, p_cur: np.ndarray, K: np.ndarray) -> PairPose | None:
    """Pose of the current frame relative to the key frame from background correspondences.

    Arguments:
        p_key, p_cur: (N,2) the same background points in both frames (pixels).
        K: (3,3) intrinsics of these pixels.
    The homography (RANSAC) gives the rotation ``K^-1 H K`` (projected onto SO(3)), refined on the
    bearings of its inliers. When that rotation leaves more than ``PARALLAX_PX`` of median error,
    or explains fewer than ``ROTATION_SHARE`` of the points, the camera may also have moved: the
    essential matrix (RANSAC) and ``recoverPose`` give rotation and direction of travel where they
    explain ``PARALLAX_GAIN`` times more points (the essential matrix degenerates without
    parallax, hence the order).
    Returns None with fewer than ``MIN_POINTS`` consistent points.
    """
    if len(p_key) < MIN_POINTS:
        return None
    H, mask = cv2.findHomography(p_key, p_cur, cv2.RANSAC, RANSAC_PX, maxIters=500)
    if H is None:
        return None
    b_key, b_cur = bearings(p_key, K), bearings(p_cur, K)
    rotation = rotation_from_homography(H, K)
    focal = float(K[0, 0])
    inliers = mask.ravel() > 0  # the homography's (8 degrees of freedom fit noise a rotation can't)
    err = focal * np.linalg.norm(np.cross(b_cur, b_key @ rotation.T), axis=1)
    for _ in range(3):  # refine on the bearings of the inliers, then re-select the rotation's own
        if inliers.sum() < MIN_POINTS:
            break
        rotation = wahba(b_key[inliers], b_cur[inliers])
        err = focal * np.linalg.norm(np.cross(b_cur, b_key @ rotation.T), axis=1)
        inliers = err < RANSAC_PX
    explained, residual = int(inliers.sum()), float(np.median(err))
    turned = PairPose(rotation, None, inliers, residual) if explained >= MIN_POINTS else None
    if explained >= ROTATION_SHARE * len(p_key) and residual <= PARALLAX_PX:
        return turned
    n_key, n_cur = _normalised(p_key, K), _normalised(p_cur, K)
    E, emask = cv2.findEssentialMat(
        n_key, n_cur, np.eye(3), cv2.USAC_ACCURATE, 0.999, RANSAC_PX / focal, maxIters=500
    )
    if E is None or E.shape != (3, 3):
        return turned
    fits = emask.ravel() > 0  # (cheirality is a coin toss for far points: not a fit measure)
    if fits.sum() < MIN_POINTS or fits.sum() < PARALLAX_GAIN * explained:  # travel explains no more
        return turned
    count, r_e, t_e, _ = cv2.recoverPose(E, n_key, n_cur, np.eye(3), mask=emask.copy())
    if count < MIN_POINTS:
        return turned
    r_e, t_e = refine_pose(n_key[fits], n_cur[fits], r_e, t_e.ravel())
    centre = -(r_e.T @ t_e)  # current camera centre in key-frame coordinates
    return PairPose(r_e, centre / np.linalg.norm(centre), fits, residual)


def refine_pose(
    n_key: np.ndarray, n_cur: np.ndarray, rotation: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and unit translation minimising the Sampson error of (N,2) normalised
    correspondences (Levenberg-Marquardt from the RANSAC pose; Huber loss)."""
    from scipy.optimize import least_squares

    a = np.column_stack([n_key, np.ones(len(n_key))])
    b = np.column_stack([n_cur, np.ones(len(n_cur))])

    def sampson(x: np.ndarray) -> np.ndarray:
        r = Rotation.from_rotvec(x[:3]).as_matrix() @ rotation
        u = x[3:] / np.linalg.norm(x[3:])
        e = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]]) @ r
        ea, eb = a @ e.T, b @ e
        num = np.sum(b * ea, axis=1)
        return num / np.sqrt(ea[:, 0] ** 2 + ea[:, 1] ** 2 + eb[:, 0] ** 2 + eb[:, 1] ** 2 + 1e-18)

    scale = 1e-3  # about a pixel in normalised units: the Huber knee
    fit = least_squares(sampson, np.concatenate([np.zeros(3), t]), loss="huber", f_scale=scale)
    u = fit.x[3:] / np.linalg.norm(fit.x[3:])
    return Rotation.from_rotvec(fit.x[:3]).as_matrix() @ rotation, u


def _normalised(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (points - K[:2, 2]) / np.diag(K)[:2]


def triangulated_depths(
    p_key: np.ndarray, p_cur: np.ndarray, K: np.ndarray, rotation: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """(N,) depth in the key frame of each correspondence for a unit-length camera displacement.

    Arguments:
        rotation: key -> current coordinates; centre: (3,) the current camera in key coordinates.
    Points behind either camera get NaN.
    """
    t = -rotation @ centre
    P0 = np.hstack([np.eye(3), np.zeros((3, 1))])
    P1 = np.hstack([rotation, t[:, None]])
    X = cv2.triangulatePoints(P0, P1, _normalised(p_key, K).T, _normalised(p_cur, K).T)
    X = (X[:3] / X[3]).T
    depth_cur = X @ rotation[2] + t[2]
    return np.where((X[:, 2] > 0) & (depth_cur > 0), X[:, 2], np.nan)


def average_rotations(
    count: int, edges: list[tuple[int, int, np.ndarray, float]], init: np.ndarray
) -> np.ndarray:
    """Absolute rotations of ``count`` key frames that best agree with relative measurements.

    Arguments:
        edges: (i, j, R_ij, weight) with ``R_ij``: key j coordinates -> key i coordinates, i < j.
        init: (count,3,3) starting guess (the chain of consecutive edges); key 0 stays fixed.
    Returns (count,3,3) ``A_k``: key k -> key 0 coordinates, minimising the weighted sum of squared
    angles of ``R_ij^T A_i^T A_j`` (Gauss-Newton on SO(3), first-order Jacobians, a few steps;
    edges more than 3 degrees off after the first steps are dropped as mismatches).
    """
    absolute = init.copy()
    if count < 2:
        return absolute
    active = list(edges)
    for step in range(6):
        rows, cols, vals, rhs = [], [], [], []
        for e, (i, j, r_ij, w) in enumerate(active):
            a = absolute[i].T @ absolute[j]
            r = Rotation.from_matrix(r_ij.T @ a).as_rotvec()
            # residual after the update ~ r + (d_j - a^T d_i), d: right perturbations
            for k, block in ((j, np.eye(3)), (i, -a.T)):
                if k == 0:
                    continue
                for m in range(3):
                    for n in range(3):
                        rows.append(3 * e + m)
                        cols.append(3 * (k - 1) + n)
                        vals.append(np.sqrt(w) * block[m, n])
            rhs.append(-np.sqrt(w) * r)
        J = sp.csr_matrix((vals, (rows, cols)), shape=(3 * len(active), 3 * (count - 1)))
        normal = (J.T @ J + 1e-9 * sp.eye(3 * (count - 1))).tocsc()
        delta = np.asarray(spsolve(normal, J.T @ np.concatenate(rhs))).reshape(-1, 3)
        absolute[1:] = absolute[1:] @ Rotation.from_rotvec(delta).as_matrix()
        if step == 2:  # drop inconsistent edges (never the chain: it keeps the graph connected)
            active = [
                (i, j, r, w)
                for i, j, r, w in active
                if j == i + 1 or angle_deg(r.T @ absolute[i].T @ absolute[j]) < 3.0
            ]
    return absolute


def interpolate_poses(
    known: np.ndarray, rotations: np.ndarray, positions: np.ndarray, frames: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rotations (slerp) and positions (lerp) at ``frames`` from poses at ascending ``known``
    frames (held beyond the ends)."""
    from scipy.spatial.transform import Slerp

    if len(known) == 1:
        return np.repeat(rotations, len(frames), 0), np.repeat(positions, len(frames), 0)
    clipped = np.clip(frames, known[0], known[-1]).astype(np.float64)
    rot = Slerp(known.astype(np.float64), Rotation.from_matrix(rotations))(clipped).as_matrix()
    pos = np.stack([np.interp(clipped, known, positions[:, c]) for c in range(3)], axis=1)
    return rot, pos
