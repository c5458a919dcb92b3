"""From the camera frame to a Y-up world shared by all people of a clip (static camera).

The model predicts each person in the camera frame (x right, y down, z forward): a global
orientation and the full-image translation of the SMPL origin. For a static, level camera the world
is the camera frame turned upside down about x (x right, y up, z towards the camera; right-handed,
Y-up as BVH and glTF expect; the Blender writer converts to Z-up itself).

Cameras are rarely level: a camera pitched down makes people walking away from it climb. The
floor's slope is therefore fitted to the people's foot contacts (per frame, the lowest sole point),
modelling depth errors along the camera rays, robustly, with a prior that the camera is level
(:func:`fit_floor_tilt`):
directions the contacts do not span (one person standing still, or walking along a line) stay
level. The world is turned by the smallest rotation that makes that floor horizontal; a fit
steeper than 30 degrees is not trusted.

Then the world is shifted:

- the floor (y = 0) at the lowest foot contact of the clip: a low percentile, over all people and
  frames, of the height of the lowest sole (ankle and foot joints minus their rest height above the
  sole), so one noisy frame does not sink everybody;
- the origin (x = z = 0) on the floor below the people's mean starting position.

One transform for the whole clip: relative positions between people and root motion are kept,
with one exception. A monocular model's depth is its least certain output, and a person placed too
far or too near ends up floating above or sunk below the shared floor (seen from a camera above the
people, depth errors move them up or down). When a person's own lowest contacts are more than
``FLOOR_SNAP_M`` off the shared floor, that person is moved vertically, as a whole clip (one
offset, so jumps and stairs within the clip are kept), onto it; the run's notes say who and by how
much.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from exporters import joint_positions
from exporters.rig import RigAnimation, RigMesh, smpl_pose_dirs
from mocap.body.skeleton import (
    FOOT_JOINTS,
    BodySource,
    Skeleton,
    builtin_skeleton,
    smpl_skeleton,
    track_scale,
)
from mocap.camera import CameraPath
from mocap.errors import MocapError
from mocap.motion import Motion, Track
from mocap.motion_check import track_problem
from mocap.smoothing import JitterReport, smooth_track

# camera (x right, y down, z forward) -> Y-up world (x right, y up, z towards the camera)
CAMERA_TO_WORLD = np.diag([1.0, -1.0, -1.0])
FLOOR_PERCENTILE = 5.0
MAX_TILT_DEG = 30.0  # a floor fitted steeper than this is not trusted (level camera assumed)
LOG_DEPTH_NOISE = 0.05  # expected relative error of a foot contact's distance from the camera
SLOPE_PRIOR_STD = 0.15  # prior std of the floor slope seen from a level camera (about 9 deg)
BODY_UP_PRIOR_STD = 0.02  # ... around the slope the people's own up direction gives (1 deg)
ROBUST_LOG_SCALE = 0.10  # contacts 10 % off the floor plane's distance are ignored (jumps)
FRAMES_PER_CELL = 15  # a floor cell counts fully once contacts stayed in it this many frames
FLOOR_CELL_M = 0.5  # contacts within one floor cell count as one piece of evidence
MIN_RAY_DIP = 0.05  # contacts less than ~3 deg below the horizon say little about the floor
FLOOR_SNAP_M = 0.15  # a person whose own floor is further than this from the shared one is moved


@dataclass
class WorldFrame:
    """The clip's camera-to-world transform: ``p_world = rotation @ p_cam - offset``."""

    rotation: np.ndarray  # (3,3)
    offset: np.ndarray  # (3,) world position of the (rotated) camera-frame point that became origin

    @property
    def camera_position(self) -> np.ndarray:
        """(3,) where the camera stands in the world."""
        return -self.offset


@dataclass
class WorldResult:
    """Rigs of a clip in one world, with how they were made."""

    rigs: list[RigAnimation]
    world: WorldFrame
    skeletons: list[Skeleton]
    jitter: dict[int, JitterReport] = field(default_factory=dict)  # track id -> before/after
    notes: list[str] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # track id -> why it was left out


