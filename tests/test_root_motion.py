"""Root motion options (exporters.root_motion) through export_motion, BVH and npz (native
round trips; the Blender formats are checked in test_footlock_blender.py, and here for the root
bone's heading on a turning walk, FBX re-imported by Blender)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from synthetic_gait import add_estimator_noise, to_motion, turn_angles, turning, walk

from exporters import export_motion, joint_positions
from exporters.blender import YUP_TO_ZUP, read_with_blender
from exporters.bvh import read_bvh
from exporters.rig import RigAnimation, RigMesh
from exporters.root_motion import (
    ROOT_BONE,
    apply_root_motion,
    heading,
    smpl_view,
    with_root_bone,
)
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


# A walk heading 30 degrees that turns 90 degrees left in 2 s (frames 50-110), with estimator noise.
TURN = (90.0, 50, 110)
START_DEG = 30.0
MM = 1e-3


@pytest.fixture(scope="module")
def turned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rig = add_estimator_noise(turning(walk(shared_data, 4, heading_deg=START_DEG).rig, *TURN), 3)
    motion = to_motion([rig])
    out = {}
    for mode in ("world", "in-place", "root-bone"):
        folder = tmp_path_factory.mktemp(f"turn-{mode}")
        formats = "npz,bvh" if mode == "in-place" else "npz,bvh,fbx"
        report = export_motion(motion, folder, formats, root_motion=mode, foot_lock="off")
        assert report.ok, report.summary()
        out[mode] = folder
    return out


def yaw_of(rot: np.ndarray) -> np.ndarray:
    """(T,) unwrapped yaw about +y of rotations (T,3,3) (the angle their +z turns to on the floor)."""
    return np.unwrap(np.arctan2(rot[:, 0, 2], rot[:, 2, 2]))


def world_rotations(z: dict[str, np.ndarray]) -> np.ndarray:
    """(T,J,3,3) world orientations of an exported npz rig, by forward kinematics."""
    local, glob = z["local_rotations"], np.zeros_like(z["local_rotations"])
    for k, p in enumerate(z["parents"]):
        glob[:, k] = local[:, k] if p < 0 else glob[:, p] @ local[:, k]
    return glob


def test_root_bone_yaw_follows_a_turning_walk(turned: dict[str, Path]):
    world, rooted = load(turned["world"]), load(turned["root-bone"])
    root = rooted["local_rotations"][:, 0]
    np.testing.assert_allclose(root[:, :, 1], np.tile([0.0, 1.0, 0.0], (len(root), 1)), atol=1e-12)
    yaw = np.rad2deg(yaw_of(root))  # a pure turn about the vertical
    frames = len(yaw)
    truth = START_DEG + np.rad2deg(turn_angles(frames, *TURN))
    pelvis = np.rad2deg(yaw_of(world["global_orient"]))  # heading with hip sway and jitter
    assert np.ptp(pelvis - truth) > 5.0  # the raw pelvis does wobble
    assert np.abs(yaw - truth).max() < 4.0
    assert np.abs(yaw - pelvis).max() < 6.0
    assert abs((yaw[-1] - yaw[0]) - TURN[0]) < 1.0 and np.abs(yaw[:30] - START_DEG).max() < 2.0
    step, bend = np.diff(yaw), np.diff(yaw, 2)
    assert np.abs(step).max() < 1.1 * np.abs(np.diff(truth)).max()  # never faster than the turn
    assert np.abs(bend).max() < 0.25 and np.abs(np.diff(pelvis, 2)).max() > 1.0
    # the hips turn relative to the root by the sway only; their offset is the height, no slide
    hips = yaw_of(rooted["local_rotations"][:, 1])
    assert np.rad2deg(np.abs(hips)).max() < 6.0
    offset = rooted["local_translations"][:, 1]
    assert np.abs(offset[:, [0, 2]]).max() < 1e-9
    # the world pose of every joint is unchanged, and SMPL's parameters stay the hips'
    np.testing.assert_allclose(
        rooted["joint_positions"][:, 1:], world["joint_positions"], atol=1e-9
    )
    turn = world_rotations(rooted)[:, 1:] @ np.swapaxes(world_rotations(world), -1, -2)
    cos = np.clip((np.trace(turn, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    assert np.rad2deg(np.arccos(cos)).max() < 0.01
    for key in ("global_orient", "body_pose", "transl"):
        np.testing.assert_allclose(rooted[key], world[key], atol=1e-9)


def imported(path: Path, names: list[str]) -> np.ndarray:
    """(T,J,3) joint positions as Blender imports the file, back in the Y-up world."""
    (arm,) = read_with_blender(path).armatures
    return arm.joint_positions[:, [arm.bone_names.index(n) for n in names]] @ YUP_TO_ZUP


@pytest.mark.parametrize("fmt", ["bvh", "fbx"])
def test_turning_root_bone_files_hold_the_world_pose(turned: dict[str, Path], fmt: str):
    world, rooted = load(turned["world"]), load(turned["root-bone"])
    names = [str(n) for n in rooted["joint_names"]]
    path = turned["root-bone"] / f"person_1.{fmt}"
    got = bvh_joints(turned["root-bone"], names) if fmt == "bvh" else imported(path, names)
    assert np.abs(got[:, 1:] - world["joint_positions"]).max() < 0.1 * MM
    assert np.abs(got[:, 0, [0, 2]] - world["joint_positions"][:, 0, [0, 2]]).max() < 0.1 * MM
    assert np.abs(got[:, 0, 1]).max() < 0.1 * MM  # the root bone on the floor
    if fmt == "fbx":  # the root bone itself turns as the npz's does (Blender's pose quaternions)
        (arm,) = read_with_blender(path).armatures
        quat = arm.rotations[:, arm.bone_names.index(ROOT_BONE)]
        turned_by = np.rad2deg(2 * np.arccos(np.clip(np.abs(quat @ quat[0]), 0.0, 1.0)))
        yaw = np.rad2deg(yaw_of(rooted["local_rotations"][:, 0]))
        assert np.abs(turned_by - np.abs(yaw - yaw[0])).max() < 0.01


def test_turning_world_and_in_place_are_unchanged(turned: dict[str, Path]):
    world, still = load(turned["world"]), load(turned["in-place"])
    assert [str(n) for n in world["joint_names"]][0] == "pelvis"
    assert "local_translations" not in world and "local_translations" not in still
    np.testing.assert_allclose(world["local_rotations"][:, 0], world["global_orient"], atol=1e-12)
    np.testing.assert_allclose(still["local_rotations"], world["local_rotations"], atol=1e-12)
    hips = still["joint_positions"][:, 0]
    assert np.ptp(hips[:, [0, 2]], axis=0).max() < 1e-9
    np.testing.assert_allclose(
        still["joint_positions"] - hips[:, None],
        world["joint_positions"] - world["joint_positions"][:, :1],
        atol=1e-9,
    )
    names = [str(n) for n in world["joint_names"]]
    for folder, z in ((turned["world"], world), (turned["in-place"], still)):
        assert np.abs(bvh_joints(folder, names) - z["joint_positions"]).max() < 0.1 * MM
    fbx = imported(turned["world"] / "person_1.fbx", names)
    assert np.abs(fbx - world["joint_positions"]).max() < 0.1 * MM


def test_heading_ignores_frames_without_one(shared_data: Path):
    rig = walk(shared_data, strides=1, heading_deg=-170.0).rig
    flat = heading(rig, smooth_s=0)
    assert np.abs(np.rad2deg(flat) + 170.0).max() < 5.0  # sway only; -170 stays -170, no wrap
    rot = rig.local_rotations.copy()
    tip = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # forward turned up
    rot[20:40, 0] = tip @ rot[20:40, 0]
    lying = heading(replace(rig, local_rotations=rot), smooth_s=0)
    assert np.abs(np.rad2deg(lying) + 170.0).max() < 5.0  # held, no spurious full turn
    rot[:, 0] = tip
    np.testing.assert_array_equal(heading(replace(rig, local_rotations=rot)), 0.0)  # none level
