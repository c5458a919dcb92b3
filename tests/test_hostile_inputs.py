"""Issue 17, the input side: nothing poisoned. Hostile motion files, configs, checkpoints, videos
and image folders, each reproduced and answered with one clear line (or a skip with a note),
a non-zero exit where it is an error, and the other people and files unaffected.
"""

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from exporters.bvh import read_bvh
from mocap.cli import main
from mocap.errors import MocapError
from mocap.motion import Motion, Track
from mocap.pipeline.config import RunSettings

UPRIGHT = np.diag([1.0, -1.0, -1.0])  # a standing person seen by a level camera
CLIP = "posetrack_5frames_mpeg4"


def one_error_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mocap: error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- 2, 9: motion files


def person(track_id: int, x: float, n: int = 20) -> Track:
    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    rot[:, 0] = UPRIGHT
    t = np.arange(n)
    transl = np.stack([np.full(n, x) + 0.02 * t, np.full(n, 0.4), np.full(n, 4.0)], axis=1)
    return Track(track_id, t, t / 30.0, rot[:, 0], rot[:, 1:], np.zeros((n, 10)),
                 np.zeros((n, 3)), transl, np.zeros((n, 4)), np.ones(n))  # fmt: skip


@pytest.fixture()
def no_smpl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MOCAP_SMPL", raising=False)


@pytest.fixture()
def good_npz(tmp_path: Path) -> dict[str, np.ndarray]:
    """The arrays of a sound three-person motion.npz."""
    path = Motion([person(1, -1.0), person(2, 0.0), person(3, 1.0)], 30.0, (1920, 1080),
                  1500.0, "three.mp4").save(tmp_path / "good.npz")  # fmt: skip
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def export(tmp_path: Path, arrays: dict[str, Any], capsys: pytest.CaptureFixture[str],
           formats: str = "bvh,npz") -> tuple[int, str, str, Path]:  # fmt: skip
    src = tmp_path / "motion.npz"
    np.savez(src, **arrays)
    out = tmp_path / "anim"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no raw numpy warnings either
        code = main(["export", str(src), "-o", str(out), "--formats", formats])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


def assert_others_sound(out: Path, bad: int, stdout: str) -> None:
    """The bad person is reported and not written; everybody else's files are finite."""
    assert not (out / f"person_{bad}.bvh").exists() and not (out / f"person_{bad}.npz").exists()
    assert f"failed: person_{bad}" in stdout and "left out" in stdout
    for other in {1, 2, 3} - {bad}:
        assert np.isfinite(read_bvh(out / f"person_{other}.bvh").motion).all()
        with np.load(out / f"person_{other}.npz") as rig:
            assert np.isfinite(rig["joint_positions"]).all()
    camera = next(line for line in stdout.splitlines() if "camera at" in line)
    assert "nan" not in camera and "inf" not in camera


