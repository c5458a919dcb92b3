"""Operators: Run (a modal timer polling the ``mocap`` child), Cancel, Import motion.npz / BVH.

A :class:`Controller` owns one job and what to import when it succeeds; the modal operator calls
its :meth:`Controller.step` every 0.25 s, so Blender never waits on the child. Without a window
(``blender --background``, tests) ``execute`` steps it in a loop instead. Nothing touches the
scene before the child has succeeded: on Cancel or an error the output folder is removed and the
scene is as it was; an import that fails part-way is rolled back (:func:`.importer.rollback`);
the error is the CLI's one ``mocap: error:`` line, never a traceback. Loading a file, closing the
window or quitting mid-run stops the child and removes its folder (:func:`stop_all`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import time
import traceback
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
    scene: str = ""  # the scene Run was pressed in: the result goes there
    armature_uid: int = -1  # the target's session_uid: found again if renamed meanwhile

    def step(self, context: bpy.types.Context) -> str:
        """RUNNING, FINISHED, CANCELLED or FAILED (state and reports updated)."""
        state = context.window_manager.mocap_state
        if state.cancel_requested:
            self.stop(state)
            state.label = "cancelled"
            return "CANCELLED"
        try:
            code = self.job.poll()
        except OSError as exc:  # the next command could not start
            self._discard(state)
            state.last_error = _one_line(exc)
            return "FAILED"
        state.progress, state.label = self.job.progress.fraction, self.job.progress.label
        if code is None:
            return "RUNNING"
        if code != 0:
            self._discard(state)
            state.last_error = error_line(self.job.output)
            return "FAILED"
        try:
            done = self._import(context)
        except Exception as exc:  # the scene is as it was (rollback); one line in the UI
            traceback.print_exc()  # the whole story in the system console
            self._discard(state)
            state.last_error = f"importing the result failed: {_one_line(exc)}"
            return "FAILED"
        for scratch in ("rig", "retarget"):  # copies of the user's rig, already imported
            shutil.rmtree(self.owned / scratch, ignore_errors=True)
        state.running, state.last_error = False, ""
        state.last_result = f"{', '.join(done.actions) or 'no action'} ({self.result_dir})"
        ACTIVE.pop("job", None)
        return "FINISHED"

    def stop(self, state: bpy.types.PropertyGroup | None, grace: float = 5.0) -> None:
        """Stop the child and remove everything the job wrote; nothing was imported."""
        self.job.cancel(grace)
        self._discard(state)

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
        """Bring the result into the scene Run was pressed in, all of it or nothing."""
        scene = self.result_dir / f"people.{self.fmt}"
        if not scene.is_file():
            raise RuntimeError(f"mocap wrote no {scene.name} in {self.result_dir}")
        here = bpy.data.scenes.get(self.scene) or context.scene
        if context.window is not None and context.window.scene != here:
            context.window.scene = here
        if context.mode != "OBJECT" and context.object is not None:
            bpy.ops.object.mode_set(mode="OBJECT")  # (Edit or Sculpt mode elsewhere meanwhile)
        if not self.armature:
            with importer.rollback(here):
                return self._scene(scene, True, context)
        target = self._target()
        with importer.rollback(here, target):
            done = self._scene(scene, False, context)
            assert self.retarget_out is not None
            files = importer.retarget_files(self.retarget_out, done.people)
            if len(files) != len(done.people):
                raise RuntimeError("mocap retarget wrote no file for " + ", ".join(
                    sorted(set(done.people) - set(files))))  # fmt: skip
            load = fbx_import.load_retargeted if self.fmt == "fbx" else importer.load_retargeted
            importer.apply_retargeted(files, self.clip, target, done, load)
        return done

    def _target(self) -> bpy.types.Object:
        """The armature chosen at Run, by its session id (it may have been renamed since)."""
        target = next((o for o in bpy.data.objects
                       if getattr(o, "session_uid", -2) == self.armature_uid), None)  # fmt: skip
        target = target or bpy.data.objects.get(self.armature)
        if target is None or target.type != "ARMATURE":
            raise RuntimeError(f"the armature {self.armature!r} is gone")
        return target

    def _discard(self, state: bpy.types.PropertyGroup | None) -> None:
        """Remove the job's folder and free the add-on (``state`` None: bpy is gone, at exit)."""
        shutil.rmtree(self.owned, ignore_errors=True)
        if state is not None:
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
    configured = _preference_path(preferences(context).mocap_path)
    found = find_mocap(configured)
    if found is None:
        where = f"at {configured}" if configured else "on PATH"
        raise MocapUserError(
            f"the mocap command was not found {where}; set it in the add-on preferences"
        )
    return found


def _preference_path(value: str) -> str:
    """A path from the preferences (global, so never relative to the open .blend): ``~`` expanded."""
    return os.path.expanduser(value) if value else ""


def _workdir(context: bpy.types.Context) -> Path:
    base = _preference_path(preferences(context).output_dir) or None
    try:
        if base:
            Path(base).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="mocap-", dir=base))
    except OSError as exc:
        where = base or tempfile.gettempdir()
        raise MocapUserError(
            f"cannot write in the output folder {where} ({exc.strerror or exc}); "
            "choose another in the add-on preferences"
        ) from None


def _clip_name(video: Path) -> str:
    """The folder ``mocap run`` names after the clip (mocap.pipeline.staging.clip_name's rule)."""
    name = video.name if video.is_dir() else video.stem
    return name.lstrip(".").strip() or video.name.lstrip(".").strip() or "clip"


