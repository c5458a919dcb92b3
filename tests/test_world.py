"""Camera frame -> Y-up world: floor, shared frame for all people, gap filling, SMPL skeletons."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from test_smoothing import UPRIGHT, real_pose_track

from mocap.body.skeleton import builtin_skeleton, track_joints
from mocap.errors import MocapError
from mocap.motion import Motion, Track
from mocap.world import CAMERA_TO_WORLD, build_world, contiguous, motion_to_rigs


def standing_track(camera_height: float, depth: float, frames: int = 30, x: float = 0.0) -> Track:
    """A person in the rest pose, upright, whose soles are ``camera_height`` below a level camera."""
    skel = builtin_skeleton()
    sole = skel.rest_joints[10] - np.array([0.0, skel.sole_clearance[10], 0.0])
    posed_sole = UPRIGHT @ (sole - skel.rest_joints[0]) + skel.rest_joints[0]
    transl = np.array([x, camera_height - posed_sole[1], depth])
    rot = np.tile(np.eye(3), (frames, 23, 1, 1))
    return Track(1, np.arange(frames), np.arange(frames) / 30.0, np.tile(UPRIGHT, (frames, 1, 1)), rot,
                 np.zeros((frames, 10)), np.zeros((frames, 3)), np.tile(transl, (frames, 1)),
                 np.zeros((frames, 4)), np.ones(frames))  # fmt: skip


def test_floor_and_camera_height_from_a_standing_person() -> None:
    motion = Motion([standing_track(1.5, 4.0, x=0.7)], 30.0, (1920, 1080), 1500.0)
    result = build_world(motion)
    rig = result.rigs[0]
    pos = rig.world_positions()
    assert result.world.camera_position[1] == pytest.approx(
        1.5, abs=1e-9
    )  # camera 1.5 m above the floor
    assert pos[0, 15, 1] > pos[0, 0, 1] > pos[0, 7, 1] > 0.0  # Y up: head above pelvis above ankles
    assert pos[0, 10, 1] == pytest.approx(builtin_skeleton().sole_clearance[10])
    assert np.allclose(pos[0, 0, [0, 2]], 0.0)  # origin below the person's start
    assert result.world.camera_position[2] == pytest.approx(4.0)  # camera 4 m in front, on +z
    assert any("body shape not applied" in n for n in result.notes)


def test_floor_ignores_an_outlier_frame() -> None:
    track = standing_track(1.5, 4.0, frames=100)
    track.transl[50, 1] += 1.0  # one frame predicted 1 m too low
    world = build_world(Motion([track], 30.0, (1920, 1080), 1500.0)).world
    assert world.camera_position[1] == pytest.approx(1.5, abs=1e-9)


def pitched(track: Track, degrees: float) -> Track:
    """The same scene seen by a camera pitched down by ``degrees`` (about its x axis)."""
    skel = builtin_skeleton()
    pitch = Rotation.from_euler("x", -degrees, degrees=True).as_matrix()
    root = skel.rest_joints[0]
    return track.replace(
        global_orient=pitch @ track.global_orient,
        transl=(track.transl + root) @ pitch.T - root,
    )


def test_pitched_camera_floor_is_levelled() -> None:
    """Two people walk across and away from a camera pitched down 15 degrees: the floor comes out level."""
    a, b = standing_track(1.6, 3.0, frames=60), standing_track(1.6, 5.0, frames=60, x=-1.0)
    walk = np.linspace(0.0, 1.0, 60)[:, None]
    a = a.replace(transl=a.transl + walk * [1.5, 0.0, 3.0])
    b = b.replace(transl=b.transl + walk * [2.0, 0.0, -1.0])
    level = build_world(Motion([a, b], 30.0, (1920, 1080), 1500.0))
    seen = build_world(Motion([pitched(a, 15.0), pitched(b, 15.0)], 30.0, (1920, 1080), 1500.0))
    for lv, rig in zip(level.rigs, seen.rigs, strict=True):
        # walking on the floor, not climbing (the level prior leaves ~1% of the slope)
        assert np.ptp(rig.root_positions[:, 1]) < 0.03
        assert np.allclose(rig.world_positions()[:, :, 1], lv.world_positions()[:, :, 1], atol=0.03)
    assert seen.world.camera_position[1] == pytest.approx(1.6, abs=0.03)
    assert any("camera tilt of 1" in n for n in seen.notes)
    # without the correction the people would climb by metres
    climb = np.ptp((track_joints(pitched(a, 15.0))[:, 0] @ CAMERA_TO_WORLD.T)[:, 1])
    assert climb > 0.5
    # one person standing still gives the floor no slope evidence, but their own up direction
    # (they lean back 10 degrees as the pitched camera sees them) is gravity: the tilt is found
    still = build_world(
        Motion([pitched(standing_track(1.6, 3.0), 10.0)], 30.0, (1920, 1080), 1500.0)
    )
    assert any("camera tilt of 10.0 deg" in n for n in still.notes), still.notes
    level_still = build_world(Motion([standing_track(1.6, 3.0)], 30.0, (1920, 1080), 1500.0))
    assert np.allclose(level_still.world.rotation, CAMERA_TO_WORLD, atol=1e-6)


def test_depth_noise_does_not_fake_a_tilt() -> None:
    """Monocular depth errors move the body along the camera ray through its root; below a level
    camera, farther also means lower, which a vertical plane fit would take for a 7-degree slope."""
    track = standing_track(1.5, 4.0, frames=300)
    root = builtin_skeleton().rest_joints[0]
    origin = track.transl + root
    scale = 1.0 + np.random.default_rng(0).normal(0.0, 0.3, len(origin)) / origin[:, 2]  # 30 cm
    noisy = track.replace(transl=origin * scale[:, None] - root)
    world = build_world(Motion([noisy], 30.0, (1920, 1080), 1500.0)).world
    tilt = np.degrees(np.arccos((world.rotation @ CAMERA_TO_WORLD.T)[1, 1]))
    assert tilt < 1.0


def test_all_people_share_one_world(shared_data: Path) -> None:
    a = real_pose_track(shared_data, 40, track_id=1, x=-1.0)
    b = real_pose_track(shared_data, 40, track_id=2, x=1.2, source="test_h36m.npz")
    b = b.replace(frames=b.frames + 5, times=b.times + 5 / 30.0)
    result = build_world(Motion([a, b], 30.0, (1920, 1080), 1500.0))
    offset, to_world = result.world.offset, result.world.rotation
    assert np.allclose(to_world @ to_world.T, np.eye(3)) and np.linalg.det(to_world) > 0
    for track, rig in zip((a, b), result.rigs, strict=True):
        expected = track_joints(track) @ to_world.T - offset
        assert np.abs(rig.world_positions() - expected).max() < 1e-9
        assert rig.frame_start == track.frames[0] and rig.fps == 30.0
    # the same shift for everybody: relative positions are those of the camera frame
    rel_cam = (track_joints(b)[:10, 0] - track_joints(a)[5:15, 0]) @ to_world.T
    rel_world = result.rigs[1].world_positions()[:10, 0] - result.rigs[0].world_positions()[5:15, 0]
    assert np.allclose(rel_world, rel_cam)
    # both people walk on the floor: their lowest soles come down to it
    for rig, skel in zip(result.rigs, result.skeletons, strict=True):
        soles = rig.world_positions()[:, [7, 8, 10, 11], 1] - skel.sole_clearance[[7, 8, 10, 11]]
        assert soles.min() > -0.15
    assert [r.name for r in motion_to_rigs(Motion([a, b], 30.0, (1920, 1080), 1500.0))] == [
        "person_1",
        "person_2",
    ]


def test_gaps_are_filled_by_slerp(shared_data: Path) -> None:
    track = real_pose_track(shared_data, 20)
    keep = np.r_[0:10, 15:20]
    gappy = track.replace(**{k: getattr(track, k)[keep] for k in ("frames", "times", "global_orient", "body_pose",
                                                                   "betas", "cam_crop", "transl", "boxes", "scores")})  # fmt: skip
    full = contiguous(gappy)
    assert np.array_equal(full.frames, np.arange(20))
    assert np.allclose(full.times, np.arange(20) / 30.0)
    assert full.scores[12] == 0.0 and full.scores[3] == 1.0
    mid = Rotation.from_matrix(full.body_pose[12, 3])
    r9, r15 = (
        Rotation.from_matrix(gappy.body_pose[9, 3]),
        Rotation.from_matrix(gappy.body_pose[10, 3]),
    )
    assert (mid * r9.inv()).magnitude() == pytest.approx((r15 * mid.inv()).magnitude(), rel=1e-6)
    rigs = motion_to_rigs(Motion([gappy], 30.0, (1920, 1080), 1500.0))
    assert rigs[0].num_frames == 20


def test_empty_motion_is_a_user_error() -> None:
    with pytest.raises(MocapError, match="no people"):
        build_world(Motion([], 30.0, (1920, 1080), 1500.0))


def test_smpl_skeleton_follows_betas_and_matches_smpl(shared_data: Path, smpl_dir: Path) -> None:
    import smplx

    from mocap.body.smpl import load_body_model

    body = load_body_model(str(smpl_dir / "SMPL_NEUTRAL.pkl"), required=True)
    assert body is not None
    track = real_pose_track(shared_data, 12)
    result = build_world(Motion([track], 30.0, (1920, 1080), 1500.0), body=body)
    rig, skel = result.rigs[0], result.skeletons[0]
    assert skel.shaped and not any("body shape" in n for n in result.notes)
    assert np.allclose(skel.rest_joints, body.rest_joints(track.betas[0]))
    assert rig.mesh is not None and rig.mesh.rest_vertices.shape == (6890, 3)
    assert np.allclose(rig.mesh.weights.sum(1), 1.0)
    # joint world positions = SMPL's own forward kinematics (smplx), rotated into the world
    ref_model = smplx.create(str(smpl_dir), model_type="smpl")
    f = torch.float32
    out = ref_model(
        global_orient=torch.tensor(track.global_orient, dtype=f)[:, None],
        body_pose=torch.tensor(track.body_pose, dtype=f),
        betas=torch.tensor(track.betas, dtype=f),
        transl=torch.tensor(track.transl, dtype=f),
        pose2rot=False,
    )
    smpl_joints = out.joints[:, :24].detach().numpy().astype(np.float64)
    expected = smpl_joints @ result.world.rotation.T - result.world.offset
    assert np.abs(rig.world_positions() - expected).max() < 1e-3


def test_person_with_a_depth_error_is_put_back_on_the_floor() -> None:
    # Three people on one floor 1.5 m below a level camera; the third one's distance came out
    # 40 % too small, which (a camera above the people) lifts their feet 0.22 m above the floor.
    a = standing_track(1.5, 4.0, x=-1.0)
    b = standing_track(1.5, 6.0, x=1.0).replace(track_id=2)
    c = standing_track(1.5, 5.0, x=0.5).replace(track_id=3)
    root = builtin_skeleton().rest_joints[0]
    c = c.replace(transl=0.6 * (c.transl + root) - root)  # 0.6 x the distance, along its ray
    result = build_world(Motion([a, b, c], 30.0, (1920, 1080), 1500.0))
    soles = {
        rig.name: rig.world_positions()[:, 10, 1] - skel.sole_clearance[10]
        for rig, skel in zip(result.rigs, result.skeletons, strict=True)
    }
    for name in ("person_1", "person_2", "person_3"):
        assert np.allclose(soles[name], 0.0, atol=1e-3), name
    moved = [n for n in result.notes if "shared floor" in n]
    assert len(moved) == 1 and moved[0].startswith("person_3 stood 0.22 m above")
    assert "moved +67% along its viewing ray" in moved[0]
    # moved along its viewing ray: seen from the camera, the person is where the video shows them
    seen = result.rigs[2].root_positions[0] + result.world.offset
    before = result.world.rotation @ (builtin_skeleton().rest_joints[0] + c.transl[0])
    cos = seen @ before / np.linalg.norm(seen) / np.linalg.norm(before)
    assert cos > 1 - 1e-9