@pytest.mark.parametrize(
    ("key", "poison", "words"),
    [
        ("t1_transl", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 4, np.inf, a),
         "non-finite"),
        ("t1_body_pose", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 9, np.nan, a),
         "non-finite"),
        ("t1_transl", lambda a: a * 1e30, "m from the camera"),
        ("t1_body_pose", lambda a: a * 5.0, "not rotations"),
        ("t1_body_pose", lambda a: np.zeros((9, 10, 3, 3)), "shape (9, 10, 3, 3)"),
        ("t1_frames", lambda a: a[:-3], "rows but the track lists 17 frames"),
        ("t1_x_keypoints2d", lambda a: np.zeros((3, 33, 3)), "extra array 'keypoints2d'"),
    ],
)  # fmt: skip
def test_one_bad_person_never_poisons_the_others(
    key: str, poison: Any, words: str, good_npz: dict[str, np.ndarray], tmp_path: Path,
    no_smpl: None, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    arrays = dict(good_npz)
    arrays[key] = poison(arrays.get(key, np.zeros((20, 1))))
    code, out, err, folder = export(tmp_path, arrays, capsys)
    assert code == 1 and "Traceback" not in err, err
    assert words in out, out
    assert_others_sound(folder, 1, out)
    assert Motion.load(tmp_path / "motion.npz").rejected.keys() == {1}


def test_bad_people_stay_out_of_the_world_fit(tmp_path: Path) -> None:
    """In memory too (the pipeline's own motion): the world of the others is unchanged."""
    from exporters import export_motion

    good = [person(2, 0.0), person(3, 1.0)]
    nan = person(1, -1.0)
    nan.transl[5] = np.nan
    clean = export_motion(Motion(good, 30.0, (1920, 1080), 1500.0), tmp_path / "a", "bvh")
    mixed = export_motion(Motion([nan, *good], 30.0, (1920, 1080), 1500.0), tmp_path / "b", "bvh")
    assert clean.world is not None and mixed.world is not None
    np.testing.assert_allclose(mixed.world.offset, clean.world.offset)
    assert [f.person for f in mixed.failures] == ["person_1"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["person_2.bvh", "person_3.bvh"]


def test_duplicate_track_ids_are_reported(
    good_npz: dict[str, np.ndarray], tmp_path: Path, no_smpl: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    arrays = {**good_npz, "track_ids": np.array([1, 1, 2, 3])}
    code, out, err, _ = export(tmp_path, arrays, capsys)
    assert code == 1 and "listed 2 times" in out and "Traceback" not in err
    with pytest.raises(ValueError, match="unique"):
        Motion([person(1, 0.0), person(1, 1.0)], 30.0, (64, 48), 80.0).save(tmp_path / "d.npz")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p, a: np.save(p.with_suffix(".npy"), a["t1_transl"]) or p.with_suffix(".npy").rename(p),
         "not a readable mocap motion file"),
        (lambda p, a: np.savez(p, **{k: v for k, v in a.items() if k != "t2_transl"}),
         "array 't2_transl' is missing"),
        (lambda p, a: np.savez(p, **{**a, "fps": np.array([30.0, 25.0])}), "fps is"),
        (lambda p, a: np.savez(p, **{**a, "track_ids": np.array([1.5])}), "track_ids is float64"),
        (lambda p, a: np.savez(p, **{**a, "t1_transl": np.full_like(a["t1_transl"], np.inf),
                                     "t2_transl": np.full_like(a["t2_transl"], np.inf),
                                     "t3_transl": np.full_like(a["t3_transl"], np.inf)}), "no usable person"),
    ],
)  # fmt: skip
def test_broken_motion_files_are_one_line(
    make: Any, words: str, good_npz: dict[str, np.ndarray], tmp_path: Path, no_smpl: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    src = tmp_path / "motion.npz"
    make(src, good_npz)
    code = main(["export", str(src), "-o", str(tmp_path / "anim"), "--formats", "bvh"])
    line = one_error_line(code, capsys.readouterr().err)
    assert words in line, line
    assert "no '" not in line and "is not a file in the archive" not in line
    assert not (tmp_path / "anim").exists() or not any((tmp_path / "anim").iterdir())


def test_export_smooth_strength_must_be_finite(good_npz: dict[str, np.ndarray], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    np.savez(tmp_path / "m.npz", **good_npz)
    code = main(
        ["export", str(tmp_path / "m.npz"), "--smooth", "offline", "--smooth-strength", "nan"]
    )
    assert "--smooth-strength" in one_error_line(code, capsys.readouterr().err)


# ----------------------------------------------------------------------------- 8, 10: settings


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('stride: "abc"', "argument --stride: invalid int value: 'abc'"),
        ("batch_size: 1.5", "argument --batch-size: invalid int value: '1.5'"),
        ("formats: 123", "argument --formats: unknown 123; choose from"),
        ("det_conf: high", "argument --det-conf: invalid float value: 'high'"),
        ('preview: "no"', "--preview takes true or false, not 'no'"),
        ("per_person: 1", "--per-person takes true or false"),
        ("stride: null", "null is not allowed for --stride"),
        ("detector: [a, b]", "--detector takes a single value"),
        ("model: {a: 1}", "--model takes a single value"),
        ("smooth: fast", "argument --smooth: invalid choice: 'fast'"),
        ("focal_length: 1.0e+30", "--focal-length must be between 1 and"),
        ("min_box: -5", "--min-box must be 0 to"),
        ("start: .nan", "--start"),
        ("smooth_strength: .inf", "--smooth-strength must be a finite number"),
        ("smpl: ~no_such_user_mocap/SMPL.pkl", "~no_such_user_mocap/SMPL.pkl"),  # fuzz crash
    ],
)
def test_config_values_are_checked_like_their_flags(
    text: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text + "\n")
    code = main(["run", "x.mp4", "-o", str(tmp_path / "o"), "--config", str(config)])
    line = one_error_line(code, capsys.readouterr().err)
    assert words in line, line
    assert not (tmp_path / "o").exists()


def test_every_setting_is_checked(tmp_path: Path) -> None:
    """Derived from the flags and types, not a list: each field refuses a mapping, and each
    numeric field refuses text (a setting added later is covered the same way)."""
    from mocap.pipeline.config import load_config

    config = tmp_path / "c.yaml"
    for name, value in RunSettings().to_dict().items():
        config.write_text(f"{name}: {{a: 1}}\n")
        with pytest.raises(MocapError, match=f"config file {config}"):
            load_config(config)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config.write_text(f"{name}: not-a-number\n")
            with pytest.raises(MocapError, match="invalid (int|float) value"):
                load_config(config)
    config.write_text("preview: no\nformats: [bvh, fbx]\nclasses: 0\nend: null\ndet-conf: 0.5\n")
    values = load_config(config)
    assert values == {"preview": False, "formats": ["bvh", "fbx"], "classes": [0], "end": None,
                      "det_conf": 0.5}  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--focal-length", "1e30"), ("--min-box", "-5"), ("--det-conf", "nan"), ("--start", "inf"),
     ("--batch-size", "100000")],
)  # fmt: skip
def test_flag_ranges(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "x.mp4", "-o", str(tmp_path / "o"), f"{flag}={value}"])
    assert flag in one_error_line(code, capsys.readouterr().err)


# ----------------------------------------------------------------------------- 4: checkpoints


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(path)]) == 0
    return path


