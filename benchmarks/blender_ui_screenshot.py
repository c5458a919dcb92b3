"""Runs inside a windowed Blender (under Xvfb) for benchmarks/blender_ui_screenshot.sh.

    blender --python blender_ui_screenshot.py -- \
        ZIP MOCAP VIDEO OUT_DIR [--run | --retarget | --reload]

Installs the extension ZIP (Preferences > Get Extensions > Install from Disk does the same),
points its preferences at MOCAP, fills the panel with VIDEO and the lite model, opens the 3D
view's sidebar on the mocap tab and captures the X screen (``import -window root``; Blender's own
screen.screenshot reads back black under software GL) to OUT_DIR/panel.png. With ``--run`` it
then presses Run as a user would (the modal operator, the child ``mocap run``), captures the
panel while the child runs (running.png) and, once imported, the camera view over the footage
(result.png). With ``--retarget`` it adds Rigify's human metarig, selects it and sets the target
to the selected armature with a saved bone map (retarget.png: the panel's retarget rows).
With ``--reload`` it presses Run, then File > New while the child runs, and records in shot.json
whether the child stopped, its folder went and the add-on is free again (no screenshot).
OUT_DIR/shot.json has Blender's version, the screen rectangles of the 3D view and
its sidebar (pixels from the top left) and the panel's state at the end. Never imported by pytest.
"""

import json
import subprocess
import sys
import traceback
from pathlib import Path

import bpy

ZIP, MOCAP, VIDEO, OUT = sys.argv[sys.argv.index("--") + 1 :][:4]
RELOAD = "--reload" in sys.argv  # Run, then File > New mid-run
RUN = "--run" in sys.argv or RELOAD
RETARGET = "--retarget" in sys.argv
INFO: dict = {"blender": bpy.app.version_string, "shots": []}


def window():
    return bpy.context.window_manager.windows[0]


def view3d():
    area = next(a for a in window().screen.areas if a.type == "VIEW_3D")
    return area, next(r for r in area.regions if r.type == "UI")


def rect(win, obj) -> list[int]:
    """[left, top, width, height] in screen pixels (Blender counts y from the bottom)."""
    return [obj.x, win.height - obj.y - obj.height, obj.width, obj.height]


def capture(name: str) -> None:
    win = window()
    with bpy.context.temp_override(window=win):  # draw and swap now, so the screen is current
        bpy.ops.wm.redraw_timer(type="DRAW_WIN_SWAP", iterations=1)
    area, sidebar = view3d()
    path = Path(OUT) / f"{name}.png"
    subprocess.run(["import", "-window", "root", str(path)], check=True)
    INFO["shots"].append(name)
    INFO["view3d"], INFO["sidebar"] = rect(win, area), rect(win, sidebar)
    INFO["tab"] = sidebar.active_panel_category
    print(f"blender_ui_screenshot: {path}", flush=True)


def finish() -> None:
    state = bpy.context.window_manager.mocap_state
    INFO.update(last_result=state.last_result, last_error=state.last_error)
    INFO["objects"] = sorted(f"{o.name} ({o.type})" for o in bpy.data.objects)
    INFO["actions"] = sorted(a.name for a in bpy.data.actions)
    (Path(OUT) / "shot.json").write_text(json.dumps(INFO, indent=1))
    bpy.ops.wm.quit_blender()


def guarded(step):
    """A timer callback that quits Blender (exit code 1 via shot.json's "error") on an error."""

    def run():
        try:
            return step()
        except Exception:
            INFO["error"] = traceback.format_exc()
            print(INFO["error"], file=sys.stderr, flush=True)
            finish()
            return None

    return run


@guarded
def setup():
    result = bpy.ops.extensions.package_install_files(
        filepath=ZIP, repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}, result
    prefs = bpy.context.preferences.addons["bl_ext.user_default.mocap_blender"].preferences
    prefs.mocap_path, prefs.output_dir = MOCAP, str(Path(OUT) / "runs")
    cube = bpy.data.objects.get("Cube")
    if cube is not None:
        bpy.data.objects.remove(cube)
    settings = bpy.context.scene.mocap
    settings.video, settings.model = VIDEO, "lite"
    area, _ = view3d()
    area.spaces.active.show_region_ui = True  # the N panel
    bpy.app.timers.register(open_tab, first_interval=1.0)


@guarded
def open_tab():
    area, sidebar = view3d()
    sidebar.active_panel_category = "mocap"  # the tab a click on "mocap" selects
    area.tag_redraw()
    bpy.app.timers.register(shot_panel, first_interval=1.5)


@guarded
def shot_panel():
    if RETARGET:
        bpy.ops.preferences.addon_enable(module="rigify")
        bpy.ops.object.armature_human_metarig_add()  # selected and active
        settings = bpy.context.scene.mocap
        settings.target, settings.bone_map = "SELECTED", "FILE"
        # a map as `mocap retarget --save-map` writes it (here the repo's Rigify preset)
        settings.bone_map_file = str(Path(MOCAP).parents[2] / "exporters/bonemaps/rigify.json")
        view3d()[0].tag_redraw()
        bpy.app.timers.register(shot_retarget, first_interval=1.5)
        return
    capture("panel")
    if not RUN:
        finish()
        return
    area, sidebar = view3d()
    win = window()
    with bpy.context.temp_override(window=win, screen=win.screen, area=area, region=sidebar):
        result = bpy.ops.mocap.run("INVOKE_DEFAULT")  # what the Run button calls
    assert result == {"RUNNING_MODAL"}, result
    bpy.app.timers.register(reload if RELOAD else watch, first_interval=3.0 if RELOAD else 0.5)


@guarded
def reload():
    import importlib

    operators = importlib.import_module("bl_ext.user_default.mocap_blender.operators")
    controller = operators.ACTIVE["job"]
    proc, owned = controller.job._proc, controller.owned
    INFO["before_reload"] = {"child_running": proc.poll() is None, "owned": owned.exists()}
    bpy.ops.wm.read_homefile()  # File > New: Blender drops the modal handler
    INFO["after_reload"] = {
        "child_exit": proc.poll(), "owned": owned.exists(), "running": operators.running(),
        "state_running": bool(bpy.context.window_manager.mocap_state.running),
    }  # fmt: skip
    finish()


@guarded
def shot_retarget():
    capture("retarget")
    finish()


@guarded
def watch():
    state = bpy.context.window_manager.mocap_state
    if state.running:
        if "running" not in INFO["shots"] and state.progress >= 0.05:
            capture("running")
        return 0.25
    if state.last_error:
        capture("result")
        finish()
        return None
    scene = bpy.context.scene
    scene.frame_set((scene.frame_start + scene.frame_end) // 2)
    area, _ = view3d()
    area.spaces.active.region_3d.view_perspective = "CAMERA"  # the footage behind the armatures
    region = next(r for r in area.regions if r.type == "WINDOW")
    with bpy.context.temp_override(window=window(), area=area, region=region):
        bpy.ops.view3d.view_center_camera()
    bpy.app.timers.register(shot_result, first_interval=1.5)
    return None


@guarded
def shot_result():
    capture("result")
    finish()


bpy.app.timers.register(setup, first_interval=1.0)
