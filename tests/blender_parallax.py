"""Render a textured room seen by a moving camera (bpy, run as a child process by the tests).

    python tests/blender_parallax.py OUT_DIR SHARED_DATA [FRAMES]

Writes ``OUT_DIR/frame_0000.png ...`` (640x360, Workbench, textures of real photos) and
``OUT_DIR/truth.npz``: ``R`` (N,3,3) camera-k -> first-camera and ``C`` (N,3) camera centres in
first-camera coordinates (OpenCV axes: x right, y down, z ahead), ``focal`` (px), and for a
person-sized box standing on the floor its image ``boxes`` (N,4) and ``depths`` (N,) in metres.
"""

import sys
from pathlib import Path

import bpy
import numpy as np
from mathutils import Euler, Vector

W, H, LENS, SENSOR = 640, 360, 30.0, 36.0


def textured(obj: bpy.types.Object, image_path: Path, name: str) -> None:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(str(image_path))
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    mat.node_tree.nodes.active = tex
    obj.data.materials.append(mat)


def plane(size: float, location: tuple, rotation: tuple, image: Path) -> None:
    bpy.ops.mesh.primitive_plane_add(size=size, location=location, rotation=rotation)
    textured(bpy.context.object, image, f"m{len(bpy.data.materials)}")


def box(size: tuple, location: tuple, image: Path) -> bpy.types.Object:
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=location)
    obj = bpy.context.object
    obj.scale = size
    textured(obj, image, f"m{len(bpy.data.materials)}")
    return obj


def main(out: Path, shared: Path, n: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    photos = sorted((shared / "images").glob("*.jpg"))
    crowd = out / "crowd.png"  # the 1080p clip's first frame, written by the test
    plane(16.0, (0, 4, 0), (0, 0, 0), crowd)  # floor
    plane(16.0, (0, 10, 4), (np.pi / 2, 0, 0), photos[2])  # back wall
    plane(16.0, (-6, 4, 4), (np.pi / 2, 0, np.pi / 2), photos[5])  # left wall
    plane(16.0, (6, 4, 4), (np.pi / 2, 0, -np.pi / 2), photos[3])  # right wall
    for k, (x, y, s) in enumerate(
        [(-2.5, 3.0, 1.0), (2.2, 5.0, 1.4), (-1.0, 7.0, 1.2), (3.5, 2.0, 0.8)]
    ):
        box((s, s, s), (x, y, s / 2), photos[k % len(photos)])
    person = box((0.45, 0.3, 1.75), (0.6, 2.5, 0.875), photos[1])
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    cam.data.lens, cam.data.sensor_width, cam.data.sensor_fit = LENS, SENSOR, "HORIZONTAL"
    cam.rotation_mode = "XYZ"
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light, shading.color_type = "FLAT", "TEXTURE"
    scene.display.render_aa = "8"
    scene.view_settings.view_transform = "Standard"
    R, C, boxes, depths = [], [], [], []
    corners = [
        Vector(c)
        for c in np.array(np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [-0.5, 0.5])).reshape(3, -1).T
    ]
    focal = LENS / SENSOR * W
    for k in range(n):
        s = k / max(n - 1, 1)
        cam.location = (-0.6 + 1.4 * s, -4.0 + 0.8 * s, 1.6 + 0.1 * s)
        cam.rotation_euler = Euler((np.radians(86 - 3 * s), 0.0, np.radians(6 - 12 * s)), "XYZ")
        bpy.context.view_layer.update()
        m = np.array(cam.matrix_world)
        rot_cv = m[:3, :3] @ np.diag([1.0, -1.0, -1.0])  # OpenCV camera -> world
        R.append(rot_cv)
        C.append(m[:3, 3])
        pts = np.array([list(person.matrix_world @ c) for c in corners])
        cam_pts = (pts - m[:3, 3]) @ rot_cv
        uv = focal * cam_pts[:, :2] / cam_pts[:, 2:] + [W / 2, H / 2]
        boxes.append([*uv.min(0), *uv.max(0)])
        centre = (np.array(person.matrix_world.translation) - m[:3, 3]) @ rot_cv
        depths.append(centre[2])
        scene.render.filepath = str(out / f"frame_{k:04d}.png")
        bpy.ops.render.render(write_still=True)
    R0, C0 = R[0], C[0]
    np.savez(
        out / "truth.npz",
        R=np.einsum("ba,kbc->kac", R0, np.array(R)),
        C=(np.array(C) - C0) @ R0,
        focal=focal,
        boxes=np.array(boxes),
        depths=np.array(depths),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 40)
