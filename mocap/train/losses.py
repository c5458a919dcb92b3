"""The paper's decoder-training losses, returned as a dataclass of terms.

``L = 1 * MSE(SMPL rotation matrices, betas) + 5 * MSE(2D joints) + 5 * MSE(3D joints, pelvis-aligned)
+ 60 * MSE(vertices)``; SMPL and vertex terms only where SMPL ground truth exists, joint terms weighted
by per-joint confidence. 2D joints are the predicted 3D joints projected through the crop camera
(focal 5000/256, principal point 0), compared with ground truth in ``kp/256 - 0.5`` coordinates.

Every term is a per-sample value averaged over the *whole* batch (masked samples count as 0, not
dropped), so the loss is linear in the samples: averaging per-process losses over equal DDP shards
gives exactly the single-process loss of the global batch.

Predicted joints are mapped into SPIN's 24-joint layout of the datasets. With a joint regressor (K x V,
e.g. HMR2.0's ``SMPL_to_J19``, whose 19 rows are SPIN joints 0-18) they come from the vertices;
without one, the SMPL kinematic joints that correspond to SPIN joints are used and the others (head
top, jaw, face) are left out. SMPL's hips sit a few centimetres from the H36M/LSP hips, so the
regressor is the accurate choice for full training.
"""

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from mocap import geometry

# SMPL joint used for each SPIN joint (-1: no SMPL kinematic joint corresponds).
SPIN24_FROM_SMPL24: tuple[int, ...] = (
    8, 5, 2, 1, 4, 7, 21, 19, 17, 16, 18, 20, 12, -1, 0, 9, 6, -1, 15, -1, -1, -1, -1, -1,
)  # fmt: skip
SPIN24_PELVIS = 14


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (paper: lambda_SMPL 1, lambda_joint 5 for 2D and 3D, lambda_mesh 60)."""

    smpl: float = 1.0
    keypoints_2d: float = 5.0
    keypoints_3d: float = 5.0
    vertices: float = 60.0


@dataclass
class LossTerms:
    """Unweighted terms (scalars) and their weighted sum ``total`` (what is backpropagated)."""

    smpl: Tensor
    keypoints_2d: Tensor
    keypoints_3d: Tensor
    vertices: Tensor
    total: Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats, for logging."""
        return {f.name: float(getattr(self, f.name).detach()) for f in fields(self)}


@dataclass
class LossTargets:
    """Ground truth for a batch of B crops (see :class:`mocap.train.data.Batch`).

    Attributes:
        rotmat: (B, 24, 3, 3).  betas: (B, 10).  vertices: (B, V, 3) or None (no SMPL in the batch).
        keypoints_2d: (B, 24, 3) normalised crop coords + conf.  joints_3d: (B, 24, 4) metres + conf.
        has_smpl, has_3d: (B,).
    """

    rotmat: Tensor
    betas: Tensor
    vertices: Tensor | None
    keypoints_2d: Tensor
    joints_3d: Tensor
    has_smpl: Tensor
    has_3d: Tensor


def spin_keypoints(
    smpl_joints: Tensor, vertices: Tensor, regressor: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Predicted body -> SPIN's 24-joint layout.

    Arguments:
        smpl_joints: (B, 24, 3) SMPL kinematic joints.
        vertices: (B, V, 3).
        regressor: (K, V) with K <= 24 rows for SPIN joints 0..K-1, or None.

    Returns:
        joints (B, 24, 3) and valid (24,) float mask of the joints that have a prediction.
    """
    index = torch.tensor([max(i, 0) for i in SPIN24_FROM_SMPL24], device=smpl_joints.device)
    joints = smpl_joints[:, index]
    valid = torch.tensor([float(i >= 0) for i in SPIN24_FROM_SMPL24], device=smpl_joints.device)
    if regressor is not None:
        k = regressor.shape[0]
        regressed = torch.einsum("kv,bvc->bkc", regressor.to(vertices.dtype), vertices)
        joints = torch.cat([regressed, joints[:, k:]], dim=1)
        valid = torch.cat([torch.ones(k, device=valid.device), valid[k:]])
    return joints, valid


def project_to_crop(joints: Tensor, cam_crop: Tensor) -> Tensor:
    """(B, J, 3) body-frame joints + (B, 3) crop camera -> (B, J, 2) normalised crop coordinates."""
    translation = geometry.crop_camera_translation(cam_crop)
    return geometry.perspective_projection(
        joints, translation, geometry.CROP_FOCAL_LENGTH / geometry.CROP_SIZE
    )


def _batch_mean(per_sample: Tensor) -> Tensor:
    return per_sample.sum() / per_sample.shape[0]


def hmr_losses(
    rotmat: Tensor,
    betas: Tensor,
    cam_crop: Tensor,
    keypoints: Tensor,
    keypoint_valid: Tensor,
    vertices: Tensor,
    target: LossTargets,
    weights: LossWeights,
) -> LossTerms:
    """The paper's loss terms for a batch.

    Arguments:
        rotmat: (B, 24, 3, 3) predicted rotations (joint 0 = global orient).
        betas: (B, 10).  cam_crop: (B, 3) predicted ``(s, tx, ty)``.
        keypoints: (B, 24, 3) predicted SPIN joints, body frame.  keypoint_valid: (24,).
        vertices: (B, V, 3) predicted vertices, body frame.
        target: ground truth.  weights: term weights.
    """
    f32 = torch.float32
    rotmat, betas, cam_crop = rotmat.to(f32), betas.to(f32), cam_crop.to(f32)
    keypoints, vertices = keypoints.to(f32), vertices.to(f32)
    has_smpl = target.has_smpl.to(f32)

    # 1. SMPL parameters: rotation matrices and betas.
    rot_err = (rotmat - target.rotmat).square().flatten(1).mean(1)
    beta_err = (betas - target.betas).square().mean(1)
    smpl = _batch_mean(has_smpl * (rot_err + beta_err))

    # 2. 2D joints through the crop camera.
    conf_2d = target.keypoints_2d[..., 2] * keypoint_valid
    uv = project_to_crop(keypoints, cam_crop)
    kp2d = _batch_mean((conf_2d * (uv - target.keypoints_2d[..., :2]).square().sum(-1)).mean(1))

    # 3. 3D joints after subtracting each skeleton's pelvis.
    conf_3d = target.joints_3d[..., 3] * keypoint_valid * target.has_3d[:, None]
    pred_rel = keypoints - keypoints[:, SPIN24_PELVIS : SPIN24_PELVIS + 1]
    gt_rel = target.joints_3d[..., :3] - target.joints_3d[:, SPIN24_PELVIS : SPIN24_PELVIS + 1, :3]
    kp3d = _batch_mean((conf_3d * (pred_rel - gt_rel).square().sum(-1)).mean(1))

    # 4. Vertices where SMPL ground truth exists.
    if target.vertices is None:
        verts = vertices.sum() * 0.0
    else:
        vert_err = (vertices - target.vertices.to(f32)).square().sum(-1).mean(1)
        verts = _batch_mean(has_smpl * vert_err)

    total = (
        weights.smpl * smpl
        + weights.keypoints_2d * kp2d
        + weights.keypoints_3d * kp3d
        + weights.vertices * verts
    )
    return LossTerms(smpl=smpl, keypoints_2d=kp2d, keypoints_3d=kp3d, vertices=verts, total=total)
