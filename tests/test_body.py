"""The synthetic SMPL-format body (loaded by smplx like a real file) and mocap's safe body model."""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch

from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS

SUBTREE_OF_LEFT_ELBOW = [18, 20, 22]


@pytest.fixture(scope="module")
def smplx_model(smpl_dir: Path) -> smplx.SMPL:
    return smplx.create(str(smpl_dir), model_type="smpl")


def test_synthetic_file_has_smpl_layout(smpl_dir: Path) -> None:
    with open(smpl_dir / "smpl" / "SMPL_NEUTRAL.pkl", "rb") as fh:
        data = pickle.load(fh, encoding="latin1")
    assert data["v_template"].shape == (6890, 3)
    assert data["shapedirs"].shape == (6890, 3, 10)
    assert data["posedirs"].shape == (6890, 3, 207)
    assert data["weights"].shape == (6890, 24)
    assert scipy.sparse.isspmatrix_csc(data["J_regressor"]) and data["J_regressor"].shape == (
        24,
        6890,
    )
    assert data["f"].shape == (13776, 3) and data["f"].dtype == np.uint32
    assert data["kintree_table"][0, 0] == 4294967295
    assert tuple(data["kintree_table"][0, 1:]) == SMPL_PARENTS[1:]
    # Skinning weights are a partition of unity; the regressor is a convex combination.
    np.testing.assert_allclose(data["weights"].sum(1), 1.0)
    assert data["weights"].min() >= 0
    reg = data["J_regressor"].toarray()
    assert reg.min() >= 0
    np.testing.assert_allclose(reg.sum(1), 1.0)
    # One closed, consistently oriented surface: every directed edge once, its reverse present.
    f = data["f"].astype(np.int64)
    edges = np.concatenate((f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]))
    keys = set(map(tuple, edges))
    assert len(keys) == len(edges)
    assert all((b, a) in keys for a, b in keys)
    assert np.unique(f).size == 6890


def test_smplx_loads_a_plausible_rest_human(smplx_model: smplx.SMPL) -> None:
    out = smplx_model()
    joints = out.joints[0, :24].detach().numpy()
    verts = out.vertices[0].detach().numpy()
    height = verts[:, 1].max() - verts[:, 1].min()
    assert 1.6 <= height <= 1.9
    name = {n: joints[i] for i, n in enumerate(SMPL_JOINT_NAMES)}
    # Y up: head above neck above pelvis above knees above ankles.
    ys = [name[n][1] for n in ("head", "neck", "spine3", "pelvis", "left_knee", "left_ankle")]
    assert ys == sorted(ys, reverse=True)
    assert 0.8 <= name["head"][1] - name["left_ankle"][1] <= 1.7
    # The subject's left is +X and the T-pose arms are horizontal, spanning 1.4 to 2 m.
    assert name["left_wrist"][0] > 0.5 and name["right_wrist"][0] < -0.5
    assert abs(name["left_wrist"][1] - name["left_shoulder"][1]) < 0.05
    assert 1.4 <= verts[:, 0].max() - verts[:, 0].min() <= 2.0
    # Pelvis near the origin, as in SMPL; faces +Z (the nose is the front of the head).
    assert np.linalg.norm(name["pelvis"]) < 0.3
    nose = out.joints[0, 24].detach().numpy()  # smplx's first extra vertex joint (vertex 332)
    assert nose[2] > name["head"][2] + 0.05 and nose[1] > name["head"][1]


def test_posing_an_elbow_moves_only_forearm_and_hand(smplx_model: smplx.SMPL) -> None:
    rest = smplx_model().vertices[0]
    body_pose = torch.zeros(1, 69)
    body_pose[0, (18 - 1) * 3 + 1] = math.pi / 2  # left elbow, 90 degrees about Y
    posed = smplx_model(body_pose=body_pose)
    moved = (posed.vertices[0] - rest).norm(dim=-1)
    weights = smplx_model.lbs_weights
    in_subtree = weights[:, SUBTREE_OF_LEFT_ELBOW].sum(1) > 0
    dominant = torch.isin(weights.argmax(1), torch.tensor(SUBTREE_OF_LEFT_ELBOW))
    assert moved[~in_subtree].max() < 1e-6  # the rest of the body does not move at all
    assert moved[dominant].min() > 0.01  # every forearm/hand vertex moves
    # Moving vertices are all on the left arm, no closer to the body than just above the elbow.
    elbow = posed.joints[0, 18]
    assert (rest[moved > 1e-6, 0] > elbow[0] - 0.1).all()
    # The wrist swings by the forearm length (0.265 m) from +X to -Z.
    wrist_offset = (posed.joints[0, 20] - elbow).detach()
    torch.testing.assert_close(wrist_offset, torch.tensor([0.0, 0.005, -0.265]), atol=0.01, rtol=0)


@torch.no_grad()
def test_shape_and_pose_blend_shapes_are_non_trivial(smplx_model: smplx.SMPL) -> None:
    rest = smplx_model()
    heights = []
    for k in range(10):
        betas = torch.zeros(1, 10)
        betas[0, k] = 2.0
        out = smplx_model(betas=betas)
        assert (out.vertices - rest.vertices).norm(dim=-1).max() > 0.01, f"beta {k} does nothing"
        heights.append(float(out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min()))
    assert heights[0] > 1.85  # beta 0 scales the body
    # Joints follow the shape (J_regressor reads the vertices).
    betas = torch.zeros(1, 10)
    betas[0, 2] = 2.0  # leg length
    longer = smplx_model(betas=betas)
    assert longer.joints[0, 7, 1] < rest.joints[0, 7, 1] - 0.02
    # Pose blend shapes: bending a knee bulges the crease beyond pure skinning.
    posedirs = smplx_model.posedirs.reshape(207, 6890, 3)
    knee = slice(9 * 3, 9 * 4)  # features of joint 4 (left knee)
    assert posedirs[knee].abs().max() > 1e-3
    assert posedirs[knee].abs().sum((0, 2))[smplx_model.lbs_weights[:, 4] == 0].max() == 0
