"""FBX / .blend / glTF through Blender: written by a child process, re-imported into a fresh Blender.

Animations are real SMPL poses (MoSh fits and Human3.6M ground truth from ../shared/data/spin_npz)
slerped into short clips with root motion at 29.97 fps. person_1 is the synthetic SMPL-format body
with its MoSh betas and skinned mesh with pose-corrective blend shapes, starting at video frame 2;
person_2 the built-in skeleton (no SMPL), starting at video frame 5. Joint world positions read
back from every file must match SMPL forward kinematics (smplx, or the built-in skeleton's FK) on
every frame within 1 mm, and the skinned mesh smplx's full SMPL mesh (pose blend shapes included;
they move it by up to 2 cm on this clip) within 1 mm on sampled frames; with the correctives
turned off, smplx's linear blend skinning.
"""

import json
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation, Slerp

from exporters import blender
from exporters.blender import (
    YUP_TO_ZUP,
    ArmatureDump,
    MeshDump,
    read_with_blender,
    write_with_blender,
)
from exporters.rig import (
    RigAnimation,
    RigMesh,
    pose_features,
    rotate_pose_dirs,
    smpl_pose_dirs,
)
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.body.skeleton import builtin_skeleton, forward_kinematics
from mocap.body.smpl import load_body_model
from mocap.errors import MocapError

FPS = 29.97  # a non-integer rate: Blender needs fps_base, and its FBX/glTF code gets it wrong
MM = 1e-3


@dataclass
class Person:
    rig: RigAnimation
    joints: np.ndarray  # (T,24,3) reference joint positions, Y-up world
    vertices: np.ndarray | None  # (T,6890,3) reference SMPL mesh, Y-up world
    lbs_vertices: np.ndarray | None  # (T,6890,3) the same without pose blend shapes


def pose_clip(npz: Path, frames: int) -> np.ndarray:
    """(frames,24,3,3) local rotations slerped through the file's SMPL poses (axis-angle, 72)."""
    poses = np.load(npz)["pose"].reshape(-1, 24, 3)
    keys = np.linspace(0, frames - 1, len(poses))
    out = np.zeros((frames, 24, 3, 3))
    for j in range(24):
        out[:, j] = Slerp(keys, Rotation.from_rotvec(poses[:, j]))(np.arange(frames)).as_matrix()
    return out


def walk(frames: int) -> np.ndarray:
    """(frames,3) translation: 1.5 m diagonally with a 3 cm vertical bob."""
    t = np.arange(frames) / frames
    return np.stack([1.2 * t, 0.03 * np.sin(6 * t), 0.9 * t - 0.5], 1)


def rig_from(name: str, rest: np.ndarray, rot: np.ndarray, transl: np.ndarray, start: int,
             mesh: RigMesh | None = None) -> RigAnimation:  # fmt: skip
    offsets = rest - np.where(np.array(SMPL_PARENTS)[:, None] >= 0, rest[list(SMPL_PARENTS)], 0)
    return RigAnimation(
        name, SMPL_JOINT_NAMES, SMPL_PARENTS, offsets, rest[0] + transl, rot, FPS, start, mesh
    )


