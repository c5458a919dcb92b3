"""The embedded model's geometry without MediaPipe: landmarks made by forward kinematics of real
SMPL poses (MoSh fits from ../shared/data/spin_npz/test_mosh.npz) go through the IK and back."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mocap.body.joints import SMPL_PARENTS
from mocap.body.skeleton import builtin_skeleton, forward_kinematics
from mocap.geometry import axis_angle_to_rotmat
from mocap.lite import fit, ik
from mocap.lite.landmarks import JOINT_LANDMARKS, posed_landmarks

FACING_CAMERA = np.diag([1.0, -1.0, -1.0])  # SMPL upright, facing a camera (x right, y down)
# joints the landmarks observe (directly, or rigidly through hand / foot / head landmarks)
OBSERVED = sorted({*JOINT_LANDMARKS.values(), 10, 11, 15, 22, 23})
UNOBSERVED_SPINE = (0, 3, 6, 9, 12, 13, 14)
LIMB_BONES = [(p, j) for j, p in enumerate(SMPL_PARENTS) if p in OBSERVED and j in OBSERVED]


@pytest.fixture(scope="module")
def mosh(shared_data):
    pose = np.load(shared_data / "spin_npz" / "test_mosh.npz")["pose"].reshape(-1, 24, 3)
    rot = axis_angle_to_rotmat(torch.from_numpy(pose).double()).numpy()
    rot[:, 0] = FACING_CAMERA @ rot[:, 0]
    return rot


def _bone_dirs(joints, bones):
    d = np.stack([joints[:, j] - joints[:, p] for p, j in bones], axis=1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_rest_pose_gives_identity_rotations():
    rest = builtin_skeleton().rest_joints
    rot = np.tile(np.eye(3), (1, 24, 1, 1))
    rot[:, 0] = FACING_CAMERA
    result = ik.solve(posed_landmarks(rest, rot, np.zeros((1, 3))), np.ones((1, 33)), rest)
    angle = Rotation.from_matrix((np.swapaxes(result.rotations, -1, -2) @ rot).reshape(-1, 3, 3))
    assert np.degrees(angle.magnitude()).max() < 1e-4


@pytest.mark.parametrize("scale", [1.0, 0.85])
def test_ik_then_fk_reproduces_real_poses(mosh, scale):
    rest = builtin_skeleton(scale).rest_joints
    transl = np.tile([0.3, 0.1, 4.0], (len(mosh), 1))
    truth = forward_kinematics(rest, mosh, transl)
    landmarks = posed_landmarks(rest, mosh, transl)
    result = ik.solve(landmarks, np.ones(landmarks.shape[:2]), rest)
    joints = forward_kinematics(rest, result.rotations, result.pelvis - rest[0])
    err = np.linalg.norm(joints - truth, axis=-1)
    assert err[:, OBSERVED].max() < 0.01, err[:, OBSERVED].max(axis=0)
    ang = np.degrees(
        np.arccos(
            np.clip(
                np.sum(_bone_dirs(joints, LIMB_BONES) * _bone_dirs(truth, LIMB_BONES), -1), -1, 1
            )
        )
    )
    assert ang.max() < 2.0
    # the spine has no landmarks: its bend is split by a prior, so these joints are plausible,
    # not exact (H36M subjects bend 50 degrees at spine1); they still stay within a hand's width
    assert err[:, UNOBSERVED_SPINE].max() < 0.2
    assert np.isfinite(result.rotations).all()
    det = np.linalg.det(result.rotations)
    assert np.allclose(det, 1.0, atol=1e-6)


def test_unconfident_limb_is_interpolated_not_flipped(mosh):
    rest = builtin_skeleton().rest_joints
    # a smooth 20-frame swing between two real poses
    t = np.linspace(0, 1, 20)
    from scipy.spatial.transform import Slerp

    rot = np.stack(
        [Slerp([0, 1], Rotation.from_matrix(mosh[[0, 3], j]))(t).as_matrix() for j in range(24)], 1
    )
    landmarks = posed_landmarks(rest, rot, np.tile([0, 0, 3.0], (20, 1)))
    vis = np.ones((20, 33))
    noisy = landmarks.copy()
    # frames 8..11: the left arm is garbage (swapped elbow and wrist) and marked invisible
    noisy[8:12, [13, 15]] = noisy[8:12, [15, 13]]
    vis[8:12, [11, 13, 15]] = 0.1
    result = ik.solve(noisy, vis, rest)
    rots = result.rotations
    changed = fit.hold_unconfident(rots, result.part_confidence)
    assert changed == 4
    step = np.swapaxes(rots[:-1], -1, -2) @ rots[1:]
    deg = np.degrees(Rotation.from_matrix(step.reshape(-1, 3, 3)).magnitude()).reshape(19, 24)
    assert deg[:, [16, 18, 20]].max() < 30.0  # a smooth swing, no flip at the bad frames
    clean = ik.solve(landmarks, np.ones((20, 33)), rest).rotations
    rel = np.swapaxes(clean[8:12, 18], -1, -2) @ rots[8:12, 18]
    assert np.degrees(Rotation.from_matrix(rel).magnitude()).max() < 25.0


def test_translation_reprojects_exactly(mosh):
    rest = builtin_skeleton().rest_joints
    transl = np.array([[0.4, -0.2, 5.0], [-1.0, 0.3, 8.0], [0.0, 0.0, 2.5], [2.0, 1.0, 12.0]])
    points = posed_landmarks(rest, mosh, np.zeros((4, 3)))
    cam = points + transl[:, None]
    focal, size = 1500.0, (1920, 1080)
    uv = focal * cam[..., :2] / cam[..., 2:] + np.array(size) / 2.0
    t = fit.solve_translation(points, uv, np.ones(uv.shape[:2]), size, focal)
    assert np.abs(t - transl).max() < 1e-6


def test_proportions_from_bone_lengths(mosh):
    rest = builtin_skeleton(0.9).rest_joints
    landmarks = posed_landmarks(rest, mosh, np.zeros((4, 3)))
    measured = fit.bone_lengths(landmarks, np.ones(landmarks.shape[:2]))
    assert fit.fit_scale(measured) == pytest.approx(0.9, abs=1e-6)


def test_betas_fit_recovers_a_synthetic_smpl_shape(smpl_dir, mosh):
    from mocap.body.smpl import load_body_model

    body = load_body_model(smpl_dir, required=True)
    true = np.zeros(10)
    true[:2] = [1.5, -1.0]
    rest = np.asarray(body.rest_joints(true), dtype=np.float64)
    landmarks = posed_landmarks(rest, mosh, np.zeros((4, 3)))
    measured = fit.bone_lengths(landmarks, np.ones(landmarks.shape[:2]))
    betas = fit.fit_betas(body, measured)
    fitted = np.asarray(body.rest_joints(betas), dtype=np.float64)
    assert np.abs(fit.skeleton_lengths(fitted) - measured).max() < 0.005


def _legs_swung_in_depth(rest, rot, transl, degrees: float) -> np.ndarray:
    """Landmarks (camera frame) of the pose with each thigh turned ``degrees`` about the camera's
    x axis, as a depth error of the 3D estimate would (knee and foot off their rays)."""
    swung = rot.copy()
    turn = Rotation.from_euler("x", degrees, degrees=True).as_matrix()
    for hip in (
        1,
        2,
    ):  # the hips' parent is the pelvis: turn in the camera frame, expressed locally
        swung[:, hip] = rot[:, 0].transpose(0, 2, 1) @ turn @ rot[:, 0] @ rot[:, hip]
    return posed_landmarks(rest, swung, transl)


def test_legs_are_lifted_back_onto_their_image_rays(mosh):
    """MoSh poses seen by a camera; the 3D estimate's thighs swung in depth. Rebuilt on the true 2D
    landmarks, every leg landmark lands on its image point and bone lengths are unchanged, and
    almost all are the true ones (within 1 mm). The rest took the other of the two depths that fit
    a bone's length (a shin nearly square to its ray: the two are close, and the estimate is
    nearer the wrong one), and are still nearer the truth than the estimate was."""
    from mocap.lite.legs import CHAINS, lift_legs

    rest = builtin_skeleton().rest_joints
    transl = np.tile([0.3, 0.4, 4.0], (len(mosh), 1))
    truth = posed_landmarks(rest, mosh, transl)
    focal, size = 1500.0, (1920, 1080)
    uv = focal * truth[..., :2] / truth[..., 2:] + np.array(size) / 2.0
    keypoints = np.concatenate([uv, np.ones(uv.shape[:2] + (1,))], axis=-1)
    legs = sorted({child for chain in CHAINS for _, child in chain})
    for degrees in (6.0, -6.0, 12.0, -12.0):
        estimate = _legs_swung_in_depth(rest, mosh, transl, degrees)
        assert np.linalg.norm(estimate[:, legs] - truth[:, legs], axis=-1).max() > 0.025
        lifted = lift_legs(estimate, keypoints, size, focal)
        image = focal * lifted[..., :2] / lifted[..., 2:] + np.array(size) / 2.0
        assert np.abs(image[:, legs] - uv[:, legs]).max() < 1e-6
        err = np.linalg.norm(lifted[:, legs] - truth[:, legs], axis=-1)
        before = np.linalg.norm(estimate[:, legs] - truth[:, legs], axis=-1)
        assert (err < 1e-3).mean() >= 0.85 and err.max() < before.max()
        for parent, child in (link for chain in CHAINS for link in chain):
            length = np.linalg.norm(estimate[:, child] - estimate[:, parent], axis=-1)
            lifted_length = np.linalg.norm(lifted[:, child] - lifted[:, parent], axis=-1)
            assert np.allclose(lifted_length, length, atol=1e-9)
    # an unconfident landmark keeps the estimate's offset from its (rebuilt) parent
    keypoints[:, :, 2] = 0.0
    estimate = _legs_swung_in_depth(rest, mosh, transl, 12.0)
    assert np.array_equal(lift_legs(estimate, keypoints, size, focal), estimate)
