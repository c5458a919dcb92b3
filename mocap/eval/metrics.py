"""Standard human-mesh-recovery metrics (3DPW / H36M protocol), in millimetres.

Protocol (as in SPIN, HMR2.0 and the paper): joints are the 14 LSP joints regressed from the mesh with
the Human3.6M regressor, both prediction and ground truth aligned at the pelvis (H36M joint 0) before
MPJPE; PA-MPJPE after a similarity Procrustes alignment (scale, rotation, translation); PVE over all
mesh vertices after the same pelvis alignment; acceleration error over consecutive frames of a sequence.
Inputs are metres, outputs millimetres.
"""

from dataclasses import dataclass

import numpy as np

from mocap.geometry import procrustes_align_np

# Indices of the 14 LSP joints inside the 17 Human3.6M joints.
H36M_TO_J14: tuple[int, ...] = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
H36M_PELVIS = 0


@dataclass
class Errors:
    """Per-sample errors in millimetres: mpjpe, pa_mpjpe (N,), pve (N,) or None."""

    mpjpe: np.ndarray
    pa_mpjpe: np.ndarray
    pve: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        out = {"MPJPE": float(self.mpjpe.mean()), "PA-MPJPE": float(self.pa_mpjpe.mean())}
        if self.pve is not None:
            out["PVE"] = float(self.pve.mean())
        return out


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean per-joint position error per sample.

    Arguments:
        pred, gt: (N, J, 3) metres, already aligned as the protocol requires.
    Returns:
        (N,) millimetres.
    """
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) * 1000.0


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """MPJPE after the best similarity transform of ``pred`` onto ``gt``; (N,J,3) -> (N,) mm."""
    return mpjpe(procrustes_align_np(pred, gt), gt)


def pelvis_align(joints17: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Subtract the H36M pelvis of ``joints17`` (N,17,3) from it and from each array in ``others``."""
    pelvis = joints17[:, H36M_PELVIS : H36M_PELVIS + 1]
    return [joints17 - pelvis] + [o - pelvis for o in others]


def protocol_errors(
    pred_joints17: np.ndarray,
    gt_joints17: np.ndarray,
    pred_vertices: np.ndarray | None = None,
    gt_vertices: np.ndarray | None = None,
) -> Errors:
    """The 3DPW protocol on H36M-regressed joints.

    Arguments:
        pred_joints17, gt_joints17: (N,17,3) metres, regressed with the H36M regressor.
        pred_vertices, gt_vertices: optional (N,V,3) metres, for PVE.
    """
    pj, *pv = pelvis_align(pred_joints17, *([pred_vertices] if pred_vertices is not None else []))
    gj, *gv = pelvis_align(gt_joints17, *([gt_vertices] if gt_vertices is not None else []))
    idx = list(H36M_TO_J14)
    pve = mpjpe(pv[0], gv[0]) if pv and gv else None
    return Errors(mpjpe(pj[:, idx], gj[:, idx]), pa_mpjpe(pj[:, idx], gj[:, idx]), pve)


def accel_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean acceleration error of a sequence, mm/frame^2 (second differences of joint positions).

    Arguments:
        pred, gt: (T, J, 3) metres, T >= 3, consecutive frames of one sequence.
    """
    if pred.shape[0] < 3:
        raise ValueError("acceleration error needs at least 3 frames")
    acc_p = pred[:-2] - 2 * pred[1:-1] + pred[2:]
    acc_g = gt[:-2] - 2 * gt[1:-1] + gt[2:]
    return float(np.linalg.norm(acc_p - acc_g, axis=-1).mean() * 1000.0)
