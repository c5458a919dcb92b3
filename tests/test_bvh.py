"""Native BVH: parsed back by our reader and by Blender's importer; joints match SMPL FK within 1 mm."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from test_smoothing import real_pose_track

from exporters.bvh import read_bvh, write_bvh
from exporters.rig import RigAnimation
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.errors import MocapError
from mocap.motion import Motion
from mocap.world import build_world

# Imports a BVH into a fresh Blender and dumps every frame's bone heads (world, Z-up) to npz.
BLENDER_READ_BVH = r"""
import sys, json
import numpy as np
import bpy

path, out = sys.argv[1], sys.argv[2]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=path, axis_forward="-Z", axis_up="Y", global_scale=float(sys.argv[3]),
                        rotate_mode="NATIVE", update_scene_fps=True, update_scene_duration=True)
scene = bpy.context.scene
arm = next(o for o in scene.objects if o.type == "ARMATURE")
start, end = (int(f) for f in arm.animation_data.action.frame_range)
pos = []
for f in range(start, end + 1):
    scene.frame_set(f)
    pos.append([list(arm.matrix_world @ pb.head) for pb in arm.pose.bones])
np.savez(out, pos=np.array(pos))
print(json.dumps({"names": [b.name for b in arm.pose.bones], "frames": end - start + 1,
                  "fps": scene.render.fps / scene.render.fps_base,
                  "parents": [b.parent.name if b.parent else "" for b in arm.data.bones]}))
