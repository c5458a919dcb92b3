"""Child-process side of :mod:`exporters.character`: reads characters, keys them, writes them.

Run only as a script by ``exporters.character`` (never imported by the pipeline)::

    python exporters/_blender_retarget.py inspect CHARACTER OUT.json
    python exporters/_blender_retarget.py apply JOB.json
    python exporters/_blender_retarget.py render FILE OUT.png FRAMES

``inspect`` imports a character (.fbx, .glb/.gltf, .vrm through the glTF importer, .blend without
running its scripts) and dumps every armature at its bind pose: bones (matrix_local, tail,
parent, connect, deform), the object's matrix_world, and the meshes it deforms (vertex count,
materials, vertex groups, summed weights, the lowest rest vertex). ``apply`` re-imports the
character for each job, re-parents and un-constrains the bones the job names, resets the pose,
keys the given pose quaternions and locations on a new action (every frame, linear) and writes
each output to its temporary name (the parent renames them when all succeeded); the mesh,
materials and skin weights are not touched. ``render`` imports a written file and saves a
workbench render of a few frames side by side. Needs only numpy and bpy.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
import numpy as np

if TYPE_CHECKING:
    from exporters._blender_scene import key_channels
else:
    from _blender_scene import key_channels


def load(path: str) -> None:
    """A fresh Blender holding the character file."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    suffix = Path(path).suffix.lower()
    if suffix == ".blend":
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=False, use_scripts=False)
    elif suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=path)
    elif suffix in (".glb", ".gltf", ".vrm"):
        bpy.ops.import_scene.gltf(filepath=path)
    else:
        raise ValueError(f"cannot import {suffix} files")


def bound_meshes(arm: bpy.types.Object) -> list[bpy.types.Object]:
    """Meshes deformed by ``arm`` (Armature modifier), in name order."""
    out = []
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH":
            continue
        mods = [m for m in obj.modifiers if m.type == "ARMATURE" and m.object == arm]
        if mods:
            out.append(obj)
    return sorted(out, key=lambda o: o.name)


def world_vertices(obj: bpy.types.Object) -> np.ndarray:
    """(V,3) evaluated vertices in world space."""
    src = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = src.to_mesh()
    co = np.zeros(3 * len(mesh.vertices))
    mesh.vertices.foreach_get("co", co)
    mat = np.array(src.matrix_world)
    src.to_mesh_clear()
    return co.reshape(-1, 3) @ mat[:3, :3].T + mat[:3, 3]


def mesh_info(obj: bpy.types.Object) -> dict[str, Any]:
    weights = {g.name: 0.0 for g in obj.vertex_groups}
    names = [g.name for g in obj.vertex_groups]
    for v in obj.data.vertices:
        for ge in v.groups:
            weights[names[ge.group]] += ge.weight
    return {
        "name": obj.name,
        "vertices": len(obj.data.vertices),
        "materials": [s.material.name for s in obj.material_slots if s.material],
        "weights": weights,
    }


def inspect(path: str, out: str) -> int:
    load(path)
    scene = bpy.context.scene
    arms = sorted((o for o in scene.objects if o.type == "ARMATURE"), key=lambda o: o.name)
    dump: dict[str, Any] = {"fps": scene.render.fps / scene.render.fps_base, "armatures": []}
    for arm in arms:
        arm.data.pose_position = "REST"
        bpy.context.view_layer.update()
        meshes = bound_meshes(arm)
        lows = [float(world_vertices(m)[:, 2].min()) for m in meshes if len(m.data.vertices)]
        bones = list(arm.data.bones)
        mw = np.array(arm.matrix_world)
        points = np.array(
            [[*b.head_local, 1.0] for b in bones] + [[*b.tail_local, 1.0] for b in bones]
        )
        floor = min(lows) if lows else float((points @ mw.T)[:, 2].min())
        dump["armatures"].append(
            {
                "name": arm.name,
                "matrix_world": mw.tolist(),
                "floor": floor,
                "bones": [
                    {
                        "name": b.name,
                        "parent": b.parent.name if b.parent else None,
                        "matrix_local": np.array(b.matrix_local).tolist(),
                        "tail": list(b.tail_local),
                        "connect": bool(b.use_connect),
                        "deform": bool(b.use_deform),
                    }
                    for b in bones
                ],
                "meshes": [mesh_info(m) for m in meshes],
            }
        )
    Path(out).write_text(json.dumps(dump))
    return 0


def prepare(arm: bpy.types.Object, reparent: dict[str, str], mute: list[str]) -> None:
    """New parents (rest pose kept: edit bones live in armature space), muted constraints,
    no old animation, every bone at rest."""
    if reparent:
        bpy.context.view_layer.objects.active = arm
        arm.hide_set(False)
        bpy.ops.object.mode_set(mode="EDIT")
        edit = arm.data.edit_bones
        for bone, parent in reparent.items():
            edit[bone].use_connect = False
            edit[bone].parent = edit[parent]
        bpy.ops.object.mode_set(mode="OBJECT")
    for name in mute:
        for con in arm.pose.bones[name].constraints:
            con.mute = True
    if arm.animation_data is not None:
        arm.animation_data.action = None
        for track in list(arm.animation_data.nla_tracks):
            arm.animation_data.nla_tracks.remove(track)
    arm.data.pose_position = "POSE"
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
        pb.location = (0.0, 0.0, 0.0)
        pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        pb.scale = (1.0, 1.0, 1.0)


def set_rate(scene: bpy.types.Scene, fps: float, frames: int) -> None:
    rate = max(1, round(fps))
    scene.render.fps, scene.render.fps_base = rate, rate / fps
    scene.frame_start, scene.frame_end = 0, frames - 1
    scene.frame_set(0)


