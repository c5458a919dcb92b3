"""FBX / .blend / glTF through Blender: written by a child process, re-imported into a fresh Blender.

Animations are real SMPL poses (MoSh fits and Human3.6M ground truth from ../shared/data/spin_npz)
slerped into short clips with root motion at 29.97 fps. Joint world positions read back from every
file must match the rig's forward kinematics (converted to Blender's Z-up) within 1 mm on every
frame, and the skinned mesh must match linear blend skinning of the rest mesh within 1 mm.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation, Slerp

from exporters.blender import YUP_TO_ZUP, read_with_blender, write_with_blender
from exporters.rig import RigAnimation, RigMesh
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.body.skeleton import builtin_skeleton
from mocap.errors import MocapError

FPS = 29.97  # a non-integer rate: Blender needs fps_base, and its FBX/glTF code gets it wrong
MM = 1e-3


def pose_clip(npz: Path, frames: int) -> np.ndarray:
    """(frames,24,3,3) local rotations slerped through the file's SMPL poses (axis-angle, 72)."""
    poses = np.load(npz)["pose"].reshape(-1, 24, 3)
    keys = np.linspace(0, frames - 1, len(poses))
    out = np.zeros((frames, 24, 3, 3))
    for j in range(24):
        out[:, j] = Slerp(keys, Rotation.from_rotvec(poses[:, j]))(np.arange(frames)).as_matrix()
    return out


def skin_mesh(rest: np.ndarray, rng: np.random.Generator) -> RigMesh:
    """A tube of vertices around every bone, each weighted between its two joints and the pelvis."""
    verts, weights = [], []
    for j, p in enumerate(SMPL_PARENTS):
        if p < 0:
            continue
        for t in np.linspace(0.1, 0.9, 8):
            for angle in np.linspace(0, 2 * np.pi, 6, endpoint=False):
                radial = np.array([np.cos(angle), np.sin(angle), np.cos(angle + 1)]) * 0.04
                verts.append(rest[p] + t * (rest[j] - rest[p]) + radial)
                w = np.zeros(24)
                w[p], w[j], w[0] = 1 - t, t, 0.2 * rng.random()
                weights.append(w / w.sum())
    v = np.array(verts)
    faces = np.arange(len(v) - len(v) % 3).reshape(-1, 3)
    return RigMesh(rest_vertices=v, faces=faces, weights=np.array(weights))


def make_rig(name: str, rot: np.ndarray, start: int, mesh: RigMesh | None) -> RigAnimation:
    """Rig on the built-in skeleton walking 1.5 m diagonally with a 3 cm vertical bob."""
    skel = builtin_skeleton()
    t = np.arange(len(rot)) / len(rot)
    root = skel.rest_joints[0] + np.stack([1.2 * t, 0.03 * np.sin(6 * t), 0.9 * t - 0.5], 1)
    return RigAnimation(
        name, SMPL_JOINT_NAMES, SMPL_PARENTS, skel.offsets(), root, rot, FPS, start, mesh
    )


def reference_skin(rig: RigAnimation) -> np.ndarray:
    """(T,V,3) linear blend skinning of the rig's mesh: sum_j w_j (G_j (v - rest_j) + pos_j)."""
    assert rig.mesh is not None
    glob = np.zeros_like(rig.local_rotations)
    for j, p in enumerate(rig.parents):
        glob[:, j] = rig.local_rotations[:, j] if p < 0 else glob[:, p] @ rig.local_rotations[:, j]
    rel = rig.mesh.rest_vertices[None, :, None] - rig.rest_positions()[None, None]  # (1,V,J,3)
    moved = np.einsum("tjab,tvjb->tvja", glob, rel) + rig.world_positions()[:, None]
    return np.einsum("vj,tvja->tva", rig.mesh.weights, moved)


@pytest.fixture(scope="module")
def rigs(shared_data: Path) -> dict[str, RigAnimation]:
    rng = np.random.default_rng(0)
    mesh = skin_mesh(builtin_skeleton().rest_joints, rng)
    mosh = pose_clip(shared_data / "spin_npz" / "test_mosh.npz", 12)
    h36m = pose_clip(shared_data / "spin_npz" / "test_h36m.npz", 9)
    return {
        "person_1": make_rig("person_1", mosh, 0, mesh),
        "person_2": make_rig("person_2", h36m, 5, None),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, rigs: dict[str, RigAnimation]) -> Path:
    out = tmp_path_factory.mktemp("blender")
    one, both = [rigs["person_1"]], [rigs["person_1"], rigs["person_2"]]
    scenes = {out / f"person_1.{ext}": one for ext in ("fbx", "blend", "glb")}
    scenes.update({out / f"people.{ext}": both for ext in ("fbx", "gltf")})
    errors = write_with_blender(scenes)
    assert errors == {p.resolve(): None for p in scenes}
    return out


