"""A deterministic synthetic body model in SMPL's file format (the real one is licensed).

The body is one closed, consistently oriented triangle surface with exactly SMPL's 6,890 vertices
and 13,776 faces: a tapered superellipsoid around each of the 24 bones of SMPL's kinematic tree,
joined into a single surface by small tunnels inside the overlaps (each tunnel keeps the Euler
characteristic of a sphere, so ``F = 2V - 4`` holds as for the real mesh). It stands in SMPL's rest
T-pose: Y up, facing +Z, the subject's left on +X, pelvis near the origin, about 1.75 m tall.

Everything else follows SMPL's conventions:
    * ``weights`` (6890, 24): each vertex bound to the bone its segment belongs to, blended 50/50 on
      the plane through each joint across its parent bone, fading out within 4 cm on either side.
    * ``J_regressor`` (24, 6890) scipy.sparse CSC: joint j is the mean of one ring of vertices that
      surrounds it, so the joints follow the shape blend shapes.
    * ``shapedirs`` (6890, 3, 10): size, girth, leg length, shoulder width, arm length, belly, head
      size, hip width, torso length, foot size (a few cm per unit beta).
    * ``posedirs`` (6890, 3, 207): a bulge at each joint crease growing with the bend angle, plus a
      small shear, driven by ``(R_j - I)`` as in SMPL.
    * the vertex indices smplx uses for extra keypoints (nose, eyes, ears, fingertips, toes, heels)
      sit at those places on this body.
"""

import os
import pickle
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from mocap.body.joints import SMPL_PARENTS

NUM_VERTICES = 6890
NUM_FACES = 13776

# Rest joint positions (metres), close to SMPL's neutral template; right side mirrors the left.
# fmt: off
_LEFT = {
    1: (0.070, -0.310, 0.020), 4: (0.105, -0.690, 0.015), 7: (0.088, -1.100, -0.030),  # hip knee ankle
    10: (0.120, -1.155, 0.095), 13: (0.075, 0.205, -0.005), 16: (0.195, 0.230, -0.015),  # foot collar shoulder
    18: (0.455, 0.220, -0.030), 20: (0.720, 0.225, -0.030), 22: (0.805, 0.215, -0.040),  # elbow wrist hand
}
_CENTRE = {
    0: (0.0, -0.220, 0.025), 3: (0.0, -0.110, 0.000), 6: (0.0, 0.020, 0.005),  # pelvis spine1 spine2
    9: (0.0, 0.075, 0.030), 12: (0.0, 0.290, -0.015), 15: (0.0, 0.355, 0.045),  # spine3 neck head
}
# fmt: on


def rest_joints() -> np.ndarray:
    """(24, 3) designed rest joint positions of the synthetic body."""
    joints = np.zeros((24, 3))
    for j, p in _CENTRE.items():
        joints[j] = p
    for j, (x, y, z) in _LEFT.items():
        joints[j] = (x, y, z)
        joints[j + 1] = (-x, y, z)
    return joints


@dataclass(frozen=True)
class _Part:
    """Surface around the bone of ``joint``: from the joint to ``end`` (a joint or an offset)."""

    joint: int
    end: int | tuple[float, float, float]  # child joint index, or offset from the joint (left side)
    back: float  # extension behind the joint (m)
    beyond: float  # extension past the end (m)
    r_start: tuple[float, float]  # cross-section radii at the joint
    r_end: tuple[float, float]  # cross-section radii at the end
    segments: int
    rings: int


