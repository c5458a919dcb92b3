"""Camera motion from the background: frames and person boxes in, per-frame camera poses out.

Pure OpenCV / numpy, CPU, one pass, memory flat in clip length (only key frames' points are kept).

1. Each frame is shrunk to ``WORK_WIDTH`` pixels and turned grey. Corners are found outside the
   people's boxes (grown by ``BOX_MARGIN``) and tracked frame to frame with pyramidal Lucas-Kanade;
   points that a person walks over are dropped.
2. Every frame is solved against its **key frame** (not the previous frame, so errors do not pile
   up frame by frame): the background homography gives ``R = K^-1 H K`` projected onto SO(3)
   (:func:`mocap.camera_geometry.relative_pose`); where that rotation leaves the points misaligned
   the camera also travelled, and the essential matrix with ``recoverPose`` gives rotation and
   direction. A new key frame starts when fewer than ``KEY_SURVIVAL`` of the key's points remain.
3. **Drift check**: key frames that still share points (up to ``SKIP_EDGES`` keys apart) are solved
   directly as well, and all these measurements are averaged on SO(3); the largest difference
   between the chained and the averaged key rotations is reported as ``drift_deg``.
4. **Translation scale** (only with parallax) comes from the people: background points triangulated
   near a person's feet lie at the person's depth, which the body model gives in metres.
   Positions between key frames are interpolated; frames skipped by ``step`` are slerped.

The poses are relative to the first frame's camera: ``p_first = rotations[k] @ p_k + positions[k]``.
Stored in ``motion.npz`` as ``Motion.extras`` ``camera_R`` (N,3,3), ``camera_t`` (N,3) metres and
``camera_frames`` (N,); :mod:`mocap.world` composes every person's camera-frame pose with them.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from mocap.camera_geometry import (
    angle_deg,
    average_rotations,
    interpolate_poses,
    intrinsics,
    relative_pose,
    triangulated_depths,
)
from mocap.motion import Track

WORK_WIDTH = 640  # pixels: frames are shrunk to this width before tracking
MAX_CORNERS = 400
MIN_TRACKED = 40  # fewer points than this: start a new key frame
KEY_SURVIVAL = 0.6  # new key frame when fewer of the key's points than this remain
TRAVEL_KEY_FRAMES = 15  # ... or, while the camera travels, after this many frames
BOX_MARGIN = 0.1  # person boxes are grown by this fraction of their size on each side
SKIP_EDGES = 3  # the drift check solves key frames up to this many keys apart directly
MIN_SHARED = 30  # points two key frames must share to be solved directly
STATIC_DEG = 1.0  # `auto`: a camera that never turns further than this counts as static
STATIC_M = 0.1  # ... and never travels further than this
DRIFT_WARN_DEG = 2.0
LK: dict[str, Any] = {"winSize": (15, 15), "maxLevel": 3}  # pyramidal Lucas-Kanade


@dataclass
class CameraPath:
    """Camera poses of a clip relative to its first frame (OpenCV axes: x right, y down, z ahead).

    Attributes:
        frames: (N,) frame indices, ascending.
        rotations: (N,3,3) camera-k coordinates -> first-camera coordinates.
        positions: (N,3) camera centres in first-camera coordinates, metres (zeros for a camera
            that only turns).
        drift_deg: largest disagreement of chained and directly solved key frames.
        notes: what was found, for the run's notes.
    """

    frames: np.ndarray
    rotations: np.ndarray
    positions: np.ndarray
    drift_deg: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def max_angle_deg(self) -> float:
        """Largest turn away from the first frame's view."""
        return float(angle_deg(self.rotations).max()) if len(self.frames) else 0.0

    @property
    def travel_m(self) -> float:
        """Largest distance of the camera from where it started."""
        return float(np.linalg.norm(self.positions, axis=1).max()) if len(self.frames) else 0.0

    def is_static(self) -> bool:
        return self.max_angle_deg < STATIC_DEG and self.travel_m < STATIC_M

    def to_extras(self) -> dict[str, np.ndarray]:
        """``Motion.extras`` entries (saved as ``x_camera_*`` in motion.npz)."""
        return {
            "camera_R": self.rotations.astype(np.float64),
            "camera_t": self.positions.astype(np.float64),
            "camera_frames": self.frames.astype(np.int64),
        }

    @classmethod
    def from_extras(cls, extras: Mapping[str, np.ndarray]) -> "CameraPath | None":
        """The path stored in ``Motion.extras``, or None for a static camera (nothing stored)."""
        if "camera_R" not in extras:
            return None
        rot = np.asarray(extras["camera_R"], dtype=np.float64)
        frames = np.asarray(extras.get("camera_frames", np.arange(len(rot))), dtype=np.int64)
        pos = np.asarray(extras.get("camera_t", np.zeros((len(rot), 3))), dtype=np.float64)
        return cls(frames, rot, pos)

    def at(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T,3,3) rotations and (T,3) positions at any frames (interpolated, held at the ends)."""
        return interpolate_poses(self.frames, self.rotations, self.positions, np.asarray(frames))

    def compose(self, track: Track, rest_root: np.ndarray) -> Track:
        """The track in first-camera coordinates: each frame's pose turned and moved by the camera's.

        Arguments:
            rest_root: (3,) the root joint at rest relative to the SMPL origin (``transl`` moves the
                origin; the body turns about the root).
        """
        rot, pos = self.at(np.asarray(track.frames))
        orient = np.einsum("tab,tbc->tac", rot, np.asarray(track.global_orient, np.float64))
        root = np.einsum("tab,tb->ta", rot, rest_root + np.asarray(track.transl, np.float64)) + pos
        return track.replace(global_orient=orient, transl=root - rest_root)


@dataclass
class PeopleInFrame:
    """The people of one frame, as the camera pass needs them."""

    boxes: np.ndarray  # (M,4) x1, y1, x2, y2 pixels of the full image
    depths: np.ndarray  # (M,) distance of each person's root along the optical axis, metres


@dataclass
class _Key:
    frame: int
    points: dict[int, np.ndarray]  # point id -> position (working pixels)
    people: PeopleInFrame | None


def background_mask(shape: tuple[int, int], boxes: np.ndarray, scale: float) -> np.ndarray:
    """(H,W) uint8 mask, 255 on the background: person boxes (grown) and a border cut out."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    mask[8 : h - 8, 8 : w - 8] = 255
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4) * scale:
        mx, my = BOX_MARGIN * (x2 - x1), BOX_MARGIN * (y2 - y1)
        x1, y1, x2, y2 = int(x1 - mx), int(y1 - my), int(np.ceil(x2 + mx)), int(np.ceil(y2 + my))
        mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 0
    return mask


