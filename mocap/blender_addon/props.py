# mypy: disable-error-code="valid-type"
"""Settings of the panel (saved with the scene), the running job's state (window manager, never
saved) and the add-on preferences (the path to ``mocap``, the output folder)."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    PointerProperty,
    StringProperty,
)

MODELS = (
    ("auto", "Auto", "the paper's model or HMR2.0 when their weights are on disk, else lite"),
    ("lite", "Lite", "embedded BlazePose GHUM 3D + IK: bundled, fast on a CPU"),
    ("hmr2", "HMR2.0", "HMR2.0 (weights downloaded on first use)"),
    ("featup-deformable", "FeatUp deformable", "the paper's model (trained weights)"),
    ("vitpose-deformable", "ViTPose deformable", "the paper's model (trained weights)"),
)


class MocapSettings(bpy.types.PropertyGroup):
    video: StringProperty(name="Video", subtype="FILE_PATH", description="the video to convert")
    model: EnumProperty(name="Model", items=MODELS, default="auto")
    start: FloatProperty(
        name="Start",
        min=0.0,
        default=0.0,
        unit="TIME_ABSOLUTE",
        description="start time in seconds",
    )
    end: FloatProperty(
        name="End",
        min=0.0,
        default=0.0,
        unit="TIME_ABSOLUTE",
        description="end time in seconds (0: the end of the clip)",
    )
    smooth_strength: FloatProperty(
        name="Smoothing",
        min=0.0,
        max=10.0,
        soft_max=3.0,
        default=1.0,
        description="0 = none, 1 = default, 2 = strong",
    )
    foot_lock: EnumProperty(
        name="Foot locking",
        items=(
            ("auto", "Auto", "planted feet held still on the floor"),
            ("off", "Off", "feet as estimated"),
        ),
        default="auto",
    )
    target: EnumProperty(
        name="Target",
        items=(
            (
                "NEW",
                "New SMPL armature",
                "one SMPL armature per person (with the mesh when SMPL is installed)",
            ),
            (
                "SELECTED",
                "Selected armature",
                "retarget onto the active armature (bone-map presets, else matched names)",
            ),
        ),
        default="NEW",
    )
    bone_map: EnumProperty(
        name="Bone map",
        items=(
            ("auto", "Auto", "a preset that fits the armature, else bones matched by name"),
            ("mixamo", "Mixamo", "mixamorig:Hips, mixamorig:LeftUpLeg, ..."),
            ("rigify", "Rigify", "a generated rig's DEF bones, or a metarig's bones"),
            ("unreal", "Unreal", "the UE mannequin: pelvis, thigh_l, ..."),
            ("vrm", "VRM", "VRM humanoid bones"),
            ("FILE", "Saved map", "a JSON map saved by `mocap retarget --save-map`"),
        ),
        default="auto",
        description="how the armature's bones are matched to the body's joints",
    )
    bone_map_file: StringProperty(
        name="Map file",
        subtype="FILE_PATH",
        description="JSON bone map (keys: SMPL joint names, values: bone names)",
    )
    camera: BoolProperty(
        name="Camera from footage",
        default=True,
        description="add the video's camera, the footage as its background",
    )


class MocapState(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    cancel_requested: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    label: StringProperty(default="")
    last_error: StringProperty(default="")
    last_result: StringProperty(default="")


class MocapPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    mocap_path: StringProperty(
        name="mocap executable",
        subtype="FILE_PATH",
        description="path to the mocap command (empty: found on PATH)",
    )
    output_dir: StringProperty(
        name="Output folder",
        subtype="DIR_PATH",
        description="where runs are written (empty: a temporary folder)",
    )

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(self, "mocap_path")
        self.layout.prop(self, "output_dir")


CLASSES = (MocapSettings, MocapState, MocapPreferences)


def register() -> None:
    bpy.types.Scene.mocap = PointerProperty(type=MocapSettings)
    bpy.types.WindowManager.mocap_state = PointerProperty(type=MocapState)


def unregister() -> None:
    del bpy.types.WindowManager.mocap_state
    del bpy.types.Scene.mocap


def preferences(context: bpy.types.Context) -> MocapPreferences:
    return context.preferences.addons[__package__].preferences
