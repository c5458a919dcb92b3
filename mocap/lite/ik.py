"""Inverse kinematics: 33 BlazePose world landmarks -> the 24 SMPL joint rotations.

Pure geometry (numpy, and torch for the torso refinement), no MediaPipe: the tests drive it with
landmarks made by forward kinematics of real SMPL poses (:func:`mocap.lite.landmarks.posed_landmarks`).

How each rotation is found (all arrays in the camera frame, metres):
1. Every segment gets an orthonormal frame from a primary direction (its bone) and a secondary one
   (its twist): the hip line and torso up for the pelvis, the shoulder line for the chest, the ear
   line and the face for the head, the bend plane of knee and elbow for the limbs (near straight
   limbs take their twist from the foot or the hand instead, blended smoothly so it never flips),
   heel-to-toe for the feet, wrist-to-knuckles and pinky-to-index for the hands. The same frame,
   built from the rest skeleton's landmarks, gives the rest frame; global rotation = observed
   frame @ rest frame^T, so every bone points exactly where its landmarks say.
2. The unobserved spine (spine1..3) shares the pelvis-to-chest rotation equally, neck and head share
   the chest-to-head one; then a small least-squares fit (:func:`refine_torso`) moves pelvis, spine,
   neck, head and collars so the torso and head landmarks land where they were seen.
3. Local rotation = parent's global^T @ global.
"""

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from mocap.body.joints import SMPL_PARENTS
from mocap.lite.landmarks import LANDMARK_JOINT, L, landmark_offsets, rest_landmarks

STRAIGHT_DEG, BENT_DEG = (
    10.0,
    30.0,
)  # twist from the bend plane above BENT_DEG, from foot/hand below
TORSO_JOINTS = (0, 3, 6, 9, 12, 13, 14, 15)
PRIOR = (1e-4, 1e-4, 1e-5)  # weights: even spine curvature, neck = head bend, collars at rest
TORSO_LANDMARKS = tuple(range(13)) + (L["left_hip"], L["right_hip"])

# limbs: (side, root joint, mid joint, end joint, landmark names)
_ARMS = (("left", 16, 18, 20), ("right", 17, 19, 21))
_LEGS = (("left", 1, 4, 7), ("right", 2, 5, 8))
# body parts whose landmarks decide their confidence (for holding low-confidence frames)
PART_JOINTS: dict[str, tuple[int, ...]] = {
    "left_arm": (16, 18, 20),
    "right_arm": (17, 19, 21),
    "left_leg": (1, 4, 7),
    "right_leg": (2, 5, 8),
    "head": (12, 15),
}
PART_LANDMARKS: dict[str, tuple[int, ...]] = {
    "left_arm": (L["left_shoulder"], L["left_elbow"], L["left_wrist"]),
    "right_arm": (L["right_shoulder"], L["right_elbow"], L["right_wrist"]),
    "left_leg": (L["left_hip"], L["left_knee"], L["left_ankle"]),
    "right_leg": (L["right_hip"], L["right_knee"], L["right_ankle"]),
    "head": (L["nose"], L["left_ear"], L["right_ear"]),
}


@dataclass
class IKResult:
    """Joint rotations solved from landmarks (T frames).

    Attributes:
        rotations: (T,24,3,3) local rotations; joint 0 is the global orientation (camera frame).
        pelvis: (T,3) pelvis joint position implied by the landmarks (landmark frame).
        part_confidence: per body part of :data:`PART_JOINTS`, (T,) the lowest visibility of the
            landmarks that decide it.
    """

    rotations: np.ndarray
    pelvis: np.ndarray
    part_confidence: dict[str, np.ndarray]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """(...,3,3) orthonormal frame with columns: primary, secondary made orthogonal, their cross."""
    a = _unit(primary)
    b = _unit(secondary - np.sum(secondary * a, axis=-1, keepdims=True) * a)
    return np.stack([a, b, np.cross(a, b)], axis=-1)


def fractional(rot: np.ndarray, fraction: float) -> np.ndarray:
    """(...,3,3) rotation by ``fraction`` of each rotation's angle about the same axis."""
    shape = rot.shape
    vec = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec() * fraction
    return Rotation.from_rotvec(vec).as_matrix().reshape(shape)


