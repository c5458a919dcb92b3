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
    col.prop(settings, "foot_lock")
    col.prop(settings, "target")
    if settings.target == "SELECTED":
        obj = context.active_object
        name = obj.name if obj is not None and obj.type == "ARMATURE" else "none selected"
        col.label(text=f"Armature: {name}", icon="ARMATURE_DATA")
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
        for line in textwrap.wrap(state.last_error, 48):  # labels do not wrap by themselves
            box.label(text=line)
    elif state.last_result:
        layout.label(text=f"Imported: {state.last_result}", icon="CHECKMARK")


class VIEW3D_PT_mocap(bpy.types.Panel):
    bl_label = "mocap"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "mocap"

    def draw(self, context: bpy.types.Context) -> None:
        draw_panel(self.layout, context)


CLASSES = (VIEW3D_PT_mocap,)
