"""`mocap run --model lite` on the real clips: the embedded BlazePose model, end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mocap.lite.landmarks import JOINT_LANDMARKS
from mocap.motion import Motion

pytest.importorskip("mediapipe")  # a base dependency: absent only in a broken install


def _mocap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mocap", *args], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def crowd(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lite")
    proc = _mocap(
        "run",
        str(shared_data / "videos" / "walking_crowd_1080p.mp4"),
        "-o",
        str(out),
        "--model",
        "lite",
        "--formats",
        "npz,bvh,fbx",
        "--preview",
        "--no-report",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out / "walking_crowd_1080p"


def test_outputs_per_person_without_nan(crowd):
    motion = Motion.load(crowd / "motion.npz")
    assert len(motion.tracks) >= 3  # the three walkers in the shop
    for t in motion.tracks:
        for name in ("global_orient", "body_pose", "transl", "betas"):
            assert np.isfinite(getattr(t, name)).all()
        assert (crowd / f"person_{t.track_id}.bvh").stat().st_size > 1000
        assert (crowd / f"person_{t.track_id}.fbx").stat().st_size > 1000
        assert t.extras["keypoints2d"].shape == (len(t), 33, 3)
    run = json.loads((crowd / "run.json").read_text())
    assert run["model"]["variant"] == "lite"
    assert (crowd / "preview.mp4").stat().st_size > 10_000


def test_world_joints_reproject_onto_the_landmarks(crowd):
    """Exported world joints, taken back through the run's camera, land on the person."""
    from exporters import joint_positions
    from mocap.world import build_world

    motion = Motion.load(crowd / "motion.npz")
    built = build_world(motion)
    size = np.asarray(motion.image_size, dtype=np.float64)
    lm = list(JOINT_LANDMARKS)
    joints = [JOINT_LANDMARKS[k] for k in lm]
    for track, rig in zip(motion.tracks, built.rigs, strict=True):
        world = joint_positions(rig)[:, joints]  # (T,12,3) Y-up world
        cam = (world + built.world.offset) @ built.world.rotation  # R^T (p + offset), row vectors
        uv = motion.focal_length * cam[..., :2] / cam[..., 2:] + size / 2.0
        kp = track.extras["keypoints2d"][:, lm]
        seen = kp[..., 2] > 0.5
        dist = np.linalg.norm(uv - kp[..., :2], axis=-1)[seen]
        height = np.median(track.boxes[:, 3] - track.boxes[:, 1])
        assert np.median(dist) <= 0.05 * height, (track.track_id, np.median(dist), height)


def test_bones_are_rigid_and_nothing_flips(crowd):
    motion = Motion.load(crowd / "motion.npz")
    for t in motion.tracks:
        npz = np.load(crowd / f"person_{t.track_id}.npz")
        pos, parents = npz["joint_positions"], npz["parents"]
        lengths = np.linalg.norm(pos[:, 1:] - pos[:, parents[1:]], axis=-1)
        assert (lengths.std(axis=0) / lengths.mean(axis=0)).max() < 1e-5
        rot = np.concatenate([t.global_orient[:, None], t.body_pose], axis=1).astype(np.float64)
        step = np.swapaxes(rot[:-1], -1, -2) @ rot[1:]
        deg = np.degrees(Rotation.from_matrix(step.reshape(-1, 3, 3)).magnitude())
        assert deg.max() < 90.0  # no left/right swap or 180-degree twist between frames


def test_feet_in_stance_are_on_the_floor(crowd):
    from exporters import joint_positions
    from mocap.world import build_world

    motion = Motion.load(crowd / "motion.npz")
    built = build_world(motion)
    heights = []
    for rig, skel in zip(built.rigs, built.skeletons, strict=True):
        feet = joint_positions(rig)[:, [7, 8, 10, 11]]
        sole = feet[..., 1] - skel.sole_clearance[[7, 8, 10, 11]]
        speed = np.linalg.norm(np.diff(feet[..., [0, 2]], axis=0), axis=-1) * motion.fps
        low = sole[1:].argmin(axis=1)  # the lower foot point of each frame
        stance = speed[np.arange(len(low)), low] < 0.5  # m/s: planted, not swinging
        heights.append(sole[1:][np.arange(len(low)), low][stance])
    assert np.median(np.abs(np.concatenate(heights))) < 0.05