def with_config(src: Path, dst: Path, edit: dict[tuple[str, ...], Any]) -> Path:
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    config = json.loads(meta["config"])
    for path, value in edit.items():
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    save_file(load_file(str(src)), str(dst), metadata={**meta, "config": json.dumps(config)})
    return dst


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({("vit", "depth"): "2; import os"}, "vit.depth must be an integer"),
        ({("vit", "dim"): 1e9}, "vit.dim must be an integer"),
        ({("vit", "dim"): -5}, "vit.dim is -5, expected 1 to"),
        ({("levels", "factor"): 3}, "does not support upsampling factor 3"),
        ({("deformable_head", "num_layers"): 1e6}, "num_layers must be an integer"),
        ({("deformable_head", "num_layers"): 1_000_000}, "num_layers is 1e+06"),
        ({("vit", "depth"): 10_000}, "vit.depth is 10000"),
        ({("vit", "num_heads"): 3}, "not divisible"),
        ({("variant",): "hmr2"}, "hmr2 needs exactly its own head"),
        ({("levels", "upsample"): "bilinear"}, "upsamples with jbu"),
        ({("vit", "taps"): [1, 9]}, "vit.taps [1, 9] must be distinct layers 1 to 2"),
        ({("surprise",): 1}, "unknown field(s) surprise"),
    ],
)
def test_embedded_config_is_validated_before_building(
    edit: dict[tuple[str, ...], Any], words: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from mocap.model.checkpoint import load_checkpoint

    bad = with_config(tiny_checkpoint, tmp_path / "bad.safetensors", edit)
    t0 = time.perf_counter()
    with pytest.raises(MocapError) as info:
        load_checkpoint(bad)
    assert time.perf_counter() - t0 < 2.0  # refused before anything is built
    assert words in str(info.value) and len(str(info.value)) < 300, str(info.value)


def test_key_mismatch_is_summarised(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from mocap.model.checkpoint import load_checkpoint

    deeper = with_config(tiny_checkpoint, tmp_path / "deeper.safetensors", {("vit", "depth"): 40})
    with pytest.raises(MocapError) as info:
        load_checkpoint(deeper)
    message = str(info.value)
    assert "does not match its architecture" in message and "and " in message
    assert "missing " in message and len(message) < 400, message


def test_a_bad_checkpoint_is_one_line_from_mocap_run(
    tiny_checkpoint: Path, tmp_path: Path, shared_data: Path, yolo_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    bad = with_config(tiny_checkpoint, tmp_path / "bad.safetensors", {("vit", "dim"): 1e9})
    video = shared_data / "videos" / f"{CLIP}.mp4"
    argv = ["run", str(video), "-o", str(tmp_path / "o"), "--checkpoint", str(bad),
            "--detector", str(yolo_weights), "-q"]  # fmt: skip
    assert "vit.dim must be an integer" in one_error_line(main(argv), capsys.readouterr().err)
    assert [p.name for p in (tmp_path / "o").iterdir()] == []


# ----------------------------------------------------------------------------- 10: video, images


@pytest.fixture(scope="module", autouse=True)
def models_loaded_once() -> Iterator[None]:
    from mocap.pipeline import run_cmd

    real, cache = run_cmd.build_engines, {}

    def cached(settings: RunSettings) -> object:
        key = json.dumps([settings.checkpoint, settings.detector, settings.batch_size])
        if key not in cache:
            cache[key] = real(settings)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_cmd, "build_engines", cached)
        yield


def test_truncated_video_says_once_how_many_frames_were_lost(
    tmp_path: Path, shared_data: Path, tiny_checkpoint: Path, yolo_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data = (shared_data / "videos" / "walking_crowd_1080p.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    argv = ["run", str(cut), "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint),
            "--detector", str(yolo_weights), "-q", "--stride", "8", "--formats", "npz"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mocap: warning: "), err
    assert "decoded 21 of the 32 frames its header lists (11 lost)" in err[0]
    info = json.loads((tmp_path / "o" / "cut" / "run.json").read_text())
    assert any("11 lost" in w for w in info["warnings"])


def test_broken_images_are_skipped_with_one_note(
    tmp_path: Path, shared_data: Path, tiny_checkpoint: Path, yolo_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from mocap.pipeline.video import open_video

    folder = tmp_path / "shot"
    folder.mkdir()
    with av.open(str(shared_data / "videos" / f"{CLIP}.mp4")) as c:
        for i, frame in enumerate(c.decode(video=0)):
            frame.to_image().save(folder / f"frame_{i + 1}.jpg", quality=90)
    whole = (folder / "frame_2.jpg").read_bytes()
    (folder / "frame_2.jpg").write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    (folder / "frame_4.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 50)
    argv = ["run", str(folder), "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint),
            "--detector", str(yolo_weights), "-q", "--formats", "npz"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2 image(s)" in err[0], err
    assert "frame_2.jpg" in err[0] and "frame_4.jpg" in err[0]
    assert (tmp_path / "o" / "shot" / ".done").is_file()
    assert [round(f.time * 30) for f in open_video(folder)] == [0, 2, 4]  # times keep the gaps
