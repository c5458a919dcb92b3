"""Per-track fitting for the embedded model: body proportions, joint rotations, translation.

Once a track is complete (gaps bridged), its landmarks (``Track.extras``: ``landmarks3d`` (T,33,4)
metric camera-axes positions + visibility, ``keypoints2d`` (T,33,3) image pixels + visibility) give:

1. body proportions from the median bone lengths: SMPL's 10 betas by least squares when SMPL is
   present, else one scale of the built-in skeleton (``extras["skeleton_scale"]``);
2. the 24 joint rotations (:func:`mocap.lite.ik.solve`); a limb whose landmarks are not confident
   (or whose rotation jumps by more than a flip could) is held/interpolated from its confident
   frames, never flipped;
3. the translation that puts the posed skeleton's landmarks onto the 2D landmarks through the run's
   camera (linear least squares per frame, reweighted by depth: the reprojection error);
4. the legs rebuilt on their 2D landmarks (:mod:`mocap.lite.legs`: BlazePose's depth of a leg is
   its weakest part), then steps 2 and 3 again. On the walking-crowd clip this brought the leg
   landmarks' reprojection (knees to toes) from 0.8-4.9% to 0.4-1.5% of the body's height
   (median per track and landmark, before smoothing).
"""

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from mocap.body.skeleton import builtin_skeleton
from mocap.lite import ik
from mocap.lite.landmarks import L, posed_landmarks
from mocap.lite.legs import CHAINS, lift_legs
from mocap.motion import Track

MIN_VISIBILITY = 0.5  # a limb below this is held from its confident frames
FLIP_DEG = 100.0  # a joint turning more than this between two frames is a flip, not motion
DEPTH_SIGMA_S = 0.25  # seconds: the camera distance is low-passed over about half a second
SCALE_RANGE = (0.75, 1.25)  # built-in skeleton scale limits (1.28 m to 2.13 m tall)
# bones measured on the landmarks and the SMPL joints they correspond to
_BONES_LM = (
    ("left_hip", "left_knee"),
    ("right_hip", "right_knee"),
    ("left_knee", "left_ankle"),
    ("right_knee", "right_ankle"),
    ("left_shoulder", "left_elbow"),
    ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_elbow", "right_wrist"),
    ("left_hip", "right_hip"),
)  # fmt: skip  (rigid bones only: shoulder width changes with the collars' pose)
_BONES_J = ((1, 4), (2, 5), (4, 7), (5, 8), (16, 18), (17, 19), (18, 20), (19, 21), (1, 2))
# landmarks that place the body in the image (reprojection), and their weights
_HIPS = [L["left_hip"], L["right_hip"]]
_LEGS = sorted({child for chain in CHAINS for _, child in chain})
_PLACE = [L[n] for n in ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                         "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                         "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
                         "left_foot_index", "right_foot_index", "nose", "left_ear", "right_ear")]  # fmt: skip


