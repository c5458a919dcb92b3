"""Camera motion from the background (mocap.camera), its use in the world and in exported files.

Ground truth comes from real images: a real 1080p frame seen by a turning camera with a real
person pasted in (tests/synthetic_pan.py), and a textured room rendered by Blender with a
travelling camera (tests/blender_parallax.py).
"""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import synthetic_pan as sp
from scipy.spatial.transform import Rotation

from mocap.camera import CameraPath, PeopleInFrame, estimate_camera
from mocap.camera_geometry import angle_deg, average_rotations, intrinsics, rotation_from_homography
from mocap.motion import Motion
from mocap.pipeline.camera_pass import camera_pass, estimate_clip_camera
from mocap.world import build_world

FRAMES = 100  # the unit test's pan: 30 degrees in 100 frames (300 frames: see docs/benchmarks.md)
CM = 0.01
STANDING = sp.STANDING
person_track = sp.person_track


@pytest.fixture(scope="module")
def pan_clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Motion]:
    """A 30-degree pan and tilt (H.264) with a standing person and a walking one pasted in."""
    return sp.pan_clip(shared_data, tmp_path_factory.mktemp("pan"), FRAMES)


def rotation_errors(truth: np.ndarray, path: CameraPath) -> np.ndarray:
    return angle_deg(np.einsum("kba,kbc->kac", truth, path.rotations))


def test_rotation_from_homography_and_averaging_are_exact():
    K = intrinsics(800.0, 640, 360)
    R = Rotation.from_euler("YXZ", [12.0, -5.0, 2.0], degrees=True).as_matrix()
    H = 3.7 * K @ R @ np.linalg.inv(K)
    assert angle_deg(rotation_from_homography(H, K).T @ R) < 1e-9
    truth = Rotation.from_euler("Y", np.linspace(0, 20, 6)[:, None], degrees=True).as_matrix()
    edges = [(i, j, truth[i].T @ truth[j], 1.0) for i in range(6) for j in range(i + 1, 6)]
    noisy = truth @ Rotation.from_rotvec(np.full((6, 3), 0.01)).as_matrix()
    noisy[0] = np.eye(3)
    assert (
        angle_deg(np.einsum("kba,kbc->kac", average_rotations(6, edges, noisy), truth)).max() < 1e-4
    )


def test_a_pan_is_recovered_from_the_background(pan_clip: tuple[Path, Motion]):
    """Per-frame rotation within 0.5 deg, end drift within 2 deg, through H.264 and the decoder;
    the pasted people (moving in the image) are masked out by their boxes."""
    clip, motion = pan_clip
    path = estimate_clip_camera(clip, motion)
    truth = sp.relative(sp.pan_tilt(FRAMES))
    err = rotation_errors(truth, path)
    assert path.max_angle_deg == pytest.approx(30.0, abs=0.5)
    assert err.max() <= 0.5 and err[-1] <= 2.0, (err.max(), err[-1])
    assert path.travel_m == 0.0 and not path.is_static()


def test_people_stay_put_in_the_world_while_the_camera_pans(pan_clip: tuple[Path, Motion]):
    """`auto` sees the pan; composed with it, a standing person drifts < 10 cm and a walker stays
    within 10 cm of a straight line. Without the camera both would sweep metres."""
    clip, motion = pan_clip
    moving, notes = camera_pass(clip, motion, "auto")
    assert "camera_R" in moving.extras and notes[0].startswith("camera: moving")
    rigs = {r.name: r for r in build_world(moving).rigs}
    standing = rigs["person_1"].root_positions
    assert np.linalg.norm(standing - standing.mean(0), axis=1).max() < 10 * CM
    walk = rigs["person_2"].root_positions
    centred = walk - walk.mean(0)
    direction = np.linalg.svd(centred)[2][0]
    off_line = np.linalg.norm(centred - np.outer(centred @ direction, direction), axis=1)
    assert off_line.max() < 10 * CM
    assert abs(centred @ direction).max() > 1.4  # it did walk 3 m
    still = build_world(motion).rigs[0].root_positions  # the camera ignored: the pan sweeps it
    assert np.ptp(still[:, 0]) > 2.0


def test_a_static_clip_is_detected_and_keeps_todays_world(shared_data: Path):
    """The real 1080p clip from a tripod: `auto` says static, stores nothing, the world is the
    static one exactly."""
    clip = shared_data / "videos/walking_crowd_1080p.mp4"
    n = 32
    track = person_track(3, np.repeat(np.eye(3)[None], n, 0), np.repeat(STANDING[None], n, 0))
    track.boxes[:] = [1240, 700, 1340, 1000]  # the woman in front (full-image pixels)
    motion = Motion([track], 30.0, (1920, 1080), float(np.hypot(1920, 1080)), source=str(clip))
    kept, notes = camera_pass(clip, motion, "auto")
    assert kept is motion and notes[0].startswith("camera: static")
    assert camera_pass(clip, motion, "static") == (motion, [])
    moving, _ = camera_pass(clip, motion, "moving")  # forced: a still path, the same world
    a, b = build_world(motion).rigs[0], build_world(moving).rigs[0]
    assert np.abs(a.root_positions - b.root_positions).max() < 1 * CM


