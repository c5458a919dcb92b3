"""Blender scene building for the child process of :mod:`exporters.blender` (imported only there).

Armatures from a rig's rest offsets (bone tails continuing each chain), pose-quaternion and root
keys every frame, the skinned SMPL mesh and its pose correctives as keyed shape keys. Rig data is
Y-up; every point and rotation is turned to Blender's Z-up by ``YUP_TO_ZUP``. Needs only numpy,
scipy and bpy. See ``exporters/blender.py`` for the scene conventions.
"""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np
from bpy_extras import anim_utils
from scipy.spatial.transform import Rotation

YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
LEAF_MIN_LENGTH = 0.05  # metres


def quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """Rotation matrices (...,3,3) -> unit quaternions (...,4) as Blender's (w, x, y, z)."""
    xyzw = Rotation.from_matrix(m.reshape(-1, 3, 3)).as_quat()
    return np.roll(xyzw, 1, axis=-1).reshape(*m.shape[:-2], 4)


def sign_continuous(q: np.ndarray) -> np.ndarray:
    """(T,...,4) quaternions with signs flipped so consecutive frames have a positive dot product."""
    negative = np.cumsum(np.sum(q[1:] * q[:-1], axis=-1) < 0, axis=0)  # (T-1,...) flips so far
    sign = np.concatenate([np.ones_like(q[:1, ..., 0]), 1.0 - 2.0 * (negative % 2)], 0)
    return q * sign[..., None]


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.array([0.0, 0.0, 1.0])


def bone_tails(heads: np.ndarray, parents: list[int]) -> np.ndarray:
    """(J,3) tail of each bone (Z-up): the child that best continues the chain, else extended."""
    tails = np.zeros_like(heads)
    for j, p in enumerate(parents):
        kids = [
            k
            for k, q in enumerate(parents)
            if q == j and np.linalg.norm(heads[k] - heads[j]) > 1e-4
        ]
        spread = [heads[k] - heads[j] for k in kids] or [np.array([0.0, 0.0, 1.0])]
        ref = _unit(heads[j] - heads[p] if p >= 0 else np.mean(spread, 0))
        if kids:  # e.g. spine3 -> neck (not a collar), pelvis -> spine1 (between the hips)
            tails[j] = heads[max(kids, key=lambda k: float(ref @ _unit(heads[k] - heads[j])))]
        else:  # leaf: half the parent bone's length along the parent's direction
            length = 0.5 * float(np.linalg.norm(heads[j] - heads[p])) if p >= 0 else 0.0
            tails[j] = heads[j] + ref * max(length, LEAF_MIN_LENGTH)
    return tails