def bone_lengths(landmarks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """(9,) median lengths of the measured bones over confident frames (NaN if never seen)."""
    out = np.full(len(_BONES_LM), np.nan)
    for k, (a, b) in enumerate(_BONES_LM):
        ia, ib = L[a], L[b]
        length = np.linalg.norm(landmarks[:, ia] - landmarks[:, ib], axis=-1)
        ok = np.minimum(visibility[:, ia], visibility[:, ib]) >= MIN_VISIBILITY
        if ok.any():
            out[k] = float(np.median(length[ok]))
    return out


def skeleton_lengths(rest_joints: np.ndarray) -> np.ndarray:
    """(9,) the same bones on a rest skeleton (24,3)."""
    return np.array([np.linalg.norm(rest_joints[a] - rest_joints[b]) for a, b in _BONES_J])


def fit_scale(measured: np.ndarray) -> float:
    """Uniform scale of the built-in skeleton that best matches the measured lengths."""
    ref = skeleton_lengths(builtin_skeleton().rest_joints)
    ok = np.isfinite(measured)
    if not ok.any():
        return 1.0
    scale = float(measured[ok] @ ref[ok] / (ref[ok] @ ref[ok]))
    return float(np.clip(scale, *SCALE_RANGE))


def fit_betas(body: Any, measured: np.ndarray, ridge: float = 1e-5) -> np.ndarray:
    """(10,) SMPL betas whose rest skeleton has the measured bone lengths (Gauss-Newton with a
    small ridge towards the mean shape; rest joints are linear in betas)."""
    base = np.asarray(body.rest_joints(np.zeros(10)), dtype=np.float64)
    basis = np.stack([np.asarray(body.rest_joints(e), np.float64) - base for e in np.eye(10)])
    ok = np.isfinite(measured)
    betas = np.zeros(10)
    if not ok.any():
        return betas
    for _ in range(8):
        joints = base + np.einsum("b,bjc->jc", betas, basis)
        r = (skeleton_lengths(joints) - measured)[ok]
        jac = np.empty((int(ok.sum()), 10))
        for i in range(10):
            d = skeleton_lengths(joints + 1e-4 * basis[i]) - skeleton_lengths(joints)
            jac[:, i] = d[ok] / 1e-4
        A = jac.T @ jac + ridge * np.eye(10)
        betas = betas - np.linalg.solve(A, jac.T @ r + ridge * betas)
        betas = np.clip(betas, -5.0, 5.0)
    return betas


def hold_unconfident(rotations: np.ndarray, confidence: dict[str, np.ndarray]) -> int:
    """Replace, in place, the rotations of each body part at frames where it is not confident or
    flips, by slerp between its confident frames (held at the ends). Returns the frames changed."""
    changed = 0
    T = len(rotations)
    frames = np.arange(T)
    for part, joints in ik.PART_JOINTS.items():
        bad = confidence[part] < MIN_VISIBILITY
        for j in joints:  # a turn beyond a flip's size since the last accepted frame is a flip
            last = None
            for t in np.flatnonzero(~bad):
                if last is not None:
                    rel = rotations[last, j].T @ rotations[t, j]
                    if np.degrees(Rotation.from_matrix(rel).magnitude()) > FLIP_DEG:
                        bad[t] = True
                        continue
                last = t
        good = np.flatnonzero(~bad)
        if len(good) == 0 or len(good) == T:
            continue
        changed += int(bad.sum())
        for j in joints:
            if len(good) == 1:
                rotations[bad, j] = rotations[good[0], j]
                continue
            slerp = Slerp(good, Rotation.from_matrix(rotations[good, j]))
            at = np.clip(frames[bad], good[0], good[-1])
            rotations[bad, j] = slerp(at).as_matrix()
    return changed


def solve_translation(
    points: np.ndarray,
    keypoints: np.ndarray,
    weights: np.ndarray,
    image_size: tuple[int, int],
    focal: float,
    iterations: int = 3,
) -> np.ndarray:
    """(T,3) translation t per frame so that ``points + t`` projects onto ``keypoints``.

    Arguments:
        points: (T,K,3) camera-frame points of the posed body at zero translation.
        keypoints: (T,K,2) their observed image positions (pixels).
        weights: (T,K) confidence of each observation.
    Linear least squares on u (z + tz) = f (x + tx) + cx (z + tz) (and v), reweighted by the
    inverse depth so that it minimises the reprojection error in pixels.
    """
    cx, cy = image_size[0] / 2.0, image_size[1] / 2.0
    u = keypoints[..., 0] - cx
    v = keypoints[..., 1] - cy
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    T = len(points)
    t = np.zeros((T, 3))
    depth = np.ones_like(u)
    for _ in range(iterations):
        w = weights / np.maximum(depth, 1e-3) ** 2
        # rows: [f, 0, -u] t = u z - f x ;  [0, f, -v] t = v z - f y
        A = np.zeros((T, 3, 3))
        b = np.zeros((T, 3))
        A[:, 0, 0] = (w * focal**2).sum(1)
        A[:, 0, 2] = A[:, 2, 0] = (w * -focal * u).sum(1)
        A[:, 1, 1] = (w * focal**2).sum(1)
        A[:, 1, 2] = A[:, 2, 1] = (w * -focal * v).sum(1)
        A[:, 2, 2] = (w * (u**2 + v**2)).sum(1)
        ru, rv = u * z - focal * x, v * z - focal * y
        b[:, 0] = (w * focal * ru).sum(1)
        b[:, 1] = (w * focal * rv).sum(1)
        b[:, 2] = (w * (-u * ru - v * rv)).sum(1)
        A += 1e-9 * np.eye(3)
        t = np.linalg.solve(A, b[..., None])[..., 0]
        depth = z + t[:, 2:3]
    return t


def steady_distance(
    roots: np.ndarray, times: np.ndarray, sigma_s: float = DEPTH_SIGMA_S
) -> np.ndarray:
    """(T,3) roots with their distance from the camera low-passed (Gaussian, ``sigma_s`` seconds),
    their direction kept. The distance comes from the person's apparent size, a few pixels at a
    distance: it jitters far more than the direction, and a body does not move like that."""
    if len(roots) < 3:
        return roots
    dist = np.linalg.norm(roots, axis=1)
    t = np.asarray(times, dtype=np.float64)
    w = np.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma_s) ** 2)
    smooth = np.exp((w @ np.log(dist)) / w.sum(axis=1))
    return roots * (smooth / dist)[:, None]


