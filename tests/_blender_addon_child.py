"""bpy child for tests/test_blender_addon.py (never imported by pytest).

    python tests/_blender_addon_child.py MODE ZIP MOCAP INPUT OUT_DIR

Installs the extension zip (``bpy.ops.extensions.package_install_files``, enabled on install),
points its preferences at MOCAP and runs one scenario, writing ``OUT_DIR/result.json`` and
``OUT_DIR/bones.npz`` (per armature: bone heads in world space at every frame of its action):

- ``run``: the panel's Run on the video INPUT (``--model lite``), new SMPL armatures;
- ``npz``: Import motion.npz INPUT onto new SMPL armatures (``bvh``: a BVH file INPUT);
- ``rigify``: a Rigify rig generated here (saved as ``OUT_DIR/rig.blend``), selected, and
  Import motion.npz INPUT retargeted onto it (with the saved bone map $MOCAP_TEST_BONE_MAP when
  set, else the presets);
- ``error``: Run on INPUT, a file that is no video: the one-line report;
- ``cancel``: Run on INPUT, Cancel after the child has started; the scene before and after;
- ``twice``: Import motion.npz INPUT, then a copy of it from ``OUT_DIR/again/``, in one file;
- ``rollback``: as ``rigify``, with the import made to fail after the retarget was applied;
- ``badbvh``: Import the broken BVH INPUT; ``noexec``: Run with INPUT, a file that is not
  executable, as the mocap command;
- ``reload``: Run on the video INPUT, then File > New (``wm.read_homefile``) mid-run.
"""

import json
import os
import sys
import time
from pathlib import Path

import bpy
import numpy as np


def install(zip_path: str, mocap: str):
    result = bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}, result
    import importlib

    addon = importlib.import_module("bl_ext.user_default.mocap_blender")
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    prefs.mocap_path, prefs.output_dir = mocap, str(Path(sys.argv[-1]) / "runs")  # OUT_DIR/runs
    return addon


def scene_state() -> dict:
    scene = bpy.context.scene
    return {
        "objects": sorted(o.name for o in bpy.data.objects),
        "actions": sorted(a.name for a in bpy.data.actions),
        "collections": sorted(c.name for c in bpy.data.collections),
        "scenes": sorted(s.name for s in bpy.data.scenes),
        "frames": [scene.frame_start, scene.frame_end],
        "fps": scene.render.fps / scene.render.fps_base,
        "camera": scene.camera.name if scene.camera else "",
    }


def dump(out: Path) -> dict:
    scene, arrays, info = bpy.context.scene, {}, {}
    for obj in bpy.data.objects:
        action = obj.animation_data.action if obj.animation_data else None
        if obj.type != "ARMATURE" or action is None:
            continue
        first, last = (round(f) for f in action.frame_range)
        frames = list(range(first, last + 1))
        heads = []
        for f in frames:
            scene.frame_set(f)
            heads.append([list(obj.matrix_world @ pb.head) for pb in obj.pose.bones])
        arrays[obj.name] = np.array(heads)
        info[obj.name] = {
            "action": action.name,
            "frames": [first, last],
            "bones": [pb.name for pb in obj.pose.bones],
        }
    np.savez(out / "bones.npz", **arrays)
    cam = scene.camera
    camera = {}
    if cam is not None:
        camera = {
            "name": cam.name,
            "lens": cam.data.lens,
            "sensor": cam.data.sensor_width,
            "backgrounds": [b.clip.filepath for b in cam.data.background_images if b.clip],
            "resolution": [scene.render.resolution_x, scene.render.resolution_y],
        }
    return {"armatures": info, "camera": camera, "scene": scene_state()}


def rig_state(rig: bpy.types.Object) -> dict:
    """What an import may change on the user's rig: bone parents, muted constraints, action."""
    return {
        "parents": {b.name: b.parent.name if b.parent else "" for b in rig.data.bones},
        "muted": sorted(
            f"{pb.name}/{c.name}" for pb in rig.pose.bones for c in pb.constraints if c.mute
        ),
        "action": rig.animation_data.action.name
        if rig.animation_data and rig.animation_data.action
        else "",
        "modes": sorted({pb.rotation_mode for pb in rig.pose.bones}),
    }


def addon_prefs(addon):
    return bpy.context.preferences.addons[addon.__name__].preferences


def rigify_rig() -> bpy.types.Object:
    bpy.ops.preferences.addon_enable(module="rigify")
    bpy.ops.object.armature_human_metarig_add()
    meta = bpy.context.object
    bpy.ops.pose.rigify_generate()
    rig = bpy.context.object
    bpy.data.objects.remove(meta)
    bpy.context.view_layer.objects.active = rig
    rig.select_set(True)
    return rig


