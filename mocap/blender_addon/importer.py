"""Bring mocap's output files into the open Blender scene (bpy side of the add-on).

mocap writes its .blend files with bpy 5.0, which Blender 4.2-4.4 cannot read; there
(:func:`reads_mocap_blend` is False) the run writes FBX instead, read by :mod:`.fbx_import`.

The run writes one combined ``people.blend`` (SMPL armatures, the mesh when SMPL is present, the
video's camera with the footage as its background); its scene is appended, its objects linked into
a new collection ``mocap <clip>``, the scene's fps, frame range and render size copied, and the
appended scene removed again. A retargeted run also writes one ``.blend`` per person from
``mocap retarget``: only its armature action is loaded and put on the user's armature.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bpy


@dataclass
class Imported:
    """What an import added: new objects and the actions named after clip and person."""

    objects: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    camera: str = ""


_COPY_SUFFIX = re.compile(r"\.\d{3,}$")


def person_name(obj: bpy.types.Object) -> str:
    """The person an imported armature is, as mocap named it: Blender renames an object that
    meets one of the same name (a second run in one file: ``person_1`` -> ``person_1.001``)."""
    return _COPY_SUFFIX.sub("", obj.name)


def record_imported(
    obj: bpy.types.Object, clip: str, here: bpy.types.Scene, done: Imported
) -> None:
    """Record an imported object in ``done``: a person's action named ``<clip>_<person>``, a
    camera made the scene's camera (the .blend and the FBX import alike)."""
    done.objects.append(obj.name)
    action = obj.animation_data.action if obj.animation_data else None
    if obj.type == "ARMATURE" and action is not None:
        action.name = f"{clip}_{person_name(obj)}"
        done.actions.append(action.name)
    if obj.type == "CAMERA":
        here.camera, done.camera = obj, obj.name
        if action is not None:  # as mocap's .blend names it (the FBX importer: "camera|people")
            action.name = f"{person_name(obj)}_motion"  # Blender adds .001 when it is taken


# What an import may add: every new datablock of these kinds is removed again when it fails.
_KINDS = (
    "objects", "collections", "actions", "armatures", "meshes", "materials", "cameras", "lights",
    "movieclips", "images", "textures", "node_groups", "worlds", "scenes", "shape_keys",
)  # fmt: skip
_RENDER = ("fps", "fps_base", "resolution_x", "resolution_y", "resolution_percentage")


def _datablocks() -> set[bpy.types.ID]:
    return {d for kind in _KINDS for d in getattr(bpy.data, kind, ())}


@contextmanager
def rollback(scene: bpy.types.Scene, armature: bpy.types.Object | None = None) -> Iterator[None]:
    """Undo an import that fails part-way: the datablocks it added are removed; the scene's
    camera, fps, frame range and render size and ``armature``'s action, bone parents, muted
    constraints and rotation modes (what :func:`adopt` changes) are put back."""
    before, render = _datablocks(), {a: getattr(scene.render, a) for a in _RENDER}
    frames, camera = (scene.frame_start, scene.frame_end), scene.camera
    rig = _rig_state(armature) if armature is not None else None
    try:
        yield
    except BaseException:
        scene.camera = camera
        for attr, value in render.items():
            setattr(scene.render, attr, value)
        scene.frame_start, scene.frame_end = frames
        if armature is not None and rig is not None:
            _restore_rig(armature, rig)
        added = list(_datablocks() - before)
        if added:
            bpy.data.batch_remove(added)
        raise


@dataclass
class _RigState:
    action: bpy.types.Action | None
    parents: dict[str, tuple[str, bool]]  # bone -> (parent, use_connect)
    muted: dict[tuple[str, str], bool]
    rotation_modes: dict[str, str]


def _parents(armature: bpy.types.Object) -> dict[str, tuple[str, bool]]:
    return {b.name: (b.parent.name if b.parent else "", b.use_connect) for b in armature.data.bones}


def _rig_state(armature: bpy.types.Object) -> _RigState:
    anim = armature.animation_data
    return _RigState(
        anim.action if anim is not None else None,
        _parents(armature),
        {(pb.name, c.name): c.mute for pb in armature.pose.bones for c in pb.constraints},
        {pb.name: pb.rotation_mode for pb in armature.pose.bones},
    )


