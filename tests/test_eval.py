"""Evaluation on the real SPIN-format samples: protocol plumbing and the `mocap eval` command."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mocap.body.smpl import load_body_model
from mocap.cli import main
from mocap.eval.evaluate import evaluate
from mocap.geometry import axis_angle_to_rotmat
from mocap.model.predictor import SMPLParams
from mocap.train.data import DataSpec, load_annotations

# SMPL joint standing in for each of the 17 Human3.6M joints (a test-only regressor).
H36M_FROM_SMPL = (0, 2, 5, 8, 1, 4, 7, 3, 12, 15, 15, 16, 18, 20, 17, 19, 21)


@pytest.fixture(scope="module")
def smpl_with_h36m(smpl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic SMPL body plus a J_regressor_h36m.npy built from its joint regressor."""
    folder = tmp_path_factory.mktemp("smpl_h36m")
    for f in smpl_dir.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    body = load_body_model(folder, required=True)
    assert body is not None and body.h36m is None
    regressor = body.layer.J_regressor.detach().numpy()[list(H36M_FROM_SMPL)]
    np.save(folder / "J_regressor_h36m.npy", regressor.astype(np.float32))
    return folder


class GroundTruthPredictor:
    """Returns the annotation's own SMPL parameters (plus an optional pose error on the elbows)."""

    batch_size = 3

    def __init__(self, pose: np.ndarray, betas: np.ndarray, elbow_error_deg: float = 0.0):
        rot = axis_angle_to_rotmat(torch.from_numpy(pose).double().reshape(-1, 24, 3)).numpy()
        if elbow_error_deg:
            bend = axis_angle_to_rotmat(torch.tensor([0.0, np.deg2rad(elbow_error_deg), 0.0]))
            rot[:, 18:20] = rot[:, 18:20] @ bend.numpy()
        self.rot, self.betas, self.seen = rot.astype(np.float32), betas, 0

    def predict_crops(self, crops, centers, sizes, image_size) -> SMPLParams:
        n = len(crops)
        assert crops.shape == (n, 3, 256, 192) and np.isfinite(crops).all()
        sl = slice(self.seen, self.seen + n)
        self.seen += n
        return SMPLParams(
            self.rot[sl, 0],
            self.rot[sl, 1:],
            self.betas[sl],
            np.zeros((n, 3)),
            np.zeros((n, 3)),
            1.0,
        )


def _h36m(shared_data: Path):
    root = shared_data / "spin_npz"
    return load_annotations(DataSpec(root / "test_h36m.npz", root / "images" / "h36m"))


def test_perfect_prediction_scores_zero_and_errors_grow_with_pose_error(
    shared_data, smpl_with_h36m
):
    ann = _h36m(shared_data)
    body = load_body_model(smpl_with_h36m, required=True)
    assert body is not None
    perfect = evaluate(GroundTruthPredictor(ann.pose, ann.betas), ann, body)  # type: ignore[arg-type]
    summary = perfect.summary()
    assert summary["N"] == 4
    for key in ("MPJPE", "PA-MPJPE", "PVE"):
        assert summary[key] == pytest.approx(0.0, abs=1e-3), key
    small = evaluate(GroundTruthPredictor(ann.pose, ann.betas, 10.0), ann, body).summary()  # type: ignore[arg-type]
    large = evaluate(GroundTruthPredictor(ann.pose, ann.betas, 40.0), ann, body).summary()  # type: ignore[arg-type]
    for key in ("MPJPE", "PA-MPJPE", "PVE"):
        assert 0.5 < small[key] < large[key], key


def test_joint_only_ground_truth_uses_lsp_joints(shared_data, smpl_with_h36m):
    root = shared_data / "spin_npz"
    ann = load_annotations(DataSpec(root / "test_3dhp_test.npz", root / "images" / "mpi_inf_3dhp"))
    assert ann.has_smpl.sum() == 0 and ann.has_3d.sum() == 2
    body = load_body_model(smpl_with_h36m, required=True)
    assert body is not None
    rest = GroundTruthPredictor(np.zeros((2, 72)), np.zeros((2, 10), np.float32))
    result = evaluate(rest, ann, body)  # type: ignore[arg-type]
    assert len(result.pve) == 0 and "PVE" not in result.summary()
    # A T-posed synthetic body against real 3DHP poses: clearly wrong, finite, better after Procrustes.
    assert (result.mpjpe > 50).all() and (result.pa_mpjpe < result.mpjpe).all()


def test_mocap_eval_command_writes_tables(shared_data, smpl_with_h36m, tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for ckpt, seed in ((a, "1"), (b, "2")):
        argv = ["init-checkpoint", "featup-deformable", "--size", "tiny", "--seed", seed]
        assert main([*argv, "-o", str(ckpt)]) == 0
    root = shared_data / "spin_npz"
    h36m = f"{root / 'test_h36m.npz'}:{root / 'images' / 'h36m'}"
    hdp = f"{root / 'test_3dhp_test.npz'}:{root / 'images' / 'mpi_inf_3dhp'}"
    out = tmp_path / "eval"
    code = main(["eval", "--checkpoint", str(a), str(b), "--data", h36m, "--data", hdp,
                 "--smpl", str(smpl_with_h36m), "-o", str(out), "--batch-size", "2"])  # fmt: skip
    assert code == 0
    tables = (out / "tables.md").read_text()
    for name in ("test_h36m.npz", "test_3dhp_test.npz"):
        assert f"Table 1: {name}" in tables and f"Table 2: upsampling factor, {name}" in tables
    # two checkpoints of the same variant are told apart by file name
    assert "[a.safetensors]" in tables and "[b.safetensors]" in tables
    rows = json.loads((out / "results.json").read_text())
    assert [(Path(r["checkpoint"]).name, Path(r["data"]).name, r["N"]) for r in rows] == [
        ("a.safetensors", "test_h36m.npz", 4),
        ("a.safetensors", "test_3dhp_test.npz", 2),
        ("b.safetensors", "test_h36m.npz", 4),
        ("b.safetensors", "test_3dhp_test.npz", 2),
    ]
    for r in rows:
        assert r["factor"] == 4 and all(
            np.isfinite(r[k]) and r[k] > 0 for k in ("MPJPE", "PA-MPJPE")
        )
        assert ("PVE" in r) == (r["N"] == 4)  # PVE only where SMPL ground truth exists
    assert rows[0]["MPJPE"] != rows[2]["MPJPE"]  # different weights, different errors


def test_mocap_eval_without_smpl_is_one_clear_line(shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOCAP_SMPL", raising=False)
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "home"))
    root = shared_data / "spin_npz"
    code = main(["eval", "--checkpoint", str(tmp_path / "x.safetensors"), "--data",
                 f"{root / 'test_h36m.npz'}:{root / 'images' / 'h36m'}", "-o", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "SMPL" in err[0]
