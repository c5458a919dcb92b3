"""Depth from planted feet: each frame's distance to a person, set by the foot they stand on.

A monocular estimate knows well where a person is in the image and poorly how far away: depth from
apparent size (the embedded model) or from a predicted weak-perspective camera (HMR) wanders by a
few percent from frame to frame. The whole body then slides along the line of sight, and a foot
that stays put in the image slides over the floor, most for people walking towards or away from the
camera (on the walking-crowd clip, the nearest walker's planted feet moved at ~1 m/s, and no contact
was found at all).

A planted foot measures that depth. Its image position is known and its sole is on the floor, so
its viewing ray meets the floor where it stands (GLAMR and SLAHMR use the same ground constraint
inside their optimisations; here it is a closed form per frame):

1. **Lifted points.** Each foot point (ankles, toes) is moved along its own viewing ray to the height
   at which its sole would touch the floor. Moving the body along the line of sight does not move
   a lifted point, so its speed is the image's, free of the depth noise.
2. **Plants.** A point is planted where its lifted position is still (slower than ``PLANT_SPEED``),
   its sole is within ``PLANT_HEIGHT`` of the frame's lowest sole and within ``PLANT_FLOOR`` of
   the floor, for at least ``MIN_PLANT_S``: a jump's apex or a swinging foot is not a plant.
3. **Depth.** On each frame with plants, the body is moved along its root's viewing ray so that the
   planted soles reach the floor (the confidence-weighted mean of the closed-form shifts); between
   plants the shift is interpolated (a jump's flight keeps its height), then smoothed over
   ``SMOOTH_S`` and bounded to ``MAX_CHANGE`` of the distance. The measurement is weighed against
   the estimate's own depth as two Gaussian errors: a sole's height error (``SOLE_STD``) is a
   distance error of ``SOLE_STD / h`` for a root ``h`` below the camera, so a camera high above
   the people measures depth from their feet far better than one at hip height, which barely
   changes it (``DEPTH_STD`` is the estimate's). The root stays on its viewing ray, so the
   person stays where they were in the image; their image grows or shrinks with the distance.

It needs the camera's position in the world (a static camera; a moving one is left to the camera
path) and runs before contacts are found and feet locked (:mod:`mocap.contacts`).
"""

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter1d

from exporters import joint_positions
from exporters.rig import RigAnimation

POINTS = (7, 8, 10, 11)  # left/right ankle, left/right toe (SMPL joints), as in mocap.foot_lock
PLANT_SPEED = 0.5  # m/s: a lifted point slower than this may be planted
PLANT_HEIGHT = 0.05  # m: its sole at most this above the frame's lowest sole
PLANT_FLOOR = 0.3  # m: and at most this above the floor (a depth error lifts a person less)
MIN_PLANT_S = 0.1  # shorter plants are ignored
SPEED_SMOOTH_S = 0.05  # Gaussian width of the lifted points' smoothing before speeds
SMOOTH_S = 0.1  # Gaussian width of the depth shift's smoothing
MAX_CHANGE = 0.25  # the distance changes by at most this share
DEPTH_STD = 0.03  # the estimate's own distance error, as a share of the distance
SOLE_STD = 0.02  # m: a planted sole's height error in the estimated pose


@dataclass
class DepthFix:
    """What :func:`ground_depth` did to one rig."""

    change: np.ndarray  # (T,) relative change of the distance along the root's ray (0: none)
    planted: np.ndarray  # (T,P) the plants that set it

    @property
    def mean_change(self) -> float:
        return float(np.abs(self.change).mean()) if len(self.change) else 0.0


def lifted_points(
    points: np.ndarray, clearance: np.ndarray, camera: np.ndarray, floor: float
) -> np.ndarray | None:
    """(T,P,3) points moved along their viewing rays to where their soles touch the floor (the
    plane ``y = floor + clearance``); None when a ray does not meet it from above in front of
    the camera."""
    ray = points - camera
    if not np.all(ray[..., 1] < 0):  # a point at or above the camera's height
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        along = (floor + clearance - camera[1]) / ray[..., 1]
    if not np.all(np.isfinite(along) & (along > 0)):
        return None
    return camera + along[..., None] * ray


def _runs_at_least(flags: np.ndarray, shortest: int) -> np.ndarray:
    """(T,P) ``flags`` without the runs shorter than ``shortest`` frames."""
    out = flags.copy()
    for p in range(flags.shape[1]):
        edges = np.flatnonzero(np.diff(np.r_[0, flags[:, p].astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if b - a < shortest:
                out[a:b, p] = False
    return out


def ground_depth(
    rig: RigAnimation, clearance: np.ndarray, camera: np.ndarray, floor: float = 0.0
) -> tuple[RigAnimation, DepthFix] | None:
    """The rig moved along its line of sight, per frame, so that its planted feet stand on the
    floor (see the module docstring); None when nothing can be measured (a foot ray that misses
    the floor, a root at or above the camera's height, no plant)."""
    t = rig.num_frames
    if t < 3:
        return None
    camera = np.asarray(camera, dtype=np.float64)
    points = joint_positions(rig)[:, list(POINTS)]
    lifted = lifted_points(points, clearance, camera, floor)
    sight = rig.root_positions - camera  # the root's viewing ray (camera to root)
    if lifted is None or not np.all(sight[:, 1] < -1e-3):
        return None
    smooth = gaussian_filter1d(lifted, SPEED_SMOOTH_S * rig.fps, axis=0, mode="nearest")
    speed = np.linalg.norm(np.gradient(smooth, axis=0), axis=-1) * rig.fps
    sole = points[..., 1] - clearance - floor
    low = sole - sole.min(axis=1, keepdims=True)
    planted = (speed < PLANT_SPEED) & (low < PLANT_HEIGHT) & (sole < PLANT_FLOOR)
    planted = _runs_at_least(planted, max(2, int(round(MIN_PLANT_S * rig.fps))))
    seen = planted.any(axis=1)
    if not seen.any():
        return None
    # the shift along the root's ray that puts each planted sole on the floor, as a share of it
    weight = np.where(planted, 1.0 - speed / PLANT_SPEED, 0.0) + 1e-9 * planted
    share = -sole / sight[:, 1:2]
    frames = np.flatnonzero(seen)
    measured = (weight * share).sum(axis=1)[seen] / weight.sum(axis=1)[seen]
    spread = SOLE_STD / np.abs(sight[seen, 1])  # the measurement's error, share of the distance
    measured *= DEPTH_STD**2 / (DEPTH_STD**2 + spread**2)
    change = np.interp(np.arange(t), frames, measured)  # held before the first, after the last
    change = gaussian_filter1d(change, SMOOTH_S * rig.fps, mode="nearest")
    change = np.clip(change, -MAX_CHANGE, MAX_CHANGE)
    moved = replace(rig, root_positions=rig.root_positions + change[:, None] * sight)
    return moved, DepthFix(change, planted)