def test_camera_path_survives_motion_npz(tmp_path: Path):
    rot = Rotation.from_euler("Y", np.arange(5.0)[:, None], degrees=True).as_matrix()
    path = CameraPath(np.arange(5), rot, np.outer(np.arange(5.0), [0.1, 0, 0]))
    track = person_track(0, rot, np.repeat(STANDING[None], 5, 0))
    motion = Motion([track], 30.0, sp.SIZE, sp.FOCAL, extras=path.to_extras())
    back = CameraPath.from_extras(Motion.load(motion.save(tmp_path / "motion.npz")).extras)
    assert back is not None
    np.testing.assert_allclose(back.rotations, rot)
    np.testing.assert_allclose(back.positions, path.positions)
    assert CameraPath.from_extras({}) is None


@pytest.mark.slow
def test_travel_is_recovered_from_a_blender_scene(shared_data: Path, tmp_path: Path):
    """A textured room rendered by Blender, the camera travelling 1.6 m and turning 13 deg:
    rotation within 0.5 deg per frame, direction of travel within 5 deg, and its length scaled
    by the person-sized box's depth within 15 %."""
    frames = 40
    with __import__("av").open(str(shared_data / "videos/walking_crowd_1080p.mp4")) as c:
        cv2.imwrite(str(tmp_path / "crowd.png"), next(c.decode(video=0)).to_ndarray(format="bgr24"))
    script = Path(__file__).with_name("blender_parallax.py")
    subprocess.run([sys.executable, str(script), str(tmp_path), str(shared_data), str(frames)],
                   check=True, capture_output=True, timeout=900)  # fmt: skip
    truth = np.load(tmp_path / "truth.npz")
    images = ((k, cv2.imread(str(tmp_path / f"frame_{k:04d}.png"))) for k in range(frames))
    people = {
        k: PeopleInFrame(truth["boxes"][k : k + 1], truth["depths"][k : k + 1])
        for k in range(frames)
    }
    path = estimate_camera(images, people, float(truth["focal"]), (640, 360))
    err = rotation_errors(truth["R"], path)
    assert err.max() <= 0.5, err.round(2)
    got, want = path.positions[-1], truth["C"][-1]
    cos = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
    assert np.degrees(np.arccos(min(cos, 1.0))) < 5.0
    assert np.linalg.norm(got) / np.linalg.norm(want) == pytest.approx(1.0, abs=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["fbx", "glb", "blend"])
def test_exported_camera_lines_up_with_the_footage(
    pan_clip: tuple[Path, Motion], tmp_path: Path, fmt: str
):
    """Re-imported in Blender, the moving camera sees each person's pelvis where the video shows
    it (the camera-frame pelvis projected with the clip's focal length), within 2 pixels."""
    from exporters import export_motion
    from exporters.blender import read_with_blender
    from mocap.world import skeleton_for

    clip, motion = pan_clip
    moving, _ = camera_pass(clip, motion, "moving")
    report = export_motion(moving, tmp_path, fmt, foot_lock="off")  # the pelvis as estimated
    assert report.ok, report.summary()
    K = intrinsics(sp.FOCAL, *sp.SIZE)
    for track in motion.tracks:
        scene = read_with_blender(tmp_path / f"person_{track.track_id}.{fmt}", mesh_samples=1)
        (arm,), (cam,) = scene.armatures, scene.cameras
        # the lens as a share of the image width (FBX and glTF importers keep the render size)
        assert cam.focal_px / cam.resolution[0] == pytest.approx(sp.FOCAL / sp.SIZE[0], rel=1e-3)
        assert fmt != "blend" or cam.resolution == sp.SIZE
        keyed = [int(np.flatnonzero(np.isclose(cam.frames, f))[0]) for f in arm.frames]
        mats = cam.matrices[keyed]
        pelvis = arm.joint_positions[:, 0]  # Z-up world
        local = np.einsum("kba,kb->ka", mats[:, :3, :3], pelvis - mats[:, :3, 3])  # camera axes
        seen = K[:2, 2] + sp.FOCAL * local[:, :2] / -local[:, 2:] * [1.0, -1.0]
        root = skeleton_for(track, None).rest_joints[0] + track.transl
        want = K[:2, 2] + sp.FOCAL * root[:, :2] / root[:, 2:]
        assert np.abs(seen - want).max() < 2.0, np.abs(seen - want).max()


def test_frames_without_background_hold_the_camera(shared_data: Path):
    """Five blank frames (a cut to black) in a pan: the camera is held through them, said in the
    notes, and tracking resumes from the held pose (no snap back to the first view)."""
    n = 40
    rotations = sp.pan_tilt(n, pan_deg=8.0, tilt_deg=0.0)
    photo, person = sp.load_scene(shared_data)
    frames = list(sp.render(photo, person, rotations, np.zeros((n, 0, 4))))
    for k in range(20, 25):
        frames[k] = np.full_like(frames[k], 90)
    path = estimate_camera(enumerate(frames), {}, sp.FOCAL, sp.SIZE)
    err = rotation_errors(sp.relative(rotations), path)
    # the blank frames and the first one after them (nothing to track from yet)
    assert any("lost in 6 frame(s)" in n for n in path.notes), path.notes
    turned_while_blank = angle_deg(sp.relative(rotations)[25] @ sp.relative(rotations)[19].T)
    assert err[:20].max() < 0.1 and err[25:].max() < turned_while_blank + 0.1