def fit_track(track: Track, body: Any | None, image_size: tuple[int, int], focal: float) -> Track:
    """The track's SMPL motion from its landmarks (see the module docstring)."""
    lm3d = np.asarray(track.extras["landmarks3d"], dtype=np.float64)
    kp2d = np.asarray(track.extras["keypoints2d"], dtype=np.float64)
    P, vis = lm3d[..., :3], lm3d[..., 3]
    measured = bone_lengths(P, vis)
    T = len(track)
    extras = dict(track.extras)
    if body is not None:
        betas = fit_betas(body, measured)
        rest = np.asarray(body.rest_joints(betas), dtype=np.float64)
    else:
        betas = np.zeros(10)
        scale = fit_scale(measured)
        rest = builtin_skeleton(scale).rest_joints
        extras["skeleton_scale"] = np.full(T, scale, dtype=np.float32)
    weights = np.clip(kp2d[:, _PLACE, 2], 0.0, 1.0) ** 2 + 1e-6

    def pose_and_place(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = ik.solve(landmarks, vis, rest)
        rot = result.rotations
        hold_unconfident(rot, result.part_confidence)
        points = posed_landmarks(rest, rot, np.zeros((T, 3)))
        transl = solve_translation(
            points[:, _PLACE], kp2d[:, _PLACE, :2], weights, image_size, focal
        )
        return rot, steady_distance(transl + rest[0], track.times) - rest[0]

    rot, transl = pose_and_place(P)
    # the legs rebuilt on their 2D landmarks (mocap.lite.legs), posed and placed again
    posed = posed_landmarks(rest, rot, transl)
    lifted = lift_legs(posed, kp2d, image_size, focal)
    shift = posed[:, _HIPS].mean(axis=1, keepdims=True) - P[:, _HIPS].mean(axis=1, keepdims=True)
    P = P.copy()
    P[:, _HIPS + _LEGS] = lifted[:, _HIPS + _LEGS] - shift  # the skeleton's own hips, as posed
    rot, transl = pose_and_place(P)
    dtype = track.body_pose.dtype
    return track.replace(
        global_orient=rot[:, 0].astype(dtype),
        body_pose=rot[:, 1:].astype(dtype),
        betas=np.broadcast_to(betas, (T, 10)).astype(track.betas.dtype),
        transl=transl.astype(track.transl.dtype),
        extras=extras,
    )
