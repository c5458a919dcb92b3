"""Read the FBX files mocap writes, for Blender 4.2-4.4 (bpy side of the add-on).

mocap writes its .blend files with bpy 5.0, whose header Blender 4.2-4.4 cannot read ("may be
from a newer version of Blender"). There the add-on asks ``mocap run`` / ``mocap export`` for one
combined FBX and ``mocap retarget`` for FBX files, and this module brings them in as
:mod:`.importer` does the .blend: one action per person named ``<clip>_<person>``, the video's
camera with the footage behind it, the run's fps, frame range and render size.

Blender's FBX importer takes the pose a file was exported in as its bones' rest, so a retargeted
FBX's keys are not keys of the user's rig: :func:`rebase` re-keys them from the imported bones'
poses, frame by frame, against the user's own rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
from mathutils import Matrix, Quaternion

from . import importer

_BONE_CHANNELS = ("location", "rotation_quaternion", "scale")


def import_fbx(path: Path, collection: bpy.types.Collection) -> list[bpy.types.Object]:
    """The objects of an FBX that mocap wrote (Y up, -Z forward), linked into ``collection``;
    keys at the frames written (no offset): frame f is the video's frame f, as in the .blend."""
    layer = bpy.context.view_layer
    active = layer.active_layer_collection
    layer.active_layer_collection = _layer_collection(layer.layer_collection, collection)
    before, actions = set(bpy.data.objects), set(bpy.data.actions)
    try:
        bpy.ops.import_scene.fbx(
            filepath=str(path), axis_forward="-Z", axis_up="Y", anim_offset=0.0,
            use_custom_props=False, ignore_leaf_bones=False, automatic_bone_orientation=False,
        )  # fmt: skip
    finally:
        layer.active_layer_collection = active
        for action in set(bpy.data.actions) - actions:  # Blender's importer gives each a fake
            action.use_fake_user = False  # user: an object not kept would leave its action
    objects = sorted(set(bpy.data.objects) - before, key=lambda o: o.name)
    for obj in objects:
        _drop_constant_data_action(obj)
    return objects


def _drop_constant_data_action(obj: bpy.types.Object) -> None:
    """Remove the action FBX puts on a camera's data (its lens, keyed at every frame) when no
    value in it changes: the .blend keys no lens either, the value stays as it was."""
    data = getattr(obj.data, "animation_data", None)
    action = data.action if data is not None else None
    if action is None:
        return
    if data is not None and all(
        len({round(p.co[1], 6) for p in c.keyframe_points}) <= 1 for c in _curves(action)
    ):
        data.action = None
        if action.users == 0:
            bpy.data.actions.remove(action)


def _layer_collection(
    parent: bpy.types.LayerCollection, collection: bpy.types.Collection
) -> bpy.types.LayerCollection | None:
    if parent.collection == collection:
        return parent
    for child in parent.children:
        found = _layer_collection(child, collection)
        if found is not None:
            return found
    return None


def run_info(folder: Path) -> dict:
    """The ``video`` block of ``folder/run.json`` (image_size, fps...) and its ``source``, or {}."""
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    video = info.get("video", {})
    return {**video, "source": info.get("source", "")} if isinstance(video, dict) else {}


def import_fbx_scene(
    path: Path,
    clip: str,
    armatures: bool,
    camera: bool,
    footage: str,
    size: tuple[int, int] | None,
    context: bpy.types.Context,
) -> importer.Imported:
    """The run's combined FBX, as :func:`.importer.import_scene` does with its .blend: SMPL
    armatures (and meshes) when ``armatures``; the camera when ``camera``, with ``footage`` (the
    video) behind it and the render size ``size`` (width, height); frame range from the people."""
    here = context.scene
    collection = bpy.data.collections.new(f"mocap {clip}")
    here.collection.children.link(collection)
    objects = import_fbx(path, collection)
    done = importer.Imported()
    done.people = sorted(importer.person_name(o) for o in objects if o.type == "ARMATURE")
    keep = [
        o for o in objects if (armatures and o.type != "CAMERA") or (camera and o.type == "CAMERA")
    ]
    frames = [
        f
        for o in objects
        if o.type == "ARMATURE" and o.animation_data and o.animation_data.action
        for f in o.animation_data.action.frame_range
    ]
    for obj in keep:
        importer.record_imported(obj, clip, here, done)
        if obj.type == "CAMERA":
            if size is not None:
                here.render.resolution_x, here.render.resolution_y = size
                here.render.resolution_percentage = 100
                obj.data.sensor_fit = "HORIZONTAL" if size[0] >= size[1] else "VERTICAL"
            if footage and Path(footage).is_file():
                _add_footage(obj, footage)
    if frames:
        here.frame_start, here.frame_end = round(min(frames)), round(max(frames))
    for obj in objects:
        if obj not in keep:
            importer.remove_object(obj)
    return done


def _add_footage(camera: bpy.types.Object, path: str) -> None:
    """The video behind the camera, its first picture at scene frame 0 (as in mocap's .blend)."""
    try:
        clip = bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError:  # footage Blender cannot read: the camera stays
        return
    clip.frame_start = 0
    background = camera.data.background_images.new()
    background.source, background.clip, background.alpha = "MOVIE_CLIP", clip, 1.0
    camera.data.show_background_images = True