# (left-side parts are mirrored to the right by adding 1 to every joint index)
_CENTRE_PARTS = (
    _Part(0, 3, 0.13, 0.06, (0.160, 0.105), (0.150, 0.098), 32, 16),
    _Part(3, 6, 0.07, 0.07, (0.148, 0.096), (0.150, 0.100), 32, 10),
    _Part(6, 9, 0.07, 0.08, (0.155, 0.100), (0.165, 0.105), 32, 8),
    _Part(9, 12, 0.07, 0.00, (0.170, 0.108), (0.120, 0.080), 32, 16),
    _Part(12, 15, 0.03, 0.03, (0.055, 0.055), (0.052, 0.052), 18, 8),
    _Part(15, (0.0, 1.0, 0.1), 0.075, 0.20, (0.078, 0.097), (0.078, 0.097), 28, 18),
)
_LEFT_PARTS = (
    _Part(1, 4, 0.07, 0.03, (0.085, 0.085), (0.055, 0.055), 24, 22),
    _Part(4, 7, 0.03, 0.025, (0.055, 0.055), (0.040, 0.040), 20, 22),
    _Part(7, 10, 0.08, 0.01, (0.045, 0.085), (0.045, 0.030), 20, 12),
    _Part(10, (0.0, -0.15, 1.0), 0.02, 0.075, (0.046, 0.028), (0.040, 0.020), 16, 8),
    _Part(13, 16, 0.03, 0.04, (0.060, 0.050), (0.055, 0.050), 20, 10),
    _Part(16, 18, 0.04, 0.03, (0.055, 0.055), (0.042, 0.042), 20, 20),
    _Part(18, 20, 0.03, 0.02, (0.042, 0.042), (0.030, 0.030), 18, 18),
    _Part(20, 22, 0.02, 0.00, (0.045, 0.018), (0.045, 0.016), 16, 10),
    _Part(22, (1.0, 0.0, 0.0), 0.015, 0.10, (0.043, 0.013), (0.035, 0.010), 16, 8),
)
_BLEND = 0.04  # half-width of the skinning blend around each joint (m)


def _mirror(part: _Part) -> _Part:
    end = part.end + 1 if isinstance(part.end, int) else (-part.end[0], part.end[1], part.end[2])
    return replace(part, joint=part.joint + 1, end=end)


def _all_parts() -> list[_Part]:
    return list(_CENTRE_PARTS) + [q for p in _LEFT_PARTS for q in (p, _mirror(p))]