@pytest.fixture(scope="module")
def people(shared_data: Path, smpl_dir: Path) -> dict[str, Person]:
    spin = shared_data / "spin_npz"
    # person_1: SMPL body with real betas; smplx gives the reference, then (posedirs off) LBS only.
    body = load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl", required=True, extra_regressors=False)
    assert body is not None
    betas = np.load(spin / "test_mosh.npz")["shape"][0]
    rot, transl = pose_clip(spin / "test_mosh.npz", 12), walk(12)
    dirs = smpl_pose_dirs(body)
    mesh = RigMesh(body.rest_vertices(betas), body.faces, body.lbs_weights, dirs)
    args = tuple(map(torch.as_tensor, (rot[:, 0], rot[:, 1:], betas[None], transl)))
    with torch.no_grad():
        out = body(*args)
        body.layer.posedirs.zero_()
        lbs = body(*args).vertices.double().numpy()
    one = rig_from("person_1", body.rest_joints(betas), rot, transl, 2, mesh)
    # person_2: built-in skeleton (no SMPL), Human3.6M poses, enters at video frame 5.
    rest = builtin_skeleton().rest_joints
    rot, transl = pose_clip(spin / "test_h36m.npz", 9), walk(9)
    two = rig_from("person_2", rest, rot, transl, 5)
    return {
        "person_1": Person(one, out.joints.double().numpy(), out.vertices.double().numpy(), lbs),
        "person_2": Person(two, forward_kinematics(rest, rot, transl), None, None),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, people: dict[str, Person]) -> Path:
    out = tmp_path_factory.mktemp("blender")
    one, both = [people["person_1"].rig], [people["person_1"].rig, people["person_2"].rig]
    scenes = {out / f"person_1.{ext}": one for ext in ("fbx", "blend", "glb")}
    scenes.update({out / f"people.{ext}": both for ext in ("fbx", "gltf")})
    errors = write_with_blender(scenes)
    assert errors == {p.resolve(): None for p in scenes}
    return out


def check_armature(arm: ArmatureDump, person: Person, keys: range, start: int) -> None:
    """Bone names, keys at file frames ``keys`` (the pose held outside the rig's own frames, its
    frame 0 at file frame ``start``), their times, and joint positions on every key within 1 mm."""
    rig = person.rig
    assert sorted(arm.bone_names) == sorted(SMPL_JOINT_NAMES)
    np.testing.assert_allclose(arm.times, np.array(keys) / rig.fps, atol=1e-5)
    order = [arm.bone_names.index(n) for n in SMPL_JOINT_NAMES]
    got = arm.joint_positions[:, order]
    fk = person.joints @ YUP_TO_ZUP.T
    want = fk[np.clip(np.array(keys) - start, 0, rig.num_frames - 1)]
    assert np.linalg.norm(fk[-1, 0] - fk[0, 0]) > 1.0  # root motion is there to be checked
    assert np.abs(got - want).max() < MM


def check_mesh(
    mesh: MeshDump, arm: ArmatureDump, person: Person, start: int, correctives: bool = True
) -> None:
    """Rest mesh, pose-corrective shape keys, and deformed vertices on the sampled frames
    within 1 mm of smplx's SMPL mesh (or its linear blend skinning without correctives)."""
    assert person.rig.mesh is not None and person.vertices is not None
    assert person.lbs_vertices is not None
    want_rest = person.rig.mesh.rest_vertices @ YUP_TO_ZUP.T
    dist, index = cKDTree(mesh.rest_vertices).query(want_rest)  # glTF may reorder vertices
    assert dist.max() < 1e-5 and len(np.unique(index)) == len(want_rest)
    names = [f"pose_{n}_{r}{c}" for n in SMPL_JOINT_NAMES[1:] for r in range(3) for c in range(3)]
    assert list(mesh.shape_keys) == (names if correctives else [])
    video = np.round(arm.times[np.searchsorted(arm.frames, mesh.frames)] * person.rig.fps)
    frames = np.clip(video.astype(int) - start, 0, person.rig.num_frames - 1)
    assert len(np.unique(frames)) == 3
    want = person.vertices if correctives else person.lbs_vertices
    other = person.lbs_vertices if correctives else person.vertices
    got = mesh.posed_vertices[:, index] @ YUP_TO_ZUP  # back to the rig's Y-up world
    assert np.abs(got - want[frames]).max() < MM
    assert np.abs(got - other[frames]).max() > 5 * MM  # the correctives matter on this clip


def glb_json(path: Path) -> tuple[dict, bytes]:
    """(JSON chunk, binary chunk) of a .glb file."""
    data = path.read_bytes()
    (json_len,) = struct.unpack_from("<I", data, 12)
    body = data[20 + json_len :]
    return json.loads(data[20 : 20 + json_len]), body[8:]


