"""Child-process side of :func:`exporters.blender.read_with_blender`: imports a file, dumps it.

Run only as a script by ``exporters.blender`` (never imported by the pipeline)::

    python exporters/_blender_read.py FILE OUT.npz MESH_SAMPLES

Imports an .fbx, .blend, .glb, .gltf or .bvh into a fresh Blender and writes to ``OUT.npz``: per armature
``a{i}_frames`` (K,) keyed frames, ``a{i}_times`` (K,) seconds as stored in the file,
``a{i}_joints`` (K,J,3) world bone heads, ``a{i}_quats`` (K,J,4) pose quaternions (w,x,y,z); per
skinned mesh ``m{m}_rest`` (V,3), ``m{m}_frames`` (S,), ``m{m}_posed`` (S,V,3); and ``meta`` (JSON:
fps, frame range, bone and shape-key names); per camera ``c{i}_frames``, ``c{i}_times``,
``c{i}_matrices`` (K,4,4) world matrices (and lens, render size in meta). Needs only numpy and bpy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from bpy_extras import anim_utils


def keyed_frames(obj: bpy.types.Object) -> np.ndarray:
    """(K,) sorted frames holding keys in the object's assigned action slot."""
    ad = obj.animation_data
    if ad is None or ad.action is None:
        return np.array([float(bpy.context.scene.frame_current)])
    bag = anim_utils.action_get_channelbag_for_slot(ad.action, ad.action_slot)
    frames: set[float] = set()
    for fc in bag.fcurves if bag is not None else []:
        co = np.zeros(2 * len(fc.keyframe_points))
        fc.keyframe_points.foreach_get("co", co)
        frames.update(np.round(co[0::2], 4).tolist())
    return np.array(sorted(frames))


def go_to(frame: float) -> None:
    whole = int(np.floor(frame))
    bpy.context.scene.frame_set(whole, subframe=float(frame - whole))


def world_vertices(obj: bpy.types.Object, evaluated: bool) -> np.ndarray:
    """(V,3) vertex positions in world space, deformed by modifiers when ``evaluated``."""
    src = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()) if evaluated else obj
    mesh = src.to_mesh()
    co = np.zeros(3 * len(mesh.vertices))
    mesh.vertices.foreach_get("co", co)
    mat = np.array(src.matrix_world)
    src.to_mesh_clear()
    return co.reshape(-1, 3) @ mat[:3, :3].T + mat[:3, 3]


def widen_shape_key_sliders() -> None:
    """Open every shape key's slider to Blender's hard range (-10..10).

    Blender 5.0's glTF importer widens a slider to fit only the first keyed weight of each morph
    target (``min(coords[1:2])`` in ``animation_weight.py``), so later negative weights would be
    clamped on evaluation although the file holds them; this undoes that importer bug.
    """
    props = bpy.types.ShapeKey.bl_rna.properties
    low, high = props["slider_min"].hard_min, props["slider_max"].hard_max
    for key in bpy.data.shape_keys:
        for block in key.key_blocks:
            block.slider_min, block.slider_max = low, high


def dump_cameras(
    scene: Any, dump: dict[str, np.ndarray], meta: dict[str, Any], to_seconds: Any
) -> None:
    """Per camera ``c{i}_frames``, ``c{i}_times`` and ``c{i}_matrices`` (K,4,4) world matrices."""
    meta["cameras"] = []
    cams = sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name)
    for i, cam in enumerate(cams):
        frames = keyed_frames(cam)
        mats = []
        for f in frames:
            go_to(f)
            mats.append(np.array(cam.matrix_world))
        data = cam.data
        vertical = data.sensor_fit == "VERTICAL"
        ratio = data.lens / (data.sensor_height if vertical else data.sensor_width)
        width, height = scene.render.resolution_x, scene.render.resolution_y
        side = height if vertical else width
        meta["cameras"].append(
            {"name": cam.name, "focal_px": ratio * side, "width": width, "height": height}
        )
        dump[f"c{i}_frames"], dump[f"c{i}_times"] = frames, to_seconds(frames)
        dump[f"c{i}_matrices"] = np.array(mats).reshape(-1, 4, 4)


