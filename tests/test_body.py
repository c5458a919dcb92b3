"""The synthetic SMPL-format body (loaded by smplx like a real file) and mocap's safe body model."""

import math
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch
from synthetic_smpl import rest_joints as synthetic_rest_joints
from synthetic_smpl import synthetic_smpl_arrays

from mocap import geometry
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.body.smpl import find_smpl, load_body_model
from mocap.body.smpl_file import load_regressor, load_smpl_file
from mocap.errors import MocapError

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
    # smplx's extra-keypoint vertices sit on the right bones (nose on the head, heels on the feet).
    bone = data["weights"].argmax(1)
    landmarks = {
        332: 15,
        2800: 15,
        6260: 15,
        3387: 7,
        6787: 8,
        3216: 10,
        6617: 11,
        2445: 22,
        5905: 23,
    }
    assert {vid: int(bone[vid]) for vid in landmarks} == landmarks


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


# --- mocap.body: safe loading and BodyModel -------------------------------------------------------


def _random_pose(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    aa = 0.4 * torch.randn(batch, 24, 3, generator=gen)
    rot = geometry.axis_angle_to_rotmat(aa)
    betas = torch.randn(batch, 10, generator=gen)
    return rot[:, 0], rot[:, 1:], betas


def test_load_smpl_file_reads_the_real_format(smpl_dir: Path) -> None:
    arrays = load_smpl_file(smpl_dir / "SMPL_NEUTRAL.pkl")
    expected = synthetic_smpl_arrays()
    for key in ("v_template", "shapedirs", "posedirs", "weights", "kintree_table", "f"):
        np.testing.assert_array_equal(arrays[key], expected[key])
    np.testing.assert_array_equal(arrays["J_regressor"], expected["J_regressor"].toarray())
    assert str(arrays["bs_style"]) == "lbs"


def test_body_model_matches_smplx_reading_the_same_file(
    smpl_dir: Path, smplx_model: smplx.SMPL
) -> None:
    body = load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl", required=True)
    assert body is not None
    go, bp, betas = _random_pose(3)
    transl = torch.tensor([[0.1, 0.2, 3.0]]).expand(3, 3)
    out = body(go, bp, betas, transl)
    aa = geometry.rotmat_to_axis_angle(torch.cat((go[:, None], bp), 1)).reshape(3, 72)
    ref = smplx_model(global_orient=aa[:, :3], body_pose=aa[:, 3:], betas=betas, transl=transl)
    assert out.vertices.shape == (3, 6890, 3) and out.joints.shape == (3, 24, 3)
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints, ref.joints[:, :24], atol=1e-5, rtol=0)
    # HMR2.0 OpenPose order: nose, neck, right shoulder ..., then vertex joints (eyes, ears, feet).
    assert out.keypoints.shape == (3, 25, 3) and out.h36m is None
    torch.testing.assert_close(out.keypoints[:, 1], out.joints[:, 12])  # neck
    torch.testing.assert_close(out.keypoints[:, 8], out.joints[:, 0])  # mid hip = pelvis
    torch.testing.assert_close(out.keypoints[:, 0], ref.joints[:, 24])  # nose vertex
    assert body.faces.shape == (13776, 3) and body.lbs_weights.shape == (6890, 24)
    assert tuple(body.parents) == SMPL_PARENTS


def test_body_model_rest_joints_follow_shape(smpl_dir: Path) -> None:
    body = load_body_model(smpl_dir)
    assert body is not None
    rest = body.rest_joints()
    np.testing.assert_allclose(rest, synthetic_rest_joints(), atol=1e-6)
    ident = torch.eye(3).expand(1, 24, 3, 3)
    betas = np.zeros(10)
    betas[0] = 1.5
    posed = body(ident[:, 0], ident[:, 1:], torch.tensor(betas[None], dtype=torch.float32))
    np.testing.assert_allclose(posed.joints[0].numpy(), body.rest_joints(betas), atol=1e-5)
    np.testing.assert_allclose(posed.vertices[0].numpy(), body.rest_vertices(betas), atol=1e-5)
    assert np.ptp(body.rest_vertices(betas)[:, 1]) > np.ptp(body.rest_vertices()[:, 1]) + 0.05


def test_extra_regressors_are_found_and_loaded(tmp_path: Path, smpl_dir: Path) -> None:
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes((smpl_dir / "SMPL_NEUTRAL.pkl").read_bytes())
    reg = synthetic_smpl_arrays()["J_regressor"].toarray()
    j19 = reg[np.arange(19) % 24]
    with open(tmp_path / "SMPL_to_J19.pkl", "wb") as fh:
        pickle.dump(j19, fh)
    np.save(tmp_path / "J_regressor_h36m.npy", reg[:17])
    body = load_body_model(tmp_path / "SMPL_NEUTRAL.pkl")
    assert body is not None and body.num_keypoints == 44
    go, bp, betas = _random_pose(2, seed=1)
    out = body(go, bp, betas)
    assert out.keypoints.shape == (2, 44, 3) and out.h36m is not None
    verts = out.vertices.double().numpy()
    np.testing.assert_allclose(out.keypoints[:, 25:].numpy(), j19 @ verts, atol=1e-5)
    np.testing.assert_allclose(out.h36m.numpy(), reg[:17] @ verts, atol=1e-5)
    # Posed surface regressions stay within a few cm of the skeleton's joints.
    assert (out.keypoints[:, 25:] - out.joints[:, np.arange(19) % 24]).norm(dim=-1).max() < 0.03
    with pytest.raises(MocapError, match="regressor"):
        load_regressor(tmp_path / "SMPL_NEUTRAL.pkl")


