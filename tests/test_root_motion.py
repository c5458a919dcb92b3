"""Root motion options (exporters.root_motion) through export_motion, BVH and npz (native
round trips; the Blender formats are checked in test_footlock_blender.py)."""

from pathlib import Path

import numpy as np
import pytest
from synthetic_gait import add_estimator_noise, to_motion, walk

from exporters import export_motion, joint_positions
from exporters.bvh import read_bvh
from exporters.rig import RigAnimation, RigMesh
from exporters.root_motion import ROOT_BONE, apply_root_motion, smpl_view, with_root_bone
from mocap import export_cmd
from mocap.errors import MocapError
from mocap.pipeline.config import RunSettings, validate


@pytest.fixture(scope="module")
def exported(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    motion = to_motion([add_estimator_noise(walk(shared_data, strides=2).rig, seed=5)])
    out = {}
    for mode in ("world", "in-place", "root-bone"):
        folder = tmp_path_factory.mktemp(mode)
        report = export_motion(motion, folder, "npz,bvh", root_motion=mode)
        assert report.ok, report.summary()
        out[mode] = folder
    return out


def load(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "person_1.npz") as z:
        return {k: z[k] for k in z.files}


def bvh_joints(folder: Path, names: list[str]) -> np.ndarray:
    clip = read_bvh(folder / "person_1.bvh")
    return clip.world_positions()[:, [clip.names.index(n) for n in names]]


def test_in_place_has_no_horizontal_hip_motion(exported: dict[str, Path]):
    world, still = load(exported["world"]), load(exported["in-place"])
    hips = still["joint_positions"][:, 0]
    assert np.ptp(world["joint_positions"][:, 0, [0, 2]], axis=0).max() > 1.0  # it walks
    assert np.ptp(hips[:, [0, 2]], axis=0).max() < 1e-9
    np.testing.assert_allclose(hips[:, 1], world["joint_positions"][:, 0, 1])  # height and bob kept
    rel = still["joint_positions"] - hips[:, None]
    np.testing.assert_allclose(
        rel, world["joint_positions"] - world["joint_positions"][:, :1], atol=1e-9
    )
    names = [str(n) for n in still["joint_names"]]
    assert np.abs(bvh_joints(exported["in-place"], names) - still["joint_positions"]).max() < 1e-5


def test_root_bone_carries_the_horizontal_trajectory(exported: dict[str, Path]):
    world, rooted = load(exported["world"]), load(exported["root-bone"])
    names = [str(n) for n in rooted["joint_names"]]
    assert names[0] == ROOT_BONE and names[1:] == [str(n) for n in world["joint_names"]]
    assert list(rooted["parents"][:3]) == [-1, 0, 1]
    root = rooted["joint_positions"][:, 0]
    np.testing.assert_allclose(root[:, [0, 2]], world["joint_positions"][:, 0, [0, 2]], atol=1e-12)
    assert np.abs(root[:, 1]).max() < 1e-12  # on the floor
    # every joint where it was; the hips keep height and sway over the root bone
    np.testing.assert_allclose(
        rooted["joint_positions"][:, 1:], world["joint_positions"], atol=1e-9
    )
    hips = rooted["local_translations"][:, 1]
    assert np.abs(hips[:, [0, 2]]).max() < 1e-12 and np.ptp(hips[:, 1]) > 0.02
    for key in ("global_orient", "body_pose", "transl"):  # SMPL's parameters stay the hips'
        np.testing.assert_allclose(rooted[key], world[key], atol=1e-12)
    assert np.abs(bvh_joints(exported["root-bone"], names) - rooted["joint_positions"]).max() < 1e-5
    text = (exported["root-bone"] / "person_1.bvh").read_text()
    assert "ROOT root" in text and text.count("CHANNELS 6") == 2


def test_root_bone_round_trip_and_skinned_mesh(shared_data: Path):
    rig = add_estimator_noise(walk(shared_data, strides=1).rig, seed=6)
    v = 30
    rng = np.random.default_rng(0)
    weights = rng.random((v, 24))
    mesh = RigMesh(rng.normal(size=(v, 3)), np.zeros((0, 3), np.int64), weights / weights.sum(1, keepdims=True),
                   rng.normal(size=(207, v, 3)).astype(np.float32))  # fmt: skip
    rig = RigAnimation(rig.name, rig.joint_names, rig.parents, rig.rest_offsets, rig.root_positions,
                       rig.local_rotations, rig.fps, 0, mesh)  # fmt: skip
    rooted = with_root_bone(rig, floor=0.0, rest_floor=-1.19)
    assert rooted.mesh is not None and rooted.mesh.pose_dirs is not None
    assert rooted.mesh.weights.shape == (v, 25) and np.all(rooted.mesh.weights[:, 0] == 0)
    assert rooted.mesh.pose_dirs.shape == (216, v, 3) and not rooted.mesh.pose_dirs[:9].any()
    np.testing.assert_allclose(rooted.rest_positions()[1:], rig.rest_positions(), atol=1e-12)
    assert rooted.rest_positions()[0, 1] == pytest.approx(-1.19)
    np.testing.assert_allclose(joint_positions(rooted)[:, 1:], joint_positions(rig), atol=1e-12)
    back = smpl_view(rooted)
    assert back.joint_names == rig.joint_names and back.parents == rig.parents
    np.testing.assert_allclose(back.local_rotations, rig.local_rotations, atol=1e-12)
    np.testing.assert_allclose(back.root_positions, rig.root_positions, atol=1e-12)
    np.testing.assert_allclose(back.rest_offsets, rig.rest_offsets, atol=1e-12)
    assert back.mesh is not None and back.mesh.pose_dirs is not None
    np.testing.assert_array_equal(back.mesh.pose_dirs, mesh.pose_dirs)
    assert apply_root_motion(rig, "world") is rig
    with pytest.raises(MocapError, match="unknown root motion"):
        apply_root_motion(rig, "sideways")
    with pytest.raises(MocapError, match="already has a joint"):
        with_root_bone(rooted)


def test_flags_of_mocap_export_and_mocap_run():
    import argparse

    parser = argparse.ArgumentParser()
    export_cmd.add_arguments(parser)
    args = parser.parse_args(["m.npz", "--root-motion", "root-bone", "--foot-lock", "off"])
    assert (args.root_motion, args.foot_lock) == ("root-bone", "off")
    defaults = parser.parse_args(["m.npz"])
    assert (defaults.root_motion, defaults.foot_lock) == ("world", "auto")
    with pytest.raises(SystemExit):
        parser.parse_args(["m.npz", "--root-motion", "sideways"])
    settings = RunSettings()
    assert (settings.foot_lock, settings.root_motion) == ("auto", "world")
    with pytest.raises(MocapError, match="root_motion"):
        validate(RunSettings(root_motion="sideways"))
    with pytest.raises(MocapError, match="foot_lock"):
        validate(RunSettings(foot_lock="maybe"))