def read_file(path: str, out: str, samples: int) -> int:
    """Import ``path`` into a fresh Blender and dump armature joints and skinned vertices to npz."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    suffix = Path(path).suffix.lower()
    if suffix == ".blend":
        # A .blend can carry Python scripts: never run them.
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=False)
    elif suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=path)
    elif suffix == ".bvh":  # Y up to Z up as our writers do; BVH frame i at scene frame 1 + i
        bpy.ops.import_anim.bvh(filepath=path, update_scene_fps=True, update_scene_duration=True)
    else:
        bpy.ops.import_scene.gltf(filepath=path)
        widen_shape_key_sliders()
    scene = bpy.context.scene
    # Seconds in the file of each imported frame, undoing each importer's own conversion:
    # the FBX importer maps t -> 1 + t * round(fps) (integer fps even for 29.97), the glTF one
    # t -> t * fps * fps_base.
    rate, base = scene.render.fps, scene.render.fps_base
    if suffix == ".fbx":
        to_seconds = lambda f: (f - 1.0) / rate  # noqa: E731
    elif suffix == ".bvh":
        to_seconds = lambda f: (f - 1.0) * base / rate  # noqa: E731
    elif suffix == ".blend":
        to_seconds = lambda f: f * base / rate  # noqa: E731
    else:
        to_seconds = lambda f: f / (rate * base)  # noqa: E731
    dump: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {
        "fps": scene.render.fps / scene.render.fps_base,
        "armatures": [],
        "meshes": [],
    }
    meta.update(frame_start=scene.frame_start, frame_end=scene.frame_end)
    arms = sorted((o for o in scene.objects if o.type == "ARMATURE"), key=lambda o: o.name)
    for i, arm in enumerate(arms):
        frames = keyed_frames(arm)
        joints = np.zeros((len(frames), len(arm.pose.bones), 3))
        quats = np.zeros((len(frames), len(arm.pose.bones), 4))
        mw = np.array(arm.matrix_world)
        for k, f in enumerate(frames):
            go_to(f)
            heads = np.array([pb.head for pb in arm.pose.bones])
            joints[k] = heads @ mw[:3, :3].T + mw[:3, 3]
            quats[k] = [pb.rotation_quaternion for pb in arm.pose.bones]
        meta["armatures"].append({"name": arm.name, "bones": [b.name for b in arm.pose.bones]})
        dump[f"a{i}_frames"], dump[f"a{i}_joints"] = frames, joints
        dump[f"a{i}_times"], dump[f"a{i}_quats"] = to_seconds(frames), quats
        skinned = [o for o in scene.objects if o.type == "MESH" and o.find_armature() == arm]
        for obj in sorted(skinned, key=lambda o: o.name):
            m = len(meta["meshes"])
            picks = frames[np.unique(np.linspace(0, len(frames) - 1, samples).round().astype(int))]
            go_to(frames[0])
            dump[f"m{m}_rest"] = world_vertices(obj, evaluated=False)
            posed = []
            for f in picks:
                go_to(f)
                posed.append(world_vertices(obj, evaluated=True))
            dump[f"m{m}_frames"] = picks
            dump[f"m{m}_posed"] = (
                np.stack(posed) if posed else np.zeros((0, *dump[f"m{m}_rest"].shape))
            )
            keys = obj.data.shape_keys
            meta["meshes"].append(
                {"name": obj.name, "keys": [k.name for k in keys.key_blocks[1:]] if keys else []}
            )
    dump_cameras(scene, dump, meta, to_seconds)
    dump["meta"] = np.array(json.dumps(meta))
    np.savez(out, **dump)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3:
        return read_file(argv[0], argv[1], int(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