def export(fmt: str, tmp: str, deform_only: bool) -> None:
    """FBX for game engines, glTF/GLB, or .blend; see docs/retargeting.md for the settings."""
    if fmt == "blend":
        bpy.ops.wm.save_as_mainfile(filepath=tmp, check_existing=False, compress=True, copy=True)
    elif fmt == "fbx":
        bpy.ops.export_scene.fbx(
            filepath=tmp, check_existing=False, object_types={"ARMATURE", "MESH", "EMPTY"},
            apply_unit_scale=True, apply_scale_options="FBX_SCALE_ALL", axis_forward="-Z", axis_up="Y",
            use_mesh_modifiers=False, mesh_smooth_type="FACE", add_leaf_bones=False,
            primary_bone_axis="Y", secondary_bone_axis="X", armature_nodetype="NULL",
            use_armature_deform_only=deform_only, bake_anim=True, bake_anim_use_all_bones=True,
            bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
            bake_anim_force_startend_keying=True, bake_anim_step=1.0, bake_anim_simplify_factor=0.0,
            path_mode="COPY", embed_textures=True, use_custom_props=False,
        )  # fmt: skip
    else:
        render = bpy.context.scene.render
        base = render.fps_base
        render.fps_base = 1.0 / base  # Blender 5.0's glTF exporter multiplies by fps_base
        try:
            bpy.ops.export_scene.gltf(
                filepath=tmp, check_existing=False, export_format="GLB" if fmt == "glb" else "GLTF_SEPARATE",
                export_yup=True, export_apply=False, export_animations=True,
                export_animation_mode="ACTIVE_ACTIONS", export_force_sampling=True, export_frame_step=1,
                export_optimize_animation_size=False, export_skins=True, export_all_influences=True,
                export_def_bones=deform_only, export_leaf_bone=False, export_materials="EXPORT",
                export_morph=True,
            )  # fmt: skip
        finally:
            render.fps_base = base


def apply_job(job: dict[str, Any], arrays: Any) -> None:
    load(job["character"])
    scene = bpy.context.scene
    arm = bpy.data.objects[job["armature"]]
    prepare(arm, job["reparent"], job["mute"])
    quats, locs = arrays[f"{job['key']}_quats"], arrays[f"{job['key']}_locs"]
    frames = np.arange(len(quats), dtype=np.float64)
    channels = [
        (f'pose.bones["{b}"].rotation_quaternion', b, quats[:, i])
        for i, b in enumerate(job["bones"])
    ]
    channels += [
        (f'pose.bones["{b}"].location', b, locs[:, i]) for i, b in enumerate(job["located"])
    ]
    key_channels(arm, "OBJECT", f"{job['name']}_{arm.name}", frames, channels)
    set_rate(scene, job["fps"], len(quats))
    for out in job["outputs"]:
        export(out["format"], out["tmp"], job["deform_only"])


def apply(job_file: str) -> int:
    spec = json.loads(Path(job_file).read_text())
    arrays = np.load(spec["arrays"])
    result: dict[str, Any] = {"errors": {}}
    for job in spec["jobs"]:
        try:
            apply_job(job, arrays)
        except Exception as exc:  # recorded per job; the parent turns it into one line
            traceback.print_exc()
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            result["errors"][job["name"]] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
        Path(spec["result"]).write_text(json.dumps(result))
    return 0


def render(path: str, out: str, frames: list[int]) -> int:
    """Workbench render of ``frames`` of a written file, side by side, one camera for all."""
    from mathutils import Vector

    load(path)
    scene = bpy.context.scene
    meshes = [o for o in scene.objects if o.type == "MESH"]
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.render.resolution_x, scene.render.resolution_y = 360, 640
    cam = bpy.data.objects.new("mocap_camera", bpy.data.cameras.new("mocap_camera"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    lows, highs = [], []
    for f in frames:
        scene.frame_set(f)
        for m in meshes:
            pts = world_vertices(m)
            lows.append(pts.min(0))
            highs.append(pts.max(0))
    lo, hi = (np.min(lows, 0), np.max(highs, 0)) if lows else (np.zeros(3), np.ones(3))
    centre = (lo + hi) / 2
    size = max(float(hi[2] - lo[2]), float(hi[0] - lo[0]) * 640 / 360, 0.5)
    distance = 1.15 * size * cam.data.lens / cam.data.sensor_width * 640 / 360
    cam.location = (centre[0] + 0.4 * distance, centre[1] - distance, centre[2] + 0.15 * size)
    cam.rotation_mode = "QUATERNION"
    cam.rotation_quaternion = Vector((centre - np.array(cam.location)).tolist()).to_track_quat(
        "-Z", "Y"
    )
    tiles = []
    for f in frames:
        scene.frame_set(f)
        scene.render.filepath = f"{out}.{f}.png"
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(scene.render.filepath)
        tiles.append(np.array(img.pixels[:]).reshape(img.size[1], img.size[0], 4))
        Path(scene.render.filepath).unlink()
    sheet = np.concatenate(tiles, axis=1)
    img = bpy.data.images.new("sheet", sheet.shape[1], sheet.shape[0], alpha=True)
    img.pixels.foreach_set(sheet.ravel().astype(np.float32))
    img.filepath_raw, img.file_format = out, "PNG"
    img.save()
    return 0


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["inspect"] and len(argv) == 3:
            return inspect(argv[1], argv[2])
        if argv[:1] == ["apply"] and len(argv) == 2:
            return apply(argv[1])
        if argv[:1] == ["render"] and len(argv) == 4:
            return render(argv[1], argv[2], [int(f) for f in argv[3].split(",")])
    except Exception as exc:
        traceback.print_exc()
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        print(f"Error: {lines[-1] if lines else type(exc).__name__}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