def main(argv: list[str]) -> int:
    mode, zip_path, mocap, source, out = argv[0], argv[1], argv[2], argv[3], Path(argv[4])
    for obj in list(bpy.data.objects):  # the factory cube, light and camera
        bpy.data.objects.remove(obj)
    addon = install(zip_path, mocap)
    ctx, settings = bpy.context, bpy.context.scene.mocap
    state = ctx.window_manager.mocap_state
    settings.model, settings.video = "lite", source
    result: dict = {"mode": mode, "blender": list(bpy.app.version)}
    if mode == "run":
        result["operator"] = sorted(bpy.ops.mocap.run())
    elif mode == "error":  # an ERROR report raises from bpy.ops when called from Python
        try:
            result["operator"] = sorted(bpy.ops.mocap.run())
        except RuntimeError as exc:
            result["operator"], result["report"] = ["CANCELLED"], str(exc)
    elif mode in ("npz", "bvh"):
        result["operator"] = sorted(bpy.ops.mocap.import_motion(filepath=source))
    elif mode == "rigify":
        rig = rigify_rig()
        bpy.ops.wm.save_as_mainfile(filepath=str(out / "rig.blend"), copy=True)
        settings.target = "SELECTED"
        if os.environ.get("MOCAP_TEST_BONE_MAP"):  # a saved map instead of the presets
            settings.bone_map, settings.bone_map_file = "FILE", os.environ["MOCAP_TEST_BONE_MAP"]
        result["rig"] = rig.name
        result["operator"] = sorted(bpy.ops.mocap.import_motion(filepath=source))
    elif mode == "twice":  # a second import in one file: names stay <clip>_<person>
        assert sorted(bpy.ops.mocap.import_motion(filepath=source)) == ["FINISHED"]
        again = out / "again"
        again.mkdir()
        (again / "motion.npz").write_bytes(Path(source).read_bytes())
        result["first_actions"] = sorted(a.name for a in bpy.data.actions)
        result["operator"] = sorted(bpy.ops.mocap.import_motion(filepath=str(again / "motion.npz")))
    elif mode == "rollback":  # the import fails after the scene and the first action came in
        rig = rigify_rig()
        settings.target = "SELECTED"
        result["rig"], result["before"], result["rig_before"] = (
            rig.name,
            scene_state(),
            rig_state(rig),
        )
        real = addon.importer.apply_retargeted

        def failing(*args, **kwargs):
            real(*args, **kwargs)
            raise RuntimeError("injected failure after the retarget was applied")

        addon.importer.apply_retargeted = failing
        try:
            result["operator"] = sorted(bpy.ops.mocap.import_motion(filepath=source))
        except RuntimeError as exc:
            result["operator"], result["report"] = ["CANCELLED"], str(exc)
        result["after"], result["rig_after"] = scene_state(), rig_state(rig)
        result["runs_left"] = sorted(p.name for p in (out / "runs").iterdir())
    elif mode in ("badbvh", "noexec"):  # one line, not a traceback; nothing imported
        result["before"] = scene_state()
        if mode == "noexec":
            addon_prefs(addon).mocap_path = source  # a file that is not executable
        try:
            if mode == "badbvh":
                result["operator"] = sorted(bpy.ops.mocap.import_motion(filepath=source))
            else:
                result["operator"] = sorted(bpy.ops.mocap.run())
        except RuntimeError as exc:
            result["operator"], result["report"] = ["CANCELLED"], str(exc)
        result["after"] = scene_state()
    elif mode == "reload":  # File > New mid-run: the child stops, its folder goes, Run works again
        controller = addon.operators.start(ctx)
        started = time.time()
        while time.time() - started < 3.0:
            assert controller.step(ctx) == "RUNNING", state.last_error
            time.sleep(0.2)
        proc, owned = controller.job._proc, controller.owned
        bpy.ops.wm.read_homefile()
        result["returncode"] = proc.poll()
        result["owned_exists"] = owned.exists()
        result["running"] = addon.operators.running()
        result["state_running"] = bool(bpy.context.window_manager.mocap_state.running)
        bpy.context.scene.mocap.model, bpy.context.scene.mocap.video = "lite", source  # new scene
        again = addon.operators.start(bpy.context)  # not "already running"
        again.job.cancel(1.0)
        addon.operators.stop_all()
    elif mode == "cancel":
        result["before"] = scene_state()
        controller = addon.operators.start(ctx)
        result["owned"] = str(controller.owned)
        started = time.time()
        while time.time() - started < 4.0:  # the child is busy loading and detecting
            assert controller.step(ctx) == "RUNNING", state.last_error
            time.sleep(0.2)
        pid = controller.job._proc.pid
        bpy.ops.mocap.cancel()
        result["status"] = controller.step(ctx)
        result["pid"], result["returncode"] = pid, controller.job._proc.returncode
        result["owned_exists"] = controller.owned.exists()
        result["after"] = scene_state()
        result["running"] = bool(state.running)
    result["error"], result["result"] = state.last_error, state.last_result
    if mode not in ("cancel", "reload"):
        result.update(dump(out))
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    import traceback

    try:
        code = main(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the test reads the traceback; os._exit below still runs
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # result.json is written: leave without bpy's teardown, which in bpy 4.2 crashes (SIGSEGV)
    # once Rigify has generated a rig; the add-on's own exit handler has run by now (atexit)
    import atexit

    atexit._run_exitfuncs()
    os._exit(code)
