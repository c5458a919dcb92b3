"""Child-process side of :mod:`exporters.blender`: builds Blender scenes and writes files.

Run only as a script by ``exporters.blender`` (never imported by the pipeline)::

    python exporters/_blender_child.py write JOB.json

Scenes are built by ``_blender_scene.py``; reading files back is the separate script
``_blender_read.py``.
Needs only numpy and bpy. See ``exporters/blender.py`` for the scene conventions.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
import numpy as np

# The scene builders live in the sibling script _blender_scene.py: run as a script, this file has
# exporters/ as sys.path[0]; type checkers see the same module through the package.
if TYPE_CHECKING:
    from exporters._blender_scene import (
        add_camera,
        add_correctives,
        add_footage,
        add_mesh,
        build_armature,
        key_animation,
        new_scene,
    )
else:
    from _blender_scene import (
        add_camera,
        add_correctives,
        add_footage,
        add_mesh,
        build_armature,
        key_animation,
        new_scene,
    )


def write_file(fmt: str, tmp: Path, final: Path) -> None:
    """Write the current scene as ``fmt`` to ``tmp``, then rename it to ``final``."""
    if fmt == "blend":
        bpy.ops.wm.save_as_mainfile(
            filepath=str(tmp), check_existing=False, compress=True, copy=True
        )
    elif fmt == "fbx":
        with basis_only_while_baking():
            export_fbx(tmp)
    elif fmt in ("glb", "gltf"):
        out = tmp / final.name if fmt == "gltf" else tmp
        if fmt == "gltf":
            tmp.mkdir()
        # Blender 5.0's glTF exporter converts frames to seconds with fps * fps_base (instead of
        # fps / fps_base); invert fps_base while it runs so 29.97 fps keys land at k / 29.97 s.
        render = bpy.context.scene.render
        base = render.fps_base
        render.fps_base = 1.0 / base
        try:
            with basis_only_while_baking():
                export_gltf(out, fmt)
        finally:
            render.fps_base = base
        if fmt == "gltf":  # the .gltf names its .bin, so both keep their final names
            for part in sorted(tmp.iterdir(), key=lambda f: f.suffix == ".gltf"):
                os.replace(part, final.with_name(part.name))
            shutil.rmtree(tmp)
            return
    else:
        raise ValueError(f"unknown format {fmt}")
    os.replace(tmp, final)


@contextmanager
def basis_only_while_baking() -> Iterator[None]:
    """Show only the basis of shape-keyed meshes while an exporter steps through the frames.

    The FBX and glTF exporters bake by setting every frame and reading the animated key values
    (and shape data) from the original datablocks; they never need the mesh deformed by 207 keys,
    which costs ~10 ms per frame and per person. Restored afterwards (the .blend keeps it off).
    """
    saved = [
        (o, o.show_only_shape_key, o.active_shape_key_index)
        for o in bpy.context.scene.objects
        if o.type == "MESH" and o.data.shape_keys is not None
    ]
    for obj, _, _ in saved:
        obj.show_only_shape_key, obj.active_shape_key_index = True, 0
    try:
        yield
    finally:
        for obj, only, index in saved:
            obj.show_only_shape_key, obj.active_shape_key_index = only, index


def export_fbx(path: Path) -> None:
    """Binary FBX: Y up, -Z forward, no leaf bones, every frame baked, shape key animation."""
    bpy.ops.export_scene.fbx(
        filepath=str(path), check_existing=False, object_types={"ARMATURE", "MESH", "CAMERA"},
        apply_unit_scale=True, apply_scale_options="FBX_SCALE_ALL", axis_forward="-Z", axis_up="Y",
        use_mesh_modifiers=False, mesh_smooth_type="FACE", add_leaf_bones=False,
        primary_bone_axis="Y", secondary_bone_axis="X", armature_nodetype="NULL",
        bake_anim=True, bake_anim_use_all_bones=True, bake_anim_use_nla_strips=False,
        bake_anim_use_all_actions=False, bake_anim_force_startend_keying=True,
        bake_anim_step=1.0, bake_anim_simplify_factor=0.0, use_custom_props=False,
    )  # fmt: skip


def export_gltf(path: Path, fmt: str) -> None:
    """glTF 2.0 (Y-up): skin with every influence, every frame sampled, no modifiers applied;
    shape keys as morph targets (positions only: normals are recomputed by every viewer) with
    their weights animated."""
    bpy.ops.export_scene.gltf(
        filepath=str(path), check_existing=False, export_format="GLB" if fmt == "glb" else "GLTF_SEPARATE",
        export_yup=True, export_apply=False, export_animations=True, export_animation_mode="SCENE", export_anim_scene_split_object=False,
        export_force_sampling=True, export_frame_step=1, export_optimize_animation_size=False,
        export_skins=True, export_all_influences=True, export_def_bones=False, export_leaf_bone=False,
        export_materials="NONE", export_texcoords=False,
        export_morph=True, export_morph_normal=False, export_morph_animation=True,
        export_cameras=True,
    )  # fmt: skip


def one_line(exc: Exception) -> str:
    """The telling line of an exception; bpy operators wrap a whole traceback in RuntimeError."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Location:")]
    if isinstance(exc, RuntimeError) and lines and "Error" in lines[-1]:
        return lines[-1]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def run_job(job_file: str) -> int:
    """Build each distinct scene once and write all its files; record results as they happen."""
    job = json.loads(Path(job_file).read_text())
    arrays = np.load(job["arrays"])
    result: dict[str, Any] = {"errors": {}, "seconds": {}, "scene_seconds": 0.0}
    groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for out in job["outputs"]:
        groups.setdefault(tuple(out["rigs"]), []).append(out)

    def record(out: dict[str, Any], error: str | None) -> None:
        result["errors"][out["path"]] = error
        partial = Path(job["result"] + ".partial")
        partial.write_text(json.dumps(result))
        os.replace(partial, job["result"])  # the parent never reads half a result

    for rig_ids, outs in groups.items():
        metas = [job["rigs"][i] for i in rig_ids]
        try:
            start = time.perf_counter()
            scene = new_scene(metas[0]["fps"])
            combined = len(rig_ids) > 1
            scene.name = "people" if combined else metas[0]["name"]  # names the glTF animation
            first, last = [], []
            for i, meta in zip(rig_ids, metas, strict=True):
                arm = build_armature(scene, meta, arrays[f"{i}_offsets"])
                f0 = meta["frame_start"] if combined else 0
                moved = {j: arrays[f"{i}_moved"][:, k] for k, j in enumerate(meta.get("moved", []))}
                key_animation(
                    arm, meta["joint_names"], arrays[f"{i}_rot"], arrays[f"{i}_root"], f0, moved
                )
                first.append(f0)
                last.append(f0 + arrays[f"{i}_rot"].shape[0] - 1)
                if meta["mesh"]:
                    body = add_mesh(
                        scene,
                        arm,
                        meta["joint_names"],
                        arrays[f"{i}_verts"],
                        arrays[f"{i}_faces"],
                        arrays[f"{i}_weights"],
                    )
                    if meta["correctives"]:
                        dirs = arrays[f"{i}_posedirs"]
                        add_correctives(body, meta["joint_names"], dirs, arrays[f"{i}_rot"], f0)
            if job.get("camera"):  # video frame f is scene frame f - (first frame of the file)
                shift = 0 if combined else metas[0]["frame_start"]
                frames = arrays["camera_frames"] - shift
                cam = add_camera(
                    scene, job["camera"], arrays["camera_pos"], arrays["camera_rot"], frames
                )
                if job["camera"]["footage"] and Path(job["camera"]["footage"]).is_file():
                    try:
                        add_footage(cam, job["camera"]["footage"], -shift)
                    except RuntimeError:  # footage Blender cannot read: the camera stays
                        traceback.print_exc()
            scene.frame_start, scene.frame_end = min(first), max(last)
            scene.frame_set(scene.frame_start)
            result["scene_seconds"] += time.perf_counter() - start
        except Exception as exc:  # the scene failed: every file of it fails, other scenes go on
            for out in outs:
                record(
                    out,
                    f"building the Blender scene for {Path(out['path']).name} failed: {one_line(exc)}",
                )
            traceback.print_exc()
            continue
        for out in outs:
            try:
                start = time.perf_counter()
                Path(out["path"]).parent.mkdir(parents=True, exist_ok=True)  # as some exporters do
                write_file(out["format"], Path(out["tmp"]), Path(out["path"]))
                result["seconds"][out["path"]] = time.perf_counter() - start
                record(out, None)
            except Exception as exc:
                record(out, f"writing {Path(out['path']).name} failed: {one_line(exc)}")
                traceback.print_exc()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) == 2:
        return run_job(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
