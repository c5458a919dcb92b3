"""export_motion and `mocap export`: every format, failure isolation, no half-written files."""

import argparse
from pathlib import Path

import numpy as np
import pytest
from test_smoothing import add_noise, real_pose_track

import exporters
from exporters import export_motion, parse_formats
from exporters.bvh import read_bvh
from mocap import export_cmd
from mocap.body.joints import SMPL_JOINT_NAMES
from mocap.errors import MocapError
from mocap.motion import Motion


def two_people(shared_data: Path, frames: int = 40) -> Motion:
    a = add_noise(real_pose_track(shared_data, frames, track_id=1, x=-0.8), seed=1)
    b = add_noise(
        real_pose_track(shared_data, frames, track_id=2, x=0.9, source="test_h36m.npz"), seed=2
    )
    b = b.replace(frames=b.frames + 3, times=b.times + 0.1)
    return Motion([a, b], 30.0, (1920, 1080), 1500.0, source="synthetic.mp4")


def no_partials(folder: Path) -> bool:
    return not any(p.name.startswith(".") or "partial" in p.name for p in folder.rglob("*"))


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    export_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def no_smpl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide any installed SMPL model: empty cache, no $MOCAP_SMPL."""
    monkeypatch.delenv("MOCAP_SMPL", raising=False)
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "empty_home"))


def test_native_formats_for_two_people(shared_data: Path, tmp_path: Path) -> None:
    motion = two_people(shared_data)
    report = export_motion(motion, tmp_path / "out", "npz,bvh", smoothing="offline")
    assert report.ok, report.summary()
    names = sorted(p.name for p in report.files)
    assert names == ["person_1.bvh", "person_1.npz", "person_2.bvh", "person_2.npz"]
    assert set(report.jitter) == {1, 2} and all(r.reduction > 5 for r in report.jitter.values())
    assert any("body shape not applied" in n for n in report.notes)
    for pid in (1, 2):
        with np.load(tmp_path / "out" / f"person_{pid}.npz") as z:
            joints, names_z = z["joint_positions"], tuple(str(n) for n in z["joint_names"])
            assert float(z["fps"]) == 30.0 and int(z["frame_start"]) == (0 if pid == 1 else 3)
        clip = read_bvh(tmp_path / "out" / f"person_{pid}.bvh")
        bvh = clip.world_positions()[:, [clip.names.index(n) for n in SMPL_JOINT_NAMES]]
        assert names_z == SMPL_JOINT_NAMES and joints.shape == (40, 24, 3)
        assert np.abs(bvh - joints).max() < 1e-5  # both formats carry the same numbers
    assert no_partials(tmp_path / "out")


def test_a_failing_person_or_format_does_not_stop_the_others(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = exporters.write_bvh

    def flaky(rig, path, units="m"):  # type: ignore[no-untyped-def]
        if rig.name == "person_2":
            raise OSError("disk full")
        return real_write(rig, path, units)

    def broken_blender(scenes, timeout=None, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("Blender crashed")

    monkeypatch.setattr(exporters, "write_bvh", flaky)
    monkeypatch.setattr("exporters.blender.write_with_blender", broken_blender)
    report = export_motion(two_people(shared_data, 12), tmp_path, ["bvh", "npz", "fbx"])
    assert not report.ok
    failed = sorted((f.person, f.format) for f in report.failures)
    assert failed == [("person_1", "fbx"), ("person_2", "bvh"), ("person_2", "fbx")]
    assert "Blender crashed" in report.summary() and "disk full" in report.summary()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "person_1.bvh",
        "person_1.npz",
        "person_2.npz",
    ]


def test_blender_formats_combined_scene(shared_data: Path, tmp_path: Path) -> None:
    """Default formats, all people in one FBX scene: re-imported joints match the rigs within 1 mm."""
    from exporters.blender import YUP_TO_ZUP, read_with_blender
    from mocap.world import motion_to_rigs

    motion = two_people(shared_data, 10)
    # foot_lock off: the files must hold the rigs exactly as the world builds them
    report = export_motion(motion, tmp_path, "bvh,fbx", per_person=False, foot_lock="off")
    assert report.ok, report.summary()
    assert sorted(p.name for p in report.files) == ["people.fbx", "person_1.bvh", "person_2.bvh"]
    scene = read_with_blender(tmp_path / "people.fbx", mesh_samples=0)
    assert scene.fps == pytest.approx(30.0) and len(scene.armatures) == 2
    for rig in motion_to_rigs(motion):
        arm = next(a for a in scene.armatures if a.name.startswith(rig.name))
        order = [arm.bone_names.index(n) for n in SMPL_JOINT_NAMES]
        index = (
            np.round(arm.frames).astype(int) - 1 - rig.frame_start
        )  # scene frame 1 = video frame 0
        keep = (index >= 0) & (index < rig.num_frames)
        assert keep.sum() == rig.num_frames
        expected = rig.world_positions()[index[keep]] @ YUP_TO_ZUP.T
        assert np.abs(arm.joint_positions[keep][:, order] - expected).max() < 1e-3
    assert no_partials(tmp_path)


def test_bad_requests_are_user_errors(shared_data: Path, tmp_path: Path) -> None:
    assert parse_formats(" BVH, .fbx,bvh ") == ["bvh", "fbx"]
    with pytest.raises(MocapError, match="unknown export format 'mp4'"):
        parse_formats("bvh,mp4")
    motion = two_people(shared_data, 5)
    with pytest.raises(MocapError, match="units"):
        export_motion(motion, tmp_path, "bvh", units="mm")
    with pytest.raises(MocapError, match="smoothing"):
        export_motion(motion, tmp_path, "bvh", smoothing="kalman")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MocapError, match="cannot create output folder"):
        export_motion(motion, blocker / "out", "bvh")


def test_mocap_export_command_without_smpl(
    shared_data: Path, tmp_path: Path, no_smpl: None, capsys
) -> None:  # type: ignore[no-untyped-def]
    path = two_people(shared_data, 30).save(tmp_path / "motion.npz")
    args = cli_args(str(path), "-o", str(tmp_path / "anim"), "--formats", "bvh,npz", "--units", "cm",
                    "--smooth", "offline", "--smooth-strength", "2")  # fmt: skip
    assert export_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "jitter" in out and "body shape not applied" in out and "camera at (" in out
    clip = read_bvh(tmp_path / "anim" / "person_1.bvh")
    assert clip.frame_time == pytest.approx(1 / 30) and len(clip.motion) == 30
    hip = clip.joints[clip.names.index("left_hip")].offset
    assert 5.0 < np.linalg.norm(hip) < 20.0  # centimetres
    # default output folder: next to motion.npz; default formats bvh,fbx (fbx through Blender)
    assert cli_args(str(path)).formats == "bvh,fbx" and cli_args(str(path)).per_person
    assert not cli_args(str(path), "--combined").per_person


def test_mocap_export_command_with_smpl(shared_data: Path, smpl_dir: Path, tmp_path: Path) -> None:
    from mocap.body.smpl import load_body_model

    motion = two_people(shared_data, 8)
    path = motion.save(tmp_path / "motion.npz")
    smpl = smpl_dir / "SMPL_NEUTRAL.pkl"
    assert export_cmd.run(cli_args(str(path), "--formats", "bvh,npz", "--smpl", str(smpl))) == 0
    clip = read_bvh(tmp_path / "person_2.bvh")
    body = load_body_model(str(smpl), required=True)
    assert body is not None
    rest = body.rest_joints(np.median(motion.tracks[1].betas, axis=0))
    knee, hip = SMPL_JOINT_NAMES.index("right_knee"), SMPL_JOINT_NAMES.index("right_hip")
    assert np.allclose(
        clip.joints[clip.names.index("right_knee")].offset, rest[knee] - rest[hip], atol=1e-5
    )
    # the npz's world-frame SMPL parameters reproduce its joints through SMPL itself (smplx)
    import smplx
    import torch

    with np.load(tmp_path / "person_2.npz") as z:
        f, n = torch.float32, len(z["transl"])
        out = smplx.create(str(smpl_dir), model_type="smpl")(
            global_orient=torch.tensor(z["global_orient"], dtype=f)[:, None],
            body_pose=torch.tensor(z["body_pose"], dtype=f),
            betas=torch.tensor(z["betas"], dtype=f).expand(n, -1),
            transl=torch.tensor(z["transl"], dtype=f),
            pose2rot=False,
        )
        joints = out.joints[:, :24].detach().numpy()
        assert np.abs(joints - z["joint_positions"]).max() < 1e-3
    with pytest.raises(MocapError):
        export_cmd.run(
            cli_args(str(path), "--formats", "bvh", "--smpl", str(tmp_path / "nope.pkl"))
        )


def test_mocap_cli_dispatches_export(
    shared_data: Path, tmp_path: Path, no_smpl: None, capsys
) -> None:  # type: ignore[no-untyped-def]
    from mocap.cli import main

    path = two_people(shared_data, 6).save(tmp_path / "motion.npz")
    assert main(["export", str(path), "--formats", "bvh"]) == 0
    assert (tmp_path / "person_1.bvh").is_file() and (tmp_path / "person_2.bvh").is_file()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing.npz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mocap: error: motion file not found")
    assert main(["export", str(path), "--formats", "bvh,mov"]) == 1
    assert "unknown export format 'mov'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [None, "--no-correctives"])
def test_mocap_export_pose_correctives_flag(
    shared_data: Path, smpl_dir: Path, tmp_path: Path, flag: str | None
) -> None:
    from exporters.blender import read_with_blender

    path = two_people(shared_data, 4).save(tmp_path / "motion.npz")
    argv = [str(path), "--formats", "blend", "--smpl", str(smpl_dir / "SMPL_NEUTRAL.pkl")]
    assert export_cmd.run(cli_args(*argv, *([flag] if flag else []))) == 0
    (mesh,) = read_with_blender(tmp_path / "person_1.blend", mesh_samples=1).meshes
    keys = [k for k in mesh.shape_keys if k.startswith("pose_")]
    assert len(keys) == (0 if flag else 207)


def test_rig_npz_is_written_in_blocks_and_reads_back_exactly(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mocap.world import build_world

    rig = build_world(two_people(shared_data)).rigs[0]
    reference = rig.world_positions()
    assert np.array_equal(exporters.joint_positions(rig, chunk=7), reference)
    save = exporters._savez_blocks
    monkeypatch.setattr(exporters, "_savez_blocks", lambda fh, a: save(fh, a, block_bytes=1000))
    betas = np.arange(10.0)
    data = np.load(exporters.write_rig_npz(rig, tmp_path / "p.npz", betas))
    assert data["local_rotations"].dtype == np.float64
    assert np.array_equal(data["local_rotations"], rig.local_rotations)
    assert np.array_equal(data["body_pose"], rig.local_rotations[:, 1:])
    assert np.array_equal(data["joint_positions"], reference)
    assert np.array_equal(data["betas"], betas) and float(data["fps"]) == rig.fps
    assert list(data["joint_names"]) == list(rig.joint_names)