def glb_accessor(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """A float accessor of a .glb file (dense or sparse) as (count, components)."""
    acc = gltf["accessors"][index]
    assert acc["componentType"] == 5126  # float32
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc["type"]]

    def read(ref: dict, dtype: type, count: int) -> np.ndarray:
        start = gltf["bufferViews"][ref["bufferView"]].get("byteOffset", 0)
        return np.frombuffer(binary, dtype, count, start + ref.get("byteOffset", 0))

    out = np.zeros((acc["count"], width), np.float32)
    if "bufferView" in acc:
        out[:] = read(acc, np.float32, out.size).reshape(out.shape)
    if "sparse" in acc:
        sparse, n = acc["sparse"], acc["sparse"]["count"]
        kind = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[
            sparse["indices"]["componentType"]
        ]
        rows = read(sparse["indices"], kind, n)
        out[rows] = read(sparse["values"], np.float32, n * width).reshape(n, width)
    return out


def test_pose_features_drive_smpl_pose_blend_shapes(people: dict[str, Person]):
    """features @ pose_dirs is smplx's pose offset, also for a rig whose axes are turned."""
    person = people["person_1"]
    assert person.rig.mesh is not None and person.rig.mesh.pose_dirs is not None
    assert person.vertices is not None and person.lbs_vertices is not None
    dirs, rot = person.rig.mesh.pose_dirs, person.rig.local_rotations
    assert dirs.shape == (207, 6890, 3)
    offsets = (pose_features(rot) @ dirs.reshape(207, -1)).reshape(len(rot), -1, 3)
    # Skinning is linear in the rest mesh: the offsets, skinned, are the correctives' effect.
    weights = person.rig.mesh.weights
    glob = np.zeros_like(rot)
    for j, p in enumerate(SMPL_PARENTS):
        glob[:, j] = rot[:, j] if p < 0 else glob[:, p] @ rot[:, j]
    skinned = np.einsum("vj,tjab,tvb->tva", weights, glob, offsets)
    np.testing.assert_allclose(person.lbs_vertices + skinned, person.vertices, atol=1e-6)
    turn = Rotation.from_euler("xyz", [30, -50, 110], degrees=True).as_matrix()
    turned = rotate_pose_dirs(dirs, turn).reshape(207, -1)
    got = (pose_features(turn @ rot @ turn.T) @ turned).reshape(offsets.shape)
    np.testing.assert_allclose(got, offsets @ turn.T, atol=1e-9)


@pytest.mark.parametrize("name", ["person_1.fbx", "person_1.blend", "person_1.glb"])
def test_per_person_file_round_trips(written: Path, people: dict[str, Person], name: str):
    person = people["person_1"]
    scene = read_with_blender(written / name)
    assert [a.name for a in scene.armatures] == ["person_1"]
    if not name.endswith(".glb"):  # glTF stores seconds, not a frame rate
        assert scene.fps == pytest.approx(FPS, rel=1e-5)
    check_armature(scene.armatures[0], person, range(person.rig.num_frames), 0)
    if name.endswith(".blend"):  # our own keys: sign-continuous through the root's 180 degrees
        quats = scene.armatures[0].rotations
        assert (np.sum(quats[1:] * quats[:-1], axis=-1) > 0).all()
        root_w = quats[:, scene.armatures[0].bone_names.index("pelvis"), 0]
        assert root_w.min() < 0 < root_w.max()
    (mesh,) = scene.meshes
    check_mesh(mesh, scene.armatures[0], person, 0)