class _FixedBoxes:
    """Detector stand-in: the same boxes in every frame (one real person, one empty wall)."""

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, np.float32)

    def detect(self, images):
        from mocap.pipeline.detect import Detections

        n = len(self.boxes)
        return [Detections(self.boxes, np.full(n, 0.9, np.float32), np.zeros(n, np.int64))] * len(
            images
        )


def test_a_person_without_landmarks_is_skipped_not_the_clip(shared_data, tmp_path, caplog):
    from mocap.lite.blazepose import LiteEstimator
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.run import Engines, process_video

    video = shared_data / "videos" / "walking_crowd_1080p.mp4"
    # person #3 of the shop clip near frame 0, and a patch of empty ceiling
    boxes = [[1130, 640, 1300, 1000], [40, 0, 200, 60]]
    engines = Engines(_FixedBoxes(boxes), LiteEstimator(), None, "lite", {}, "built-in skeleton")
    settings = RunSettings(end=0.3, formats=["npz"], min_track_length=1, report=False)
    with caplog.at_level("WARNING", logger="mocap"):
        result = process_video(video, tmp_path, settings, engines=engines)
    assert len(result.track_lengths) == 1
    lines = [r.getMessage() for r in caplog.records if "found no body" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("person #2")


def test_auto_picks_the_embedded_model_when_no_hmr_weights_are_on_disk(tmp_path, monkeypatch):
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.run_cmd import resolve_model

    monkeypatch.setenv("MOCAP_HOME", str(tmp_path))
    assert resolve_model(RunSettings(model="auto")) == ("lite", None)
    fake = tmp_path / "checkpoints" / "featup-deformable.safetensors"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"x")
    assert resolve_model(RunSettings(model="auto"))[0] == "featup-deformable"
    proc = _mocap("weights", "list")
    lite = [line for line in proc.stdout.splitlines() if line.startswith("lite ")]
    assert lite and " present " in lite[0] and lite[0].endswith("pose_landmark_full.tflite")


class _Counted:
    """The real detector and embedded model, recording on which frame each detection ran; the
    model loses every person it follows on frame ``lose_at`` (as when someone leaves their crop)."""

    def __init__(self, detector, estimator, lose_at: int) -> None:
        self.detector, self.estimator, self.lose_at = detector, estimator, lose_at
        self.frames = 0  # frames the model has seen (one estimate call per frame)
        self.detected_on: list[int] = []
        self.detect_interval = estimator.detect_interval

    def detect(self, images):
        self.detected_on.extend(range(self.frames, self.frames + len(images)))
        return self.detector.detect(images)

    def prepare(self, image, box, track_id):
        return self.estimator.prepare(image, box, track_id)

    def estimate(self, items, image_size, focal):
        est = self.estimator.estimate(items, image_size, focal)
        if self.frames == self.lose_at:
            est.valid[:] = False
        self.frames += 1
        return est

    def finish_track(self, *args):
        return self.estimator.finish_track(*args)

    def close(self):
        self.estimator.close()


def test_detector_runs_every_nth_frame_and_again_when_a_person_is_lost(shared_data, tmp_path):
    from mocap.lite.blazepose import LiteEstimator
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.detect import build_detector
    from mocap.pipeline.run import Engines, process_video

    estimator = LiteEstimator()
    every = estimator.detect_interval
    counted = _Counted(build_detector(), estimator, lose_at=every + 2)
    engines = Engines(counted, counted, None, "lite", {}, "built-in skeleton")
    settings = RunSettings(end=1.0, formats=["npz"], min_track_length=1, report=False)
    result = process_video(
        shared_data / "videos" / "walking_crowd_1080p.mp4", tmp_path, settings, engines=engines
    )
    assert counted.frames == result.frames == 30
    lost = every + 3  # detected again on the frame after the loss, then every n-th from there
    expected = [0, every, *range(lost, result.frames, every)]
    assert counted.detected_on == expected
    assert len(result.track_lengths) == 3