def start(context: bpy.types.Context, motion: str = "") -> Controller:
    """Start a run of the panel's video (or, with ``motion``, an export of that motion.npz)."""
    if "job" in ACTIVE:
        raise MocapUserError("mocap is already running")
    settings, mocap, armature = context.scene.mocap, _mocap(context), _target(context)
    bone_map = _bone_map(settings) if armature else "auto"  # checked before anything is made
    motion_path = video = None
    if motion:
        motion_path = Path(bpy.path.abspath(motion)).resolve()
        if not motion_path.is_file():
            raise MocapUserError(f"{motion_path} does not exist")
        clip = motion_path.parent.name if motion_path.stem == "motion" else motion_path.stem
    else:
        video = Path(bpy.path.abspath(settings.video)).resolve() if settings.video else None
        if video is None or not video.exists():
            raise MocapUserError(
                "choose a video file first" if video is None else f"{video} does not exist"
            )
        clip = _clip_name(video)
    owned, fmt = _workdir(context), importer.output_format()
    try:
        controller = _prepare(
            context, owned, fmt, mocap, armature, bone_map, clip, motion_path, video
        )
    except Exception as exc:  # (the rig copy, the child's start...): one line, nothing left
        traceback.print_exc()
        shutil.rmtree(owned, ignore_errors=True)
        raise MocapUserError(f"mocap could not start: {_one_line(exc)}") from None
    state = context.window_manager.mocap_state
    state.running, state.cancel_requested, state.progress = True, False, 0.0
    state.last_error = state.last_result = ""
    ACTIVE["job"] = controller
    return controller


def _prepare(
    context: bpy.types.Context,
    owned: Path,
    fmt: str,
    mocap: str,
    armature: str,
    bone_map: str,
    clip: str,
    motion: Path | None,
    video: Path | None,
) -> Controller:
    """The job's commands, the rig copy it retargets onto, and the controller (child started)."""
    settings, foot = context.scene.mocap, context.scene.mocap.foot_lock
    result_dir = owned / "export" if motion else owned / clip
    if motion is not None:
        motion_path = motion
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
    uid = getattr(bpy.data.objects[armature], "session_uid", -1) if armature else -1
    return Controller(
        MocapJob(commands, weights), result_dir, clip, armature, owned, retarget_out,
        settings.camera, fmt, str(video or ""), motion_path.parent, context.scene.name, uid,
    )  # fmt: skip


def running() -> bool:
    """Whether a job runs in this Blender session (never read from a saved file's state)."""
    return "job" in ACTIVE


def stop_all(grace: float = 1.0) -> None:
    """Stop the running job, if any, and remove what it wrote (file load, quit, disable)."""
    controller = ACTIVE.get("job")
    if controller is None:
        return
    state = None
    with contextlib.suppress(AttributeError, ReferenceError, RuntimeError):  # (at exit: no bpy)
        state = bpy.context.window_manager.mocap_state
    controller.stop(state, grace)
    if state is not None:
        state.label = "stopped"


@bpy.app.handlers.persistent
def _on_load_pre(*_args: object) -> None:
    stop_all()


@bpy.app.handlers.persistent
def _on_load_post(*_args: object) -> None:
    """A file saved mid-run holds ``running`` in its window manager: nothing runs now."""
    if not running() and bpy.context.window_manager is not None:
        state = bpy.context.window_manager.mocap_state
        state.running = state.cancel_requested = False


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)
    atexit.register(stop_all)


def unregister() -> None:
    stop_all()
    for handlers, handler in (
        (bpy.app.handlers.load_pre, _on_load_pre),
        (bpy.app.handlers.load_post, _on_load_post),
    ):
        if handler in handlers:
            handlers.remove(handler)
    atexit.unregister(stop_all)


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

    _workspace = None  # where the status bar text was set

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
        self._workspace = context.workspace
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        controller, status = ACTIVE.get("job"), "CANCELLED"
        try:
            if controller is not None:
                status = controller.step(context)
        finally:  # whatever happened, a job that is not running leaves no timer or text behind
            if status != "RUNNING":
                self._end(context)
        state = context.window_manager.mocap_state
        if status == "RUNNING":
            self._status_text(context, f"mocap: {state.label} ({state.progress:.0%})")
            _redraw(context)
            return {"RUNNING_MODAL"}
        return self.finish(context, status)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender drops the modal (a file loaded, the window closed, quitting): stop the child
        and remove what it wrote, so that nothing runs on unseen and Run works again."""
        stop_all(grace=1.0)
        self._end(context)

    def _status_text(self, context: bpy.types.Context, text: str | None) -> None:
        for workspace in {self._workspace, context.workspace} - {None}:
            workspace.status_text_set(text)

    def _end(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        with contextlib.suppress(ReferenceError):  # (a workspace of a file since closed)
            self._status_text(context, None)
        _redraw(context)

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
    bl_options = {"REGISTER", "UNDO"}  # the import is one undo step

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not running()

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
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: bpy.props.StringProperty(default="*.npz;*.bvh", options={"HIDDEN"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not running()

    def execute(self, context: bpy.types.Context) -> set[str]:
        path = Path(bpy.path.abspath(self.filepath))
        if path.suffix.lower() == ".bvh":
            if not path.is_file():
                self.report({"ERROR"}, f"mocap: {path} does not exist")
                return {"CANCELLED"}
            try:
                with importer.rollback(context.scene):
                    done = importer.import_bvh(path, context)
            except (RuntimeError, OSError, ValueError) as exc:  # Blender's importer raises
                self.report({"ERROR"}, f"mocap: cannot read {path.name}: {_one_line(exc)}")
                return {"CANCELLED"}
            self.report({"INFO"}, f"mocap: imported {', '.join(done.actions)}")
            return {"FINISHED"}
        self.motion = str(path)
        return self.launch(context)


CLASSES = (MOCAP_OT_run, MOCAP_OT_cancel, MOCAP_OT_import_motion)