def estimate_camera(
    frames: Iterable[tuple[int, np.ndarray]],
    people: Mapping[int, PeopleInFrame],
    focal: float,
    image_size: tuple[int, int],
    step: int = 1,
) -> CameraPath:
    """Per-frame camera poses of a clip from its background.

    Arguments:
        frames: (frame index, (H,W,3) BGR or (H,W) grey image) in ascending order.
        people: frame index -> the people seen there (their boxes are not background).
        focal: focal length in pixels of the full image (the motion's, so poses and people agree).
        image_size: (width, height) of the full image.
        step: solve every ``step``-th frame only; the others are slerped (cheaper, less shake).
    """
    scale = min(1.0, WORK_WIDTH / float(image_size[0]))
    K = intrinsics(focal * scale, image_size[0] * scale, image_size[1] * scale)
    none = PeopleInFrame(np.zeros((0, 4)), np.zeros(0))
    solved: list[tuple[int, int, np.ndarray, np.ndarray | None]] = []  # frame, key, R, direction
    keys: list[_Key] = []
    chain: list[tuple[np.ndarray, np.ndarray | None]] = []  # key k-1 -> key k: R, direction
    prev: np.ndarray | None = None
    ids = np.zeros(0, np.int64)
    pts = np.zeros((0, 2), np.float32)
    next_id, lost, seen = 0, 0, []
    for index, image in frames:
        seen.append(index)
        if (index - seen[0]) % step and len(seen) > 1:
            continue
        grey = _grey(image, scale)
        here = people.get(index, none)
        mask = background_mask((grey.shape[0], grey.shape[1]), here.boxes, scale)
        if prev is None:
            solved.append((index, 0, np.eye(3), None))
            keys.append(_Key(index, {}, here))
        else:
            pose, key, p_key = None, keys[-1], np.zeros((0, 2), np.float32)
            if len(pts):
                ids, pts = _track(prev, grey, ids, pts, mask)
                shared = np.array([i in key.points for i in ids], dtype=bool)
                p_key = np.array([key.points[i] for i in ids[shared]], np.float32).reshape(-1, 2)
                pose = relative_pose(p_key, pts[shared], K)
            if pose is None:  # too little background: hold the last pose, start a new key
                lost += 1
                rot = solved[-1][2] if solved[-1][1] == len(keys) - 1 else np.eye(3)
                solved.append((index, len(keys) - 1, rot, None))
            else:  # key -> current; stored as current -> key coordinates
                solved.append((index, len(keys) - 1, pose.rotation.T, pose.direction))
            survival = len(p_key) / max(len(key.points), 1)
            travelled = pose is not None and pose.direction is not None
            if travelled and index - key.frame >= TRAVEL_KEY_FRAMES:
                survival = 0.0  # a moving camera: key frames often enough to follow its path
            if pose is None or survival < KEY_SURVIVAL or len(pts) < MIN_TRACKED:
                chain.append((solved[-1][2], solved[-1][3]))
                keys.append(_Key(index, {}, here))
        if not keys[-1].points:  # a new key frame: top up the corners, remember their positions
            ids, pts, next_id = _add_corners(grey, mask, ids, pts, next_id)
            keys[-1].points = {int(i): p.copy() for i, p in zip(ids, pts, strict=True)}
        prev = grey
    if solved and keys[-1].frame != solved[-1][0]:  # the last frame closes the last key's span
        chain.append((solved[-1][2], solved[-1][3]))
        keys.append(_Key(solved[-1][0], {int(i): p for i, p in zip(ids, pts, strict=True)}, here))
    if not seen:
        return CameraPath(np.zeros(0, np.int64), np.zeros((0, 3, 3)), np.zeros((0, 3)))
    return _finish(seen, solved, keys, chain, K, scale, lost)