def test_glb_holds_the_correctives_as_animated_morph_targets(
    written: Path, people: dict[str, Person]
):
    """Read from the file itself, not through Blender's importer (which widens the weight
    sliders from the first key only, see ``_blender_read.widen_shape_key_sliders``)."""
    rig = people["person_1"].rig
    assert rig.mesh is not None and rig.mesh.pose_dirs is not None
    gltf, binary = glb_json(written / "person_1.glb")
    (mesh,) = gltf["meshes"]
    (prim,) = mesh["primitives"]
    assert len(prim["targets"]) == 207 and set(prim["targets"][0]) == {"POSITION"}
    assert mesh["extras"]["targetNames"][:2] == ["pose_left_hip_00", "pose_left_hip_01"]
    (anim,) = gltf["animations"]
    (channel,) = [c for c in anim["channels"] if c["target"]["path"] == "weights"]
    sampler = anim["samplers"][channel["sampler"]]
    assert sampler["interpolation"] == "LINEAR"
    times = glb_accessor(gltf, binary, sampler["input"])[:, 0]
    np.testing.assert_allclose(times, np.arange(rig.num_frames) / FPS, atol=1e-5)
    weights = glb_accessor(gltf, binary, sampler["output"]).reshape(rig.num_frames, 207)
    features = pose_features(rig.local_rotations)
    assert features.min() < -0.5  # negative weights are there to be checked
    np.testing.assert_allclose(weights, features, atol=1e-6)
    # A target's offsets are the pose blend shape, in glTF's Y-up axes: the rig's own.
    node = next(n for n in gltf["nodes"] if n.get("mesh") == 0)
    assert "matrix" not in node and not any(k in node for k in ("rotation", "scale"))
    positions = glb_accessor(gltf, binary, prim["attributes"]["POSITION"])
    index = cKDTree(positions).query(rig.mesh.rest_vertices)[1]
    for f in (0, 100, 206):
        target = prim["targets"][f]["POSITION"]
        got = glb_accessor(gltf, binary, target)[index]
        np.testing.assert_allclose(got, rig.mesh.pose_dirs[f], atol=1e-6)


@pytest.mark.parametrize("name", ["people.fbx", "people.gltf"])
def test_combined_scene_keeps_people_in_sync(written: Path, people: dict[str, Person], name: str):
    scene = read_with_blender(written / name)
    assert [a.name for a in scene.armatures] == ["person_1", "person_2"]
    if name.endswith(".fbx"):
        assert scene.fps == pytest.approx(FPS, rel=1e-5)
    for arm in scene.armatures:  # one take over the scene's frames: first/last poses are held
        person = people[arm.name]
        check_armature(arm, person, range(2, 14), person.rig.frame_start)  # video times
    (mesh,) = scene.meshes  # person_1's, its correctives keyed at its own video frames
    check_mesh(mesh, scene.armatures[0], people["person_1"], people["person_1"].rig.frame_start)
    if name.endswith(".gltf"):
        assert (written / "people.bin").is_file()


def test_correctives_can_be_left_out(tmp_path: Path, people: dict[str, Person]):
    person = people["person_1"]
    path = tmp_path / "lbs.blend"
    errors = write_with_blender({path: [person.rig]}, pose_correctives=False)
    assert errors == {path.resolve(): None}
    scene = read_with_blender(path)
    check_mesh(scene.meshes[0], scene.armatures[0], person, 0, correctives=False)


def test_export_motion_writes_the_smpl_mesh_of_the_world_frame(
    shared_data: Path, smpl_dir: Path, tmp_path: Path
):
    """``export_motion`` with a body: the .blend mesh is SMPL (pose blend shapes included) posed
    by the world-frame parameters the npz reports, through smplx itself."""
    from exporters import export_motion
    from mocap.motion import Motion, Track

    frames = 10
    spin = shared_data / "spin_npz"
    rot = pose_clip(spin / "test_mosh.npz", frames)
    rot[:, 0] = np.diag([1.0, -1.0, -1.0]) @ rot[:, 0]  # camera frame: y down, z forward
    transl = walk(frames) * [1.0, -1.0, -1.0] + [0.0, 0.3, 4.0]
    betas = np.load(spin / "test_mosh.npz")["shape"][:1].repeat(frames, 0)
    zeros = np.zeros((frames, 3))
    track = Track(7, np.arange(frames), np.arange(frames) / FPS, rot[:, 0], rot[:, 1:], betas,
                  zeros, transl, np.zeros((frames, 4)), np.ones(frames))  # fmt: skip
    body = load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl", required=True, extra_regressors=False)
    report = export_motion(Motion([track], FPS, (1920, 1080), 1500.0), tmp_path, "npz,blend", body)
    assert report.ok, report.summary()
    scene = read_with_blender(tmp_path / "person_7.blend")
    (mesh,) = scene.meshes
    assert len(mesh.shape_keys) == 207
    with np.load(tmp_path / "person_7.npz") as z:
        smpl = {k: z[k] for k in ("global_orient", "body_pose", "betas", "transl")}
    keyed = np.searchsorted(scene.armatures[0].frames, mesh.frames)
    args = (smpl["global_orient"][keyed], smpl["body_pose"][keyed], smpl["betas"][None])
    assert body is not None
    with torch.no_grad():
        out = body(*map(torch.as_tensor, (*args, smpl["transl"][keyed])))
    want = out.vertices.double().numpy() @ YUP_TO_ZUP.T
    index = cKDTree(mesh.rest_vertices).query(body.rest_vertices(smpl["betas"]) @ YUP_TO_ZUP.T)[1]
    assert np.abs(mesh.posed_vertices[:, index] - want).max() < MM