def _restore_rig(armature: bpy.types.Object, saved: _RigState) -> None:
    if armature.animation_data is not None:
        armature.animation_data.action = saved.action
    if _parents(armature) != saved.parents:
        with _edit_mode(armature):
            edit = armature.data.edit_bones
            for bone, (parent, connect) in saved.parents.items():
                if bone in edit:
                    edit[bone].parent = edit.get(parent) if parent else None
                    edit[bone].use_connect = connect
    for pb in armature.pose.bones:
        for con in pb.constraints:
            con.mute = saved.muted.get((pb.name, con.name), con.mute)
        pb.rotation_mode = saved.rotation_modes.get(pb.name, pb.rotation_mode)


@contextmanager
def _edit_mode(armature: bpy.types.Object) -> Iterator[None]:
    """``armature`` in Edit mode for the block, then back in its mode, the active object kept."""
    layer = bpy.context.view_layer
    active, mode = layer.objects.active, armature.mode
    layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        yield
    finally:
        bpy.ops.object.mode_set(mode=mode if mode in ("OBJECT", "POSE") else "OBJECT")
        layer.objects.active = active


def reads_mocap_blend() -> bool:
    """Whether this Blender reads the .blend files mocap writes (bpy 5.0): Blender 4.5 LTS and
    later do, 4.2-4.4 stop at their header. ``MOCAP_BLENDER_IMPORT=fbx`` takes the FBX route
    anyway (the tests use it)."""
    return bpy.app.version >= (4, 5, 0) and os.environ.get("MOCAP_BLENDER_IMPORT") != "fbx"


def output_format() -> str:
    """The file format the add-on asks ``mocap`` for: ``blend``, else ``fbx``."""
    return "blend" if reads_mocap_blend() else "fbx"


def _load_scene(path: Path) -> bpy.types.Scene:
    with bpy.data.libraries.load(str(path), link=False) as (source, target):
        target.scenes = list(source.scenes[:1])
    scene = target.scenes[0]
    if scene is None:
        raise RuntimeError(f"{path.name} holds no scene")
    return scene


def import_scene(
    path: Path, clip: str, armatures: bool, camera: bool, context: bpy.types.Context
) -> Imported:
    """Append the run's combined scene: its camera (the scene camera) when ``camera``, its SMPL
    armatures (and meshes) when ``armatures``; actions renamed ``<clip>_<person>``; fps, frame
    range and render size copied."""
    here = context.scene
    loaded = _load_scene(path)
    done = Imported()
    objects = list(loaded.objects)
    done.people = sorted(person_name(o) for o in objects if o.type == "ARMATURE")
    keep = [
        o for o in objects if (armatures and o.type != "CAMERA") or (camera and o.type == "CAMERA")
    ]
    collection = bpy.data.collections.new(f"mocap {clip}")
    here.collection.children.link(collection)
    for obj in keep:
        collection.objects.link(obj)
        record_imported(obj, clip, here, done)
    for attr in ("fps", "fps_base", "resolution_x", "resolution_y", "resolution_percentage"):
        setattr(here.render, attr, getattr(loaded.render, attr))
    here.frame_start, here.frame_end = loaded.frame_start, loaded.frame_end
    bpy.data.scenes.remove(loaded)
    for obj in objects:
        if obj not in keep:
            remove_object(obj)
    return done


def remove_object(obj: bpy.types.Object) -> None:
    """Drop an appended object that is not kept, with its data and action when unused."""
    data, action = obj.data, obj.animation_data.action if obj.animation_data else None
    bpy.data.objects.remove(obj)
    unused = [d for d in (data, action) if d is not None and d.users == 0]
    if unused:
        bpy.data.batch_remove(unused)


def load_retargeted(path: Path, armature: bpy.types.Object, first: bool) -> bpy.types.Action:
    """The armature action of a ``mocap retarget`` .blend; with ``first``, ``armature`` gets what
    the writer changed on the rig for it: new parents and muted constraints (Rigify's DEF bones
    are keyed directly, see exporters/retarget.py). The file's objects are not kept."""
    with bpy.data.libraries.load(str(path), link=False) as (source, target):
        target.objects = list(source.objects)
    objects = [o for o in target.objects if o is not None]
    try:
        arm = animated_armature(objects, path)
    except RuntimeError:
        drop(objects)
        raise
    action = arm.animation_data.action
    if first:
        parents = {b.name: b.parent.name if b.parent else "" for b in arm.data.bones}
        muted = [(pb.name, c.name) for pb in arm.pose.bones for c in pb.constraints if c.mute]
        adopt(armature, parents, muted)
    arm.animation_data.action = None
    drop(objects)
    return action