def _grey(image: np.ndarray, scale: float) -> np.ndarray:
    if scale < 1.0:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _track(
    prev: np.ndarray, grey: np.ndarray, ids: np.ndarray, pts: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lucas-Kanade to the next frame; keep points found that lie on the background there.

    No forward-backward check: it doubled the cost and changed no result (the homography's and
    the essential matrix's RANSAC, then the rotation's own inlier test, drop bad tracks)."""
    start = pts.reshape(-1, 1, 2)
    fwd, ok, _ = cv2.calcOpticalFlowPyrLK(prev, grey, start, start.copy(), **LK)
    fwd = fwd.reshape(-1, 2)
    h, w = mask.shape
    xi = np.clip(fwd[:, 0].round().astype(int), 0, w - 1)
    yi = np.clip(fwd[:, 1].round().astype(int), 0, h - 1)
    good = (ok.ravel() > 0) & (mask[yi, xi] > 0)
    return ids[good], fwd[good].astype(np.float32)


def _add_corners(
    grey: np.ndarray, mask: np.ndarray, ids: np.ndarray, pts: np.ndarray, next_id: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Add Shi-Tomasi corners away from the points already tracked."""
    free = mask.copy()
    for x, y in pts:
        cv2.circle(free, (int(x), int(y)), 10, (0,), -1)
    want = MAX_CORNERS - len(pts)
    found = cv2.goodFeaturesToTrack(grey, max(want, 1), 0.01, 10, mask=free, blockSize=7)
    if want <= 0 or found is None:
        return ids, pts, next_id
    new = found.reshape(-1, 2).astype(np.float32)
    new_ids = np.arange(next_id, next_id + len(new))
    return np.concatenate([ids, new_ids]), np.concatenate([pts, new]), next_id + len(new)


def _finish(
    seen: list[int],
    solved: list[tuple[int, int, np.ndarray, np.ndarray | None]],
    keys: list[_Key],
    chain: list[tuple[np.ndarray, np.ndarray | None]],
    K: np.ndarray,
    scale: float,
    lost: int,
) -> CameraPath:
    """Key rotations averaged with direct key-to-key solves, scale from people, all frames filled."""
    notes = []
    n = len(keys)
    chained = np.repeat(np.eye(3)[None], n, 0)
    for k, (rot, _) in enumerate(chain, start=1):
        chained[k] = chained[k - 1] @ rot
    edges = [(k - 1, k, rot, 1.0) for k, (rot, _) in enumerate(chain, start=1)]
    for i in range(n):
        for j in range(i + 2, min(n, i + SKIP_EDGES + 1)):
            common = sorted(set(keys[i].points) & set(keys[j].points))
            if len(common) < MIN_SHARED:
                continue
            a = np.array([keys[i].points[c] for c in common], np.float32)
            b = np.array([keys[j].points[c] for c in common], np.float32)
            pose = relative_pose(a, b, K)
            if pose is not None:
                edges.append((i, j, pose.rotation.T, 1.0))
    absolute = average_rotations(n, edges, chained)
    drift = float(angle_deg(np.einsum("kba,kbc->kac", chained, absolute)).max()) if n else 0.0
    if drift > DRIFT_WARN_DEG:
        notes.append(
            f"camera drift check: chained and directly solved key frames differ by up to "
            f"{drift:.1f} deg (corrected by averaging; the pan may be too fast or the background "
            "too plain)"
        )
    centres = _key_centres(keys, chain, absolute, K, scale, notes)
    frames = np.array([s[0] for s in solved])
    rotations = np.stack([absolute[k] @ r for _, k, r, _ in solved])
    key_frames = np.array([key.frame for key in keys])
    _, positions = interpolate_poses(key_frames, absolute, centres, frames)
    if lost:
        notes.append(f"camera motion lost in {lost} frame(s) (too little background): held")
    all_frames = np.asarray(seen)
    rot_all, pos_all = interpolate_poses(frames, rotations, positions, all_frames)
    return CameraPath(all_frames, rot_all, pos_all, drift, notes)


def _key_centres(
    keys: list[_Key],
    chain: list[tuple[np.ndarray, np.ndarray | None]],
    absolute: np.ndarray,
    K: np.ndarray,
    scale: float,
    notes: list[str],
) -> np.ndarray:
    """(n,3) key camera centres in first-camera coordinates, metres; zeros without parallax.

    Each key-to-key displacement with parallax is scaled by the depth of people seen in the
    earlier key frame over the unit-baseline depth of background points near their feet; one
    without such points moves at the median speed of the others.
    """
    steps = np.zeros((len(keys), 3))
    lengths: list[float | None] = [None] * len(keys)
    moved = [k for k, (_, d) in enumerate(chain, start=1) if d is not None]
    for k in moved:
        rot, direction = chain[k - 1]
        assert direction is not None
        lengths[k] = _baseline(keys[k - 1], keys[k], rot.T, direction, K, scale)
    span = [keys[k].frame - keys[k - 1].frame if k else 1 for k in range(len(keys))]
    speeds = [v / span[k] for k, v in enumerate(lengths) if v is not None]  # metres per frame
    if moved and not speeds:
        notes.append(
            "the camera travelled but no background was seen near the people's feet to scale it: "
            "camera rotation used, translation left out"
        )
        return np.zeros((len(keys), 3))
    for k in moved:
        _, direction = chain[k - 1]
        assert direction is not None
        length = lengths[k]
        if length is None:  # unscaled: the clip's typical speed over this key's span
            length = float(np.median(speeds)) * span[k]
        steps[k] = absolute[k - 1] @ direction * length
    return np.cumsum(steps, axis=0)


def _baseline(
    a: _Key, b: _Key, rotation: np.ndarray, direction: np.ndarray, K: np.ndarray, scale: float
) -> float | None:
    """Metres the camera travelled from key a to key b, from the people's depth in key a."""
    if a.people is None or not len(a.people.boxes):
        return None
    common = sorted(set(a.points) & set(b.points))
    if len(common) < MIN_SHARED:
        return None
    pa = np.array([a.points[c] for c in common])
    pb = np.array([b.points[c] for c in common])
    depth = triangulated_depths(pa, pb, K, rotation, direction)
    ratios = []
    for box, metres in zip(a.people.boxes * scale, a.people.depths, strict=True):
        x1, y1, x2, y2 = box
        h, w = y2 - y1, x2 - x1
        near = (np.abs(pa[:, 1] - y2) < 0.2 * h) & (pa[:, 0] > x1 - w) & (pa[:, 0] < x2 + w)
        near &= np.isfinite(depth)
        if near.sum() >= 6:  # the floor: inverse depth is linear in the image row
            rows, inverse = pa[near, 1] - y2, 1.0 / depth[near]
            keep = np.ones(len(rows), dtype=bool)
            for _ in range(3):  # trimmed line fit (points on furniture drop out)
                slope, at_feet = np.polyfit(rows[keep], inverse[keep], 1)
                off = np.abs(inverse - (slope * rows + at_feet))
                keep = off <= max(np.percentile(off, 70), 1e-12)
            if at_feet > 0:
                ratios.append(metres * at_feet)
    return float(np.median(ratios)) if ratios else None