def _frame(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to the bone axis ``u`` (X-ish first for vertical bones)."""
    ref = np.array([1.0, 0, 0]) if abs(u[0]) < 0.7 else np.array([0, 0, 1.0])
    e1 = ref - (ref @ u) * u
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(u, e1)


def _part_surface(part: _Part, joints: np.ndarray) -> dict[str, np.ndarray]:
    """One closed surface of revolution: vertices, faces, axial coordinate t, outward normals."""
    start = joints[part.joint]
    if isinstance(part.end, int):
        axis = joints[part.end] - start
        length = float(np.linalg.norm(axis))
    else:  # a leaf (head, toes, fingers): a direction, no bone length
        axis, length = np.asarray(part.end, dtype=float), 0.0
    u = axis / np.linalg.norm(axis)
    e1, e2 = _frame(u)
    t0, t1 = -part.back, length + part.beyond
    s = (1 - np.cos(np.pi * np.arange(1, part.rings) / part.rings)) / 2  # denser near the poles
    t = t0 + s * (t1 - t0)
    t[np.argmin(np.abs(t))] = 0.0  # one ring exactly around the joint (for J_regressor)
    s = (t - t0) / (t1 - t0)
    taper = np.clip(t / (length if length > 0 else t1), 0, 1)[:, None]
    radii = (1 - taper) * np.array(part.r_start) + taper * np.array(part.r_end)
    radii *= ((1 - np.abs(2 * s - 1) ** 3) ** (1 / 3))[:, None]  # flat-sided, rounded ends
    phi = 2 * np.pi * np.arange(part.segments) / part.segments
    ring_dir = (
        np.cos(phi)[None, :, None] * e1 * radii[:, None, 0:1]
        + np.sin(phi)[None, :, None] * e2 * radii[:, None, 1:2]
    )
    ring = start + t[:, None, None] * u + ring_dir  # (R-1, S, 3)
    verts = np.concatenate(([start + t0 * u], ring.reshape(-1, 3), [start + t1 * u]))
    normals = np.concatenate(([-u], (ring_dir / np.linalg.norm(ring_dir, axis=-1, keepdims=True)).reshape(-1, 3), [u]))  # fmt: skip
    n_s, n_r = part.segments, part.rings - 1
    idx = 1 + np.arange(n_r * n_s).reshape(n_r, n_s)
    nxt = np.roll(idx, -1, axis=1)
    faces = [np.stack((np.zeros(n_s, int), nxt[0], idx[0]), 1)]
    faces += [np.stack((idx[:-1], nxt[:-1], nxt[1:]), -1).reshape(-1, 3)]
    faces += [np.stack((idx[:-1], nxt[1:], idx[1:]), -1).reshape(-1, 3)]
    faces += [np.stack((np.full(n_s, len(verts) - 1), idx[-1], nxt[-1]), 1)]
    f = np.concatenate(faces)
    a, b, c = verts[f[:, 0]], verts[f[:, 1]], verts[f[:, 2]]
    if np.einsum("ij,ij->i", a, np.cross(b, c)).sum() < 0:  # signed volume: make normals outward
        f = f[:, ::-1]
    tt = np.concatenate(([t0], np.repeat(t, n_s), [t1]))
    ring_at_joint = 1 + int(np.argmin(np.abs(t))) * n_s + np.arange(n_s)
    return {
        "v": verts,
        "f": f,
        "t": tt,
        "n": normals,
        "length": np.array(length),
        "ring": ring_at_joint,
    }


def _skin_weights(
    part: _Part, v: np.ndarray, t: np.ndarray, length: float, joints: np.ndarray
) -> np.ndarray:
    """(V, 24) weights: the part's bone, blended with the parent's and main child's at the joints.

    Each blend is 50/50 on the plane through the joint perpendicular to the parent bone, so both
    sides of a joint agree, and a heel behind the ankle stays on the foot.
    """
    w = np.zeros((len(t), 24))
    blend = min(_BLEND, 0.5 * length) if length > 0 else _BLEND
    parent = SMPL_PARENTS[part.joint]
    w_parent = np.zeros_like(t)
    if parent >= 0:
        bone = joints[part.joint] - joints[parent]
        along = (v - joints[part.joint]) @ (bone / np.linalg.norm(bone))
        w_parent = np.clip(0.5 * (1 - along / blend), 0, 1)
    child = part.end if isinstance(part.end, int) else -1
    w_child = np.clip(0.5 * (1 + (t - length) / blend), 0, 1) if child >= 0 else np.zeros_like(t)
    total = w_parent + w_child
    over = total > 1
    w_parent[over] /= total[over]
    w_child[over] /= total[over]
    w[:, part.joint] = 1 - w_parent - w_child
    if parent >= 0:
        w[:, parent] += w_parent
    if child >= 0:
        w[:, child] += w_child
    return w


def _tunnel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(6, 3) triangles joining the holes left by removing triangles ``a`` and ``b``."""
    new = []
    for i in range(3):
        a0, a1 = a[i], a[(i + 1) % 3]
        b0, b1 = b[(-i) % 3], b[(-i - 1) % 3]  # b runs the other way round the tunnel
        new += [(a0, a1, b1), (a0, b1, b0)]
    return np.array(new)


def _landmarks() -> dict[int, tuple[float, float, float]]:
    """smplx's extra-keypoint vertex ids (SMPL-H table) -> where they belong on this body."""
    left = {
        2800: (0.032, 0.435, 0.2),  # eye
        583: (0.2, 0.42, 0.04),  # ear
        2746: (0.85, 0.2, 0.1),  # thumb
        2319: (0.95, 0.215, 0.03),  # index
        2445: (0.95, 0.215, 0.01),  # middle
        2556: (0.95, 0.215, -0.01),  # ring
        2673: (0.95, 0.215, -0.03),  # pinky
        3216: (0.10, -1.18, 0.2),  # big toe
        3226: (0.17, -1.18, 0.17),  # small toe
        3387: (0.08, -1.18, -0.12),  # heel
    }
    right = dict(zip((6260, 4071, 6191, 5782, 5905, 6016, 6133, 6617, 6624, 6787), left.values(), strict=True))  # fmt: skip
    out = {332: (0.0, 0.41, 0.2)} | left
    out |= {k: (-x, y, z) for k, (x, y, z) in right.items()}
    return out


def _landmark_permutation(v: np.ndarray) -> np.ndarray:
    """Order of vertices so that each landmark id holds the vertex nearest its target point."""
    order = np.arange(len(v))
    used: set[int] = set()
    for target_id, point in _landmarks().items():
        dist = np.linalg.norm(v[order] - np.array(point), axis=1)
        dist[list(used)] = np.inf
        nearest = int(np.argmin(dist))
        order[[target_id, nearest]] = order[[nearest, target_id]]
        used.add(target_id)
    return order


@cache
def synthetic_smpl_arrays() -> dict[str, Any]:
    """The synthetic model as SMPL's pickle dict (numpy arrays, sparse J_regressor); cached."""
    joints = rest_joints()
    parts = _all_parts()
    verts, faces, weights, normals, part_of = [], [], [], [], []
    rings: dict[int, np.ndarray] = {}
    offset = 0
    for k, part in enumerate(parts):
        surf = _part_surface(part, joints)
        verts.append(surf["v"])
        faces.append(surf["f"] + offset)
        normals.append(surf["n"])
        weights.append(_skin_weights(part, surf["v"], surf["t"], float(surf["length"]), joints))
        part_of.append(np.full(len(surf["v"]), k))
        rings[part.joint] = surf["ring"] + offset
        offset += len(surf["v"])
    v, f, w, n = (np.concatenate(x) for x in (verts, faces, weights, normals))
    owner = np.concatenate(part_of)

    # Join every part to its parent's part by a tunnel between their nearest triangles: a
    # connected sum, which adds 4 faces and keeps one closed surface (F = 2V - 4).
    face_owner = owner[f[:, 0]]
    index = {p.joint: k for k, p in enumerate(parts)}
    centroid = v[f].mean(1)
    used = np.zeros(len(f), bool)
    tunnels = []
    for part in parts[1:]:
        mine = np.flatnonzero((face_owner == index[part.joint]) & ~used)
        theirs = np.flatnonzero((face_owner == index[SMPL_PARENTS[part.joint]]) & ~used)
        fa = mine[np.argmin(np.linalg.norm(centroid[mine] - joints[part.joint], axis=1))]
        fb = theirs[np.argmin(np.linalg.norm(centroid[theirs] - centroid[fa], axis=1))]
        used[[fa, fb]] = True
        tunnels.append(_tunnel(f[fa], f[fb]))
    torso_faces = np.flatnonzero(np.isin(face_owner[~used], [index[0], index[9]]))
    f = np.concatenate([f[~used]] + tunnels)

    # Reach exactly 6890 vertices by splitting torso triangles at their centroids (shape unchanged).
    missing = NUM_VERTICES - len(v)
    assert 0 <= missing < 400, missing
    chosen = torso_faces[np.linspace(0, len(torso_faces) - 1, missing).astype(int)]
    new_ids = len(v) + np.arange(missing)
    tri = f[chosen]
    v = np.concatenate((v, v[tri].mean(1)))
    w = np.concatenate((w, w[tri].mean(1)))
    nn = n[tri].mean(1)
    n = np.concatenate((n, nn / np.linalg.norm(nn, axis=1, keepdims=True)))
    split = [np.stack((tri[:, i], tri[:, (i + 1) % 3], new_ids), 1) for i in range(3)]
    keep_f = np.ones(len(f), bool)
    keep_f[chosen] = False
    f = np.concatenate([f[keep_f]] + split)
    assert len(v) == NUM_VERTICES and len(f) == NUM_FACES, (len(v), len(f))

    j_reg = np.zeros((24, NUM_VERTICES))
    for joint, ring in rings.items():
        j_reg[joint, ring] = 1.0 / len(ring)
    shapedirs = _shape_blend_shapes(v, n, w, joints)
    posedirs = _pose_blend_shapes(v, n, w, joints)

    order = _landmark_permutation(v)
    inverse = np.argsort(order)
    kintree = np.array([[4294967295, *SMPL_PARENTS[1:]], list(range(24))], dtype=np.int64)
    return {
        "v_template": v[order],
        "shapedirs": shapedirs[order],
        "posedirs": posedirs[order],
        "J_regressor": scipy.sparse.csc_matrix(j_reg[:, order]),
        "weights": w[order],
        "kintree_table": kintree,
        "f": inverse[f].astype(np.uint32),
        "J": j_reg[:, order] @ v[order],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def _shape_blend_shapes(
    v: np.ndarray, n: np.ndarray, w: np.ndarray, joints: np.ndarray
) -> np.ndarray:
    """(V, 3, 10) displacement per unit beta."""
    x, y = v[:, 0], v[:, 1]
    pelvis, hip_y = joints[0], joints[1, 1]
    torso = w[:, [0, 3, 6, 9]].sum(1)
    up = np.clip((y - 0.0) / 0.2, 0, 1)
    d = np.zeros((len(v), 3, 10))
    d[:, :, 0] = 0.05 * (v - pelvis)  # overall size
    d[:, :, 1] = 0.012 * (1 + 0.8 * torso)[:, None] * n  # girth
    d[:, 1, 2] = 0.06 * np.minimum(y - hip_y, 0)  # leg length
    d[:, 0, 3] = 0.05 * np.sign(x) * np.minimum(np.abs(x), 0.2) * up  # shoulder width
    d[:, 0, 4] = 0.06 * np.sign(x) * np.maximum(np.abs(x) - 0.2, 0) * up  # arm length
    d[:, 2, 5] = (
        0.02 * np.exp(-(((y + 0.05) / 0.12) ** 2)) * np.maximum(n[:, 2], 0) * torso
    )  # belly
    d[:, :, 6] = 0.08 * w[:, 15:16] * (v - joints[15])  # head size
    d[:, 0, 7] = 0.08 * x * np.exp(-(((y + 0.25) / 0.15) ** 2))  # hip width
    d[:, 1, 8] = 0.04 * np.maximum(y - pelvis[1], 0)  # torso length
    feet = w[:, [7, 8, 10, 11]].sum(1)[:, None]
    ankle = np.where(x[:, None] > 0, joints[7], joints[8])
    d[:, :, 9] = 0.1 * feet * (v - ankle)  # foot size
    return d


def _pose_blend_shapes(
    v: np.ndarray, n: np.ndarray, w: np.ndarray, joints: np.ndarray
) -> np.ndarray:
    """(V, 3, 207): for joint j, features ``(R_j - I).ravel()`` at columns 9 (j - 1) + k."""
    d = np.zeros((len(v), 3, 23, 9))
    for j in range(1, 24):
        crease = 4 * w[:, j] * w[:, SMPL_PARENTS[j]]  # 1 on the joint plane, 0 away from it
        bone = joints[j] - joints[SMPL_PARENTS[j]]
        bone /= np.linalg.norm(bone)
        for k in (0, 4, 8):  # -(trace(R) - 3) = 2 (1 - cos angle): bulge outward when bent
            d[:, :, j - 1, k] = -0.008 * crease[:, None] * n
        d[:, :, j - 1, 1] = 0.003 * crease[:, None] * bone  # twist about z shears along the bone
        d[:, :, j - 1, 3] = -0.003 * crease[:, None] * bone
    return d.reshape(len(v), 3, 207)


def write_synthetic_smpl(directory: Path) -> Path:
    """Write ``SMPL_NEUTRAL.pkl`` into ``directory`` and ``directory/smpl`` (smplx.create's layout).

    Returns:
        ``directory / "SMPL_NEUTRAL.pkl"``.
    """
    directory = Path(directory)
    (directory / "smpl").mkdir(parents=True, exist_ok=True)
    path = directory / "SMPL_NEUTRAL.pkl"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(synthetic_smpl_arrays(), fh, protocol=2)
    os.replace(tmp, path)
    nested = directory / "smpl" / "SMPL_NEUTRAL.pkl"
    nested.unlink(missing_ok=True)
    try:
        os.link(path, nested)
    except OSError:
        nested.write_bytes(path.read_bytes())
    return path