class _FakeCh:
    """Pickles like chumpy.ch.Ch: its __getstate__ is the __dict__ minus weak references."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._dirty_vars: set[str] = set()
        self._itr = None
        self._depends_on_deps: dict[str, object] = {}
        self._make_dense = False
        self._make_sparse = False

    def __getstate__(self) -> dict[str, object]:
        return dict(self.__dict__)


@pytest.mark.parametrize("protocol", [1, 2])
def test_chumpy_release_file_loads_without_chumpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int
) -> None:
    import types

    arrays = synthetic_smpl_arrays()
    ch_module = types.ModuleType("chumpy.ch")
    fake = type("Ch", (_FakeCh,), {"__module__": "chumpy.ch"})
    ch_module.Ch = fake  # type: ignore[attr-defined]
    data: dict[str, Any] = dict(arrays)
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J"):
        data[key] = fake(arrays[key])
    data["pose_training_info"] = {"nr_pose_training_examples": 1786}  # as in the release file
    with monkeypatch.context() as m:  # chumpy exists only while writing
        m.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        m.setitem(sys.modules, "chumpy.ch", ch_module)
        path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert "chumpy" not in sys.modules
    loaded = load_smpl_file(path)
    np.testing.assert_array_equal(loaded["posedirs"], arrays["posedirs"])
    np.testing.assert_array_equal(loaded["v_template"], arrays["v_template"])
    body = load_body_model(tmp_path)  # found in the folder under its release name
    assert body is not None
    np.testing.assert_allclose(body.rest_joints(), synthetic_rest_joints(), atol=1e-6)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil(marker)}, protocol=2))
    with pytest.raises(MocapError, match="refused"):
        load_smpl_file(path)
    assert not marker.exists()
    # eval smuggled in through the Python-2 name of builtins, and a class via _reconstructor.
    path.write_bytes(b"c__builtin__\neval\n(S'1+1'\ntR.")
    with pytest.raises(MocapError, match="refused"):
        load_smpl_file(path)
    path.write_bytes(
        b"ccopy_reg\n_reconstructor\n(cmocap.errors\nMocapError\nc__builtin__\nobject\nNtR."
    )
    with pytest.raises(MocapError, match="refused"):
        load_smpl_file(path)
    with pytest.raises(MocapError, match="refused"):
        load_body_model(path)


def test_missing_corrupt_and_npz_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smpl_dir: Path
) -> None:
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("MOCAP_SMPL", raising=False)
    assert find_smpl() is None and load_body_model() is None
    with pytest.raises(MocapError, match="smpl.is.tue.mpg.de") as err:
        load_body_model(required=True)
    assert str(tmp_path / "home" / "smpl" / "SMPL_NEUTRAL.pkl") in str(err.value)
    with pytest.raises(MocapError, match="not found"):
        load_body_model(tmp_path / "nowhere.pkl")
    monkeypatch.setenv("MOCAP_SMPL", str(tmp_path / "nowhere.pkl"))
    with pytest.raises(MocapError, match="MOCAP_SMPL"):
        find_smpl()
    # A truncated download is reported as unreadable, not as a traceback.
    broken = tmp_path / "SMPL_NEUTRAL.pkl"
    broken.write_bytes((smpl_dir / "SMPL_NEUTRAL.pkl").read_bytes()[:5000])
    monkeypatch.setenv("MOCAP_SMPL", str(broken))
    with pytest.raises(MocapError, match="cannot read"):
        load_body_model()
    # .npz (no pickle at all) works, and the cache location is used when nothing is given.
    arrays = synthetic_smpl_arrays()
    npz = tmp_path / "home" / "smpl" / "SMPL_NEUTRAL.npz"
    npz.parent.mkdir(parents=True)
    np.savez(npz, **{k: v.toarray() if k == "J_regressor" else v for k, v in arrays.items()})
    monkeypatch.delenv("MOCAP_SMPL")
    assert find_smpl() == npz
    body = load_body_model(required=True)
    assert body is not None
    np.testing.assert_allclose(body.rest_joints(), synthetic_rest_joints(), atol=1e-6)
    # An existing 4D-Humans setup is found too.
    npz.unlink()
    hmr2_cache = tmp_path / "user" / ".cache" / "4DHumans" / "data" / "smpl" / "SMPL_NEUTRAL.pkl"
    hmr2_cache.parent.mkdir(parents=True)
    hmr2_cache.write_bytes((smpl_dir / "SMPL_NEUTRAL.pkl").read_bytes())
    assert find_smpl() == hmr2_cache
    with open(hmr2_cache.parent.parent / "SMPL_to_J19.pkl", "wb") as fh:  # 4D-Humans' layout
        pickle.dump(arrays["J_regressor"].toarray()[:19], fh)
    body = load_body_model()
    assert body is not None and body.num_keypoints == 44