"""

YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def blender_import(path: Path, tmp: Path, scale: float = 1.0) -> tuple[dict, np.ndarray]:
    """Blender's BVH importer in a child process -> (info, (T,J,3) joint positions, Y-up, metres)."""
    out = tmp / f"{path.stem}_blender.npz"
    proc = subprocess.run(
        [sys.executable, "-c", BLENDER_READ_BVH, str(path), str(out), str(scale)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    order = [info["names"].index(n) for n in SMPL_JOINT_NAMES]
    return info, np.load(out)["pos"][:, order] @ YUP_TO_ZUP  # Z-up back to Y-up


def reader_positions(path: Path) -> np.ndarray:
    clip = read_bvh(path)
    return clip.world_positions()[:, [clip.names.index(n) for n in SMPL_JOINT_NAMES]]


def smpl_reference_joints(smpl_dir: Path, track) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(T,24,3) joints by SMPL's own forward kinematics (smplx), camera frame."""
    import smplx

    model = smplx.create(str(smpl_dir), model_type="smpl")
    f = torch.float32
    out = model(
        global_orient=torch.tensor(track.global_orient, dtype=f)[:, None],
        body_pose=torch.tensor(track.body_pose, dtype=f),
        betas=torch.tensor(track.betas, dtype=f),
        transl=torch.tensor(track.transl, dtype=f),
        pose2rot=False,
    )
    return out.joints[:, :24].detach().numpy().astype(np.float64)


@pytest.mark.parametrize("source", ["test_mosh.npz", "test_h36m.npz"])
def test_bvh_joints_match_smpl_fk_in_our_reader_and_blender(
    shared_data: Path, smpl_dir: Path, tmp_path: Path, source: str
) -> None:
    from mocap.body.smpl import load_body_model

    body = load_body_model(str(smpl_dir / "SMPL_NEUTRAL.pkl"), required=True)
    track = real_pose_track(shared_data, 45, fps=25.0, source=source)
    result = build_world(Motion([track], 25.0, (1920, 1080), 1500.0), body=body)
    rig = result.rigs[0]
    path = write_bvh(rig, tmp_path / "person.bvh")
    expected = (
        smpl_reference_joints(smpl_dir, track) @ result.world.rotation.T - result.world.offset
    )

    ours = reader_positions(path)
    assert ours.shape == (45, 24, 3)
    assert np.abs(ours - expected).max() < 1e-3

    info, theirs = blender_import(path, tmp_path)
    assert info["frames"] == 45 and info["fps"] == pytest.approx(25.0, rel=1e-5)
    assert sorted(info["names"]) == sorted(SMPL_JOINT_NAMES)
    assert np.abs(theirs - expected).max() < 1e-3
    assert np.ptp(theirs[:, 0, 2]) > 0.2  # root motion survives the import


def test_builtin_skeleton_bvh_layout_units_and_roundtrip(shared_data: Path, tmp_path: Path) -> None:
    track = real_pose_track(shared_data, 30)
    rig = build_world(Motion([track], 30.0, (1920, 1080), 1500.0)).rigs[0]
    m = read_bvh(write_bvh(rig, tmp_path / "m.bvh"))
    # hierarchy: SMPL names and parents, root with 6 channels, ZXY rotations
    parents = {j.name: (m.joints[j.parent].name if j.parent >= 0 else None) for j in m.joints}
    for name, p in zip(SMPL_JOINT_NAMES, SMPL_PARENTS, strict=True):
        assert parents[name] == (SMPL_JOINT_NAMES[p] if p >= 0 else None)
    assert m.joints[0].name == "pelvis" and len(m.joints[0].channels) == 6
    assert all(j.channels == ("Zrotation", "Xrotation", "Yrotation") for j in m.joints[1:])
    assert m.frame_time == pytest.approx(1 / 30.0) and m.motion.shape == (30, 6 + 23 * 3)
    assert np.abs(reader_positions(tmp_path / "m.bvh") - rig.world_positions()).max() < 1e-5
    # centimetres: same motion, 100x the numbers
    cm = read_bvh(write_bvh(rig, tmp_path / "cm.bvh", units="cm"))
    knee = SMPL_JOINT_NAMES.index("left_knee")
    assert np.allclose(
        cm.joints[cm.names.index("left_knee")].offset, 100 * rig.rest_offsets[knee], atol=1e-4
    )
    assert np.abs(reader_positions(tmp_path / "cm.bvh") / 100 - rig.world_positions()).max() < 1e-5
    info, theirs = blender_import(tmp_path / "cm.bvh", tmp_path, scale=0.01)
    assert np.abs(theirs - rig.world_positions()).max() < 1e-3


def spinning_rig(frames: int = 60) -> RigAnimation:
    """Root spins two full turns about Y while the spine pitches through +-100 degrees."""
    t = np.linspace(0.0, 1.0, frames)
    rot = np.tile(np.eye(3), (frames, 24, 1, 1))
    rot[:, 0] = Rotation.from_euler("y", 720.0 * t[:, None], degrees=True).as_matrix()
    rot[:, 3] = Rotation.from_euler(
        "x", 100.0 * np.sin(2 * np.pi * t)[:, None], degrees=True
    ).as_matrix()
    rot[:, 16] = Rotation.from_rotvec(np.outer(3.0 * t, [0.3, 0.5, 0.8])).as_matrix()
    from mocap.body.skeleton import builtin_skeleton

    skel = builtin_skeleton()
    return RigAnimation(
        "spin", SMPL_JOINT_NAMES, SMPL_PARENTS, skel.offsets(), np.zeros((frames, 3)), rot, 30.0
    )


def test_euler_channels_are_continuous(tmp_path: Path) -> None:
    rig = spinning_rig()
    m = read_bvh(write_bvh(rig, tmp_path / "spin.bvh"))
    rot_channels = np.concatenate([m.motion[:, 3:6], m.motion[:, 6:]], axis=1)
    assert np.abs(np.diff(rot_channels, axis=0)).max() < 40.0  # no +-360 / flip jumps
    assert np.ptp(m.motion[:, 4]) < 1.0  # the spin is on the Y channel, not split
    assert m.motion[-1, 5] - m.motion[0, 5] == pytest.approx(720.0, abs=1e-3)
    assert np.abs(reader_positions(tmp_path / "spin.bvh") - rig.world_positions()).max() < 1e-5


def test_write_is_atomic(tmp_path: Path) -> None:
    rig = spinning_rig(5)
    with pytest.raises(MocapError, match="cannot write"):
        write_bvh(rig, tmp_path / "missing" / "a.bvh")
    write_bvh(rig, tmp_path / "a.bvh")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bvh"]
    with pytest.raises(MocapError, match="units"):
        write_bvh(rig, tmp_path / "b.bvh", units="inch")
    assert not (tmp_path / "b.bvh").exists()


def test_long_clips_are_converted_in_blocks_with_identical_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporters.bvh as bvh

    rig = spinning_rig(50)
    whole = bvh.bvh_text(rig)
    monkeypatch.setattr(bvh, "FRAME_CHUNK", 7)  # 50 frames in 8 blocks, as 10,000 in 1,024s
    assert bvh.bvh_text(rig) == whole
    assert write_bvh(rig, tmp_path / "a.bvh").read_text() == whole  # streamed lines, same bytes