def _bend_normal(upper: np.ndarray, lower: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(T,3) normal of a limb's bend plane; from ``fallback`` (a vector along which the limb would
    bend) when the limb is near straight, blended in between so the twist is continuous."""
    plane = np.cross(upper, lower)
    cos = np.sum(_unit(upper) * _unit(lower), axis=-1)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    w = np.clip((angle - STRAIGHT_DEG) / (BENT_DEG - STRAIGHT_DEG), 0.0, 1.0)[:, None]
    fb = _unit(np.cross(upper, fallback))
    n = w * _unit(plane) + (1.0 - w) * fb
    weak = np.linalg.norm(n, axis=-1) < 0.2  # plane and fallback disagree: trust the fallback
    n[weak] = fb[weak]
    return n


def solve(
    landmarks: np.ndarray,
    visibility: np.ndarray,
    rest_joints: np.ndarray,
    refine: bool = True,
) -> IKResult:
    """SMPL joint rotations from world landmarks.

    Arguments:
        landmarks: (T,33,3) landmark positions, camera-aligned axes (x right, y down, z forward),
            metres; any origin.
        visibility: (T,33) landmark confidences in [0, 1].
        rest_joints: (24,3) rest skeleton the rotations are for (SMPL canonical frame).
        refine: fit the torso chain to the torso and head landmarks (:func:`refine_torso`).
    """
    P = np.asarray(landmarks, dtype=np.float64)
    T = len(P)
    rest_lm = rest_landmarks(rest_joints)
    glob = np.tile(np.eye(3), (T, 24, 1, 1))

    def seg(p: np.ndarray, s: np.ndarray, rp: np.ndarray, rs: np.ndarray) -> np.ndarray:
        return frame(p, s) @ frame(rp, rs).T

    def mid(lm: np.ndarray, a: str, b: str) -> np.ndarray:
        return 0.5 * (lm[..., L[a], :] + lm[..., L[b], :])

    hip_line = P[:, L["left_hip"]] - P[:, L["right_hip"]]
    up = mid(P, "left_shoulder", "right_shoulder") - mid(P, "left_hip", "right_hip")
    r_hip_line = rest_lm[L["left_hip"]] - rest_lm[L["right_hip"]]
    r_up = mid(rest_lm, "left_shoulder", "right_shoulder") - mid(rest_lm, "left_hip", "right_hip")
    glob[:, 0] = seg(hip_line, up, r_hip_line, r_up)
    chest = seg(
        P[:, L["left_shoulder"]] - P[:, L["right_shoulder"]],
        up,
        rest_lm[L["left_shoulder"]] - rest_lm[L["right_shoulder"]],
        r_up,
    )
    q = fractional(np.swapaxes(glob[:, 0], -1, -2) @ chest, 1.0 / 3.0)
    glob[:, 3] = glob[:, 0] @ q
    glob[:, 6] = glob[:, 3] @ q
    glob[:, 9] = glob[:, 6] @ q
    face = [L[n] for n in ("nose", "left_eye", "right_eye", "mouth_left", "mouth_right")]
    ears = mid(P, "left_ear", "right_ear")
    head = seg(
        P[:, L["left_ear"]] - P[:, L["right_ear"]],
        P[:, face].mean(axis=1) - ears,
        rest_lm[L["left_ear"]] - rest_lm[L["right_ear"]],
        rest_lm[face].mean(axis=0) - mid(rest_lm, "left_ear", "right_ear"),
    )
    half = fractional(np.swapaxes(glob[:, 9], -1, -2) @ head, 0.5)
    glob[:, 12] = glob[:, 9] @ half
    glob[:, 15] = glob[:, 12] @ half
    glob[:, 13] = glob[:, 9]
    glob[:, 14] = glob[:, 9]
    local = _to_local(glob)
    pelvis = mid(P, "left_hip", "right_hip") - np.einsum(
        "tab,b->ta", glob[:, 0], 0.5 * (rest_joints[1] + rest_joints[2]) - rest_joints[0]
    )
    vis = np.asarray(visibility, dtype=np.float64)
    if refine:
        local, pelvis = refine_torso(P, vis, rest_joints, local, pelvis)
        glob = _to_global(local)
    _solve_limbs(P, rest_lm, rest_joints, glob)
    local = _to_local(glob)
    conf = {part: vis[:, list(lms)].min(axis=1) for part, lms in PART_LANDMARKS.items()}
    return IKResult(local, pelvis, conf)


def _solve_limbs(P: np.ndarray, rest_lm: np.ndarray, rest: np.ndarray, glob: np.ndarray) -> None:
    """Arms, hands, legs and feet, in place in ``glob`` (their parents' rotations already set)."""
    for side, j0, j1, j2 in _ARMS:
        sh, el, wr = (P[:, L[f"{side}_{n}"]] for n in ("shoulder", "elbow", "wrist"))
        idx, pin = P[:, L[f"{side}_index"]], P[:, L[f"{side}_pinky"]]
        r_up, r_fore = rest[j1] - rest[j0], rest[j2] - rest[j1]
        r_idx, r_pin = rest_lm[L[f"{side}_index"]], rest_lm[L[f"{side}_pinky"]]
        n_rest = np.cross(r_up, r_idx - r_pin)  # at rest the elbow would bend towards the thumb
        n = _bend_normal(el - sh, wr - el, idx - pin)
        glob[:, j0] = frame(el - sh, n) @ frame(r_up, n_rest).T
        glob[:, j1] = frame(wr - el, n) @ frame(r_fore, n_rest).T
        r_wr = rest_lm[L[f"{side}_wrist"]]
        glob[:, j2] = (
            frame(0.5 * (idx + pin) - wr, idx - pin)
            @ frame(0.5 * (r_idx + r_pin) - r_wr, r_idx - r_pin).T
        )
        glob[:, j2 + 2] = glob[:, j2]  # hand joint: at rest relative to the wrist
    for side, j0, j1, j2 in _LEGS:
        hip, knee, ank = (P[:, L[f"{side}_{n}"]] for n in ("hip", "knee", "ankle"))
        heel, toe = P[:, L[f"{side}_heel"]], P[:, L[f"{side}_foot_index"]]
        r_thigh, r_shin = rest[j1] - rest[j0], rest[j2] - rest[j1]
        r_heel, r_toe = rest_lm[L[f"{side}_heel"]], rest_lm[L[f"{side}_foot_index"]]
        n_rest = np.cross(r_thigh, r_heel - r_toe)  # the knee bends the shin backwards
        n = _bend_normal(knee - hip, ank - knee, heel - toe)
        glob[:, j0] = frame(knee - hip, n) @ frame(r_thigh, n_rest).T
        glob[:, j1] = frame(ank - knee, n) @ frame(r_shin, n_rest).T
        r_ank = rest_lm[L[f"{side}_ankle"]]
        glob[:, j2] = frame(toe - heel, ank - heel) @ frame(r_toe - r_heel, r_ank - r_heel).T
        glob[:, j2 + 3] = glob[:, j2]  # toes: at rest relative to the ankle


def _to_local(glob: np.ndarray) -> np.ndarray:
    local = glob.copy()
    for j, p in enumerate(SMPL_PARENTS):
        if p >= 0:
            local[:, j] = np.swapaxes(glob[:, p], -1, -2) @ glob[:, j]
    return local


def _to_global(local: np.ndarray) -> np.ndarray:
    glob = local.copy()
    for j, p in enumerate(SMPL_PARENTS):
        if p >= 0:
            glob[:, j] = glob[:, p] @ local[:, j]
    return glob


def refine_torso(
    P: np.ndarray,
    vis: np.ndarray,
    rest_joints: np.ndarray,
    local: np.ndarray,
    pelvis: np.ndarray,
    iterations: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of the torso chain (pelvis, spine1..3, neck, collars, head and the pelvis
    position) to the hip, shoulder and head landmarks, starting from the analytic solution.

    Levenberg-Marquardt per frame (batched over frames, Jacobians by autograd). The spine is kept
    evenly curved, neck and head share their bend, and the collars stay near rest: these priors
    decide only what the landmarks leave open (how a bend splits along the unobserved spine).
    Returns the refined (T,24,3,3) local rotations and (T,3) pelvis positions.
    """
    import torch

    from mocap.geometry import axis_angle_to_rotmat

    dt = torch.float64
    n_rot = len(TORSO_JOINTS)
    rest = torch.from_numpy(rest_joints).to(dt)
    off = torch.from_numpy(landmark_offsets(rest_joints)).to(dt)
    lm_joint = [int(LANDMARK_JOINT[k]) for k in TORSO_LANDMARKS]
    slot = {j: i for i, j in enumerate(TORSO_JOINTS)}
    sw = [float(np.sqrt(w)) for w in PRIOR]

    def residual(
        x: torch.Tensor, init: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """(B,R) residuals of B parameter vectors x (B,27) (batched torso FK)."""
        delta, pel = x[:, : 3 * n_rot].reshape(-1, n_rot, 3), x[:, 3 * n_rot :]
        rot = axis_angle_to_rotmat(delta) @ init
        glob: dict[int, torch.Tensor] = {0: rot[:, 0]}
        pos: dict[int, torch.Tensor] = {0: pel}
        for j in (1, 2, 3, 6, 9, 12, 13, 14, 15, 16, 17):
            p = SMPL_PARENTS[j]
            pos[j] = pos[p] + glob[p] @ (rest[j] - rest[p])
            if j in slot:
                glob[j] = glob[p] @ rot[:, slot[j]]
        pts = torch.stack(
            [
                pos[j] + glob[15] @ off[k] if j == 15 else pos[j]
                for k, j in zip(TORSO_LANDMARKS, lm_joint, strict=True)
            ],
            dim=1,
        )
        spine = delta[:, 1:4]
        return torch.cat(
            [
                ((pts - target) * weight[..., None]).flatten(1),
                sw[0] * (spine - spine.mean(dim=1, keepdim=True)).flatten(1),
                sw[1] * (delta[:, 4] - delta[:, 7]),
                sw[2] * delta[:, 5:7].flatten(1),
            ],
            dim=1,
        )

    T = len(P)
    init = torch.from_numpy(local[:, list(TORSO_JOINTS)]).to(dt)
    target = torch.from_numpy(P[:, list(TORSO_LANDMARKS)]).to(dt)
    weight = torch.from_numpy(vis[:, list(TORSO_LANDMARKS)]).to(dt).clamp(0.05, 1.0)
    x = torch.cat([torch.zeros(T, 3 * n_rot, dtype=dt), torch.from_numpy(pelvis)], dim=1)
    n = x.shape[1]
    eps = 1e-6
    probe = torch.cat([torch.zeros(1, n, dtype=dt), eps * torch.eye(n, dtype=dt)])  # (n+1, n)
    init_r, target_r = init.repeat_interleave(n + 1, 0), target.repeat_interleave(n + 1, 0)
    weight_r = weight.repeat_interleave(n + 1, 0)
    lam = torch.full((T, 1, 1), 1e-3, dtype=dt)
    eye = torch.eye(n, dtype=dt)
    for _ in range(iterations):
        # residuals at x and at x + eps e_i in one batch: forward-difference Jacobian
        xs = (x[:, None, :] + probe[None]).reshape(-1, n)
        rs = residual(xs, init_r, target_r, weight_r).reshape(T, n + 1, -1)
        r, J = rs[:, 0], ((rs[:, 1:] - rs[:, :1]) / eps).transpose(1, 2)  # (T,R), (T,R,n)
        cost_now = (r**2).sum(dim=1)
        JtJ = J.transpose(1, 2) @ J
        g = (J.transpose(1, 2) @ r[..., None])[..., 0]
        damp = lam * (eye + torch.diag_embed(JtJ.diagonal(dim1=1, dim2=2)))
        step = torch.linalg.solve(JtJ + damp, -g[..., None])[..., 0]
        r_new = residual(x + step, init, target, weight)
        better = (r_new**2).sum(dim=1) < cost_now
        x = torch.where(better[:, None], x + step, x)
        lam = torch.where(better[:, None, None], lam * 0.3, lam * 10.0).clamp(1e-9, 1e6)
    rot = axis_angle_to_rotmat(x[:, : 3 * n_rot].reshape(-1, n_rot, 3)) @ init
    out = local.copy()
    out[:, list(TORSO_JOINTS)] = rot.numpy()
    return out, x[:, 3 * n_rot :].numpy().copy()
