"""mocap inside Blender: a sidebar panel that runs the ``mocap`` command on a video and imports
the animation onto a new SMPL armature or the selected character.

A Blender extension (``blender_manifest.toml``, Blender 4.2+), zipped by ``mocap blender-addon``.
It never imports mocap or torch: it runs the installed ``mocap`` CLI in a child process
(:mod:`.runner`) and imports the ``.blend`` files mocap writes (:mod:`.importer`).
"""

from __future__ import annotations

import bpy

from . import operators, props, ui

_CLASSES = (*props.CLASSES, *operators.CLASSES, *ui.CLASSES)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    props.register()
    operators.register()


def unregister() -> None:
    operators.unregister()  # stops a running job and removes what it wrote
    props.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
