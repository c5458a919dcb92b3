"""Native BVH writer (no Blender needed) and a small independent reader.

File layout written by :func:`write_bvh`:
    - Hierarchy: SMPL's 24 joints with SMPL's names (``pelvis`` is the ROOT), children in SMPL
      index order, ``End Site`` after the leaf joints (head, hands, feet).
    - Rest pose: SMPL's T-pose with identity joint orientations; OFFSETs are the rig's rest offsets
      (the track's betas with SMPL, else the built-in skeleton). The ROOT OFFSET is zero and the
      root's position channels hold its absolute world position, which every BVH reader agrees on.
    - Channels: root ``Xposition Yposition Zposition Zrotation Xrotation Yrotation``, other joints
      ``Zrotation Xrotation Yrotation``. Rotation order ZXY: each joint's local rotation is
      ``Rz(z) @ Rx(x) @ Ry(y)`` (degrees, applied to column vectors, relative to the parent).
      Angles are unwrapped over time (no 360-degree jumps, the closer of the two equivalent triples).
      A joint that translates (the hips under a root bone, ``rig.local_translations``) has the
      root's six channels too, OFFSET zero and its position relative to the parent in them.
    - World: Y up, right-handed, metres or centimetres (``units``); Frame Time = 1 / fps.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from exporters.rig import RigAnimation
from mocap.errors import MocapError
from mocap.paths import atomic_output

UNIT_SCALE: dict[str, float] = {"m": 1.0, "cm": 100.0}
FRAME_CHUNK = 1024  # frames per scipy conversion: memory flat in clip length
ROTATION_ORDER = "ZXY"  # intrinsic: R = Rz @ Rx @ Ry; the channel order written in the file
_ROTATION_CHANNELS = " ".join(f"{axis}rotation" for axis in ROTATION_ORDER)
_END_SITE_FRACTION = 0.5  # End Site length relative to the leaf joint's own bone


def _children(parents: tuple[int, ...]) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            kids[p].append(j)
    return kids


def _unwrap_euler(angles: np.ndarray) -> np.ndarray:
    """Make Tait-Bryan angles (T,J,3) in degrees (in ROTATION_ORDER) continuous over time.

    Each rotation has two angle triples, (a, b, c) and (a + 180, 180 - b, c + 180), each up to
    multiples of 360; per frame pick the one closest to the previous frame.
    """
    out = angles.copy()
    alt = np.stack(
        [angles[..., 0] + 180.0, 180.0 - angles[..., 1], angles[..., 2] + 180.0], axis=-1
    )
    for t in range(1, len(angles)):
        prev = out[t - 1]
        near = angles[t] + 360.0 * np.round((prev - angles[t]) / 360.0)
        near_alt = alt[t] + 360.0 * np.round((prev - alt[t]) / 360.0)
        use_alt = np.abs(near_alt - prev).sum(-1) < np.abs(near - prev).sum(-1)
        out[t] = np.where(use_alt[:, None], near_alt, near)
    return out


def rotations_to_euler(rotations: np.ndarray) -> np.ndarray:
    """(T,J,3,3) rotation matrices -> (T,J,3) continuous Euler angles in degrees, ROTATION_ORDER
    (for ZXY: z, x, y with R = Rz @ Rx @ Ry)."""
    t, j = rotations.shape[:2]
    angles = np.empty((t, j, 3))
    for start in range(0, t, FRAME_CHUNK):  # scipy's temporaries are several times its output
        block = rotations[start : start + FRAME_CHUNK]
        # scipy's upper-case sequences are intrinsic: "ZXY" gives R = Rz @ Rx @ Ry
        angles[start : start + FRAME_CHUNK] = (
            Rotation.from_matrix(block.reshape(-1, 3, 3))
            .as_euler(ROTATION_ORDER, degrees=True)
            .reshape(len(block), j, 3)
        )
    return _unwrap_euler(angles)


def _bvh_parts(rig: RigAnimation, units: str) -> tuple[list[str], np.ndarray]:
    """The BVH file for ``rig`` (see the module docstring for the layout): its lines up to and
    including ``Frame Time`` and the (T,C) channel values of the motion lines."""
    if units not in UNIT_SCALE:
        raise MocapError(f"unknown units {units!r}; use m or cm")
    scale = UNIT_SCALE[units]
    kids = _children(rig.parents)
    root = rig.parents.index(-1)
    lines: list[str] = ["HIERARCHY"]
    order: list[int] = []

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        order.append(j)
        head = "ROOT" if j == root else "JOINT"
        moves = j == root or j in rig.local_translations  # position channels: absolute, offset 0
        offset = np.zeros(3) if moves else rig.rest_offsets[j] * scale
        lines.append(f"{pad}{head} {rig.joint_names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        if moves:
            lines.append(f"{pad}\tCHANNELS 6 Xposition Yposition Zposition {_ROTATION_CHANNELS}")
        else:
            lines.append(f"{pad}\tCHANNELS 3 {_ROTATION_CHANNELS}")
        for c in kids[j]:
            emit(c, depth + 1)
        if not kids[j]:
            end = rig.rest_offsets[j] * scale * _END_SITE_FRACTION
            lines.append(f"{pad}\tEnd Site")
            lines.append(f"{pad}\t{{")
            lines.append(f"{pad}\t\tOFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}")
            lines.append(f"{pad}\t}}")
        lines.append(f"{pad}}}")

    emit(root, 0)
    euler = rotations_to_euler(np.asarray(rig.local_rotations, dtype=np.float64))[:, order]
    columns = []
    for k, j in enumerate(order):
        if j == root or j in rig.local_translations:
            where = rig.root_positions if j == root else rig.local_translations[j]
            columns.append(np.asarray(where) * scale)
        columns.append(euler[:, k])
    values = np.concatenate(columns, axis=1)
    lines += ["MOTION", f"Frames: {rig.num_frames}", f"Frame Time: {1.0 / rig.fps:.10f}"]
    return lines, values


def _motion_lines(values: np.ndarray) -> Iterator[str]:
    """One line of channel values per frame (``values`` (T,C))."""
    for row in values:
        yield " ".join(f"{v:.6f}" for v in row)


def bvh_text(rig: RigAnimation, units: str = "m") -> str:
    """The BVH file for ``rig`` as a string (see the module docstring for the layout)."""
    header, values = _bvh_parts(rig, units)
    return "\n".join([*header, *_motion_lines(values)]) + "\n"


def write_bvh(rig: RigAnimation, path: str | Path, units: str = "m") -> Path:
    """Write ``rig`` as a BVH file atomically (temporary name, then rename).

    The motion lines are streamed to the file (same bytes as :func:`bvh_text`), so memory does
    not grow with the text of long clips.
    """
    path = Path(path)
    header, values = _bvh_parts(rig, units)
    try:
        with atomic_output(path) as tmp, open(tmp, "w") as fh:
            fh.write("\n".join(header) + "\n")
            for line in _motion_lines(values):
                fh.write(line + "\n")
    except OSError as exc:
        raise MocapError(
            f"cannot write {path}: {exc.strerror}; choose a writable output folder"
        ) from exc
    return path


# ---- reader (independent of the writer: parses text and composes the channel rotations) ---------


@dataclass
class BvhJoint:
    name: str
    parent: int  # -1 for the root
    offset: np.ndarray  # (3,)
    channels: tuple[str, ...]


@dataclass
class BvhClip:
    """A parsed BVH file."""

    joints: list[BvhJoint]
    frame_time: float
    motion: np.ndarray  # (T, total channels)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    def world_positions(self) -> np.ndarray:
        """(T,J,3) joint positions by forward kinematics of the channels, in file units."""
        num = len(self.motion)
        glob = np.zeros((num, len(self.joints), 3, 3))
        pos = np.zeros((num, len(self.joints), 3))
        col = 0
        for k, joint in enumerate(self.joints):
            local = np.broadcast_to(np.eye(3), (num, 3, 3)).copy()
            trans = np.broadcast_to(joint.offset, (num, 3)).copy()
            for ch in joint.channels:
                v = self.motion[:, col]
                col += 1
                axis = "XYZ".index(ch[0].upper())
                if ch.lower().endswith("position"):
                    trans[:, axis] += v
                else:
                    local = local @ _axis_rotation(axis, np.deg2rad(v))
            if joint.parent < 0:
                glob[:, k], pos[:, k] = local, trans
            else:
                p = joint.parent
                glob[:, k] = glob[:, p] @ local
                pos[:, k] = pos[:, p] + np.einsum("tab,tb->ta", glob[:, p], trans)
        return pos


def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """(T,3,3) rotations by ``angle`` (T,) radians about coordinate axis 0, 1 or 2."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros((len(angle), 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m[:, axis, axis] = 1.0
    m[:, i, i], m[:, j, j], m[:, i, j], m[:, j, i] = c, c, -s, s
    return m


def read_bvh(path: str | Path) -> BvhClip:
    """Parse a BVH file (hierarchy, channels, frames)."""
    tokens = Path(path).read_text().split()
    joints: list[BvhJoint] = []
    stack: list[int] = []
    i = 0
    pending_end = False
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            joints.append(BvhJoint(tokens[i + 1], stack[-1] if stack else -1, np.zeros(3), ()))
            stack.append(len(joints) - 1)
            i += 2
        elif tok == "End":
            pending_end = True
            i += 2
        elif tok == "OFFSET":
            if not pending_end:
                joints[stack[-1]].offset = np.array([float(x) for x in tokens[i + 1 : i + 4]])
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            joints[stack[-1]].channels = tuple(tokens[i + 2 : i + 2 + n])
            i += 2 + n
        elif tok == "}":
            if pending_end:
                pending_end = False
            else:
                stack.pop()
            i += 1
        else:
            i += 1
    frames = int(tokens[tokens.index("Frames:", i) + 1])
    ft = tokens.index("Time:", i)
    frame_time = float(tokens[ft + 1])
    values = np.array([float(x) for x in tokens[ft + 2 :]])
    return BvhClip(joints, frame_time, values.reshape(frames, -1))
