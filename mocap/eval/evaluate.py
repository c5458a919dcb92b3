"""Run a model over an npz dataset and score it with the 3DPW protocol.

Ground truth comes in two kinds, chosen per sample:
    - SMPL parameters (3DPW, MoSh fits): GT mesh from the (neutral, or gendered when given) SMPL
      model, joints from it with the H36M regressor, exactly like the prediction; PVE is defined.
    - 3D joints only (H36M / 3DHP ``S`` in SPIN's 24-joint layout): the 14 LSP joints are SPIN's
      first 14, pelvis = mid-hip; predictions use the H36M regressor's 14 LSP joints, pelvis = H36M 0.
Acceleration error is computed per sequence (samples sharing an image folder, in file-name order)
when a sequence has at least 3 frames.
"""

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from mocap.body.smpl import BodyModel
from mocap.errors import MocapError
from mocap.eval.metrics import H36M_TO_J14, accel_error, mpjpe, pa_mpjpe, protocol_errors
from mocap.geometry import axis_angle_to_rotmat
from mocap.model.predictor import Predictor
from mocap.train import augment as aug
from mocap.train.data import Annotations, make_sample

# SPIN 24-joint layout: the first 14 are LSP; hips are LSP 2 (right) and 3 (left).
LSP_HIPS = (2, 3)


@dataclass
class EvalResult:
    """Millimetre errors per sample and the sequence-level acceleration error."""

    mpjpe: np.ndarray
    pa_mpjpe: np.ndarray
    pve: np.ndarray
    accel: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out = {
            "MPJPE": float(self.mpjpe.mean()),
            "PA-MPJPE": float(self.pa_mpjpe.mean()),
            "N": float(len(self.mpjpe)),
        }
        if len(self.pve):
            out["PVE"] = float(self.pve.mean())
        if self.accel:
            out["Accel"] = float(np.mean(self.accel))
        return out


def _h36m(
    body: BodyModel, rotmat: torch.Tensor, betas: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    out = body(rotmat[:, 0], rotmat[:, 1:], betas)
    if out.h36m is None:
        raise MocapError(
            "evaluation needs the Human3.6M joint regressor J_regressor_h36m.npy; place it next to "
            "the SMPL file or run `mocap weights download hmr2` (it ships in HMR2.0's data archive)"
        )
    return out.h36m.double().numpy(), out.vertices.double().numpy()


def _sequences(ann: Annotations, idx: np.ndarray) -> list[np.ndarray]:
    groups: dict[str, list[int]] = defaultdict(list)
    for k, i in enumerate(idx):
        groups[str(ann.image_paths[i].parent)].append(k)
    return [
        np.array(sorted(ks, key=lambda k: ann.image_paths[idx[k]].name))
        for ks in groups.values()
        if len(ks) >= 3
    ]


@torch.inference_mode()
def evaluate(
    predictor: Predictor,
    ann: Annotations,
    body: BodyModel,
    gt_body: BodyModel | None = None,
    limit: int | None = None,
) -> EvalResult:
    """Score ``predictor`` on ``ann`` (no augmentation), batch by the predictor's batch size.

    Arguments:
        gt_body: body model for GT SMPL parameters (e.g. a gendered model); default ``body``.
        limit: evaluate only the first ``limit`` samples.
    """
    gt_body = gt_body or body
    idx = np.arange(len(ann) if limit is None else min(limit, len(ann)))
    if len(idx) == 0:
        raise MocapError("the dataset has no samples to evaluate")
    m, pa, pve = np.zeros(len(idx)), np.zeros(len(idx)), np.full(len(idx), np.nan)
    pred_all = np.zeros((len(idx), 14, 3))
    gt_all = np.zeros((len(idx), 14, 3))
    identity = aug.AugmentParams()
    for start in range(0, len(idx), predictor.batch_size):
        chunk = idx[start : start + predictor.batch_size]
        crops = np.stack([make_sample(ann, int(i), identity, int(i)).image for i in chunk])  # type: ignore[misc]
        # Only root-relative geometry is scored, so the full-image size (translation) is irrelevant.
        params = predictor.predict_crops(crops, ann.center[chunk], ann.box_size[chunk], (1, 1))
        rot = torch.cat(
            (torch.from_numpy(params.global_orient)[:, None], torch.from_numpy(params.body_pose)), 1
        )
        pj, pv = _h36m(body, rot, torch.from_numpy(params.betas))
        for k, i in enumerate(chunk):
            pos = start + k
            if ann.has_smpl[i] > 0:
                gt_rot = axis_angle_to_rotmat(torch.from_numpy(ann.pose[i]).double().reshape(24, 3))
                gj, gv = _h36m(gt_body, gt_rot[None].float(), torch.from_numpy(ann.betas[i])[None])
                errs = protocol_errors(pj[k : k + 1], gj, pv[k : k + 1], gv)
                m[pos], pa[pos] = errs.mpjpe[0], errs.pa_mpjpe[0]
                pve[pos] = errs.pve[0] if errs.pve is not None else np.nan
                lsp_gt = gj[0, list(H36M_TO_J14)] - gj[0, :1]
            elif ann.has_3d[i] > 0:
                s = ann.joints_3d[i, :14, :3].astype(np.float64)
                lsp_gt = s - s[list(LSP_HIPS)].mean(0)
                lsp_pred = pj[k, list(H36M_TO_J14)] - pj[k, :1]
                m[pos] = mpjpe(lsp_pred[None], lsp_gt[None])[0]
                pa[pos] = pa_mpjpe(lsp_pred[None], lsp_gt[None])[0]
            else:
                raise MocapError(
                    f"sample {i} ({ann.image_paths[i].name}) has neither SMPL nor 3D joints"
                )
            pred_all[pos] = pj[k, list(H36M_TO_J14)] - pj[k, :1]
            gt_all[pos] = lsp_gt
    accel = [accel_error(pred_all[s], gt_all[s]) for s in _sequences(ann, idx)]
    return EvalResult(m, pa, pve[~np.isnan(pve)], accel)