def new_scene(fps: float) -> bpy.types.Scene:
    """Empty factory scene at ``fps`` (non-integer rates through fps_base)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    rate = max(1, round(fps))
    scene.render.fps = rate
    scene.render.fps_base = rate / fps
    return scene


def build_armature(
    scene: bpy.types.Scene, meta: dict[str, Any], offsets: np.ndarray
) -> bpy.types.Object:
    """Armature object at the origin with one bone per joint at the rest pose (Z-up)."""
    names, parents = meta["joint_names"], meta["parents"]
    rest = np.zeros_like(offsets)
    for j, p in enumerate(parents):
        rest[j] = offsets[j] + (rest[p] if p >= 0 else 0.0)
    heads = rest @ YUP_TO_ZUP.T
    tails = bone_tails(heads, parents)
    for j in meta.get("moved", []):  # a bone whose child translates (a root bone above the hips)
        p = parents[j]  # must not end on the child's head: importers would connect the child
        if p >= 0 and np.linalg.norm(tails[p] - heads[j]) < 1e-3:
            length = max(LEAF_MIN_LENGTH, 0.25 * float(np.linalg.norm(heads[j] - heads[p])))
            tails[p] = heads[p] + np.array([0.0, -length, 0.0])  # forward (-Y): a root bone
    data = bpy.data.armatures.new(meta["name"])
    obj = bpy.data.objects.new(meta["name"], data)
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    bones: list[bpy.types.EditBone] = []
    for j, name in enumerate(names):
        eb = data.edit_bones.new(name)
        eb.head, eb.tail = heads[j].tolist(), tails[j].tolist()
        axis = (tails[j] - heads[j]) / np.linalg.norm(tails[j] - heads[j])
        # Roll: the bone's Z axis toward the body's front (-Y), or up for bones pointing forward.
        eb.align_roll((0.0, 0.0, 1.0) if abs(axis[1]) > 0.7 else (0.0, -1.0, 0.0))
        eb.use_connect = False
        eb.parent = bones[parents[j]] if parents[j] >= 0 else None
        bones.append(eb)
    bpy.ops.object.mode_set(mode="OBJECT")
    obj.show_in_front = True  # the skeleton stays visible inside the body mesh
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return obj


def key_animation(
    obj: bpy.types.Object,
    names: list[str],
    rot: np.ndarray,
    root: np.ndarray,
    first_frame: int,
    moved: dict[int, np.ndarray] | None = None,
) -> None:
    """Key every frame: bone quaternions B^T R B (R in Z-up) and root location; linear keys.

    Arguments:
        names: (J,) joint names in the rig's order (Blender stores bones depth-first).
        rot: (T,J,3,3) local rotations in the Y-up rig world. root: (T,3) joint-0 world positions.
        moved: joint -> (T,3) offset from its parent in the parent's frame (Y-up), for joints that
            translate (the hips under a root bone): location keys B^T (offset - rest offset).
    """
    bones = [obj.data.bones[name] for name in names]
    rest = np.array([np.array(b.matrix_local.to_3x3()) for b in bones])  # (J,3,3)
    head0 = np.array(bones[0].head_local)
    rz = YUP_TO_ZUP @ rot @ YUP_TO_ZUP.T
    quats = sign_continuous(quat_from_matrix(np.einsum("jba,tjbc,jcd->tjad", rest, rz, rest)))
    loc = (root @ YUP_TO_ZUP.T - head0) @ rest[0]  # B0^T (p - h0), the root bone's local offset
    frames = first_frame + np.arange(rot.shape[0], dtype=np.float64)
    channels = [
        (f'pose.bones["{b.name}"].rotation_quaternion', b.name, quats[:, j])
        for j, b in enumerate(bones)
    ]
    channels.append((f'pose.bones["{bones[0].name}"].location', bones[0].name, loc))
    for j, offset in (moved or {}).items():
        rest_offset = np.array(bones[j].head_local) - np.array(bones[j].parent.head_local)
        shift = (offset @ YUP_TO_ZUP.T - rest_offset) @ rest[j]
        channels.append((f'pose.bones["{bones[j].name}"].location', bones[j].name, shift))
    key_channels(obj, "OBJECT", f"{obj.name}_motion", frames, channels)


def key_channels(
    owner: bpy.types.ID,
    id_type: str,
    action_name: str,
    frames: np.ndarray,
    channels: list[tuple[str, str, np.ndarray]],
) -> None:
    """A new action on ``owner`` keying each (data path, group, values (T,C)) at ``frames`` (T,).

    Linear keys written in bulk (``keyframe_points.add`` + ``foreach_set``), never key by key.
    """
    action = bpy.data.actions.new(action_name)
    owner.animation_data_create()
    owner.animation_data.action = action
    slot = action.slots.new(id_type=id_type, name=owner.name)
    owner.animation_data.action_slot = slot
    bag = anim_utils.action_ensure_channelbag_for_slot(action, slot)
    linear = [
        bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    ] * len(frames)
    for path, group, values in channels:
        for i in range(values.shape[1]):
            fc = bag.fcurves.new(path, index=i, group_name=group)
            fc.keyframe_points.add(len(frames))
            fc.keyframe_points.foreach_set("co", np.stack([frames, values[:, i]], 1).ravel())
            fc.keyframe_points.foreach_set("interpolation", linear)
            fc.update()


def add_mesh(
    scene: bpy.types.Scene,
    arm: bpy.types.Object,
    names: list[str],
    verts: np.ndarray,
    faces: np.ndarray,
    weights: np.ndarray,
) -> bpy.types.Object:
    """Skinned mesh (rest vertices (V,3) Y-up, weights (V,J) by ``names``) bound to ``arm``."""
    mesh = bpy.data.meshes.new(f"{arm.name}_body")
    mesh.from_pydata((verts @ YUP_TO_ZUP.T).tolist(), [], faces.tolist())
    mesh.shade_smooth()
    obj = bpy.data.objects.new(f"{arm.name}_body", mesh)
    scene.collection.objects.link(obj)
    obj.parent = arm
    for j, name in enumerate(names):
        group = obj.vertex_groups.new(name=name)
        for v in np.flatnonzero(weights[:, j] > 0):
            group.add([int(v)], float(weights[v, j]), "REPLACE")
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    return obj


def corrective_names(joint_names: list[str]) -> list[str]:
    """Shape key name of each pose feature: ``pose_<joint>_<row><col>`` of (R_joint - I)."""
    return [f"pose_{n}_{r}{c}" for n in joint_names[1:] for r in range(3) for c in range(3)]


def add_correctives(
    obj: bpy.types.Object,
    joint_names: list[str],
    pose_dirs: np.ndarray,
    rot: np.ndarray,
    first_frame: int,
) -> None:
    """SMPL's pose blend shapes as shape keys on the skinned mesh, keyed every frame.

    Shape keys are applied to the rest mesh before the Armature modifier, exactly where SMPL adds
    its pose offsets before skinning. Key f holds the offsets of pose feature f (turned to Z-up)
    and its value at each frame is that feature, ``(R_j - I)`` of the Y-up rig rotations, in
    SMPL's own row-major order (values lie in [-2, 2], hence the slider range).

    Arguments:
        pose_dirs: (9*(J-1),V,3) offsets per unit feature, Y-up rig world.
        rot: (T,J,3,3) the rig's local rotations (Y-up); joint 0 is unused.
    """
    rest = obj.data.vertices
    base = np.zeros(3 * len(rest))
    rest.foreach_get("co", base)
    obj.shape_key_add(name="Basis", from_mix=False)
    names = corrective_names(joint_names)
    dirs = pose_dirs.reshape(len(names), -1, 3) @ YUP_TO_ZUP.T
    for name, delta in zip(names, dirs, strict=True):
        key = obj.shape_key_add(name=name, from_mix=False)
        key.slider_min, key.slider_max = -2.0, 2.0
        key.points.foreach_set("co", base + delta.ravel())
    features = (rot[:, 1:] - np.eye(3)).reshape(len(rot), -1)  # (T, 207)
    frames = first_frame + np.arange(len(rot), dtype=np.float64)
    channels = [
        (f'key_blocks["{name}"].value', "pose correctives", features[:, [f]])
        for f, name in enumerate(names)
    ]
    key_channels(obj.data.shape_keys, "KEY", f"{obj.name}_correctives", frames, channels)


def add_camera(
    scene: bpy.types.Scene,
    meta: dict[str, Any],
    positions: np.ndarray,
    rotations: np.ndarray,
    frames: np.ndarray,
) -> bpy.types.Object:
    """The video's camera as the scene camera, keyed at ``frames`` (T,); render size = the video's.

    Arguments:
        meta: name, focal_px, width, height and footage (the video shown behind it, or "").
        positions: (T,3) Y-up world; rotations: (T,3,3) world-from-camera, camera looking along
            its -Z with +Y up (Blender's and glTF's camera axes), Y-up world.
    """
    width, height = int(meta["width"]), int(meta["height"])
    data = bpy.data.cameras.new(meta["name"])
    data.sensor_fit = "HORIZONTAL" if width >= height else "VERTICAL"
    data.sensor_width = data.sensor_height = 36.0
    data.lens = float(meta["focal_px"]) * 36.0 / max(width, height)
    data.clip_start, data.clip_end = 0.05, 1000.0
    obj = bpy.data.objects.new(meta["name"], data)
    scene.collection.objects.link(obj)
    obj.rotation_mode = "QUATERNION"
    scene.camera = obj
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    quats = sign_continuous(quat_from_matrix(YUP_TO_ZUP @ rotations))
    channels = [
        ("location", meta["name"], positions @ YUP_TO_ZUP.T),
        ("rotation_quaternion", meta["name"], quats),
    ]
    key_channels(obj, "OBJECT", f"{meta['name']}_motion", np.asarray(frames, np.float64), channels)
    obj.location, obj.rotation_quaternion = channels[0][2][0].tolist(), quats[0].tolist()
    return obj


def add_footage(camera: bpy.types.Object, path: str, first_frame: int) -> None:
    """Show the video behind the camera (scene frame ``first_frame`` shows the video's frame 0;
    clips run with ``--start`` or ``--stride`` are not shifted or thinned to match)."""
    clip = bpy.data.movieclips.load(path)
    clip.frame_start = first_frame  # the scene frame that shows the clip's first picture
    background = camera.data.background_images.new()
    background.source, background.clip = "MOVIE_CLIP", clip
    background.alpha = 1.0
    camera.data.show_background_images = True
