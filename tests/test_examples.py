"""Every script in examples/ runs as a user would run it (a subprocess) and makes its outputs.

They run with a tiny random-weight checkpoint, the test YOLO detector and short cuts of the real
clips, so the numbers are meaningless but every step of each script is exercised.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from mocap.cli import main
from mocap.motion import Motion

pytestmark = (
    pytest.mark.slow
)  # six subprocesses, each loading torch, YOLO and a model (~3 min in all)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(path)]) == 0
    return path


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOCAP_HOME": str(cwd / "home"), "PYTHONPATH": str(REPO)}
    env.pop("MOCAP_SMPL", None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


def test_every_example_has_a_header_and_help(tmp_path: Path) -> None:
    for script in sorted(EXAMPLES.glob("*.py")):
        text = script.read_text()
        assert text.startswith('"""') and "python examples/" in text.split('"""')[1], script.name


def test_video_to_blender(
    tmp_path: Path, tiny_checkpoint: Path, yolo_weights: Path, shared_data: Path
) -> None:
    clip = shared_data / "videos" / "posetrack_5frames_mpeg4.mp4"
    done = run_example(
        "video_to_blender.py", str(clip), "-o", "out", "--end", "0.1", "--checkpoint", str(tiny_checkpoint),
        "--detector", str(yolo_weights), cwd=tmp_path,
    )  # fmt: skip
    result = tmp_path / "out" / clip.stem
    motion = Motion.load(result / "motion.npz")
    assert motion.tracks
    for t in motion.tracks:
        for ext in ("bvh", "fbx"):
            path = result / f"person_{t.track_id}.{ext}"
            assert path.stat().st_size > 1000 and str(path) in done.stdout


def test_batch_folder(
    tmp_path: Path, tiny_checkpoint: Path, yolo_weights: Path, shared_data: Path
) -> None:
    args = [
        "-o",
        "out",
        "--end",
        "0.1",
        "--checkpoint",
        str(tiny_checkpoint),
        "--detector",
        str(yolo_weights),
    ]
    first = run_example("batch_folder.py", str(shared_data / "videos"), *args, cwd=tmp_path)
    names = sorted(p.stem for p in (shared_data / "videos").glob("*.mp4"))
    for name in names:
        assert (tmp_path / "out" / name / ".done").is_file(), first.stdout
        assert (
            json.loads((tmp_path / "out" / name / "run.json").read_text())["settings"]["end"] == 0.1
        )
    assert first.stdout.count(" people, ") == len(names)


def test_api_single_image(
    tmp_path: Path, tiny_checkpoint: Path, yolo_weights: Path, shared_data: Path
) -> None:
    image = shared_data / "images" / "coco_val2014_192.jpg"
    done = run_example(
        "api_single_image.py", str(image), "-o", "people.png", "--checkpoint", str(tiny_checkpoint),
        "--detector", str(yolo_weights), cwd=tmp_path,
    )  # fmt: skip
    people = [line for line in done.stdout.splitlines() if line.startswith("person ")]
    assert len(people) >= 1 and "m away" in people[0]
    drawn, source = cv2.imread(str(tmp_path / "people.png")), cv2.imread(str(image))
    assert drawn.shape == source.shape and (drawn != source).any()


def test_paper_figures(
    tmp_path: Path, tiny_checkpoint: Path, yolo_weights: Path, shared_data: Path
) -> None:
    image = shared_data / "images" / "coco_val2014_241.jpg"
    done = run_example(
        "paper_figures.py", str(image), "--checkpoint", str(tiny_checkpoint), "--detector", str(yolo_weights),
        "--max-people", "2", "-o", "figs", cwd=tmp_path,
    )  # fmt: skip
    assert done.stdout.count("person ") == 2
    for person in ("person_0", "person_1"):
        for kind in ("features", "sampling"):
            png = cv2.imread(str(tmp_path / "figs" / person / f"{image.stem}_{kind}.png"))
            assert png is not None and png.shape[0] >= 256 and png.std() > 5


def test_tiny_training(tmp_path: Path, smpl_dir: Path, yolo_weights: Path) -> None:
    done = run_example(
        "tiny_training.py", "--smpl", str(smpl_dir / "SMPL_NEUTRAL.pkl"), "--steps", "2", "--detector",
        str(yolo_weights), cwd=tmp_path,
    )  # fmt: skip
    checkpoint = (
        tmp_path / "out" / "tiny_training" / "run" / "checkpoints" / "step_0000002.safetensors"
    )
    assert (
        checkpoint.is_file()
        and f"trained checkpoint: {checkpoint.relative_to(tmp_path)}" in done.stdout
    )
    info = json.loads(
        (
            tmp_path / "out" / "tiny_training" / "motion" / "posetrack_5frames_mpeg4" / "run.json"
        ).read_text()
    )
    assert info["model"]["checkpoint"].endswith("step_0000002.safetensors") and info[
        "body"
    ].startswith("SMPL")