def test_one_failing_file_does_not_stop_the_others(tmp_path: Path, people: dict[str, Person]):
    two = people["person_2"].rig
    still = rig_from("still", two.rest_positions(), two.local_rotations[:1], np.zeros((1, 3)), 0)
    good, bad = tmp_path / "new_dir" / "ok.blend", tmp_path / "bad.fbx"
    bad.mkdir()  # a folder already has the file's name
    errors = write_with_blender({bad: [two], good: [still]})  # a one-frame clip is fine too
    assert errors[good.resolve()] is None and good.is_file()
    message = errors[bad.resolve()]
    assert message is not None and message.startswith("writing bad.fbx failed: IsADirectoryError")
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.fbx", "new_dir", "ok.blend"]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "import sys\nprint('Segmentation fault', file=sys.stderr)\nsys.exit(139)\n",
            "Blender exited with code 139 before writing a.glb: Segmentation fault",
        ),
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",  # e.g. out of memory
            "Blender was killed by signal 9 before writing a.glb: ",
        ),
    ],
)
def test_crashing_blender_is_reported(
    tmp_path: Path,
    people: dict[str, Person],
    monkeypatch: pytest.MonkeyPatch,
    script: str,
    message: str,
):
    crash = tmp_path / "crash.py"
    crash.write_text(script)
    monkeypatch.setattr(blender, "_CHILD", crash)
    path = tmp_path / "a.glb"
    errors = write_with_blender({path: [people["person_2"].rig]})
    assert errors[path.resolve()] == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash.py"]


def test_benchmark_times_each_format(people: dict[str, Person]):
    secs = blender.benchmark_blender_export(people["person_2"].rig, ("fbx", "blend"))
    assert set(secs) == {"fbx", "blend", "scene"} and all(s > 0 for s in secs.values())


def test_timeout_is_reported_without_leftovers(tmp_path: Path, people: dict[str, Person]):
    path = tmp_path / "slow.fbx"
    errors = write_with_blender({path: [people["person_2"].rig]}, timeout=0.2)
    assert "timed out" in (errors[path.resolve()] or "")
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused(tmp_path: Path, people: dict[str, Person]):
    with pytest.raises(ValueError, match="obj"):
        write_with_blender({tmp_path / "a.obj": [people["person_1"].rig]})
    two = people["person_2"].rig
    other = rig_from("p3", two.rest_positions(), two.local_rotations, two.root_positions, 0)
    other.fps = 25.0
    with pytest.raises(ValueError, match="same fps"):
        write_with_blender({tmp_path / "a.fbx": [two, other]})
    one = people["person_1"].rig
    assert one.mesh is not None and one.mesh.pose_dirs is not None
    flat = replace(one.mesh, pose_dirs=one.mesh.pose_dirs.reshape(207, -1))  # smplx's layout
    with pytest.raises(ValueError, match=r"pose_dirs has shape \(207, 20670\), expected"):
        write_with_blender({tmp_path / "a.fbx": [replace(one, mesh=flat)]})
    with pytest.raises(MocapError, match="existing"):
        read_with_blender(tmp_path / "nothing.fbx")