def _np(x: object) -> np.ndarray:
    """numpy view of an array or a CPU torch tensor."""
    detach = getattr(x, "detach", None)
    return np.asarray(detach().cpu().numpy() if detach else x, dtype=np.float64)


def contiguous(track: Track) -> Track:
    """Fill the gaps of a track so that it has every frame from its first to its last.

    Rotations are interpolated by slerp, translations, times, betas, cameras and boxes linearly;
    filled frames get score 0. A track without gaps is returned unchanged.
    """
    frames = np.asarray(track.frames, dtype=np.int64)
    if len(frames) < 2 or np.all(np.diff(frames) == 1):
        return track
    if np.any(np.diff(frames) <= 0):
        raise MocapError(
            f"track {track.track_id} has unordered frame indices; re-run `mocap run` on the clip"
        )
    full = np.arange(frames[0], frames[-1] + 1)
    rots = np.concatenate([track.global_orient[:, None], track.body_pose], axis=1)
    out_rots = np.empty((len(full), rots.shape[1], 3, 3))
    for j in range(rots.shape[1]):
        out_rots[:, j] = Slerp(frames, Rotation.from_matrix(rots[:, j]))(full).as_matrix()

    def lerp(a: np.ndarray) -> np.ndarray:
        a2 = np.asarray(a, dtype=np.float64).reshape(len(frames), -1)
        cols = [np.interp(full, frames, a2[:, c]) for c in range(a2.shape[1])]
        return np.stack(cols, axis=1).reshape((len(full),) + np.shape(a)[1:])

    seen = np.isin(full, frames)
    scores = np.where(seen, np.interp(full, frames, track.scores), 0.0)
    return track.replace(
        frames=full,
        times=lerp(track.times),
        global_orient=out_rots[:, 0],
        body_pose=out_rots[:, 1:],
        betas=lerp(track.betas),
        cam_crop=lerp(track.cam_crop),
        transl=lerp(track.transl),
        boxes=lerp(track.boxes),
        scores=scores,
        extras={k: lerp(v) for k, v in track.extras.items()},
    )


def skeleton_for(track: Track, body: BodySource | None) -> Skeleton:
    """The track's skeleton: SMPL rest joints for its median betas, else the built-in one."""
    if body is None:
        return builtin_skeleton(track_scale(track))
    betas = np.median(np.asarray(track.betas, dtype=np.float64), axis=0)
    sole = float(_np(body.rest_vertices(betas))[:, 1].min())
    return smpl_skeleton(body, betas, sole_height=sole)


def _sole_contacts(rig: RigAnimation, skeleton: Skeleton) -> np.ndarray:
    """(T,3) per frame, the lowest sole point of the person (ankle/foot joint minus its clearance)."""
    feet = joint_positions(rig)[:, FOOT_JOINTS]  # (T,4,3)
    feet[..., 1] -= skeleton.sole_clearance[list(FOOT_JOINTS)]
    return feet[np.arange(len(feet)), feet[..., 1].argmin(axis=1)]


