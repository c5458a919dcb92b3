"""Retargeting: one person's animation onto a character's own armature (pure numpy).

Input: a :class:`~exporters.rig.RigAnimation` (SMPL skeleton, Y-up world, floor at y = 0) and a
:class:`TargetRig` (the character's armature at its bind pose as Blender reads it: Z-up world, the
armature object's transform and the file's units included). Output: a :class:`Retargeted`, the
pose quaternions and locations to key on the character's bones, plus the bones' world motion.

Everything happens in world space from the character's bind pose, whatever it is (T-pose, A-pose,
bones rolled any way); nothing assumes the two rigs share a rest pose or bone roll:

1. Facing: ``C`` turns the source's body frame (left, forward, up) onto the character's (left from
   its right hip to its left hip, up the world's Z).
2. Rest alignment: bone b carrying joint j has a rest *segment*, from its head to the head of the
   bone carrying the next mapped joint down the source chain (its own axis at a chain's end), and
   so has the source. ``A_b`` is the smallest rotation that turns b's rest segment onto the
   source's (turned by C): arms down in an A-pose are lifted to the source's T-pose, and so on.
3. Motion: b's world rotation is the source joint's world rotation relative to its rest, on top of
   the aligned rest, ``R_b(t) = S(t) C G_j(t) C^T A_b W_b`` (``W_b`` b's rest world rotation;
   ``S(t)`` the swing that makes up for source joints left unmapped inside the segment, identity
   otherwise). So every mapped segment points where the source's points, and twist follows the
   source's. Unmapped bones keep their rest pose relative to their parents.
4. Proportions: root translation scaled by the legs' length ratio (hip to knee to ankle to floor),
   the hips starting at their rest height; then the whole clip is moved vertically so the feet's
   low contacts sit on the character's floor as the source's sit on its own. With foot contacts
   (``Track.extras["contacts"]``) planted feet are re-locked by two-bone IK
   (:mod:`exporters.footlock`), so other leg proportions don't bring sliding back.
5. Root motion, as :mod:`exporters.root_motion` does for the other formats: ``world`` (the hips
   carry the trajectory), ``in-place`` (the hips stay over where they start), ``root-bone`` (the
   rig's top bone above the hips carries the horizontal trajectory at floor level and the body's
   smoothed heading, the hips keep height and sway).
6. Keys: a bone's pose quaternion is ``W_b^T W_p R_p(t)^T R_b(t)`` (p its parent, or the armature
   object), exactly Blender's pose chain; located bones get ``W_b^T W_p R_p^T (h_b - h_p - R_p W_p^T
   (H_b - H_p)) / object scale``.

A mapped bone whose parent chain does not reach the bone carrying its source parent (Rigify's
deform bones hang under control bones) is re-parented onto it, and deform bones under non-deform
ones onto the nearest mapped bone, so the deform bones form one hierarchy the keys drive
(``Retargeted.reparent``; their constraints are muted by the writer).
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from exporters.footlock import lock_planted_feet
from exporters.rig import RigAnimation
from exporters.root_motion import heading, yaw_matrices
from exporters.target_rig import Pose, TargetRig, ancestors, plan_hierarchy
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.errors import MocapError
from mocap.ik import rotation_between

ROOT_MOTION = ("world", "in-place", "root-bone")
YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
SOURCE_FRAME = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # left, fwd, up
SOLE_BELOW_FOOT = 0.03  # metres: source foot joint above the sole when no clearance is given
FLOOR_PERCENTILE = 5.0
_J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
# The child that continues each source joint's chain (None: the chain ends).
CHAIN: dict[str, str] = {
    "pelvis": "spine1", "spine1": "spine2", "spine2": "spine3", "spine3": "neck", "neck": "head",
    **{f"{s}_{a}": f"{s}_{b}" for s in ("left", "right") for a, b in (
        ("hip", "knee"), ("knee", "ankle"), ("ankle", "foot"), ("collar", "shoulder"),
        ("shoulder", "elbow"), ("elbow", "wrist"), ("wrist", "hand"))},
}  # fmt: skip


@dataclass
class Retargeted:
    """One person's animation on a character: the keys to write and the bones' world motion."""

    name: str  # e.g. "person_3"
    fps: float
    bones: tuple[str, ...]  # (K,) bones keyed with rotations
    quaternions: np.ndarray  # (T,K,4) pose quaternions (w, x, y, z), sign-continuous
    located: tuple[str, ...]  # (L,) bones keyed with locations too (the hips; the root bone)
    locations: np.ndarray  # (T,L,3) pose locations (bone space, armature units)
    reparent: dict[str, str]  # bone -> its new parent in the written file
    heads: dict[str, np.ndarray]  # bone -> (T,3) world head of every driven bone and ancestor
    axes: dict[str, np.ndarray]  # bone -> (T,3) world unit axis (head to tail) of mapped bones
    scale: float  # character leg length / source leg length
    facing: np.ndarray  # (3,3) C: source world directions -> the character's (Z-up)
    notes: list[str] = field(default_factory=list)


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(...,3,3) smallest rotations turning directions ``a`` onto ``b`` (both (...,3))."""
    shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    a2, b2 = np.broadcast_to(a, shape).reshape(-1, 3), np.broadcast_to(b, shape).reshape(-1, 3)
    return rotation_between(a2, b2).reshape(*shape, 3)


