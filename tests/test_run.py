"""`mocap run` end to end: real videos, the real YOLO person detector, a tiny random-weight model
(``mocap init-checkpoint``) and the synthetic SMPL-format body.

The walking-crowd clip (every 3rd frame: 11 frames) is processed once per module (fixture ``crowd``)
and every assertion on its outputs shares that run; the other tests use 3-frame cuts of a short clip.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from mocap.cli import main
from mocap.motion import Motion

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("models_loaded_once")  # conftest
CROWD = "walking_crowd_1080p"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two (N,4) x1,y1,x2,y2 arrays."""
    lo, hi = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mocap: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    code = main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(path)])
    assert code == 0 and path.is_file()
    return path


@pytest.fixture()
def common(tiny_checkpoint: Path, yolo_weights: Path) -> list[str]:
    """Flags every test run shares: tiny model, the test detector."""
    return ["--checkpoint", str(tiny_checkpoint), "--detector", str(yolo_weights), "-q"]


@pytest.fixture()
def no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty mocap cache and no $MOCAP_SMPL: nothing is found unless passed explicitly."""
    home = tmp_path / "mocap_home"
    monkeypatch.setenv("MOCAP_HOME", str(home))
    monkeypatch.delenv("MOCAP_SMPL", raising=False)
    return home


@pytest.fixture(scope="module")
def crowd(
    tmp_path_factory: pytest.TempPathFactory,
    shared_data: Path,
    tiny_checkpoint: Path,
    yolo_weights: Path,
    smpl_dir: Path,
) -> Path:
    """``mocap run`` on the walking-crowd clip with SMPL, BVH and a mesh preview; its output folder."""
    out = tmp_path_factory.mktemp("run")
    argv = [
        "run", str(shared_data / "videos" / f"{CROWD}.mp4"), "-o", str(out),
        "--checkpoint", str(tiny_checkpoint), "--detector", str(yolo_weights),
        "--smpl", str(smpl_dir / "SMPL_NEUTRAL.pkl"), "--formats", "npz,bvh", "--preview",
        "--stride", "3", "--batch-size", "8", "-q",
    ]  # fmt: skip
    assert main(argv) == 0
    return out / CROWD


def test_outputs_are_complete(crowd: Path) -> None:
    motion = Motion.load(crowd / "motion.npz")
    names = {p.name for p in crowd.iterdir()}
    assert {".done", "motion.npz", "run.json", "config.yaml", "preview.mp4"} <= names
    for t in motion.tracks:
        assert {f"person_{t.track_id}.bvh", f"person_{t.track_id}.npz"} <= names
    assert not [n for n in names if "partial" in n]
    assert not [p for p in crowd.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_motion_has_several_stable_tracks(crowd: Path) -> None:
    motion = Motion.load(crowd / "motion.npz")
    assert motion.fps == pytest.approx(10.0) and motion.image_size == (1920, 1080)
    assert motion.focal_length == pytest.approx(np.hypot(1920, 1080))  # default: image diagonal
    # the full-image translation is consistent with that camera: each person's SMPL origin
    # projects near the centre of their box (x within a box width)
    for t in motion.tracks:
        uv = t.transl[:, :2] / t.transl[:, 2:] * motion.focal_length + np.array([960.0, 540.0])
        centre = (t.boxes[:, :2] + t.boxes[:, 2:]) / 2
        width = t.boxes[:, 2] - t.boxes[:, 0]
        assert (np.abs(uv[:, 0] - centre[:, 0]) < width).mean() > 0.9
    assert len(motion.tracks) >= 3
    for t in motion.tracks:
        n = len(t)
        assert np.all(np.diff(t.frames) >= 1) and t.frames[0] >= 0 and t.frames[-1] < 11
        np.testing.assert_allclose(t.times, t.frames * 3 / 30.0, atol=1e-3)
        assert t.body_pose.shape == (n, 23, 3, 3) and t.global_orient.shape == (n, 3, 3)
        rot = np.concatenate([t.global_orient[:, None], t.body_pose], axis=1).astype(np.float64)
        np.testing.assert_allclose(
            rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-4
        )
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-4)
        assert np.ptp(t.betas, axis=0).max() == 0  # one body shape per person
        assert t.transl.shape == (n, 3) and np.all(t.transl[:, 2] > 0)  # in front of the camera
        assert np.all((t.scores >= 0) & (t.scores <= 1))
    # people continuously visible keep one identity over the whole clip ...
    assert sum(len(t) == 11 for t in motion.tracks) >= 2
    # ... and an identity never jumps to another person: boxes of consecutive frames overlap
    for t in motion.tracks:
        step = np.diff(t.frames) == 1
        assert np.all(box_iou(t.boxes[:-1][step], t.boxes[1:][step]) > 0.5), t.track_id
    # two tracks never describe the same person in the same frame
    for i, a in enumerate(motion.tracks):
        for b in motion.tracks[i + 1 :]:
            common, ia, ib = np.intersect1d(a.frames, b.frames, return_indices=True)
            if len(common):
                assert box_iou(a.boxes[ia], b.boxes[ib]).max() < 0.7


def test_run_json_records_the_run(crowd: Path, tiny_checkpoint: Path) -> None:
    info = json.loads((crowd / "run.json").read_text())
    motion = Motion.load(crowd / "motion.npz")
    assert info["video"]["frames"] == 11 and info["video"]["fps"] == pytest.approx(10.0)
    assert [t["id"] for t in info["tracks"]] == [t.track_id for t in motion.tracks]
    assert [t["frames"] for t in info["tracks"]] == [len(t) for t in motion.tracks]
    assert info["settings"]["checkpoint"] == str(tiny_checkpoint)
    assert info["settings"]["formats"] == ["npz", "bvh"] and info["settings"]["preview"] is True
    assert info["model"]["checkpoint"] == str(tiny_checkpoint)
    assert info["body"].startswith("SMPL")
    assert {"torch", "numpy", "av", "ultralytics"} <= set(info["versions"])
    for stage in ("decode", "detect", "track", "crop", "model", "smooth", "export", "preview"):
        assert info["timings_s"][stage] >= 0
    assert 0 < info["share_outside_model"] < 1
    assert set(info["files"]) >= {"motion.npz", "preview.mp4", "config.yaml"}
    # the saved settings repeat the run
    assert yaml.safe_load((crowd / "config.yaml").read_text()) == info["settings"]


def test_run_stores_and_reports_foot_contacts(crowd: Path) -> None:
    """motion.npz holds each person's per-frame contacts (left/right ankle, left/right toe);
    run.json their spans and the foot metrics before and after locking (mocap.contacts)."""
    info = json.loads((crowd / "run.json").read_text())
    motion = Motion.load(crowd / "motion.npz")
    assert info["settings"]["foot_lock"] == "auto" and info["timings_s"]["contacts"] >= 0
    for track, entry in zip(motion.tracks, info["tracks"], strict=True):
        flags = track.extras["contacts"]
        assert flags.shape == (len(track), 4) and set(np.unique(flags)) <= {0.0, 1.0}
        feet = entry["contacts"]
        assert feet["locked"] and set(feet["before"]) == set(feet["after"])
        metrics = {"sliding_mm_per_frame", "penetration_mm", "floating_mm", "contact_share"}
        assert set(feet["before"]) == metrics
        names = ("left_ankle", "right_ankle", "left_toe", "right_toe")
        assert tuple(feet["spans"]) == names
        for p, name in enumerate(names):
            on = np.zeros(len(track), bool)
            for first, last in feet["spans"][name]:
                a, b = np.searchsorted(track.frames, [first, last])
                on[a : b + 1] = True
            np.testing.assert_array_equal(on, flags[:, p] > 0.5)


def test_preview_draws_each_person(crowd: Path, shared_data: Path) -> None:
    motion = Motion.load(crowd / "motion.npz")
    with av.open(str(crowd / "preview.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    with av.open(str(shared_data / "videos" / f"{CROWD}.mp4")) as c:
        source = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 11 and frames[0].shape == (1080, 1920, 3)
    k = 5  # preview frame 5 is source frame 15
    diff = np.abs(frames[k].astype(np.int16) - source[3 * k].astype(np.int16)).sum(axis=2) > 60
    for t in motion.tracks:
        rows = np.nonzero(t.frames == k)[0]
        if len(rows):  # the painted mesh changes pixels near the person's box
            x1, y1, x2, y2 = t.boxes[rows[0]].astype(int)
            pad = (x2 - x1) // 2
            assert diff[max(y1 - pad, 0) : y2 + pad, max(x1 - pad, 0) : x2 + pad].any(), t.track_id


def test_second_run_skips_a_finished_clip(
    crowd: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (crowd / "motion.npz").stat().st_mtime_ns
    code = main(["run", str(shared_data / "videos" / f"{CROWD}.mp4"), "-o", str(crowd.parent)])
    out = capsys.readouterr()
    assert code == 0 and not out.err
    assert "already finished; skipped" in out.out and "--overwrite" in out.out
    assert (crowd / "motion.npz").stat().st_mtime_ns == before  # untouched


def test_no_person_in_the_clip(
    tmp_path: Path, common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "empty_room.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(clip), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for _ in range(4):
            img = np.full((240, 320, 3), 128, np.uint8) + rng.integers(
                0, 20, (240, 320, 3), dtype=np.uint8
            )
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    code = main(["run", str(clip), "-o", str(tmp_path / "out"), *common])
    line = one_line_error(code, capsys.readouterr().err)
    assert "no person detected" in line and "--det-conf" in line
    assert not (tmp_path / "out" / "empty_room").exists()


def test_unreadable_smpl_file(
    tmp_path: Path, shared_data: Path, common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "SMPL_NEUTRAL.pkl"
    bad.write_bytes(b"\x80\x04 definitely not a pickle")
    clip = shared_data / "videos" / "posetrack_5frames_mpeg4.mp4"
    code = main(["run", str(clip), "-o", str(tmp_path / "out"), *common, "--smpl", str(bad)])
    assert str(bad) in one_line_error(code, capsys.readouterr().err)


@pytest.mark.parametrize("model", ["featup-deformable", "hmr2"])
def test_missing_weights(
    model: str, tmp_path: Path, shared_data: Path, yolo_weights: Path, no_cache: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # no network here: make sure a download attempt cannot succeed
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    clip = shared_data / "videos" / "posetrack_5frames_mpeg4.mp4"
    code = main(
        [
            "run",
            str(clip),
            "-o",
            str(tmp_path / "out"),
            "--model",
            model,
            "--detector",
            str(yolo_weights),
        ]
    )
    line = one_line_error(code, capsys.readouterr().err)
    assert "--checkpoint" in line or "download" in line


def test_interrupt_leaves_no_output(
    tmp_path: Path, shared_data: Path, common: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporters

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(exporters, "export_motion", interrupted)
    clip = shared_data / "videos" / "posetrack_5frames_mpeg4.mp4"
    out = tmp_path / "out"
    assert main(["run", str(clip), "-o", str(out), "--end", "0.1", *common]) == 130
    assert list(out.iterdir()) == []  # neither the clip folder nor its staging folder


def test_subprocess_without_smpl_uses_the_skeleton(
    tmp_path: Path, shared_data: Path, tiny_checkpoint: Path, yolo_weights: Path
) -> None:
    """End to end as a user runs it: ``python -m mocap run``, no SMPL anywhere, skeleton preview."""
    env = {**os.environ, "MOCAP_HOME": str(tmp_path / "home")}
    env.pop("MOCAP_SMPL", None)
    clip = shared_data / "videos" / "posetrack_5frames_mpeg4.mp4"
    cmd = [
        sys.executable, "-m", "mocap", "run", str(clip), "-o", str(tmp_path / "out"), "--end", "0.1",
        "--checkpoint", str(tiny_checkpoint), "--detector", str(yolo_weights), "--preview",
        "--formats", "npz,bvh", "--min-track-length", "2",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.count("built-in skeleton") == 1  # said once
    assert "model: featup-deformable (tiny) from" in done.stdout  # which model was used
    result = tmp_path / "out" / "posetrack_5frames_mpeg4"
    info = json.loads((result / "run.json").read_text())
    assert info["body"] == "built-in skeleton" and info["video"]["frames"] == 3
    with av.open(str(result / "preview.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3
    assert (result / ".done").is_file()


def test_image_folder_input(
    tmp_path: Path, shared_data: Path, common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of frames is a clip too: named after the folder, at the default 30 fps."""
    frames = tmp_path / "shot_01"
    frames.mkdir()
    with av.open(str(shared_data / "videos" / "posetrack_5frames_mpeg4.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            f.to_image().save(frames / f"frame_{i + 1}.png")
    out = tmp_path / "out"
    assert (
        main(["run", str(frames), "-o", str(out), "--end", "0.1", "--formats", "bvh", *common]) == 0
    )
    motion = Motion.load(out / "shot_01" / "motion.npz")
    assert motion.fps == 30.0 and motion.image_size == (1280, 720) and motion.tracks
    assert all(list(t.frames) == [0, 1, 2] for t in motion.tracks)
    assert {p.name for p in (out / "shot_01").glob("*.bvh")} == {
        f"person_{t.track_id}.bvh" for t in motion.tracks
    }
    capsys.readouterr()


@pytest.mark.parametrize("variant", ["hmr2", "vitpose-deformable", "featup-deformable"])
def test_int8_precision_runs_every_variant(
    variant: str, tmp_path: Path, shared_data: Path, yolo_weights: Path
) -> None:
    """``--precision int8`` (dynamic int8 backbone linears, CPU) end to end on a real clip."""
    checkpoint = tmp_path / f"{variant}.safetensors"
    assert main(["init-checkpoint", variant, "--size", "tiny", "-o", str(checkpoint)]) == 0
    clip = shared_data / "videos" / "posetrack_5frames_mpeg4.mp4"
    argv = [
        "run", str(clip), "-o", str(tmp_path / "out"), "--end", "0.1", "--precision", "int8",
        "--checkpoint", str(checkpoint), "--detector", str(yolo_weights), "--formats", "npz",
        "--min-track-length", "2", "-q",
    ]  # fmt: skip
    assert main(argv) == 0
    result = tmp_path / "out" / "posetrack_5frames_mpeg4"
    info = json.loads((result / "run.json").read_text())
    assert info["settings"]["precision"] == "int8"
    assert info["model"]["precision"] == "int8" and info["model"]["device"] == "cpu"
    assert info["settings"]["checkpoint"] == str(checkpoint)  # holds the variant (tiny)
    motion = Motion.load(result / "motion.npz")
    assert motion.tracks and all(list(t.frames) == [0, 1, 2] for t in motion.tracks)
    for t in motion.tracks:
        rot = np.concatenate([t.global_orient[:, None], t.body_pose], axis=1).astype(np.float64)
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-4)
        assert np.isfinite(t.transl).all() and np.all(t.transl[:, 2] > 0)
