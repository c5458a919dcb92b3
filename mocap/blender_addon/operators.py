"""Operators: Run (a modal timer polling the ``mocap`` child), Cancel, Import motion.npz / BVH.

A :class:`Controller` owns one job and what to import when it succeeds; the modal operator calls
its :meth:`Controller.step` every 0.25 s, so Blender never waits on the child. Without a window
(``blender --background``, tests) ``execute`` steps it in a loop instead. Nothing touches the
scene before the child has succeeded: on Cancel or an error the output folder is removed and the
scene is as it was; the error is the CLI's one ``mocap: error:`` line, never a traceback.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy_extras.io_utils import ImportHelper

from . import fbx_import, importer
from .props import preferences
from .runner import MocapJob, error_line, export_command, find_mocap, retarget_command, run_command

ACTIVE: dict[str, Controller] = {}  # "job" -> the running controller (one at a time)


class MocapUserError(Exception):
    """A problem the user can fix (shown as one line)."""


@dataclass
class Controller:
    """A running job and where its results land: ``result_dir`` holds people.blend (and
    ``retarget/<rig>.blend`` when ``armature`` is set); ``owned`` is removed on failure."""

    job: MocapJob
    result_dir: Path
    clip: str
    armature: str  # "" = new SMPL armatures
    owned: Path
    retarget_out: Path | None = None
    camera: bool = True  # add the video's camera with the footage
    fmt: str = "blend"  # what mocap writes: blend, or fbx where Blender cannot read its .blend
    footage: str = ""  # the video (shown behind an FBX run's camera)
    info_dir: Path | None = None  # holds the run's run.json (render size of an FBX run)

    def step(self, context: bpy.types.Context) -> str:
        """RUNNING, FINISHED, CANCELLED or FAILED (state and reports updated)."""
        state = context.window_manager.mocap_state
        if state.cancel_requested:
            self.job.cancel()
            self._discard(state)
            state.label = "cancelled"
            return "CANCELLED"
        code = self.job.poll()
        state.progress, state.label = self.job.progress.fraction, self.job.progress.label
        if code is None:
            return "RUNNING"
        if code != 0:
            self._discard(state)
            state.last_error = error_line(self.job.output)
            return "FAILED"
        try:
            done = self._import(context)
        except (RuntimeError, OSError) as exc:
            self._discard(state)
            state.last_error = f"importing the result failed: {_one_line(exc)}"
            return "FAILED"
        state.running, state.last_error = False, ""
        state.last_result = f"{', '.join(done.actions) or 'no action'} ({self.result_dir})"
        ACTIVE.pop("job", None)
        return "FINISHED"

    def _scene(self, path: Path, armatures: bool, context: bpy.types.Context) -> importer.Imported:
        if self.fmt == "blend":
            return importer.import_scene(path, self.clip, armatures, self.camera, context)
        info = fbx_import.run_info(self.info_dir) if self.info_dir else {}
        size = info.get("image_size")
        footage = self.footage or str(info.get("source", ""))
        return fbx_import.import_fbx_scene(
            path, self.clip, armatures, self.camera, footage,
            (int(size[0]), int(size[1])) if size else None, context,
        )  # fmt: skip

    def _import(self, context: bpy.types.Context) -> importer.Imported:
        scene = self.result_dir / f"people.{self.fmt}"
        if not scene.is_file():
            raise RuntimeError(f"mocap wrote no {scene.name} in {self.result_dir}")
        if not self.armature:
            return self._scene(scene, True, context)
        target = bpy.data.objects.get(self.armature)
        if target is None or target.type != "ARMATURE":
            raise RuntimeError(f"the armature {self.armature!r} is gone")
        done = self._scene(scene, False, context)
        assert self.retarget_out is not None
        files = importer.retarget_files(self.retarget_out, done.people)
        if not files:
            raise RuntimeError("mocap retarget wrote no file")
        load = fbx_import.load_retargeted if self.fmt == "fbx" else importer.load_retargeted
        importer.apply_retargeted(files, self.clip, target, done, load)
        return done

    def _discard(self, state: bpy.types.PropertyGroup) -> None:
        shutil.rmtree(self.owned, ignore_errors=True)
        state.running, state.cancel_requested, state.progress = False, False, 0.0
        ACTIVE.pop("job", None)


def _one_line(exc: Exception) -> str:
    """The telling line of an error; bpy operators wrap a whole traceback in RuntimeError."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Location:")]
    return lines[-1] if lines else type(exc).__name__


def _target(context: bpy.types.Context) -> str:
    """The armature to retarget onto ("" for new SMPL armatures)."""
    if context.scene.mocap.target == "NEW":
        return ""
    obj = context.active_object
    if obj is None or obj.type != "ARMATURE":
        obj = next((o for o in context.selected_objects if o.type == "ARMATURE"), None)
    if obj is None:
        raise MocapUserError("select an armature (or choose 'New SMPL armature')")
    return str(obj.name)


def _bone_map(settings: bpy.types.PropertyGroup) -> str:
    """The retarget's ``--map``: a preset name, ``auto`` or the saved map's path."""
    if settings.bone_map != "FILE":
        return str(settings.bone_map)
    if not settings.bone_map_file:
        raise MocapUserError("choose the saved bone map (.json) first")
    path = Path(bpy.path.abspath(settings.bone_map_file)).resolve()
    if not path.is_file():
        raise MocapUserError(f"{path} does not exist")
    return str(path)


def _mocap(context: bpy.types.Context) -> str:
    configured = bpy.path.abspath(preferences(context).mocap_path)
    found = find_mocap(configured)
    if found is None:
        where = f"at {configured}" if configured else "on PATH"
        raise MocapUserError(
            f"the mocap command was not found {where}; set it in the add-on preferences"
        )
    return found


