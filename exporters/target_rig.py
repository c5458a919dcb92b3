"""A character's armature at its bind pose: hierarchy planning and forward kinematics (numpy).

:class:`TargetRig` is what :func:`exporters.character.inspect_character` reads from a file
(Blender's Z-up world, the armature object's transform and the file's units included);
:func:`plan_hierarchy` gives the parents the written file will have (a closed deform hierarchy
for control rigs such as Rigify's, see :mod:`exporters.retarget`) and :class:`Pose` is Blender's
pose chain in the world: world rotations and heads of bones from those of the driven ones, and back
to pose quaternions and locations.
"""

from dataclasses import dataclass

import numpy as np

from mocap.body.joints import SMPL_PARENTS


@dataclass
class TargetRig:
    """A character's armature at its bind pose, as Blender reads it (Z-up world, file units)."""

    name: str  # the armature object
    bone_names: tuple[str, ...]  # (B,)
    parents: tuple[int, ...]  # (B,) -1 for a root bone
    rest: np.ndarray  # (B,4,4) bone.matrix_local: rest pose in armature space
    tails: np.ndarray  # (B,3) bone tails in armature space
    connected: tuple[bool, ...]  # (B,) use_connect: no location of its own
    deform: tuple[bool, ...]  # (B,) use_deform
    object_matrix: np.ndarray  # (4,4) the armature object's matrix_world
    floor: float  # world z of the lowest rest vertex of its meshes (lowest bone point without)

    def index(self, name: str) -> int:
        return self.bone_names.index(name)


def ancestors(parents: list[int], b: int) -> list[int]:
    """Bone b's parent, grandparent, ... up to its root."""
    out, p = [], parents[b]
    while p >= 0:
        out.append(p)
        p = parents[p]
    return out


def plan_hierarchy(target: TargetRig, mapped: dict[int, int]) -> list[int]:
    """Parents for the written file (``mapped``: SMPL joint -> bone index).

    A mapped bone whose parent chain misses the bone carrying its source parent (Rigify's deform
    bones hang under control bones) is re-parented onto that bone; then, in such a rig, every
    deform bone under a non-deform parent goes onto the nearest mapped bone (distance to its
    segment), so the deform bones form one hierarchy that the keys drive. Rest poses are kept.
    """
    parents = list(target.parents)
    for j in sorted(mapped):  # SMPL order: parents before children
        b, pj = mapped[j], SMPL_PARENTS[j]
        while pj >= 0 and pj not in mapped:
            pj = SMPL_PARENTS[pj]
        if pj < 0 or mapped[pj] == b or mapped[pj] in ancestors(parents, b):
            continue
        if b not in ancestors(parents, mapped[pj]):  # never a loop
            parents[b] = mapped[pj]
    if parents == list(target.parents) or not all(target.deform[b] for b in mapped.values()):
        return parents  # a closed hierarchy, or one animated through non-deform bones
    anchors = sorted(set(mapped.values()))
    heads, tails = target.rest[:, :3, 3], target.tails
    for b in _topological(parents):
        p = parents[b]
        if target.deform[b] and b not in anchors and p >= 0 and not target.deform[p]:
            parents[b] = min(anchors, key=lambda a: _to_segment(heads[b], heads[a], tails[a]))
    return parents


def _to_segment(point: np.ndarray, head: np.ndarray, tail: np.ndarray) -> float:
    """Distance from ``point`` to the segment ``head``-``tail``."""
    seg = tail - head
    u = float(np.clip((point - head) @ seg / max(float(seg @ seg), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(point - head - u * seg))


def _topological(parents: list[int]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for b, p in enumerate(parents):
        kids.setdefault(p, []).append(b)
    order, stack = [], list(reversed(kids.get(-1, [])))
    while stack:
        b = stack.pop()
        order.append(b)
        stack.extend(reversed(kids.get(b, [])))
    return order


class Pose:
    """Blender's pose chain, in the world, for some bones of a rig and their ancestors."""

    def __init__(self, target: TargetRig, parents: list[int], bones: set[int]) -> None:
        o = target.object_matrix
        u, _, vt = np.linalg.svd(o[:3, :3])
        self.obj_rot, self.obj_scale = u @ vt, float(np.cbrt(abs(np.linalg.det(o[:3, :3]))))
        self.obj_origin = o[:3, 3]
        self.rest_rot = self.obj_rot @ target.rest[:, :3, :3]  # W_b (B,3,3)
        self.rest_head = target.rest[:, :3, 3] @ o[:3, :3].T + o[:3, 3]  # H_b (B,3)
        self.parents = parents
        keep = set(bones)
        for b in bones:
            keep.update(ancestors(parents, b))
        self.order = [b for b in _topological(parents) if b in keep]

    def parent_rest(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.parents[b]
        return (self.rest_rot[p], self.rest_head[p]) if p >= 0 else (self.obj_rot, self.obj_origin)

    def run(
        self, rots: dict[int, np.ndarray], heads: dict[int, np.ndarray], frames: int
    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """World rotations and heads (T,...) of ``order``: given ones, else rigid on the parent."""
        r_out: dict[int, np.ndarray] = {}
        h_out: dict[int, np.ndarray] = {}
        for b in self.order:
            p = self.parents[b]
            rp = r_out[p] if p >= 0 else np.broadcast_to(self.obj_rot, (frames, 3, 3))
            wp, hp_rest = self.parent_rest(b)
            rel = rp @ wp.T  # parent's rotation away from its rest
            r_out[b] = rots[b] if b in rots else rel @ self.rest_rot[b]
            if b in heads:
                h_out[b] = heads[b]
            else:
                hp = h_out[p] if p >= 0 else np.broadcast_to(self.obj_origin, (frames, 3))
                h_out[b] = hp + rel @ (self.rest_head[b] - hp_rest)
        return r_out, h_out

    def local(
        self, b: int, r: dict[int, np.ndarray], h: dict[int, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pose rotation matrices (T,3,3) and locations (T,3) of bone b from world motion."""
        p = self.parents[b]
        frames = len(r[b])
        rp = r[p] if p >= 0 else np.broadcast_to(self.obj_rot, (frames, 3, 3))
        hp = h[p] if p >= 0 else np.broadcast_to(self.obj_origin, (frames, 3))
        wp, hp_rest = self.parent_rest(b)
        back = self.rest_rot[b].T @ wp @ np.swapaxes(rp, -1, -2)  # W_b^T W_p R_p^T
        offset = h[b] - hp - (rp @ wp.T) @ (self.rest_head[b] - hp_rest)
        return back @ r[b], np.einsum("tab,tb->ta", back, offset) / self.obj_scale
