"""Smoothing on SO(3): jitter and error drop on real SMPL poses, zero lag offline, One-Euro online."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from mocap.body.skeleton import track_joints
from mocap.errors import MocapError
from mocap.motion import Track
from mocap.quaternion import sign_continuous
from mocap.smoothing import (
    OneEuroFilter,
    jitter,
    smooth_offline,
    smooth_track,
)

UPRIGHT = np.diag([1.0, -1.0, -1.0])  # SMPL body standing upright, facing the camera (camera frame)


def real_pose_track(
    shared_data: Path,
    num_frames: int = 90,
    fps: float = 30.0,
    track_id: int = 1,
    x: float = 0.0,
    source: str = "test_mosh.npz",
) -> Track:
    """A clean track: the real SMPL body poses of ``source`` slerped over time, walking and turning.

    Body pose: the file's 4 poses as key frames; global orientation: upright, turning 90 degrees;
    translation: a sway in x and a walk away from the camera.
    """
    data = np.load(shared_data / "spin_npz" / source)
    pose, shape = data["pose"], data["shape"]
    times = np.arange(num_frames) / fps
    keys = np.linspace(0.0, times[-1], len(pose))
    rot = np.empty((num_frames, 24, 3, 3))
    for j in range(1, 24):
        rot[:, j] = Slerp(keys, Rotation.from_rotvec(pose[:, 3 * j : 3 * j + 3]))(times).as_matrix()
    yaw = Rotation.from_euler(
        "y", np.linspace(0.0, 90.0, num_frames)[:, None], degrees=True
    ).as_matrix()
    rot[:, 0] = UPRIGHT @ yaw
    transl = np.stack(
        [x + 0.4 * np.sin(2.0 * times), np.full(num_frames, 0.25), 4.0 + 0.6 * times], 1
    )
    return Track(
        track_id=track_id,
        frames=np.arange(num_frames),
        times=times,
        global_orient=rot[:, 0],
        body_pose=rot[:, 1:],
        betas=np.tile(shape[0], (num_frames, 1)),
        cam_crop=np.zeros((num_frames, 3)),
        transl=transl,
        boxes=np.zeros((num_frames, 4)),
        scores=np.ones(num_frames),
    )


def add_noise(track: Track, deg: float = 3.0, metres: float = 0.01, seed: int = 0) -> Track:
    """Per-frame estimator noise: random rotation of ``deg`` std per joint, translation noise."""
    rng = np.random.default_rng(seed)
    n = len(track)
    noise = Rotation.from_rotvec(rng.normal(0.0, np.deg2rad(deg), (n * 24, 3))).as_matrix()
    noise = noise.reshape(n, 24, 3, 3)
    return track.replace(
        global_orient=track.global_orient @ noise[:, 0],
        body_pose=track.body_pose @ noise[:, 1:],
        transl=track.transl + rng.normal(0.0, metres, track.transl.shape),
        betas=track.betas + rng.normal(0.0, 0.3, track.betas.shape),
    )


def joint_error(a: Track, b: Track) -> float:
    return float(np.linalg.norm(track_joints(a) - track_joints(b), axis=-1).mean())


def bump_track(num_frames: int = 81, peak: int = 40, fps: float = 30.0) -> Track:
    """Elbow flexes in a Gaussian bump peaking at frame ``peak``; the root translates in a bump too."""
    t = np.arange(num_frames)
    angle = np.deg2rad(80.0) * np.exp(-0.5 * ((t - peak) / 6.0) ** 2)
    rot = np.tile(np.eye(3), (num_frames, 24, 1, 1))
    rot[:, 0] = UPRIGHT
    rot[:, 18] = Rotation.from_rotvec(angle[:, None] * np.array([0.0, 1.0, 0.0])).as_matrix()
    transl = np.stack(
        [
            0.5 * np.exp(-0.5 * ((t - peak) / 6.0) ** 2),
            np.zeros(num_frames),
            np.full(num_frames, 4.0),
        ],
        1,
    )
    return Track(1, t, t / fps, rot[:, 0], rot[:, 1:], np.zeros((num_frames, 10)), np.zeros((num_frames, 3)),
                 transl, np.zeros((num_frames, 4)), np.ones(num_frames))  # fmt: skip


def elbow_angle(track: Track) -> np.ndarray:
    return np.linalg.norm(Rotation.from_matrix(track.body_pose[:, 17]).as_rotvec(), axis=-1)


def test_jitter_is_mean_acceleration() -> None:
    t = np.arange(20) / 10.0
    joints = np.zeros((20, 2, 3))
    joints[:, :, 1] = 0.5 * 3.0 * t[:, None] ** 2  # constant 3 m/s^2
    assert jitter(joints, fps=10.0) == pytest.approx(3.0)
    assert jitter(joints[:2], fps=10.0) == 0.0


def test_offline_cuts_jitter_5x_and_error_on_real_poses(shared_data: Path) -> None:
    clean = real_pose_track(shared_data)
    noisy = add_noise(clean)
    smoothed, report = smooth_track(noisy, "offline", 1.0)
    assert report.before == pytest.approx(
        jitter(track_joints(noisy.replace(betas=smoothed.betas)), 30.0), rel=0.2
    )
    assert report.reduction >= 5.0, report
    assert joint_error(smoothed, clean) < 0.6 * joint_error(noisy, clean)
    # a stronger setting smooths more
    _, strong = smooth_track(noisy, "offline", 2.0)
    assert strong.after < report.after
    # rotations stay rotations
    r = smoothed.body_pose
    assert np.allclose(r @ np.swapaxes(r, -1, -2), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)


def test_offline_has_no_lag_one_euro_does() -> None:
    track = bump_track()
    offline, _ = smooth_track(track, "offline", 2.0)
    assert int(np.argmax(elbow_angle(offline))) == 40
    assert int(np.argmax(offline.transl[:, 0])) == 40
    assert elbow_angle(offline).max() < elbow_angle(track).max()  # it did smooth
    online, _ = smooth_track(track, "oneeuro", 2.0)
    assert int(np.argmax(elbow_angle(online))) > 40  # a causal filter lags: the check can fail


def test_offline_step_is_centred() -> None:
    n = 60
    track = bump_track(n)
    step = np.where(np.arange(n) < 30, 0.0, np.deg2rad(60.0))
    rot = Rotation.from_rotvec(step[:, None] * np.array([1.0, 0.0, 0.0])).as_matrix()
    track = track.replace(
        body_pose=np.concatenate(
            [track.body_pose[:, :17], rot[:, None], track.body_pose[:, 18:]], 1
        )
    )
    out, _ = smooth_track(track, "offline", 1.0)
    angle = elbow_angle(out)
    # antisymmetric around the step: half way between frames 29 and 30
    assert angle[29] + angle[30] == pytest.approx(np.deg2rad(60.0), abs=1e-6)
    assert 0.0 < angle[28] < angle[29] < angle[30] < angle[31] < np.deg2rad(60.0)


def test_one_euro_runs_online_frame_by_frame(shared_data: Path) -> None:
    clean = real_pose_track(shared_data, num_frames=60)
    noisy = add_noise(clean, seed=1)
    batch, report = smooth_track(noisy, "oneeuro", 1.0)
    assert report.reduction >= 3.0, report
    filt = OneEuroFilter(strength=1.0)
    rots = np.concatenate([noisy.global_orient[:, None], noisy.body_pose], 1)
    for t in range(len(noisy)):
        r, x = filt(float(noisy.times[t]), rots[t], noisy.transl[t])
        assert np.allclose(r[0], batch.global_orient[t], atol=1e-9)
        assert np.allclose(r[1:], batch.body_pose[t], atol=1e-9)
        assert np.allclose(x, batch.transl[t], atol=1e-12)
    # causal: changing the future does not change the past
    future = noisy.replace(transl=noisy.transl.copy(), body_pose=noisy.body_pose.copy())
    future.transl[40:] += 1.0
    future.body_pose[40:] = np.eye(3)
    other, _ = smooth_track(future, "oneeuro", 1.0)
    assert np.allclose(other.body_pose[:40], batch.body_pose[:40])
    assert np.allclose(other.transl[:40], batch.transl[:40])
    assert not np.allclose(other.body_pose[40:], batch.body_pose[40:])


def test_quaternion_double_cover_does_not_break_filters() -> None:
    """Near 180 degrees, q and -q alternate; filtering component-wise would collapse the rotation."""
    n = 40
    rng = np.random.default_rng(3)
    axis = np.array([0.0, 0.6, 0.8])
    angles = np.deg2rad(179.0) + rng.normal(0.0, np.deg2rad(2.0), n)
    rot = Rotation.from_rotvec(angles[:, None] * axis).as_matrix()
    rotations = np.tile(np.eye(3), (n, 24, 1, 1))
    rotations[:, 5] = rot
    times = np.arange(n) / 30.0
    out, _ = smooth_offline(rotations, np.zeros((n, 3)), times, 1.0)
    target = Rotation.from_rotvec(np.deg2rad(179.0) * axis)
    err = (Rotation.from_matrix(out[:, 5]) * target.inv()).magnitude()
    assert np.degrees(err).max() < 3.0
    q = Rotation.from_matrix(rot).as_quat()[:, [3, 0, 1, 2]]
    q[::2] *= -1.0
    cont = sign_continuous(q)
    assert np.all(np.sum(cont[1:] * cont[:-1], -1) > 0)
    assert np.allclose(np.abs(np.sum(cont * q, -1)), 1.0)


def test_offline_honours_timestamps_and_is_exact_on_constant_velocity() -> None:
    """Uneven timestamps, constant angular and linear velocity: the local-linear filter keeps it exactly."""
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.uniform(0.01, 0.06, 50))
    omega = np.array([0.0, 2.0, 0.5])  # rad/s
    rot = Rotation.from_rotvec(times[:, None] * omega).as_matrix()
    rotations = np.tile(rot[:, None], (1, 24, 1, 1))
    transl = times[:, None] * np.array([1.0, 0.0, -0.5])
    out, out_t = smooth_offline(rotations, transl, times, 2.0)
    assert np.allclose(out, rotations, atol=1e-8)
    assert np.allclose(out_t, transl, atol=1e-10)


def test_modes_strength_and_betas(shared_data: Path) -> None:
    track = add_noise(real_pose_track(shared_data, num_frames=20))
    track.betas[3] += 10.0  # one outlier frame
    for mode, strength in (("none", 1.0), ("offline", 0.0), ("oneeuro", 0.0)):
        out, report = smooth_track(track, mode, strength)
        assert np.array_equal(out.body_pose, track.body_pose)
        assert np.array_equal(out.transl, track.transl)
        assert report.after <= report.before
    out, _ = smooth_track(track, "offline")
    assert np.allclose(out.betas, np.median(track.betas, axis=0))
    assert np.abs(out.betas).max() < 5.0
    with pytest.raises(MocapError, match="smoothing mode"):
        smooth_track(track, "gaussian")
    with pytest.raises(MocapError, match="strength"):
        smooth_track(track, "offline", -1.0)


def test_broken_timestamps_fall_back_to_frame_times(shared_data: Path) -> None:
    track = add_noise(real_pose_track(shared_data, num_frames=30))
    broken = track.replace(times=np.where(np.arange(30) == 12, track.times[11], track.times))
    out, report = smooth_track(broken, "offline")
    ref, _ = smooth_track(track, "offline")
    assert np.allclose(out.body_pose, ref.body_pose, atol=1e-9) and report.reduction > 3.0


def test_long_tracks_are_smoothed_in_blocks_with_the_same_result(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mocap.smoothing as smoothing

    track = add_noise(real_pose_track(shared_data, 60))
    whole, report = smooth_track(track, "offline")
    monkeypatch.setattr(smoothing, "FRAME_CHUNK", 7)  # 60 frames in 9 blocks
    blocks, report_blocks = smooth_track(track, "offline")
    assert whole.body_pose.dtype == track.body_pose.dtype
    np.testing.assert_allclose(blocks.body_pose, whole.body_pose, atol=1e-6)
    np.testing.assert_allclose(blocks.transl, whole.transl, atol=1e-9)
    assert report_blocks.before == pytest.approx(report.before, rel=1e-9)
    assert report_blocks.after == pytest.approx(report.after, rel=1e-9)