def quaternions(m: np.ndarray) -> np.ndarray:
    """(T,K,3,3) rotations -> (T,K,4) Blender quaternions (w,x,y,z), sign-continuous in time."""
    q = np.roll(Rotation.from_matrix(m.reshape(-1, 3, 3)).as_quat(), 1, axis=-1).reshape(
        *m.shape[:-2], 4
    )
    flips = np.cumsum(np.sum(q[1:] * q[:-1], axis=-1) < 0, axis=0) % 2
    sign = np.concatenate([np.ones_like(q[:1, :, 0]), 1.0 - 2.0 * flips], axis=0)
    return q * sign[..., None]


def _source_world(src: RigAnimation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source in the Z-up world: (G (T,24,3,3) world rotations, X (T,24,3) joints, P (24,3) rest)."""
    z = YUP_TO_ZUP
    t, n = src.local_rotations.shape[:2]
    glob, pos = np.zeros((t, n, 3, 3)), np.zeros((t, n, 3))
    for k, p in enumerate(src.parents):
        if p < 0:
            glob[:, k], pos[:, k] = src.local_rotations[:, k], src.root_positions
        else:
            glob[:, k] = glob[:, p] @ src.local_rotations[:, k]
            pos[:, k] = pos[:, p] + glob[:, p] @ src.rest_offsets[k]
    return z @ glob @ z.T, pos @ z.T, src.rest_positions() @ z.T


def _leg_length(points: np.ndarray, floor: float) -> float:
    """Hip-knee-ankle lengths plus the ankle's height above the floor; points (3,3)."""
    hip, knee, ankle = points
    return float(
        np.linalg.norm(knee - hip) + np.linalg.norm(ankle - knee) + max(ankle[2] - floor, 0.0)
    )


def _facing(heads: np.ndarray) -> np.ndarray:
    """(3,3) C: source body frame -> character body frame; heads (2,3) left, right hip."""
    left = heads[0] - heads[1]
    left[2] = 0.0
    if np.linalg.norm(left) < 1e-6:
        return np.eye(3)
    left /= np.linalg.norm(left)
    up = np.array([0.0, 0.0, 1.0])
    frame = np.stack([left, np.cross(left, up), up], axis=1)
    return frame @ SOURCE_FRAME.T


def retarget(
    source: RigAnimation,
    target: TargetRig,
    bones: dict[str, str],
    root_motion: str = "world",
    clearance: np.ndarray | None = None,
    contacts: np.ndarray | None = None,
) -> Retargeted:
    """One person's animation on a character (see the module docstring for the method).

    Arguments:
        source: the person (SMPL joint names, Y-up world, floor y = 0).
        bones: SMPL joint -> the character's bone (a resolved :class:`exporters.bonemap.BoneMap`).
        root_motion: one of ``ROOT_MOTION``.
        clearance: (24,) each source joint's height above the sole at rest
            (``Skeleton.sole_clearance``); estimated from the foot joints when None.
        contacts: (T,4) foot contacts of the source (left ankle, right ankle, left toe, right toe;
            > 0.5 is planted) to re-lock planted feet on the character with IK; None: no IK.
    """
    if root_motion not in ROOT_MOTION:
        raise MocapError(f"unknown root motion {root_motion!r}; use {', '.join(ROOT_MOTION)}")
    g, x, rest = _source_world(source)
    frames = len(g)
    if clearance is None:
        clearance = rest[:, 2] - (rest[[10, 11], 2].min() - SOLE_BELOW_FOOT)
    mapped = {_J[j]: target.index(b) for j, b in bones.items()}
    parents = plan_hierarchy(target, mapped)
    reparent = {
        target.bone_names[b]: target.bone_names[p]
        for b, p in enumerate(parents)
        if p != target.parents[b]
    }
    pose = Pose(target, parents, set(mapped.values()))
    w, hr = pose.rest_rot, pose.rest_head
    c = _facing(hr[[mapped[_J["left_hip"]], mapped[_J["right_hip"]]]])
    tails = target.tails @ target.object_matrix[:3, :3].T + target.object_matrix[:3, 3]

    # Rest alignment and per-frame world rotations of the mapped bones.
    rots: dict[int, np.ndarray] = {}
    for j, b in mapped.items():
        name = SMPL_JOINT_NAMES[j]
        k = CHAIN.get(name)
        while k is not None and _J[k] not in mapped:
            k = CHAIN.get(k)
        if k is not None and b not in ancestors(parents, mapped[_J[k]]):
            k = None
        if k is not None:
            s_rest, d_rest = rest[_J[k]] - rest[j], hr[mapped[_J[k]]] - hr[b]
            s_now = x[:, _J[k]] - x[:, j]
        else:  # chain end: the bone's own axis against the source's last segment
            nxt = CHAIN.get(name)
            a, e = (j, _J[nxt]) if nxt is not None else (SMPL_PARENTS[j], j)
            s_rest, d_rest = rest[e] - rest[a], tails[b] - hr[b]
            s_now = x[:, e] - x[:, a] if nxt is not None else g[:, j] @ s_rest
        align = swing(d_rest, c @ s_rest)
        moved = c @ g[:, j] @ c.T  # (T,3,3)
        predicted = moved @ (c @ s_rest)
        correct = swing(predicted, s_now @ c.T)
        rots[b] = correct @ moved @ align @ w[b]

    # Proportions and root motion.
    legs = []
    for side in ("left", "right"):
        src_pts = rest[[_J[f"{side}_{p}"] for p in ("hip", "knee", "ankle")]].copy()
        src_floor = src_pts[2, 2] - clearance[_J[f"{side}_ankle"]]
        tgt_pts = hr[[mapped[_J[f"{side}_{p}"]] for p in ("hip", "knee", "ankle")]]
        legs.append(_leg_length(tgt_pts, target.floor) / _leg_length(src_pts, src_floor))
    scale = float(np.mean(legs))
    hips = mapped[_J["pelvis"]]
    if target.connected[hips]:
        raise MocapError(
            f"the hips bone {target.bone_names[hips]} is connected to its parent and cannot move; "
            "disconnect it in the rig or map the pelvis to its parent"
        )
    src_root = x[:, 0] @ c.T
    root = np.empty((frames, 3))
    root[:, :2] = hr[hips, :2] + scale * src_root[:, :2]
    root[:, 2] = hr[hips, 2] + scale * (src_root[:, 2] - clearance[0])
    heads = {hips: root}
    notes: list[str] = []
    if root_motion == "in-place":  # over where they start, as exporters.root_motion does
        root[:, :2] = root[:1, :2]
    elif root_motion == "root-bone":
        top = ([hips] + ancestors(parents, hips))[-1]
        if top == hips:
            raise MocapError(
                f"--root-motion root-bone needs a bone above the hips ({target.bone_names[hips]}) "
                "and the rig has none; use world or in-place"
            )
        ground = np.broadcast_to(hr[top], (frames, 3)).copy()
        ground[:, :2] += root[:, :2] - hr[hips, :2]
        heads[top] = ground
        turn = YUP_TO_ZUP @ yaw_matrices(heading(source)) @ YUP_TO_ZUP.T  # as exporters.root_motion
        rots[top] = c @ turn @ c.T @ w[top]
        notes.append(f"root motion on bone {target.bone_names[top]}")

    # Feet on the character's floor: low contacts at the source's height above its floor.
    feet_src = [j for j in (7, 8, 10, 11) if j in mapped]  # ankles and toes (FOOT_JOINTS)
    feet = [mapped[j] for j in feet_src]
    r_w, h_w = pose.run(rots, heads, frames)
    tgt_low = np.stack([h_w[b][:, 2] - (hr[b, 2] - target.floor) for b in feet], 1)
    src_low = x[:, feet_src, 2] - clearance[feet_src]
    shift = np.percentile(tgt_low, FLOOR_PERCENTILE) - target.floor
    shift -= scale * np.percentile(src_low, FLOOR_PERCENTILE)
    root[:, 2] -= shift
    r_w, h_w = pose.run(rots, heads, frames)

    if contacts is not None:
        legs_ik = {
            side: [mapped.get(_J[f"{side}_{p}"]) for p in ("hip", "knee", "ankle", "foot")]
            for side in ("left", "right")
        }
        forward = c @ SOURCE_FRAME[:, 1]  # the character's front: where its knees point
        poles = {
            side: r_w[leg[0]] @ (w[leg[0]].T @ forward)
            for side, leg in legs_ik.items()
            if leg[0] is not None
        }
        changed, lines = lock_planted_feet(r_w, h_w, legs_ik, np.asarray(contacts), parents, poles)
        notes += lines
        if changed:
            rots.update({b: r_w[b] for b in changed})
            r_w, h_w = pose.run(rots, heads, frames)

    unit = (tails - hr) / np.linalg.norm(tails - hr, axis=1, keepdims=True)
    axes = {b: r_w[b] @ (w[b].T @ unit[b]) for b in mapped.values()}
    keyed = sorted(set(mapped.values()) | set(heads), key=pose.order.index)
    located = [b for b in keyed if b in heads]
    locals_ = {b: pose.local(b, r_w, h_w) for b in keyed}
    quats = quaternions(np.stack([locals_[b][0] for b in keyed], axis=1))
    locs = np.stack([locals_[b][1] for b in located], axis=1)
    names = target.bone_names
    return Retargeted(
        name=source.name,
        fps=source.fps,
        bones=tuple(names[b] for b in keyed),
        quaternions=quats,
        located=tuple(names[b] for b in located),
        locations=locs,
        reparent=reparent,
        heads={names[b]: h_w[b] for b in pose.order},
        axes={names[b]: a for b, a in axes.items()},
        scale=scale,
        facing=c,
        notes=notes,
    )
