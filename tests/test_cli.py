"""`mocap run` / `mocap batch` command line: help, settings (flags over YAML), one-line errors.

Every bad input here fails before any model is loaded, so these tests are fast; the ones that need
the detector and the model (no person, unreadable SMPL, missing weights) are in test_run.py.
"""

import subprocess
import sys
from pathlib import Path

import av
import pytest
import yaml

from mocap.cli import build_parser, main
from mocap.pipeline.config import FORMATS, RunSettings, resolve_settings

REPO = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``mocap ARGV`` in-process: exit status, stdout, stderr."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("mocap: error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("command", ["run", "batch"])
def test_help_lists_every_setting(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    flags = [
        "--start", "--end", "--stride", "--detector", "--det-conf", "--classes", "--min-box",
        "--batch-size", "--device", "--precision", "--model", "--checkpoint", "--smpl",
        "--focal-length", "--smooth", "--smooth-strength", "--formats", "--per-person",
        "--combined", "--preview", "--min-track-length", "--max-gap", "--config", "--overwrite",
        "--quiet", "--verbose", "--output",
    ]  # fmt: skip
    missing = [f for f in flags if f not in text]
    assert not missing, missing
    assert "examples:" in text and "(default: npz,bvh,fbx)" in text.replace("\n", " ")


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mocap", "run", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0 and "--smooth-strength" in done.stdout


def test_flags_override_config_file(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("det-conf: 0.6\nstride: 2\nformats: bvh,fbx\nsmooth: oneeuro\n")
    args = build_parser("run").parse_args(
        ["run", "clip.mp4", "-o", "out", "--config", str(config), "--stride", "3", "--combined"]
    )
    s = resolve_settings(args)
    assert (s.det_conf, s.stride, s.formats, s.smooth) == (0.6, 3, ["bvh", "fbx"], "oneeuro")
    assert s.per_person is False
    # untouched settings keep their defaults
    assert s.max_gap == RunSettings().max_gap and s.model == "auto"


def test_saved_config_reads_back(tmp_path: Path) -> None:
    from mocap.pipeline.config import save_config

    classes: list[int | str] = [0, "person"]
    s = RunSettings(stride=2, formats=["bvh"], focal_length=1200.0, classes=classes)
    save_config(s, tmp_path / "config.yaml")
    args = build_parser("run").parse_args(
        ["run", "x.mp4", "-o", "o", "--config", str(tmp_path / "config.yaml")]
    )
    assert resolve_settings(args) == s
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ("det_cnof: 0.5\n", ["det_cnof", "valid keys"]),
        ("stride: [1, 2\n", ["not valid YAML"]),
        ("- 1\n- 2\n", ["mapping"]),
        ("formats: bvh,obj\n", ["obj", "choose from"]),
        ("stride: 0\n", ["--stride"]),
    ],
)
def test_bad_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, words: list[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    code, _, err = run_cli(
        ["run", "x.mp4", "-o", str(tmp_path / "o"), "--config", str(config)], capsys
    )
    assert_one_line_error(code, err, *words)


def test_bad_flag_values_are_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "x.mp4", "-o", "o", "--formats", "bvh,obj"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "choose from " + ",".join(FORMATS) in err and "Traceback" not in err


def _empty_video(path: Path) -> None:
    """An MP4 with a video stream but no frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = 64, 64


def _make_case(case: str, tmp_path: Path, shared_data: Path) -> tuple[list[str], list[str]]:
    """(extra argv, words the error must contain) for one kind of bad input."""
    real = shared_data / "videos" / "walking_crowd_1080p.mp4"
    clip = tmp_path / "clip.mp4"
    if case == "missing file":
        return [str(tmp_path / "nope.mp4")], ["nope.mp4", "check the path"]
    if case == "not a video":
        clip.write_text("just some text\n" * 100)
        return [str(clip)], ["not a readable video"]
    if case == "truncated":
        clip.write_bytes(real.read_bytes()[:20_000])
        return [str(clip)], ["no decodable video frames"]
    if case == "zero frames":
        _empty_video(clip)
        return [str(clip)], ["clip.mp4"]
    if case == "start past the end":
        return [str(real), "--start", "60"], ["--start", "past the end"]
    if case == "unwritable output":
        blocker = tmp_path / "file.txt"
        blocker.write_text("x")
        return [str(real), "-o", str(blocker / "out")], ["cannot write", "-o"]
    if case == "missing checkpoint":
        return [str(real), "--checkpoint", str(tmp_path / "none.safetensors")], ["--checkpoint"]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "not a video",
        "truncated",
        "zero frames",
        "start past the end",
        "unwritable output",
        "missing checkpoint",
    ],
)
def test_bad_input_gives_one_line(
    case: str, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, words = _make_case(case, tmp_path, shared_data)
    out = tmp_path / "out"
    argv = ["run", extra[0], "-o", str(out), *extra[1:]]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, *words)
    assert not out.exists() or not any(out.iterdir())  # nothing that looks like a result


def test_batch_with_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["batch", str(empty), "-o", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "no videos found")


def test_batch_names_and_inputs(tmp_path: Path, shared_data: Path) -> None:
    from mocap.pipeline.batch_cmd import collect_clips, output_names

    videos = shared_data / "videos"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "clip.mp4").write_bytes(b"")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.jpg").write_bytes(b"")
    clips, missing, notes = collect_clips(
        [str(videos), str(tmp_path / "*" / "clip.mp4"), str(frames), str(videos / "x.mp4")]
    )
    names = output_names(clips)
    assert len(clips) == 6 and len(set(names)) == 6
    assert {"a_clip", "b_clip", "frames", "walking_crowd_1080p"} <= set(names)
    assert [m.name for m in missing] == ["x"] and "does not exist" in missing[0].error
    assert notes == []


def test_no_traceback_for_unknown_precision_in_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"precision": "int4"}))
    code, _, err = run_cli(["run", "x.mp4", "-o", str(tmp_path), "--config", str(config)], capsys)
    assert_one_line_error(code, err, "precision")
