"""Quality figures of a finished clip, per person and per frame: what ``report.html`` plots and
``run.json``'s ``quality`` block sums up.

Everything comes from ``motion.npz`` (and the run's body model, when it had one), so a report can be
made again later (`mocap report`). Per person (a :class:`TrackQuality`, per-frame arrays aligned
with the track's saved frames):

- timeline: tracked (detected), interpolated (bridged, score 0) and missing frames (holes inside
  the track's span that were too long to bridge);
- acceleration: mean joint acceleration per frame (camera frame, as ``mocap.smoothing.jitter``:
  its mean is run.json's ``jitter_after_m_s2``);
- 2D reprojection error: the camera-frame joints projected with the run's focal length, against
  the model's own landmarks (``Track.extras["keypoints2d"]``, BlazePose's 33) or else against the
  detection box (mean offset of the four edges of the projected joints' box);
- ground: height of the lowest sole above the world floor (negative: below it);
- bone lengths: per-frame deviation from each bone's median length, of the animation's skeleton
  and, when the model gave them (``Track.extras["landmarks3d"]``, BlazePose's 33 world landmarks),
  of the model's raw 3D landmarks (upper and lower limbs, shoulder and hip widths, flanks);
- foot contacts (``Track.extras["contacts"]``, (T,4) for ``FOOT_JOINTS``, by :mod:`mocap.contacts`)
  and sliding: displacement of the foot points in contact (mm/frame), of the motion as saved
  (before foot locking, which the exporters apply), when the run found contacts;
- the world trajectory of the root, seen from above.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mocap.body.joints import SMPL_PARENTS
from mocap.body.skeleton import FOOT_JOINTS, track_joints
from mocap.motion import Motion, Track
from mocap.smoothing import filter_times

MIN_LANDMARK_CONF = 0.5  # landmarks less visible than this are not compared
PENETRATION_TOL_M = 0.02  # soles this far below the floor count as penetrating
BONES: tuple[tuple[int, int], ...] = tuple((j, p) for j, p in enumerate(SMPL_PARENTS) if p >= 0)
# BlazePose landmark pairs of fixed length: limbs, shoulder and hip widths, flanks
LANDMARK_BONES: tuple[tuple[int, int], ...] = (
    (11, 13), (13, 15), (12, 14), (14, 16), (23, 25), (25, 27), (24, 26), (26, 28),
    (11, 12), (23, 24), (11, 23), (12, 24),
)  # fmt: skip


@dataclass
class TrackQuality:
    """Per-frame quality of one person; arrays are (T,) over the track's saved frames.

    Attributes:
        frames: (T,) frame indices; observed: (T,) True where detected (False: interpolated).
        segments: (kind, first, end) runs over the whole clip, kind in tracked / interpolated /
            missing (``end`` exclusive; frames outside the track's span are in no segment).
        acceleration: m/s^2, NaN at the ends and next to a hole.
        reprojection: pixels, NaN where nothing was measured (interpolated frames, low confidence).
        sole_height: metres above the world floor of the lowest sole.
        bone_deviation: percent, the largest |length - median| / median over the 23 bones;
            landmark_deviation: the same over ``LANDMARK_BONES`` of the model's 3D landmarks, or
            None without them.
        contacts: (T,4) bool for ``FOOT_JOINTS``, or None; sliding: mm/frame (NaN: no contact).
        root_xz: (T,2) world x, z of the pelvis.
        summary: the numbers run.json's ``quality.tracks`` holds for this person.
    """

    track_id: int
    frames: np.ndarray
    observed: np.ndarray
    segments: list[tuple[str, int, int]]
    acceleration: np.ndarray
    reprojection: np.ndarray
    reprojection_kind: str  # "landmarks" or "boxes"
    sole_height: np.ndarray
    bone_deviation: np.ndarray
    landmark_deviation: np.ndarray | None
    contacts: np.ndarray | None
    sliding: np.ndarray | None
    root_xz: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClipQuality:
    """Quality of a clip: one :class:`TrackQuality` per person, the camera in the world."""

    tracks: list[TrackQuality]
    num_frames: int
    fps: float
    camera_xz: np.ndarray  # (2,) world position of the camera seen from above
    camera_forward_xz: np.ndarray  # (2,) unit viewing direction seen from above
    camera_height_m: float
    hfov_deg: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The ``quality`` block of run.json (plain JSON values)."""
        return {
            "camera_height_m": _round(self.camera_height_m),
            "tracks": [t.summary for t in self.tracks],
        }


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def _stat(values: np.ndarray, q: float | None = None) -> float | None:
    """Mean (or percentile ``q``) of the finite values, None when there are none."""
    v = values[np.isfinite(values)]
    if not len(v):
        return None
    return _round(float(np.percentile(v, q)) if q is not None else float(v.mean()))


def _worst(frames: np.ndarray, values: np.ndarray) -> int | None:
    finite = np.isfinite(values)
    return int(frames[np.nanargmax(np.where(finite, values, -np.inf))]) if finite.any() else None


def timeline_segments(
    frames: np.ndarray, observed: np.ndarray, num_frames: int
) -> list[tuple[str, int, int]]:
    """Runs of tracked / interpolated / missing frames of one track inside a clip of ``num_frames``."""
    kind = np.full(max(num_frames, int(frames[-1]) + 1), "", dtype=object)
    kind[frames[0] : frames[-1] + 1] = "missing"
    kind[frames] = np.where(observed, "tracked", "interpolated")
    segments: list[tuple[str, int, int]] = []
    start = 0
    for i in range(1, len(kind) + 1):
        if i == len(kind) or kind[i] != kind[start]:
            if kind[start]:
                segments.append((str(kind[start]), start, i))
            start = i
    return segments


def frame_acceleration(joints: np.ndarray, frames: np.ndarray, fps: float) -> np.ndarray:
    """(T,) mean joint acceleration magnitude per frame, m/s^2 (NaN at the ends and at holes).

    Arguments:
        joints: (T,J,3) metres; frames: (T,) their frame indices; fps: frames per second.
    """
    out = np.full(len(joints), np.nan)
    if len(joints) >= 3:
        acc = (joints[2:] - 2.0 * joints[1:-1] + joints[:-2]) * fps**2
        out[1:-1] = np.linalg.norm(acc, axis=-1).mean(axis=1)
        step = np.diff(frames)
        out[1:-1][(step[1:] != 1) | (step[:-1] != 1)] = np.nan
    return out


def reprojection_error(
    points2d: np.ndarray, track: Track, observed: np.ndarray
) -> tuple[np.ndarray, str]:
    """(T,) pixel error of the projected joints ``points2d`` (T,24,2), and what it was measured on.

    Against the model's landmarks (``keypoints2d`` (T,33,3) x, y, confidence) when the track has
    them: mean distance over the mapped joints seen with confidence >= 0.5. Otherwise against the
    detection box: mean offset of the four edges of the projected joints' bounding box.
    """
    out = np.full(len(points2d), np.nan)
    landmarks = track.extras.get("keypoints2d")
    if landmarks is not None and np.ndim(landmarks) == 3 and np.shape(landmarks)[1] >= 33:
        from mocap.lite.landmarks import JOINT_LANDMARKS  # BlazePose landmarks on SMPL joints

        lm_idx, joint_idx = list(JOINT_LANDMARKS), list(JOINT_LANDMARKS.values())
        lm = np.asarray(landmarks, dtype=np.float64)[:, lm_idx]
        dist = np.linalg.norm(points2d[:, joint_idx] - lm[..., :2], axis=-1)
        seen = lm[..., 2] >= MIN_LANDMARK_CONF
        count = seen.sum(axis=1)
        ok = observed & (count >= 3)
        out[ok] = (np.where(seen, dist, 0.0).sum(axis=1)[ok]) / count[ok]
        return out, "landmarks"
    box = np.concatenate([points2d.min(axis=1), points2d.max(axis=1)], axis=1)
    err = np.abs(box - np.asarray(track.boxes, dtype=np.float64)).mean(axis=1)
    out[observed] = err[observed]
    return out, "boxes"


def bone_deviation(
    joints: np.ndarray, bones: tuple[tuple[int, int], ...] = BONES
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame largest relative bone-length deviation (T,) and per-bone variation (B,), percent.

    Arguments:
        joints: (T,J,3); bones: (child, parent) index pairs. The variation of a bone is its
            length's std / mean over the frames.
    """
    child, parent = (list(x) for x in zip(*bones, strict=True))
    lengths = np.linalg.norm(joints[:, child] - joints[:, parent], axis=-1)  # (T,23)
    median = np.maximum(np.median(lengths, axis=0), 1e-9)
    deviation = (np.abs(lengths - median) / median).max(axis=1) * 100.0
    cv = lengths.std(axis=0) / np.maximum(lengths.mean(axis=0), 1e-9) * 100.0
    return deviation, cv


def foot_sliding(feet: np.ndarray, contacts: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(T,) sliding of the feet in contact, mm per frame: the mean displacement of the foot points
    in contact at a frame and the one before (the foot-locking stage's measure, per frame); NaN
    where none is.

    Arguments:
        feet: (T,4,3) world positions of ``FOOT_JOINTS``, metres; contacts: (T,4) bool.
    """
    out = np.full(len(feet), np.nan)
    if len(feet) < 2:
        return out
    step = np.linalg.norm(np.diff(feet, axis=0), axis=-1) * 1000.0  # (T-1,4)
    both = contacts[1:] & contacts[:-1] & (np.diff(frames) == 1)[:, None]
    count = both.sum(axis=1)
    out[1:][count > 0] = np.where(both, step, 0.0).sum(axis=1)[count > 0] / count[count > 0]
    return out


def pooled_sliding(feet: np.ndarray, contacts: np.ndarray, frames: np.ndarray) -> float | None:
    """Mean displacement (mm/frame) over every foot point and frame pair in contact (as run.json's
    ``contacts.before.sliding_mm_per_frame`` measures it), None without contact."""
    step = np.linalg.norm(np.diff(feet, axis=0), axis=-1) * 1000.0
    both = contacts[1:] & contacts[:-1] & (np.diff(frames) == 1)[:, None]
    return _round(float(step[both].mean()), 3) if both.any() else None


def track_quality(
    track: Track,
    num_frames: int,
    focal: float,
    image_size: tuple[int, int],
    world_joints: np.ndarray,
    sole_clearance: np.ndarray,
    body: Any | None = None,
) -> TrackQuality:
    """Per-frame quality of one track.

    Arguments:
        world_joints: (T',24,3) Y-up world joints over the track's whole span (gaps filled, as the
            exporters write them); sole_clearance: (24,) each joint's rest height above the sole.
        body: the run's body model (SMPL joints), or None for the built-in skeleton.
    """
    from mocap.pipeline.preview import project

    frames = np.asarray(track.frames, dtype=np.int64)
    observed = np.asarray(track.scores) > 0
    joints = track_joints(track, body)  # (T,24,3) camera frame, the rows as saved
    times = filter_times(track)
    steps = np.diff(times)
    fps = 1.0 / float(np.median(steps[steps > 0])) if np.any(steps > 0) else 30.0
    acceleration = frame_acceleration(joints, frames, fps)
    reprojection, kind = reprojection_error(project(joints, focal, image_size), track, observed)
    world = world_joints[frames - frames[0]]
    feet = world[:, list(FOOT_JOINTS)]
    sole = (feet[..., 1] - sole_clearance[list(FOOT_JOINTS)]).min(axis=1)
    deviation, cv = bone_deviation(joints)
    raw = track.extras.get("landmarks3d")
    landmark_dev = landmark_cv = None
    if raw is not None and np.ndim(raw) == 3 and np.shape(raw)[1] >= 33 and observed.any():
        landmark_dev = np.full(len(track), np.nan)  # measured at detected frames only
        seen = np.asarray(raw, dtype=np.float64)[observed, :, :3]
        landmark_dev[observed], landmark_cv = bone_deviation(seen, LANDMARK_BONES)
    contacts = track.extras.get("contacts")
    sliding = None
    if contacts is not None and np.shape(contacts)[:2] == (len(track), 4):
        contacts = np.asarray(contacts) > 0.5
        sliding = foot_sliding(feet, contacts, frames)
    else:
        contacts = None
    penetration = np.maximum(-sole, 0.0)
    summary: dict[str, Any] = {
        "id": track.track_id,
        "missing_frames": int(frames[-1] - frames[0] + 1 - len(frames)),
        "reprojection_against": kind,
        "reprojection_px_median": _stat(reprojection, 50),
        "reprojection_px_p95": _stat(reprojection, 95),
        "reprojection_worst_frame": _worst(frames, reprojection),
        "penetration_cm_max": _round(float(penetration.max()) * 100, 2),
        "penetration_frames": int(np.sum(sole < -PENETRATION_TOL_M)),
        "penetration_worst_frame": _worst(frames, penetration),
        "bone_length_variation_pct_max": _round(float(cv.max()), 3),
        "landmark_bone_variation_pct_max": (
            None if landmark_cv is None else _round(float(landmark_cv.max()), 3)
        ),
        "acceleration_worst_frame": _worst(frames, acceleration),
        "contact_share": None if contacts is None else _round(float(contacts.any(axis=1).mean())),
        "sliding_mm_per_frame": None
        if contacts is None
        else pooled_sliding(feet, contacts, frames),
        "sliding_worst_frame": None if sliding is None else _worst(frames, sliding),
    }
    return TrackQuality(
        track_id=track.track_id,
        frames=frames,
        observed=observed,
        segments=timeline_segments(frames, observed, num_frames),
        acceleration=acceleration,
        reprojection=reprojection,
        reprojection_kind=kind,
        sole_height=sole,
        bone_deviation=deviation,
        landmark_deviation=landmark_dev,
        contacts=contacts,
        sliding=sliding,
        root_xz=world[:, 0, [0, 2]],
        summary=summary,
    )


def clip_quality(
    motion: Motion, num_frames: int | None = None, body: Any | None = None
) -> ClipQuality:
    """Quality of every person of ``motion`` in the shared world the exporters write.

    Arguments:
        num_frames: frames of the clip (run.json's ``video.frames``); default: the last tracked one.
        body: the run's body model (``mocap.body.smpl.BodyModel``), or None (built-in skeleton).
    """
    from exporters import joint_positions
    from mocap.world import build_world

    tracks = [t for t in motion.tracks if len(t)]
    if num_frames is None:
        num_frames = max((int(t.frames[-1]) + 1 for t in tracks), default=0)
    built = build_world(motion, body, smoothing=None)
    placed = {rig.name: (rig, skel) for rig, skel in zip(built.rigs, built.skeletons, strict=True)}
    out = []
    for track in tracks:  # a track the world left out (broken arrays) has no quality either
        if f"person_{track.track_id}" in placed:
            rig, skeleton = placed[f"person_{track.track_id}"]
            out.append(
                track_quality(
                    track,
                    num_frames,
                    motion.focal_length,
                    motion.image_size,
                    joint_positions(rig),
                    skeleton.sole_clearance,
                    body,
                )
            )
    rotation = built.world.rotation
    forward = (rotation @ np.array([0.0, 0.0, 1.0]))[[0, 2]]
    camera = built.world.camera_position
    return ClipQuality(
        tracks=out,
        num_frames=num_frames,
        fps=float(motion.fps),
        camera_xz=camera[[0, 2]],
        camera_forward_xz=forward / max(float(np.linalg.norm(forward)), 1e-9),
        camera_height_m=float(camera[1]),
        hfov_deg=float(np.degrees(2 * np.arctan(motion.image_size[0] / (2 * motion.focal_length)))),
        notes=built.notes,
    )


def person_rows(run: dict[str, Any], quality: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One dict per person: run.json's ``tracks`` entry merged with its ``quality`` entry (from
    ``quality``, default run.json's own block), plus ``foot_sliding_mm_per_frame``: the sliding of
    the exported animation (the foot-locking stage's ``contacts.after``, else ``before``, else
    the motion's own)."""
    block = quality if quality is not None else run.get("quality") or {}
    by_id = {q["id"]: q for q in block.get("tracks", [])}
    rows = []
    for track in run.get("tracks", []):
        row = track | by_id.get(track["id"], {})
        feet = row.get("contacts") or {}
        metrics = feet.get("after") or feet.get("before") or {}
        row["foot_sliding_mm_per_frame"] = metrics.get(
            "sliding_mm_per_frame", row.get("sliding_mm_per_frame")
        )
        rows.append(row)
    return rows
