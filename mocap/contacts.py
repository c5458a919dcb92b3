"""Foot contacts: which foot points touch the floor when, how much they slide, and locking them.

Sits between the world (:mod:`mocap.world`: Y up, the floor fitted at y = 0) and the exporters. It
reads world joints and writes contact flags and corrected poses (the locking itself is
:mod:`mocap.foot_lock`).

Points: the ankles and toes, SMPL joints 7, 8, 10 and 11 (``POINT_NAMES``). A point's sole height
is its height above the floor minus its height above the sole at rest (``Skeleton.sole_clearance``).

Detection (:func:`detect_contacts`) uses, per frame, the point's speed (lightly smoothed, m/s), its
sole's height above the person's own floor level (the median height of their lowest sole: a
depth error that lifts a whole person does not hide contacts) and above the other point of the
same foot (a heel rising about the planted toe, or a toe still coming down after heel strike,
is not planted; robust to whole-body vertical jitter). The three share one budget (a foot can be
a little fast or a little high, not both), with hysteresis (stricter to enter a contact
than to stay in one) and a minimum duration.

Metrics (:class:`FootMetrics`), per track, before and after locking, on the same contact flags:

- ``sliding_mm``: WHAM's and GVHMR's foot sliding, the mean displacement (mm per frame) of the
  foot points between consecutive frames in which they are in contact;
- ``penetration_mm``: the mean depth of the lowest sole below the floor, over all frames (0 when
  never below);
- ``floating_mm``: the mean height of the soles of the points in contact above the floor;
- ``contact_share``: the share of frames in which at least one point is in contact.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from exporters import joint_positions
from exporters.rig import RigAnimation
from mocap.errors import MocapError
from mocap.foot_lock import POINTS, lock_feet, spans
from mocap.ground_depth import ground_depth

if TYPE_CHECKING:
    from mocap.body.skeleton import Skeleton
    from mocap.motion import Motion, Track
    from mocap.world import WorldResult

FOOT_LOCK_MODES = ("auto", "off")
POINT_NAMES = ("left_ankle", "right_ankle", "left_toe", "right_toe")
MIN_FRAMES = 3  # shorter tracks are left as they are
SPEED_SMOOTH_S = 0.05  # Gaussian width of the position smoothing before speeds
# The cues share one budget: speed / SPEED + height / HEIGHT + tilt / TILT < 1 (each limit alone
# uses all of it); entering a contact takes the tighter ENTER_ limits, staying in it the STAY_ ones.
ENTER_SPEED, STAY_SPEED = 0.6, 0.96  # m/s
ENTER_HEIGHT, STAY_HEIGHT = 0.07, 0.112  # m above the person's own floor level
ENTER_TILT, STAY_TILT = 0.035, 0.056  # m a sole is above the other point of the same foot
MIN_CONTACT_S = 0.1  # shorter contacts are dropped


@dataclass
class FootMetrics:
    """Foot contact quality of one track (see the module docstring)."""

    sliding_mm: float
    penetration_mm: float
    floating_mm: float
    contact_share: float

    def to_dict(self) -> dict[str, float]:
        return {
            "sliding_mm_per_frame": round(self.sliding_mm, 3),
            "penetration_mm": round(self.penetration_mm, 3),
            "floating_mm": round(self.floating_mm, 3),
            "contact_share": round(self.contact_share, 4),
        }


@dataclass
class Contacts:
    """Contact flags (T,4) and confidences (T,4, in [0, 1]) of the foot points."""

    flags: np.ndarray
    confidence: np.ndarray


@dataclass
class FootLockReport:
    """Contacts and foot metrics of one track, before and (when locked) after locking."""

    track_id: int
    name: str
    frame_start: int  # video frame of the first flag
    contacts: np.ndarray  # (T,4) bool, the rig's frames
    before: FootMetrics
    after: FootMetrics | None = None  # None: not locked (--foot-lock off)
    released_frames: int = 0  # frames a lock was (partly) let go: out of reach, far, knee snap
    planted: np.ndarray | None = None  # (T,4) contact frames held on their lock after locking
    depth_change: float = 0.0  # mean |relative distance change| from the planted feet (0: none)

    def spans(self) -> dict[str, list[list[int]]]:
        """Per point, the [first, last] video frames of each contact."""
        f0 = self.frame_start
        return {
            name: [[a + f0, b + f0] for a, b in spans(self.contacts[:, p])]
            for p, name in enumerate(POINT_NAMES)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "locked": self.after is not None,
            "before": self.before.to_dict(),
            "after": self.after.to_dict() if self.after is not None else None,
            "released_frames": self.released_frames,
            "depth_change": round(self.depth_change, 4),
            "planted_share": round(float(self.planted.sum() / max(self.contacts.sum(), 1)), 4)
            if self.planted is not None
            else None,
            "spans": self.spans(),
        }

    def summary(self) -> str:
        b, a = self.before, self.after
        line = f"{self.name}: feet in contact {100 * b.contact_share:.0f} % of frames, sliding "
        if a is None:
            return line + f"{b.sliding_mm:.1f} mm/frame (not locked)"
        return line + (
            f"{b.sliding_mm:.1f} -> {a.sliding_mm:.1f} mm/frame, penetration "
            f"{b.penetration_mm:.1f} -> {a.penetration_mm:.1f} mm, floating "
            f"{b.floating_mm:.1f} -> {a.floating_mm:.1f} mm"
        )


@dataclass
class FootLockResult:
    """Reports by track id, and notes for the user (each said once)."""

    reports: dict[int, FootLockReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _hysteresis(enter: np.ndarray, stay: np.ndarray) -> np.ndarray:
    """(T,) True from a frame where ``enter`` holds for as long as ``stay`` holds."""
    out = np.zeros(len(enter), bool)
    for a, b in spans(stay):
        on = np.flatnonzero(enter[a : b + 1])
        if len(on):  # from the first entering frame to the end of the stay-run
            out[a + on[0] : b + 1] = True
    return out


def detect_contacts(
    points: np.ndarray, clearance: np.ndarray, fps: float, floor: float = 0.0
) -> Contacts:
    """Contact flags and confidences of foot points.

    Arguments:
        points: (T,P,3) world positions (Y up). clearance: (P,) heights above the sole at rest.
        fps: frame rate. floor: the floor's height.
    """
    t = len(points)
    smooth = gaussian_filter1d(points, SPEED_SMOOTH_S * fps, axis=0, mode="nearest")
    speed = (
        np.linalg.norm(np.gradient(smooth, axis=0), axis=-1) * fps
        if t > 1
        else np.zeros((t, points.shape[1]))
    )
    sole = smooth[..., 1] - clearance - floor
    level = float(np.median(sole.min(axis=1)))
    height = sole - level
    other = sole[:, [2, 3, 0, 1]] if sole.shape[1] == 4 else sole  # ankle <-> toe of each foot
    tilt = sole - np.minimum(sole, other)  # heel up (heel off) or toe up (heel strike)
    # one budget shared by the cues: slow and low and flat, each using up part of it
    enter = speed / ENTER_SPEED + np.maximum(height, 0) / ENTER_HEIGHT + tilt / ENTER_TILT < 1.0
    stay = speed / STAY_SPEED + np.maximum(height, 0) / STAY_HEIGHT + tilt / STAY_TILT < 1.0
    flags = np.zeros_like(enter)
    shortest = max(1, int(round(MIN_CONTACT_S * fps)))
    for p in range(points.shape[1]):
        f = _hysteresis(enter[:, p], stay[:, p])
        for a, b in spans(f):
            if b - a + 1 < shortest:
                f[a : b + 1] = False
        flags[:, p] = f
    conf = np.clip(1.0 - speed / STAY_SPEED, 0.05, 1.0) * np.clip(
        1.0 - height / STAY_HEIGHT, 0.05, 1.0
    )
    return Contacts(flags=flags, confidence=np.where(flags, conf, 0.0))


def foot_metrics(
    points: np.ndarray, clearance: np.ndarray, flags: np.ndarray, floor: float = 0.0
) -> FootMetrics:
    """Sliding, penetration, floating and contact share of points (T,P,3) with flags (T,P)."""
    sole = points[..., 1] - clearance - floor
    both = flags[1:] & flags[:-1]
    step = np.linalg.norm(np.diff(points, axis=0), axis=-1)
    sliding = float(step[both].mean()) if both.any() else 0.0
    floating = float(np.maximum(sole[flags], 0.0).mean()) if flags.any() else 0.0
    return FootMetrics(
        sliding_mm=1000.0 * sliding,
        penetration_mm=1000.0 * float(np.maximum(-sole.min(axis=1), 0.0).mean()),
        floating_mm=1000.0 * floating,
        contact_share=float(flags.any(axis=1).mean()),
    )


def stored_contacts(track: "Track", rig: RigAnimation) -> np.ndarray | None:
    """The track's own contact flags on the rig's frames (``extras["contacts"]`` (T,4)), if any."""
    stored = track.extras.get("contacts")
    if stored is None or np.shape(stored) != (len(track), len(POINTS)) or len(track) < 2:
        return None
    frames = rig.frame_start + np.arange(rig.num_frames)
    cols = [
        np.interp(frames, track.frames, np.asarray(stored[:, p], float)) for p in range(len(POINTS))
    ]
    return np.stack(cols, axis=1) >= 0.5


def to_track_frames(report: FootLockReport, track: "Track") -> np.ndarray:
    """The report's flags on the track's own frames as (T,4) float32 0/1 (``motion.npz``)."""
    index = np.clip(np.asarray(track.frames) - report.frame_start, 0, len(report.contacts) - 1)
    return report.contacts[index].astype(np.float32)


def lock_rigs(
    rigs: list[RigAnimation],
    skeletons: "list[Skeleton]",
    tracks: "list[Track | None]",
    floor: float | None,
    mode: str = "auto",
    camera: np.ndarray | None = None,
) -> FootLockResult:
    """Find contacts on each rig and, with ``mode="auto"``, lock its feet (the rigs are replaced in
    the list). ``floor`` None (no floor fitted) leaves everything as it is, said once. With the
    world position of a static ``camera``, ``mode="auto"`` first sets each frame's distance to the
    person from their planted feet (:mod:`mocap.ground_depth`); the "before" metrics are of the
    rig as given."""
    if mode not in FOOT_LOCK_MODES:
        raise MocapError(f"unknown foot lock mode {mode!r}; use auto or off")
    result = FootLockResult()
    if floor is None:
        result.notes.append("no floor was fitted: foot contacts not found, feet not locked")
        return result
    for i, (rig, skeleton, track) in enumerate(zip(rigs, skeletons, tracks, strict=True)):
        if rig.num_frames < MIN_FRAMES:
            result.notes.append(
                f"{rig.name} has {rig.num_frames} frame(s), too few to find foot contacts: feet not locked"
            )
            continue
        clearance = skeleton.sole_clearance[list(POINTS)]
        points = joint_positions(rig)[:, list(POINTS)]
        depth = None
        if mode == "auto" and camera is not None:
            depth = ground_depth(rig, clearance, camera, floor)
        if depth is not None:
            rig = depth[0]
        found = detect_contacts(joint_positions(rig)[:, list(POINTS)], clearance, rig.fps, floor)
        own = stored_contacts(track, rig) if track is not None else None
        flags = found.flags if own is None else own
        conf = np.where(flags, np.maximum(found.confidence, 0.05), 0.0)
        tid = track.track_id if track is not None else i
        report = FootLockReport(
            tid, rig.name, rig.frame_start, flags, foot_metrics(points, clearance, flags, floor)
        )
        if mode == "auto":  # with no contacts at all, still: soles kept above the floor
            locked = lock_feet(rig, clearance, flags, conf, floor)
            rigs[i] = locked.rig
            after = joint_positions(locked.rig)[:, list(POINTS)]
            report.after = foot_metrics(after, clearance, flags, floor)
            report.released_frames = int((locked.released > 0.01).any(axis=1).sum())
            report.planted = locked.planted
            report.depth_change = depth[1].mean_change if depth is not None else 0.0
        result.reports[tid] = report
    return result


def lock_world(built: "WorldResult", motion: "Motion", mode: str = "auto") -> FootLockResult:
    """:func:`lock_rigs` on the rigs of :func:`mocap.world.build_world` (replaced in place)."""
    by_name = {f"person_{t.track_id}": t for t in motion.tracks}
    tracks = [by_name.get(rig.name) for rig in built.rigs]
    from mocap.camera import CameraPath

    world = getattr(built, "world", None)
    floor = 0.0 if world is not None else None
    static = CameraPath.from_extras(motion.extras) is None  # a moving camera: no fixed position
    camera = world.camera_position if world is not None and static else None
    return lock_rigs(built.rigs, built.skeletons, tracks, floor, mode, camera)


def with_contacts(motion: "Motion", reports: dict[int, FootLockReport]) -> "Motion":
    """The motion with each reported track's contact flags in ``extras["contacts"]`` (T,4)."""
    from dataclasses import replace

    tracks = [
        t.replace(extras={**t.extras, "contacts": to_track_frames(reports[t.track_id], t)})
        if t.track_id in reports
        else t
        for t in motion.tracks
    ]
    return replace(motion, tracks=tracks)


def find_contacts(
    motion: "Motion", body: Any = None, mode: str = "auto"
) -> tuple["Motion", FootLockResult]:
    """Contacts of every track in the clip's world (:func:`mocap.world.build_world`, the motion as
    saved), stored in the motion (``extras["contacts"]``, what ``motion.npz`` holds), and the
    locking's effect (``mode="auto"``) without writing anything."""
    from mocap.world import build_world

    built = build_world(motion, body, smoothing=None)
    result = lock_world(built, motion, mode)
    return with_contacts(motion, result.reports), result