def load_retargeted(path: Path, armature: bpy.types.Object, first: bool) -> bpy.types.Action:
    """The action of a ``mocap retarget`` FBX, re-keyed for ``armature`` (:func:`rebase`).

    With ``first``, ``armature`` takes the file's bone hierarchy (Rigify's deform bones hang
    under control bones; the retargeter re-parents them) and every keyed bone's constraints are
    muted, as the retargeter does (FBX holds no constraints). The file's objects are not kept."""
    actions = set(bpy.data.actions)
    scratch = bpy.data.collections.new("mocap_retarget_import")
    bpy.context.scene.collection.children.link(scratch)  # in the scene, so frames evaluate it
    objects: list[bpy.types.Object] = []
    action, done = None, False
    try:
        objects = import_fbx(path, scratch)
        source = importer.animated_armature(objects, path)
        action = source.animation_data.action
        if first:
            parents = {b.name: b.parent.name if b.parent else "" for b in source.data.bones}
            keyed = sorted(set(parents) & set(armature.data.bones.keys()))
            importer.adopt(armature, parents, [(name, "*") for name in keyed])
        rebase(action, source, armature)
        source.animation_data.action = None
        done = True
    finally:  # nothing of the file stays but the action (on failure not even that)
        bpy.data.collections.remove(scratch)
        importer.drop(objects)
        extra = [
            a for a in set(bpy.data.actions) - actions if (a != action or not done) and a.users == 0
        ]
        if extra:  # the meshes' shape-key actions
            bpy.data.batch_remove(extra)
    return action


def rebase(action: bpy.types.Action, source: bpy.types.Object, armature: bpy.types.Object) -> None:
    """Rewrite ``action`` (keyed on ``source``, the imported FBX armature) so that on
    ``armature`` each bone takes, at every keyed frame, the pose ``source``'s bone of the same name
    has in the world. Per bone b with parent p: basis = (R_p^-1 R_b)^-1 P_p^-1 P_b, with R the
    rest and P the pose matrices in ``armature``'s space (a parent without keys stays at rest).
    Channels of bones ``armature`` lacks and of the object itself are removed."""
    curves: dict[str, dict[tuple[str, int], bpy.types.FCurve]] = {}
    for curve in _curves(action):
        path = curve.data_path
        name = path.split('"')[1] if path.startswith('pose.bones["') else ""
        channel = path.rsplit(".", 1)[-1]
        if name in armature.pose.bones and channel in _BONE_CHANNELS:
            curves.setdefault(name, {})[(channel, curve.array_index)] = curve
        else:
            _remove_curve(action, curve)
    if not curves:
        return
    first_curve = next(iter(next(iter(curves.values())).values()))
    frames = [k.co[0] for k in first_curve.keyframe_points]  # every bone baked at every frame
    scene, current = bpy.context.scene, bpy.context.scene.frame_current
    values: dict[bpy.types.FCurve, list[float]] = {}
    previous: dict[str, Quaternion] = {}
    for frame in frames:
        scene.frame_set(round(frame))
        to_armature = armature.matrix_world.inverted() @ source.matrix_world
        pose = {n: to_armature @ source.pose.bones[n].matrix for n in curves}
        for name, channels in curves.items():
            loc, rot, scale = _basis(armature.data.bones[name], pose).decompose()
            if name in previous and previous[name].dot(rot) < 0.0:  # no flips between keys
                rot.negate()
            previous[name] = rot
            parts = {"location": loc, "rotation_quaternion": rot, "scale": scale}
            for (channel, index), curve in channels.items():
                values.setdefault(curve, []).append(parts[channel][index])
    scene.frame_set(current)
    for curve, column in values.items():
        points = curve.keyframe_points
        for point, value in zip(points, column, strict=False):
            point.co[1] = value
        curve.update()  # (handles follow)


def _basis(bone: bpy.types.Bone, pose: dict[str, Matrix]) -> Matrix:
    target = pose[bone.name]
    parent = bone.parent
    if parent is None or parent.name not in pose:
        return bone.matrix_local.inverted() @ target  # (an unkeyed parent stays at its rest)
    rest = parent.matrix_local.inverted() @ bone.matrix_local
    return rest.inverted() @ pose[parent.name].inverted() @ target


def _curves(action: bpy.types.Action) -> list[bpy.types.FCurve]:
    """The F-curves of an action: Action.fcurves up to Blender 4.x, its slots' channel bags on
    Blender 5 (where Action.fcurves is gone)."""
    if hasattr(action, "fcurves"):
        return list(action.fcurves)
    return [c for bag in _channelbags(action) for c in bag.fcurves]


def _channelbags(action: bpy.types.Action) -> list:
    return [bag for layer in action.layers for strip in layer.strips for bag in strip.channelbags]


def _remove_curve(action: bpy.types.Action, curve: bpy.types.FCurve) -> None:
    if hasattr(action, "fcurves"):
        action.fcurves.remove(curve)
        return
    for bag in _channelbags(action):
        if curve in list(bag.fcurves):
            bag.fcurves.remove(curve)
            return