def animated_armature(objects: list[bpy.types.Object], path: Path) -> bpy.types.Object:
    """The armature with an action among ``objects`` (RuntimeError when there is none)."""
    for obj in objects:
        if obj.type == "ARMATURE" and obj.animation_data and obj.animation_data.action:
            return obj
    raise RuntimeError(f"{path.name} holds no armature animation")


def drop(objects: list[bpy.types.Object]) -> None:
    data = [o.data for o in objects if o.data is not None]
    bpy.data.batch_remove(objects)
    bpy.data.batch_remove([d for d in data if d.users == 0])


def adopt(
    armature: bpy.types.Object, parents: dict[str, str], muted: list[tuple[str, str]]
) -> None:
    """Make the chosen armature what ``mocap retarget`` keyed: same parents, same constraints
    muted, quaternion rotations (a no-op for plain rigs such as Mixamo's)."""
    bones = armature.data.bones
    changed = {b: p for b, p in parents.items() if b in bones and p in bones
               and (bones[b].parent.name if bones[b].parent else "") != p}  # fmt: skip
    if changed:
        with _edit_mode(armature):
            edit = armature.data.edit_bones
            for bone, parent in changed.items():
                edit[bone].use_connect = False
                edit[bone].parent = edit[parent]
    for bone, name in muted:  # name "*": every constraint of the bone
        pb = armature.pose.bones.get(bone)
        for con in pb.constraints if pb is not None else ():
            if name in ("*", con.name):
                con.mute = True
    for pb in armature.pose.bones:
        pb.rotation_mode = "QUATERNION"


def retarget_files(out: Path, people: list[str]) -> dict[str, Path]:
    """person -> the file ``mocap retarget -o out`` wrote for it (OUT, or OUT_<person>.blend)."""
    if len(people) == 1 and out.is_file():
        return {people[0]: out}
    found = {p: out.with_name(f"{out.stem}_{p}{out.suffix}") for p in people}
    return {p: f for p, f in found.items() if f.is_file()}


def apply_retargeted(
    files: dict[str, Path],
    clip: str,
    armature: bpy.types.Object,
    done: Imported,
    load: Callable[[Path, bpy.types.Object, bool], bpy.types.Action] = load_retargeted,
) -> None:
    """One action per person on ``armature``: the first is assigned, the others kept (fake user)
    for the Action editor; named ``<clip>_<person>``. ``load`` reads a file (:func:`load_retargeted`,
    or ``fbx_import.load_retargeted``) and gives the armature the retargeter's changes (muted
    constraints and re-parented bones on rigs like Rigify's), so the keys play as written."""
    for i, (person, path) in enumerate(sorted(files.items())):
        action = load(path, armature, i == 0)
        action.name = f"{clip}_{person}"
        done.actions.append(action.name)
        action.use_fake_user = True
        if i == 0:
            anim = armature.animation_data_create()
            anim.action = action
            if getattr(anim, "action_slot", 0) is None and len(action.slots):  # Blender 4.4+
                anim.action_slot = action.slots[0]


def import_bvh(path: Path, context: bpy.types.Context) -> Imported:
    """A BVH from an earlier run (Y up, metres) as a new armature; action named after the file."""
    before = set(bpy.data.objects)
    bpy.ops.import_anim.bvh(
        filepath=str(path), axis_forward="-Z", axis_up="Y", update_scene_fps=True,
        update_scene_duration=True, rotate_mode="QUATERNION",
    )  # fmt: skip
    done = Imported()
    for obj in set(bpy.data.objects) - before:
        done.objects.append(obj.name)
        action = obj.animation_data.action if obj.animation_data else None
        if action is not None:
            action.name = f"{path.parent.name}_{path.stem}"
            done.actions.append(action.name)
    return done


def save_armature_copy(armature: bpy.types.Object, path: Path) -> None:
    """Write the armature and the meshes it deforms to ``path`` in a scene of their own (what
    ``mocap retarget --rig`` opens); the open file is left as it was."""
    if armature.mode == "EDIT":  # edits not yet in the armature's data
        armature.update_from_editmode()
    scene = bpy.data.scenes.new("mocap_rig_copy")
    try:
        scene.collection.objects.link(armature)
        for obj in bpy.data.objects:
            if obj.type == "MESH" and (obj.parent is armature or any(
                m.type == "ARMATURE" and m.object is armature for m in obj.modifiers
            )):  # fmt: skip
                scene.collection.objects.link(obj)
        path.parent.mkdir(parents=True, exist_ok=True)
        bpy.data.libraries.write(str(path), {scene}, fake_user=False)
    finally:
        bpy.data.scenes.remove(scene)