def fit_floor_tilt(
    roots: np.ndarray, contacts: np.ndarray, prior_slope: np.ndarray | None = None
) -> np.ndarray:
    """Slope (a, b) of the floor plane ``y = a x + b z + c`` under the people's foot contacts.

    Arguments:
        roots: (N,3) root (pelvis) positions, level camera world, camera at the origin.
        contacts: (N,3) the lowest sole point of the same person and frame.

    A monocular estimate knows the direction of a person from the camera (the image position)
    and the body's pose far better than the distance: a distance error moves the whole body
    along the ray through its root. So the model predicts each root's distance: with
    ``n = (-a, 1, -b)``, a body whose contact (root + o) is on the floor, seen along the unit root
    ray d, is at distance ``s = (c - n . o) / (n . d)``; residuals are in log-distance. Depth noise
    then cannot fake a slope, as it does in a vertical fit (farther also means lower below a
    camera). Gauss-Newton with Tukey reweighting (annealed to 10 %: jumps and outliers drop out),
    and a prior on the slope: ``prior_slope`` (the people's own up direction, see
    :func:`body_up_slope`), else a level camera. Frames are not independent evidence: a 50 cm floor cell
    counts at most once, however long the contacts stay in it, so directions the contacts do not
    span (a person standing, or walking along a line) stay level. Roots less than ~3 degrees below
    the camera's horizon are not used (camera at hip height or lower: level assumed).
    """
    dist = np.linalg.norm(roots, axis=1)
    rays = roots / np.maximum(dist, 1e-9)[:, None]
    offsets = contacts - roots
    usable = -rays[:, 1] > MIN_RAY_DIP
    height = dist * -rays[:, 1] - offsets[:, 1]  # camera height above each contact, level camera
    center = np.zeros(3) if prior_slope is None else np.array([*prior_slope, 0.0])
    if usable.sum() < 3 or np.median(height[usable]) <= 0:
        return center[:2].copy()
    rays, offsets, log_dist = rays[usable], offsets[usable], np.log(dist[usable])
    cells = np.floor(contacts[usable][:, [0, 2]] / FLOOR_CELL_M).astype(np.int64)
    _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    evidence = 1.0 / np.maximum(counts[inverse.reshape(-1)], FRAMES_PER_CELL)
    std = SLOPE_PRIOR_STD if prior_slope is None else BODY_UP_PRIOR_STD
    prior = np.diag([(LOG_DEPTH_NOISE / std) ** 2] * 2 + [0.0])
    theta = np.array([*center[:2], float(np.log(np.median(height[usable])))])  # a, b, log(-c)

    def residuals(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num = np.exp(t[2]) - t[0] * offsets[:, 0] + offsets[:, 1] - t[1] * offsets[:, 2]
        den = t[0] * rays[:, 0] - rays[:, 1] + t[1] * rays[:, 2]
        num, den = np.maximum(num, 1e-6), np.maximum(den, 1e-6)
        return log_dist - np.log(num) + np.log(den), num, den

    for scale in (np.inf,) * 4 + (0.3,) * 6 + (ROBUST_LOG_SCALE,) * 10:
        r, num, den = residuals(theta)
        u = r / scale
        w = evidence * np.where(np.abs(u) < 1.0, (1.0 - u**2) ** 2, 0.0)
        if np.count_nonzero(w) < 3:
            break
        jac = np.stack(
            [
                offsets[:, 0] / num + rays[:, 0] / den,
                offsets[:, 2] / num + rays[:, 2] / den,
                -np.exp(theta[2]) / num,
            ],
            axis=1,
        )
        step = np.linalg.solve(
            jac.T @ (w[:, None] * jac) + prior, jac.T @ (w * r) + prior @ (theta - center)
        )
        cost = w @ r**2 + (theta - center) @ prior @ (theta - center)
        for _ in range(20):  # backtracking: the model is non-linear in the slope and height
            trial = theta - step
            if w @ residuals(trial)[0] ** 2 + (trial - center) @ prior @ (trial - center) <= cost:
                theta = trial
                break
            step = step / 2.0
    return theta[:2]


def _rotation_to_up(up: np.ndarray) -> np.ndarray:
    """(3,3) smallest rotation taking unit vector ``up`` to +y."""
    axis = np.cross(up, [0.0, 1.0, 0.0])
    angle = np.arctan2(np.linalg.norm(axis), up[1])
    if angle < 1e-12:
        return np.eye(3)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def body_up_slope(rigs: list[RigAnimation]) -> np.ndarray | None:
    """Floor slope (a, b) implied by the people's own up direction (level camera world), or None.

    People stand and walk upright, so the mean direction of their bodies' up axis (the root
    rotation applied to SMPL's +y) is gravity as the camera sees it: a camera looking down sees
    everyone leaning back. The mean over all frames and people averages out gait and lean.
    """
    ups = np.concatenate([rig.local_rotations[:, 0, :, 1] for rig in rigs])  # (N,3) body +y
    if len(ups) < 10:
        return None
    up = ups.mean(axis=0)
    if np.linalg.norm(up) < 0.5 or up[1] <= 0.5:  # people disagree, or lie rather than stand
        return None
    return np.array([-up[0] / up[1], -up[2] / up[1]])


def level_correction(rigs: list[RigAnimation], skeletons: list[Skeleton]) -> np.ndarray | None:
    """(3,3) rotation that makes the fitted floor horizontal, or None when it is tilted > 30 deg."""
    pairs = list(zip(rigs, skeletons, strict=True))
    roots = np.concatenate([rig.root_positions for rig, _ in pairs])
    contacts = np.concatenate([_sole_contacts(rig, skel) for rig, skel in pairs])
    a, b = fit_floor_tilt(roots, contacts, body_up_slope(rigs))
    if np.degrees(np.arctan(np.hypot(a, b))) > MAX_TILT_DEG:
        return None
    up = np.array([-a, 1.0, -b])
    return _rotation_to_up(up / np.linalg.norm(up))


def _camera_rig(
    track: Track, skeleton: Skeleton, fps: float, body: BodySource | None, to_world: np.ndarray
) -> RigAnimation:
    """The track as a rig in the rotated camera frame (before the floor/origin shift)."""
    rot = np.concatenate([track.global_orient[:, None], track.body_pose], axis=1).astype(np.float64)
    rot[:, 0] = to_world @ rot[:, 0]
    root = (skeleton.rest_joints[0] + np.asarray(track.transl, dtype=np.float64)) @ to_world.T
    mesh = None
    if body is not None:
        betas = np.median(np.asarray(track.betas, dtype=np.float64), axis=0)
        mesh = RigMesh(
            rest_vertices=_np(body.rest_vertices(betas)),
            faces=np.asarray(_np(body.faces), dtype=np.int64),
            weights=_np(body.lbs_weights),
            pose_dirs=smpl_pose_dirs(body),  # the world's axes are SMPL's: posedirs as they are
        )
    return RigAnimation(
        name=f"person_{track.track_id}",
        joint_names=skeleton.joint_names,
        parents=skeleton.parents,
        rest_offsets=skeleton.offsets(),
        root_positions=root,
        local_rotations=rot,
        fps=float(fps),
        frame_start=int(track.frames[0]),
        mesh=mesh,
    )


def place_in_world(
    rigs: list[RigAnimation],
    skeletons: list[Skeleton],
    to_world: np.ndarray,
    notes: list[str] | None = None,
) -> WorldFrame:
    """Shift camera-aligned rigs (in place) so the floor is y = 0 and the people start near x = z = 0.

    A person whose own floor (low percentile of their sole heights) is more than ``FLOOR_SNAP_M``
    from the shared one has a depth error: they are moved along their viewing ray (so they stay
    where the video shows them) until they stand on it, or vertically when no ray distance within
    4x does; each such move is appended to ``notes``.
    """
    soles = [_sole_contacts(rig, skel)[:, 1] for rig, skel in zip(rigs, skeletons, strict=True)]
    floor = float(np.percentile(np.concatenate(soles), FLOOR_PERCENTILE))
    start = np.mean([rig.root_positions[0] for rig in rigs], axis=0)
    offset = np.array([start[0], floor, start[2]])
    for rig, sole in zip(rigs, soles, strict=True):
        own = float(np.percentile(sole, FLOOR_PERCENTILE)) - floor
        if abs(own) > FLOOR_SNAP_M:
            scale = _distance_onto_floor(rig.root_positions[:, 1], sole, floor)
            if scale is not None:  # along the viewing ray: the image stays where it was
                rig.root_positions = rig.root_positions * scale
                how = f"moved {100 * (scale - 1):+.0f}% along its viewing ray onto it"
            else:  # a ray that never meets the floor: moved vertically
                rig.root_positions = rig.root_positions - np.array([0.0, own, 0.0])
                how = "moved vertically onto it"
            if notes is not None:
                where = "above" if own > 0 else "below"
                notes.append(
                    f"{rig.name} stood {abs(own):.2f} m {where} the shared floor (a depth "
                    f"error): {how}; --focal-length improves depth"
                )
        rig.root_positions = rig.root_positions - offset
    return WorldFrame(rotation=to_world, offset=offset)


def _distance_onto_floor(root_y: np.ndarray, sole_y: np.ndarray, floor: float) -> float | None:
    """Factor on a person's distance from the camera (camera at the origin, level world) that
    puts their own floor (low percentile of sole heights) on ``floor``; None when no factor in
    [1/4, 4] does (roots at or above the camera's height, or a far-off depth)."""
    if not np.all(root_y < 0):
        return None
    rel = sole_y - root_y

    def own(scale: float) -> float:
        return float(np.percentile(scale * root_y + rel, FLOOR_PERCENTILE)) - floor

    lo, hi = 0.25, 4.0  # own() decreases with the distance (the roots are below the camera)
    if own(lo) < 0 or own(hi) > 0:
        return None
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if own(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def build_world(
    motion: Motion,
    body: BodySource | None = None,
    smoothing: str | None = None,
    strength: float = 1.0,
) -> WorldResult:
    """Turn a clip's tracks into rigs in one Y-up world (gap filling, optional smoothing, skeletons).

    Args:
        motion: the clip (camera frame).
        body: SMPL body model (``mocap.body.smpl.BodyModel``) for shaped skeletons and skinned
            meshes; the built-in skeleton when None.
        smoothing: None or "none" (use the motion as saved), "offline" or "oneeuro".
        strength: smoothing strength (0 off, 1 default, 2 strong).
    """
    bad = {t.track_id: p for t in motion.tracks if (p := track_problem(t)) is not None}
    if not motion.tracks or len(bad) == len(motion.tracks):
        why = "; ".join(f"track {i}: {p}" for i, p in {**motion.rejected, **bad}.items())
        raise MocapError(
            f"no usable person in the motion ({why}); re-run `mocap run` on the clip"
            if why
            else "the motion has no people to export; check the clip with `mocap run --preview`"
        )
    if not motion.fps > 0:
        raise MocapError(f"the motion's frame rate is {motion.fps}; re-create it with `mocap run`")
    tracks, jitter, notes = [], {}, []
    for track in motion.tracks:
        if track.track_id in bad:  # kept out of the shared floor and world fit
            continue
        track = contiguous(track)
        if smoothing not in (None, "none"):
            track, jitter[track.track_id] = smooth_track(track, smoothing, strength, body)
        tracks.append(track)
    skeletons = [skeleton_for(track, body) for track in tracks]
    camera = CameraPath.from_extras(motion.extras)  # a moving camera: people in the first view
    if camera is not None:
        pairs = zip(tracks, skeletons, strict=True)
        tracks = [camera.compose(t, s.rest_joints[0]) for t, s in pairs]
    rigs = [
        _camera_rig(track, skel, motion.fps, body, CAMERA_TO_WORLD)
        for track, skel in zip(tracks, skeletons, strict=True)
    ]
    level = level_correction(rigs, skeletons)
    if level is None:
        notes.append(
            "the floor fitted to the foot contacts is tilted > 30 deg: camera taken as level"
        )
        level = np.eye(3)
    tilt = float(np.degrees(np.arccos(np.clip(level[1, 1], -1.0, 1.0))))
    if tilt >= 1.0:
        notes.append(
            f"camera tilt of {tilt:.1f} deg corrected from the foot contacts (floor made level)"
        )
    for rig in rigs:
        rig.root_positions = rig.root_positions @ level.T
        rig.local_rotations[:, 0] = level @ rig.local_rotations[:, 0]
    if body is None:
        notes.append(
            "SMPL model not found: built-in skeleton at average proportions used, body shape not applied "
            "(pass --smpl PATH or set MOCAP_SMPL for shaped skeletons and meshes)"
        )
    world = place_in_world(rigs, skeletons, level @ CAMERA_TO_WORLD, notes)
    return WorldResult(rigs, world, skeletons, jitter, notes, skipped=bad)


def motion_to_rigs(
    motion: Motion,
    body: BodySource | None = None,
    smoothing: str | None = None,
    strength: float = 1.0,
) -> list[RigAnimation]:
    """One :class:`RigAnimation` per track, all in the clip's shared Y-up world (see build_world)."""
    return build_world(motion, body, smoothing, strength).rigs