def check_armature(arm, rig: RigAnimation, keys: range) -> None:
    """Bone names, keys at video frames ``keys`` (the pose held outside the rig's own frames),
    their times, and joint positions on every key within 1 mm."""
    assert sorted(arm.bone_names) == sorted(SMPL_JOINT_NAMES)
    np.testing.assert_allclose(arm.times, np.array(keys) / rig.fps, atol=1e-5)
    order = [arm.bone_names.index(n) for n in SMPL_JOINT_NAMES]
    got = arm.joint_positions[:, order]
    fk = rig.world_positions() @ YUP_TO_ZUP.T
    want = fk[np.clip(np.array(keys) - rig.frame_start, 0, rig.num_frames - 1)]
    assert np.linalg.norm(fk[-1, 0] - fk[0, 0]) > 1.0  # root motion is there to be checked
    assert np.abs(got - want).max() < MM


@pytest.mark.parametrize("name", ["person_1.fbx", "person_1.blend", "person_1.glb"])
def test_per_person_file_round_trips(written: Path, rigs: dict[str, RigAnimation], name: str):
    rig = rigs["person_1"]
    scene = read_with_blender(written / name)
    assert [a.name for a in scene.armatures] == ["person_1"]
    if not name.endswith(".glb"):  # glTF stores seconds, not a frame rate
        assert scene.fps == pytest.approx(FPS, rel=1e-5)
    check_armature(scene.armatures[0], rig, range(rig.num_frames))

    (mesh,) = scene.meshes
    assert rig.mesh is not None
    want_rest = rig.mesh.rest_vertices @ YUP_TO_ZUP.T
    dist, index = cKDTree(mesh.rest_vertices).query(want_rest)  # glTF may reorder vertices
    assert dist.max() < 1e-5 and len(np.unique(index)) == len(want_rest)
    frames = np.searchsorted(scene.armatures[0].frames, mesh.frames)
    assert len(frames) == 3
    want = reference_skin(rig)[frames] @ YUP_TO_ZUP.T
    assert np.abs(mesh.posed_vertices[:, index] - want).max() < MM


@pytest.mark.parametrize("name", ["people.fbx", "people.gltf"])
def test_combined_scene_keeps_people_in_sync(
    written: Path, rigs: dict[str, RigAnimation], name: str
):
    scene = read_with_blender(written / name)
    assert [a.name for a in scene.armatures] == ["person_1", "person_2"]
    if name.endswith(".fbx"):
        assert scene.fps == pytest.approx(FPS, rel=1e-5)
    for arm in scene.armatures:  # one take over the scene's frames: first/last poses are held
        check_armature(arm, rigs[arm.name], range(0, 14))  # times are video times
    if name.endswith(".gltf"):
        assert (written / "people.bin").is_file()


def test_one_failing_file_does_not_stop_the_others(tmp_path: Path, rigs: dict[str, RigAnimation]):
    person = [rigs["person_2"]]
    good, bad = tmp_path / "ok.blend", tmp_path / "missing_dir" / "bad.fbx"
    errors = write_with_blender({bad: person, good: person})
    assert errors[good.resolve()] is None and good.is_file()
    message = errors[bad.resolve()]
    assert message is not None and "bad.fbx" in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.blend"]  # no partial files


def test_timeout_is_reported_without_leftovers(tmp_path: Path, rigs: dict[str, RigAnimation]):
    path = tmp_path / "slow.fbx"
    errors = write_with_blender({path: [rigs["person_2"]]}, timeout=0.2)
    assert "timed out" in (errors[path.resolve()] or "")
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused(tmp_path: Path, rigs: dict[str, RigAnimation]):
    with pytest.raises(ValueError, match="obj"):
        write_with_blender({tmp_path / "a.obj": [rigs["person_1"]]})
    other = make_rig("p3", rigs["person_2"].local_rotations, 0, None)
    other.fps = 25.0
    with pytest.raises(ValueError, match="same fps"):
        write_with_blender({tmp_path / "a.fbx": [rigs["person_2"], other]})
    with pytest.raises(MocapError, match="existing"):
        read_with_blender(tmp_path / "nothing.fbx")
