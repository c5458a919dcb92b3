"""The sidebar panel (3D view > N panel > mocap)."""

from __future__ import annotations

import textwrap

import bpy


def draw_panel(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """The panel's content (also drawn by the screenshot script)."""
    settings, state = context.scene.mocap, context.window_manager.mocap_state
    col = layout.column()
    col.prop(settings, "video")
    col.prop(settings, "model")
    row = col.row(align=True)
    row.prop(settings, "start")
    row.prop(settings, "end")
    col.prop(settings, "smooth_strength")
    col.prop(settings, "foot_lock", text="Feet")  # "Foot locking" is cut at the default width
    col.prop(settings, "target")
    if settings.target == "SELECTED":
        obj = context.active_object
        name = obj.name if obj is not None and obj.type == "ARMATURE" else "none selected"
        col.label(text=f"Armature: {name}", icon="ARMATURE_DATA")
        col.prop(settings, "bone_map")
        if settings.bone_map == "FILE":
            col.prop(settings, "bone_map_file")
    col.prop(settings, "camera")
    layout.separator()
    if state.running:
        layout.progress(
            factor=state.progress, type="BAR", text=f"{state.label} {state.progress:.0%}"
        )
        layout.operator("mocap.cancel", icon="CANCEL")
    else:
        layout.operator("mocap.run", icon="PLAY")
    layout.operator("mocap.import_motion", icon="IMPORT")
    if state.last_error:
        box = layout.box()
        box.label(text="mocap: error", icon="ERROR")
        for line in wrap(state.last_error, context, 4):  # labels do not wrap by themselves
            box.label(text=line)
    elif state.last_result:
        box = layout.box()
        box.label(text="Imported", icon="CHECKMARK")
        for line in wrap(state.last_result, context, 4):
            box.label(text=line)


def wrap(text: str, context: bpy.types.Context, indent: int = 0) -> list[str]:
    """``text`` in lines that fit the region: its width in unscaled pixels over ~6.5 px per
    character of Blender's UI font, less the panel's margins (and ``indent`` characters)."""
    region = context.region
    scale = context.preferences.system.ui_scale or 1.0
    pixels = (region.width if region is not None else 300) / scale - 36
    return textwrap.wrap(text.strip(), max(12, int(pixels / 6.5) - indent)) or [""]


class VIEW3D_PT_mocap(bpy.types.Panel):
    bl_label = "mocap"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "mocap"

    def draw(self, context: bpy.types.Context) -> None:
        draw_panel(self.layout, context)


CLASSES = (VIEW3D_PT_mocap,)
