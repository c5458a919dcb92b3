"""The Blender extension (mocap/blender_addon): built by `mocap blender-addon`, installed into a
headless bpy 5.0.1 as an extension, its operators run on a real clip with the embedded model.

Every Blender session runs in a child (tests/_blender_addon_child.py) with its own user folder
(BLENDER_USER_RESOURCES), so the developer's Blender set-up is never touched.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "_blender_addon_child.py"
VIDEO = REPO.parent / "shared" / "data" / "videos" / "posetrack_5frames_mpeg4.mp4"
MOCAP = Path(sys.executable).with_name("mocap")
YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs bpy 5.0.1")
needs_clip = pytest.mark.skipif(not VIDEO.is_file() or not MOCAP.is_file(), reason="needs the clip")
# Pythons with a Blender 4 bpy (os.pathsep between them): 4.2, the oldest Blender the manifest
# allows (it imports FBX), and 4.5 LTS (it reads the .blend); .ci/run makes both
BPY4 = [p for p in os.environ.get("MOCAP_TEST_BPY4_PYTHON", "").split(os.pathsep) if p]
each_bpy4 = pytest.mark.parametrize(
    "bpy4",
    [pytest.param(p, id=Path(p).parents[1].name) for p in BPY4]
    or [pytest.param("", marks=pytest.mark.skip(reason="set MOCAP_TEST_BPY4_PYTHON to Pythons "
                                                 "with bpy 4.x (.ci/run does)"))],
)  # fmt: skip


def _load_runner():
    """The add-on's bpy-free runner module, loaded by path (its package imports bpy)."""
    spec = importlib.util.spec_from_file_location(
        "addon_runner", REPO / "mocap" / "blender_addon" / "runner.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["addon_runner"] = module
    spec.loader.exec_module(module)
    return module


def _mocap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MOCAP), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("addon") / "mocap_blender.zip"
    done = subprocess.run(
        [sys.executable, "-m", "mocap", "blender-addon", "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _blender(
    mode: str, addon_zip: Path, source: Path, tmp: Path, route: str = "blend", bone_map: str = "",
    python: str = sys.executable,
) -> tuple[dict, dict]:  # fmt: skip
    """Run the child in ``mode``; ``route="fbx"`` makes the add-on import FBX, as it does on
    Blender 4.2-4.4, which cannot read the .blend files bpy 5 writes; ``bone_map``: a saved map for
    the retarget; ``python``: the interpreter whose bpy runs it (Blender 4: :data:`BPY4`)."""
    out = tmp / mode
    out.mkdir()
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp / f"user_{mode}"))
    env.pop("MOCAP_BLENDER_IMPORT", None)
    env["MOCAP_TEST_BONE_MAP"] = bone_map
    if route == "fbx":
        env["MOCAP_BLENDER_IMPORT"] = "fbx"
    done = subprocess.run(
        [python, str(CHILD), mode, str(addon_zip), str(MOCAP), str(source), str(out)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    bones = {}
    if (out / "bones.npz").is_file():
        with np.load(out / "bones.npz") as z:
            bones = {k: z[k] for k in z.files}
    return result, bones


@pytest.fixture(scope="module")
def ran(addon_zip, tmp_path_factory) -> tuple[dict, dict]:
    return _blender("run", addon_zip, VIDEO, tmp_path_factory.mktemp("run"))


def _result_dir(result: dict) -> Path:
    return Path(result["result"].rsplit("(", 1)[1].rstrip(")"))


def test_zip_is_an_extension(addon_zip: Path) -> None:
    with zipfile.ZipFile(addon_zip) as zf:
        names = set(zf.namelist())
        manifest = zf.read("blender_manifest.toml").decode()
    assert {"blender_manifest.toml", "__init__.py", "runner.py", "operators.py"} <= names
    assert 'id = "mocap_blender"' in manifest and 'blender_version_min = "4.2.0"' in manifest
    sources = "".join(
        zipfile.ZipFile(addon_zip).read(n).decode() for n in names if n.endswith(".py")
    )
    assert (
        "import torch" not in sources
        and "from mocap" not in sources
        and "import mocap" not in sources
    )
    bad = _mocap("blender-addon", "-o", str(addon_zip.with_suffix(".tar")))
    assert bad.returncode == 1 and bad.stderr.strip().startswith("mocap: error:")


def test_runner_parses_progress_and_errors(tmp_path: Path) -> None:
    runner = _load_runner()
    script = (
        "import sys, time\n"
        "print('mocap: model: lite', flush=True)\n"
        "sys.stderr.write('\\rFetching 3 files:  67%|##  | 2/3 [00:01<00:00, 1.5it/s]')\n"
        "for i in range(1, 5):\n"
        "    sys.stderr.write(f'\\rclip: {i*25}%|###| {i}/8 [00:01<00:00, 3.1frame/s]'); sys.stderr.flush(); time.sleep(0.05)\n"
        "print('mocap: error: no person found in clip.mp4', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    job = runner.MocapJob([[sys.executable, "-c", script]])
    seen = []
    while (code := job.poll()) is None:
        seen.append(job.progress.fraction)
    assert code == 1
    # 4/8 frames = 5 % + half of the 75 % the frames make of a run; the download bar is no progress
    assert max(seen + [job.progress.fraction]) == pytest.approx(0.05 + 0.75 / 2)
    assert runner.error_line(job.output) == "no person found in clip.mp4"
    assert (
        runner.error_line("Traceback (most recent call last):\n  x\nValueError: bad")
        == "ValueError: bad"
    )
    cmd = runner.run_command("mocap", "v.mp4", "out", "lite", 1.0, 3.0, 2.0, "off")
    assert cmd[:3] == ["mocap", "run", "v.mp4"] and cmd[-4:-2] == ["--start", "1"]
    assert "--foot-lock" in cmd and cmd[cmd.index("--foot-lock") + 1] == "off"


def test_runner_on_a_pipe_never_blocks_a_talkative_child(tmp_path: Path) -> None:
    """Without a pty (Windows), a thread drains the pipe: a child that writes far more than a
    pipe holds still finishes, and its stage lines show while it runs."""
    runner = _load_runner()
    script = (
        "import sys, time\n"
        "print('mocap: model: lite', flush=True)\n"
        "sys.stdout.write('warning: chatty\\n' * 40000); sys.stdout.flush()\n"  # ~640 KB
        "time.sleep(1.0)\n"
        "print('mocap: outputs in out/', flush=True)\n"
    )
    job = runner.MocapJob([[sys.executable, "-c", script]], use_pty=False)
    started, seen = time.monotonic(), []
    while (code := job.poll()) is None:
        assert time.monotonic() - started < 60, "the child blocked on its pipe"
        seen.append(job.progress.label)
        time.sleep(0.02)
    assert code == 0
    assert "loading the model" in seen  # read while the child ran, not only at its end
    assert job.output.count("warning: chatty") == 40000 and "outputs in out/" in job.output
    assert job.progress.fraction == 1.0


def test_find_mocap_wants_an_executable(tmp_path: Path) -> None:
    runner = _load_runner()
    script = tmp_path / "mocap"
    script.write_text("#!/bin/sh\n")
    assert runner.find_mocap(str(script)) is None  # a file, not executable: not mocap
    script.chmod(0o755)
    assert runner.find_mocap(str(script)) == str(script)


@needs_bpy
@needs_clip
def test_run_gives_an_action_per_person_and_the_camera(ran) -> None:
    result, bones = ran
    assert result["operator"] == ["FINISHED"] and result["error"] == ""
    run = json.loads((_result_dir(result) / "run.json").read_text())
    people = [f"person_{t['id']}" for t in run["tracks"]] if "id" in run["tracks"][0] else None
    arms = result["armatures"]
    assert len(arms) >= 1 and (people is None or set(arms) <= set(people))
    for name, arm in arms.items():
        assert arm["action"] == f"{VIDEO.stem}_{name}"
        assert arm["frames"] == [0, run["video"]["frames"] - 1]  # 5 frames
        assert bones[name].shape == (5, 24, 3) and np.isfinite(bones[name]).all()
    assert result["scene"]["fps"] == pytest.approx(run["video"]["fps"])
    cam, (w, h) = result["camera"], run["video"]["image_size"]
    assert cam["lens"] == pytest.approx(run["video"]["focal_length"] * 36.0 / max(w, h), rel=1e-5)
    assert cam["sensor"] == 36.0 and cam["resolution"] == [w, h]
    assert cam["backgrounds"] == [str(VIDEO.resolve())]


@needs_bpy
@needs_clip
def test_import_motion_npz_reproduces_the_joints(ran, addon_zip, tmp_path: Path) -> None:
    motion = _result_dir(ran[0]) / "motion.npz"
    result, bones = _blender("npz", addon_zip, motion, tmp_path)
    assert result["operator"] == ["FINISHED"] and set(result["armatures"]) == set(
        ran[0]["armatures"]
    )
    ref = tmp_path / "ref"
    done = _mocap("export", str(motion), "-o", str(ref), "--formats", "npz")  # numpy FK, no Blender
    assert done.returncode == 0, done.stderr
    for name, arm in result["armatures"].items():
        with np.load(ref / f"{name}.npz") as z:
            names, joints, start = (
                list(z["joint_names"]),
                z["joint_positions"],
                int(z["frame_start"]),
            )
        order = [arm["bones"].index(n) for n in names]
        got = bones[name][:, order]  # frames action[0].. = video frames (scene starts at 0)
        want = joints[arm["frames"][0] - start : arm["frames"][1] - start + 1] @ YUP_TO_ZUP.T
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-3  # within 1 mm


@needs_bpy
@needs_clip
def test_import_bvh_of_an_earlier_run(ran, addon_zip, tmp_path: Path) -> None:
    motion = _result_dir(ran[0]) / "motion.npz"
    done = _mocap("export", str(motion), "-o", str(tmp_path / "anim"), "--formats", "bvh")
    assert done.returncode == 0, done.stderr
    bvh = sorted((tmp_path / "anim").glob("person_*.bvh"))[0]
    result, bones = _blender("bvh", addon_zip, bvh, tmp_path)
    assert result["operator"] == ["FINISHED"]
    ((name, arm),) = result["armatures"].items()
    assert arm["action"] == f"anim_{bvh.stem}" and arm["frames"][1] - arm["frames"][0] == 4
    assert result["scene"]["fps"] == pytest.approx(30.0) and np.isfinite(bones[name]).all()


@needs_bpy
@needs_clip
def test_blender_4_route_imports_the_same_scene_from_fbx(ran, addon_zip, tmp_path: Path) -> None:
    """Where Blender cannot read mocap's .blend (4.x), Run asks for FBX and imports that: the
    same armatures, actions, frames and joints, the same camera with the footage behind it."""
    _same_scene_as_the_blend_route(ran, *_blender("run", addon_zip, VIDEO, tmp_path, route="fbx"))


@needs_bpy
@needs_clip
@each_bpy4
def test_on_blender_4_run_gives_the_same_scene(ran, addon_zip, tmp_path: Path, bpy4: str) -> None:
    """In a real Blender 4 bpy (no MOCAP_BLENDER_IMPORT: the add-on picks the route itself):
    4.2-4.4 cannot read bpy 5's .blend files and import FBX, 4.5 LTS reads the .blend."""
    result, bones = _blender("run", addon_zip, VIDEO, tmp_path, python=bpy4)
    assert result["blender"][0] == 4
    route = "people.blend" if result["blender"][:2] >= [4, 5] else "people.fbx"
    _same_scene_as_the_blend_route(ran, result, bones, route)


@needs_bpy
@needs_clip
@each_bpy4
def test_on_blender_4_retarget_and_cancel(ran, addon_zip, tmp_path: Path, bpy4: str) -> None:
    """Blender 4: the retarget onto its own Rigify rig matches `mocap retarget` (Action.fcurves
    before 4.4's slots), and Cancel mid-run leaves the scene as it was."""
    _matches_mocap_retarget(ran, addon_zip, tmp_path, "blend", python=bpy4)
    result, _ = _blender("cancel", addon_zip, VIDEO, tmp_path, python=bpy4)
    assert result["blender"][0] == 4 and result["status"] == "CANCELLED"
    assert result["returncode"] in (143, -15, -9) and not result["owned_exists"]
    assert result["after"] == result["before"] and not result["running"]


def _same_scene_as_the_blend_route(
    ran, result: dict, bones: dict, imported: str = "people.fbx"
) -> None:
    assert result["operator"] == ["FINISHED"], result["error"]
    assert [p.name for p in _result_dir(result).glob("people.*")] == [imported]
    blend, blend_bones = ran
    assert set(result["armatures"]) == set(blend["armatures"])
    for name, arm in result["armatures"].items():
        want = blend["armatures"][name]
        assert arm["action"] == want["action"] and arm["frames"] == want["frames"]
        order = [arm["bones"].index(n) for n in want["bones"]]
        assert np.abs(bones[name][:, order] - blend_bones[name]).max() < 1e-3  # within 1 mm
    cam, want_cam = result["camera"], blend["camera"]
    assert cam["lens"] == pytest.approx(want_cam["lens"], rel=1e-5)
    assert [cam[k] for k in ("sensor", "resolution", "backgrounds")] == [
        want_cam[k] for k in ("sensor", "resolution", "backgrounds")
    ]
    scene, want_scene = result["scene"], blend["scene"]
    assert [scene[k] for k in ("frames", "fps", "camera", "actions")] == [
        want_scene[k] for k in ("frames", "fps", "camera", "actions")
    ]  # the same action names (the importer's "camera|people" renamed, no lens keys)


def _matches_mocap_retarget(
    ran, addon_zip, tmp_path: Path, route: str, *map_args: str, python: str = sys.executable
) -> tuple[np.ndarray, list[str]]:
    """The add-on's retarget onto a Rigify rig against `mocap retarget` of the same motion (with
    ``--map FILE`` when given); returns the add-on's DEF-bone heads (frames, bones, 3), names."""
    from exporters.blender import read_with_blender

    motion = _result_dir(ran[0]) / "motion.npz"
    bone_map = map_args[1] if map_args else ""
    result, bones = _blender("rigify", addon_zip, motion, tmp_path, route, bone_map, python)
    assert result["operator"] == ["FINISHED"], result["error"]
    rig = result["armatures"][result["rig"]]
    people = sorted(ran[0]["armatures"])
    assert rig["action"] == f"{VIDEO.stem}_{people[0]}"
    # nothing else comes in: no action of the people's own armatures, which are not kept
    assert set(result["scene"]["actions"]) == {f"{VIDEO.stem}_{p}" for p in people} | {
        "camera_motion"
    }
    ref = tmp_path / "ref.blend"
    rig_file = tmp_path / "rigify" / "rig.blend"
    done = _mocap("retarget", str(motion), "--rig", str(rig_file), "-o", str(ref), *map_args)
    assert done.returncode == 0, done.stderr
    ref_file = ref if len(people) == 1 else ref.with_name(f"ref_{people[0]}.blend")
    dump = read_with_blender(ref_file, mesh_samples=1)
    arm = next(a for a in dump.armatures if a.name == result["rig"])
    frames = np.round(arm.frames).astype(int)
    assert [frames[0], frames[-1]] == rig["frames"]
    deform = [n for n in arm.bone_names if n.startswith("DEF-")]
    assert len(deform) > 20
    mine = bones[result["rig"]][:, [rig["bones"].index(n) for n in deform]]
    theirs = arm.joint_positions[:, [arm.bone_names.index(n) for n in deform]]
    moved = np.abs(theirs - theirs[:1]).max()
    assert moved > 0.01  # the rig really moves
    assert np.abs(mine - theirs).max() < 1e-4
    return mine, deform


@needs_bpy
@needs_clip
@pytest.mark.parametrize("route", ["blend", "fbx"])
def test_retarget_onto_a_rigify_rig_matches_mocap_retarget(
    ran, addon_zip, tmp_path: Path, route: str
) -> None:
    _matches_mocap_retarget(ran, addon_zip, tmp_path, route)


def _elbow_angles(heads: np.ndarray, names: list[str]) -> np.ndarray:
    """Per frame, the left elbow's bend in degrees from DEF-bone heads (frames, bones, 3)."""
    shoulder, elbow, hand = (
        heads[:, names.index(f"DEF-{n}.L")] for n in ("upper_arm", "forearm", "hand")
    )
    upper, lower = elbow - shoulder, hand - elbow
    cos = (
        np.sum(upper * lower, -1) / np.linalg.norm(upper, axis=-1) / np.linalg.norm(lower, axis=-1)
    )
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@needs_bpy
@needs_clip
def test_retarget_with_a_saved_bone_map(ran, addon_zip, tmp_path: Path) -> None:
    """A saved map that leaves the left arm unmapped: the add-on passes it to `mocap retarget`
    (same result as the command with ``--map``), and the left elbow keeps its rest bend where the
    preset poses it."""
    from exporters.blender import read_with_blender

    preset = json.loads((REPO / "exporters" / "bonemaps" / "rigify.json").read_text())
    arm = ("left_shoulder", "left_elbow", "left_wrist", "left_hand")
    saved = {"bones": {j: (None if j in arm else names) for j, names in preset["bones"].items()}}
    path = tmp_path / "no_left_arm.json"
    path.write_text(json.dumps(saved))
    mine, deform = _matches_mocap_retarget(ran, addon_zip, tmp_path, "blend", "--map", str(path))
    motion, ref = _result_dir(ran[0]) / "motion.npz", tmp_path / "preset.blend"
    done = _mocap("retarget", str(motion), "--rig", str(tmp_path / "rigify" / "rig.blend"),
                  "-o", str(ref), "--person", sorted(ran[0]["armatures"])[0].rsplit("_", 1)[1])  # fmt: skip
    assert done.returncode == 0, done.stderr
    posed = next(
        a for a in read_with_blender(ref, mesh_samples=1).armatures if "DEF-hand.L" in a.bone_names
    )
    at_rest, preset_bend = (
        _elbow_angles(mine, deform),
        _elbow_angles(posed.joint_positions, posed.bone_names),
    )
    assert np.ptp(at_rest) < 0.01, at_rest  # unmapped: the rest bend on every frame
    assert np.abs(preset_bend - at_rest).max() > 5.0, (preset_bend, at_rest)  # the preset poses it


@needs_bpy
@needs_clip
def test_cancel_mid_run_leaves_the_scene_unchanged(addon_zip, tmp_path: Path) -> None:
    result, _ = _blender("cancel", addon_zip, VIDEO, tmp_path)
    assert result["status"] == "CANCELLED" and not result["running"]
    assert result["returncode"] in (143, -15, -9)  # the child was stopped, not left running
    assert not result["owned_exists"]  # its output folder is gone
    assert result["after"] == result["before"]


@needs_bpy
@needs_clip
def test_child_errors_are_one_readable_line(addon_zip, tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    result, _ = _blender("error", addon_zip, bad, tmp_path)
    assert result["operator"] == ["CANCELLED"] and result["armatures"] == {}
    error = result["error"]
    assert error and "\n" not in error and "Traceback" not in error and "notes.mp4" in error
    assert result["report"].strip() == f"Error: mocap: {error}"  # what Blender shows: that one line
    assert result["scene"]["objects"] == []


@needs_bpy
@needs_clip
def test_a_second_import_in_one_file_keeps_clip_and_person_names(ran, addon_zip, tmp_path):
    motion = _result_dir(ran[0]) / "motion.npz"
    result, _ = _blender("twice", addon_zip, motion, tmp_path)
    assert result["operator"] == ["FINISHED"], result["error"]
    people = sorted(ran[0]["armatures"])
    assert {f"{VIDEO.stem}_{p}" for p in people} <= set(result["first_actions"])
    second = {f"again_{p}" for p in people}  # not again_person_1.001 after Blender's renaming
    assert second <= set(result["scene"]["actions"]), result["scene"]["actions"]
    assert all(name in result["result"] for name in second)


@needs_bpy
@needs_clip
def test_a_failed_import_leaves_the_scene_and_the_rig_as_they_were(ran, addon_zip, tmp_path):
    motion = _result_dir(ran[0]) / "motion.npz"
    result, _ = _blender("rollback", addon_zip, motion, tmp_path)
    assert result["operator"] == ["CANCELLED"]
    assert "injected failure" in result["error"] and "\n" not in result["error"]
    assert "Traceback" not in result.get("report", "")
    assert result["after"] == result["before"]  # objects, actions, collections, camera, fps...
    assert result["rig_after"] == result["rig_before"]  # parents, muted constraints, action
    assert result["runs_left"] == []  # the job's folder is gone


@needs_bpy
def test_a_broken_bvh_or_a_mocap_that_is_no_program_is_one_line(addon_zip, tmp_path):
    bvh = tmp_path / "broken.bvh"
    bvh.write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0.0 0.0\n")
    result, _ = _blender("badbvh", addon_zip, bvh, tmp_path)
    assert result["operator"] == ["CANCELLED"], result
    report = result["report"].strip().splitlines()
    assert len(report) == 1 and "mocap: cannot read broken.bvh" in report[0], result["report"]
    assert result["after"] == result["before"]
    notexe = tmp_path / "mocap.txt"
    notexe.write_text("not a program\n")
    result, _ = _blender("noexec", addon_zip, notexe, tmp_path)
    report = result["report"].strip().splitlines()
    assert result["operator"] == ["CANCELLED"] and len(report) == 1, result
    assert "the mocap command was not found at" in report[0] and str(notexe) in report[0]


@needs_bpy
@needs_clip
def test_loading_a_file_mid_run_stops_the_child_and_frees_the_add_on(addon_zip, tmp_path):
    result, _ = _blender("reload", addon_zip, VIDEO, tmp_path)
    assert result["returncode"] is not None  # the child is stopped, not left running unseen
    assert not result["owned_exists"]  # its half-written folder removed
    assert not result["running"] and not result["state_running"]  # and Run works again