def _workdir(context: bpy.types.Context) -> Path:
    base = bpy.path.abspath(preferences(context).output_dir) or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="mocap-", dir=base))


def start(context: bpy.types.Context, motion: str = "") -> Controller:
    """Start a run of the panel's video (or, with ``motion``, an export of that motion.npz)."""
    if "job" in ACTIVE:
        raise MocapUserError("mocap is already running")
    settings, mocap, armature = context.scene.mocap, _mocap(context), _target(context)
    foot = settings.foot_lock
    bone_map = _bone_map(settings) if armature else "auto"  # checked before anything is made
    if motion:
        motion_path = Path(bpy.path.abspath(motion)).resolve()
        if not motion_path.is_file():
            raise MocapUserError(f"{motion_path} does not exist")
        clip = motion_path.parent.name
    else:
        video = Path(bpy.path.abspath(settings.video)).resolve() if settings.video else None
        if video is None or not video.exists():
            raise MocapUserError(
                "choose a video file first" if video is None else f"{video} does not exist"
            )
        clip = (video.name if video.is_dir() else video.stem).lstrip(".").strip() or "clip"
    owned, fmt = _workdir(context), importer.output_format()
    result_dir = owned / "export" if motion else owned / clip
    if motion:
        commands = [export_command(mocap, str(motion_path), str(result_dir), foot, fmt)]
    else:
        motion_path = result_dir / "motion.npz"
        commands = [run_command(mocap, str(video), str(owned), settings.model, settings.start,
                                settings.end, settings.smooth_strength, foot, fmt)]  # fmt: skip
    retarget_out = None
    if armature:
        rig = owned / "rig" / f"{bpy.path.clean_name(armature)}.blend"
        importer.save_armature_copy(bpy.data.objects[armature], rig)
        retarget_out = owned / "retarget" / f"{bpy.path.clean_name(armature)}.{fmt}"
        retarget_out.parent.mkdir()
        commands.append(
            retarget_command(mocap, str(motion_path), str(rig), str(retarget_out), foot, bone_map)
        )
    weights = [1.0] if len(commands) == 1 else ([0.5, 0.5] if motion else [0.85, 0.15])
    controller = Controller(
        MocapJob(commands, weights), result_dir, clip, armature, owned, retarget_out,
        settings.camera, fmt, "" if motion else str(video), motion_path.parent,
    )  # fmt: skip

    state = context.window_manager.mocap_state
    state.running, state.cancel_requested, state.progress = True, False, 0.0
    state.last_error = state.last_result = ""
    ACTIVE["job"] = controller
    return controller


def _redraw(context: bpy.types.Context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


class _Launch:
    """Shared by Run and Import motion: modal with a window, a polling loop without one."""

    _timer = None
    motion = ""
    report: Callable[[set[str], str], None]  # bpy.types.Operator's

    def launch(self, context: bpy.types.Context) -> set[str]:
        try:
            controller = start(context, self.motion)
        except MocapUserError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if context.window is None or bpy.app.background:
            while (status := controller.step(context)) == "RUNNING":
                time.sleep(0.1)
            return self.finish(context, status)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        controller = ACTIVE.get("job")
        status = controller.step(context) if controller is not None else "CANCELLED"
        state = context.window_manager.mocap_state
        if status == "RUNNING":
            context.workspace.status_text_set(f"mocap: {state.label} ({state.progress:.0%})")
            _redraw(context)
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        _redraw(context)
        return self.finish(context, status)

    def finish(self, context: bpy.types.Context, status: str) -> set[str]:
        state = context.window_manager.mocap_state
        if status == "FAILED":
            self.report({"ERROR"}, f"mocap: {state.last_error}")
            return {"CANCELLED"}
        if status == "CANCELLED":
            self.report({"WARNING"}, "mocap: cancelled; the scene is unchanged")
            return {"CANCELLED"}
        self.report({"INFO"}, f"mocap: imported {state.last_result}")
        return {"FINISHED"}


class MOCAP_OT_run(_Launch, bpy.types.Operator):
    """Convert the video with mocap and import the animation"""

    bl_idname = "mocap.run"
    bl_label = "Run mocap"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not context.window_manager.mocap_state.running

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return self.launch(context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        return self.launch(context)


class MOCAP_OT_cancel(bpy.types.Operator):
    """Stop the running mocap job; nothing is imported"""

    bl_idname = "mocap.cancel"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.window_manager.mocap_state.cancel_requested = True
        return {"FINISHED"}


class MOCAP_OT_import_motion(_Launch, bpy.types.Operator, ImportHelper):
    """Import a motion.npz (through mocap export, no model run) or a BVH from an earlier run"""

    bl_idname = "mocap.import_motion"
    bl_label = "Import motion.npz / BVH"

    filter_glob: bpy.props.StringProperty(default="*.npz;*.bvh", options={"HIDDEN"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not context.window_manager.mocap_state.running

    def execute(self, context: bpy.types.Context) -> set[str]:
        path = Path(bpy.path.abspath(self.filepath))
        if path.suffix.lower() == ".bvh":
            if not path.is_file():
                self.report({"ERROR"}, f"mocap: {path} does not exist")
                return {"CANCELLED"}
            done = importer.import_bvh(path, context)
            self.report({"INFO"}, f"mocap: imported {', '.join(done.actions)}")
            return {"FINISHED"}
        self.motion = str(path)
        return self.launch(context)


CLASSES = (MOCAP_OT_run, MOCAP_OT_cancel, MOCAP_OT_import_motion)
