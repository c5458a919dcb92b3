"""FBX, .blend and glTF/GLB through Blender (bpy), run in a child process.

All ``bpy`` code of mocap lives in this module and its child-process scripts ``_blender_child.py``
(writing, with the scene builders of ``_blender_scene.py``) and ``_blender_read.py`` (reading
back), run as ``python exporters/_blender_*.py ...`` and never imported by the pipeline, so Blender's
global state, its stdout chatter and its crashes never touch the pipeline. This side imports
neither ``bpy`` nor torch.

Public API (parent process)::

    write_with_blender(scenes: Mapping[Path, Sequence[RigAnimation]], timeout=None)
        -> dict[Path, str | None]

``scenes`` maps each output file to the people placed in its scene; the suffix picks the format
(``.fbx``, ``.blend``, ``.glb``, ``.gltf``, see ``BLENDER_FORMATS``). One person per file gives
per-person export, all people in one file gives a combined scene; both can be mixed in one call and
run in a single child (a scene is built once for all the formats that share it). The result maps
every requested path to ``None`` (written) or a one-line error (exporter exception, crash,
timeout); a failing format or person never stops the others, and no half-written file is left
behind (temporary name, then ``os.replace``).

``read_with_blender(path) -> SceneDump`` re-imports a written file into a fresh Blender (tests, and
users checking a file); ``benchmark_blender_export(rig, formats)`` times each format.

Scene conventions: rigs are Y-up (``exporters.rig``); Blender is Z-up, so every point and rotation
is conjugated by ``YUP_TO_ZUP`` (+90 degrees about X; the body faces Blender's -Y "front"). Each
bone's head is its joint, its tail points at the child that continues the chain, its roll aligns
the bone's Z axis with the body's front (or up). With bone rest orientation B (bone.matrix_local),
a rig rotation R relative to the parent becomes the pose quaternion of B^T R B (exact: Blender's
pose chain is R_arm_j = R_arm_parent (B_parent^T B_j) Q_j). The root bone also carries location
keys (root motion), and so does a joint that translates (the hips under ``--root-motion
root-bone``'s root bone: B^T (offset - rest offset)). Every frame is keyed, quaternions are sign-continuous, interpolation is linear.
Per-person files start at frame 0 (time 0 in FBX/glTF); in a combined scene person p starts at
frame p.frame_start, i.e. at its video time, and every file holds one take over the scene's frames
(first / last poses held outside a person's own frames). Non-integer rates use ``fps``/``fps_base``
(29.97 = 30 / 1.001).

With ``rig.mesh`` the SMPL mesh is skinned to the armature (vertex groups named after the bones
carrying SMPL's blend weights, Armature modifier, parented). With ``rig.mesh.pose_dirs`` (the
default for SMPL bodies; ``pose_correctives=False`` opts out) it also carries SMPL's 207
pose-corrective blend shapes: one shape key per feature of ``(R_j - I)`` (joints 1..23, row-major,
named ``pose_<joint>_<row><col>``), offsets turned to Z-up, values keyed every frame from the rig's
own rotations, sliders -2..2 (values are negative too). Shape keys act on the rest mesh before
the Armature modifier, as SMPL adds pose offsets before skinning, so the deformed mesh is SMPL's
exactly. FBX carries them as blend shape channels with animated DeformPercent, glTF as morph
targets (positions only) with animated weights. Cost (one person, 6,890 vertices, CPU time per
1,000 frames): FBX 7.2 s instead of 2.0, GLB 8.4 s instead of 3.3, .blend 0.3 s instead of 0.1;
18-24 MB more per file for dense blend shapes like SMPL's. Blender evaluates the 207 keys in
~10 ms per frame and person when playing a file back (mute them for fast previews).

Every scene also gets the video's camera (``camera=`` an :class:`exporters.camera.CameraAnimation`,
from ``export_motion``): the scene camera, keyed at the video's frames (minus a per-person file's
first frame), lens from the focal length, render size the video's; FBX and glTF carry it as an
animated camera, the .blend also shows the video behind it.

Blender 5.0 quirks handled: actions are slotted (keys go to the slot's channelbag); the glTF
exporter turns frames into seconds with fps * fps_base (fps_base is inverted while it runs); the
FBX importer converts times with the integer fps and the glTF importer with the scene's fps, which
``read_with_blender`` undoes to report times as stored in the file; the glTF importer widens a
shape key's slider to its first keyed weight only (clamping later negative weights), which
``read_with_blender`` undoes by opening every slider to -10..10. The FBX and glTF exporters bake
with only the shape-key basis shown (they read key values, not the deformed mesh): 3x faster.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from exporters.camera import CameraAnimation
    from exporters.rig import RigAnimation

BLENDER_FORMATS: dict[str, str] = {".fbx": "fbx", ".blend": "blend", ".glb": "glb", ".gltf": "gltf"}

# Y-up rig world -> Blender's Z-up world: (x, y, z) -> (x, -z, y).
YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# The bpy side runs as scripts in a child process: scene building and writers, and read-back.
_CHILD = Path(__file__).resolve().with_name("_blender_child.py")
_READER = Path(__file__).resolve().with_name("_blender_read.py")


@dataclass
class ArmatureDump:
    """One armature read back from a file; positions in Blender's Z-up world, metres."""

    name: str
    bone_names: tuple[str, ...]  # (J,)
    frames: np.ndarray  # (K,) keyed frames in the importing scene, ascending (may be fractional)
    times: np.ndarray  # (K,) the same keys in seconds as stored in the file
    joint_positions: np.ndarray  # (K,J,3) bone heads in world space at those frames
    rotations: np.ndarray  # (K,J,4) pose-bone quaternions (w,x,y,z) at those frames


@dataclass
class MeshDump:
    """A skinned mesh read back from a file."""

    name: str
    rest_vertices: np.ndarray  # (V,3) world, unposed mesh data
    frames: np.ndarray  # (S,) sampled frames
    posed_vertices: np.ndarray  # (S,V,3) evaluated (deformed) vertices in world space
    shape_keys: tuple[str, ...] = ()  # names of the shape keys (blend shapes), basis excluded


@dataclass
class CameraDump:
    """A camera read back from a file (Blender's Z-up world, camera looking along its -Z)."""

    name: str
    frames: np.ndarray  # (K,) keyed frames in the importing scene
    times: np.ndarray  # (K,) seconds as stored in the file
    matrices: np.ndarray  # (K,4,4) world matrices at those frames
    focal_px: float  # lens over sensor, times the render width (or height when taller)
    resolution: tuple[int, int]


@dataclass
class SceneDump:
    """What a fresh Blender sees after importing a file."""

    fps: float  # render.fps / render.fps_base
    frame_start: int
    frame_end: int
    armatures: list[ArmatureDump]
    meshes: list[MeshDump]
    cameras: list[CameraDump] = field(default_factory=list)


def _run_child(
    args: list[str], timeout: float, script: Path | None = None
) -> tuple[int | None, str]:
    """Run a child script (default ``_CHILD``); returns (exit code, or None on timeout; the
    telling output line)."""
    try:
        proc = subprocess.run(
            [sys.executable, str(script or _CHILD), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            errors="replace",
        )
    except subprocess.TimeoutExpired:  # the child is killed before this is raised
        return None, ""
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    telling = [ln for ln in lines if any(w in ln for w in ("Error", "error", "fault", "Killed"))]
    return proc.returncode, (telling or lines or [""])[-1]


def _child_failure(code: int | None, limit: float, name: str, line: str) -> str:
    """One line for a file the child never reported on."""
    if code is None:
        return f"Blender timed out after {limit:.0f} s before writing {name}"
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"Blender {how} before writing {name}: {line}"


def _job_timeout(scenes: Mapping[Path, Sequence[RigAnimation]], correctives: bool) -> float:
    """Generous limit: start-up plus 20 ms per frame per file (measured ~10 ms for all formats),
    100 ms per frame for meshes with pose correctives (measured ~15 ms: 207 keys baked)."""
    seconds = 120.0
    for rig in (r for rigs in scenes.values() for r in rigs):
        slow = correctives and rig.mesh is not None and rig.mesh.pose_dirs is not None
        seconds += (0.1 if slow else 0.02) * rig.num_frames
    return seconds


def _write_job(
    scenes: Mapping[Path, Sequence[RigAnimation]],
    workdir: Path,
    correctives: bool,
    camera: CameraAnimation | None = None,
) -> tuple[Path, dict[Path, Path]]:
    """Serialise rigs (one copy each) to npz and the outputs to JSON; returns (job, final->tmp)."""
    from mocap.paths import atomic_path

    rigs: list[RigAnimation] = []
    outputs, temps = [], {}
    for path, people in scenes.items():
        indices = []
        for rig in people:
            if not any(rig is r for r in rigs):
                rigs.append(rig)
            indices.append(next(i for i, r in enumerate(rigs) if r is rig))
        path = Path(path).resolve()
        temps[path] = atomic_path(path)
        fmt = BLENDER_FORMATS[path.suffix.lower()]
        outputs.append({"path": str(path), "tmp": str(temps[path]), "format": fmt, "rigs": indices})
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, rig in enumerate(rigs):
        arrays[f"{i}_offsets"] = np.asarray(rig.rest_offsets, np.float64)
        arrays[f"{i}_root"] = np.asarray(rig.root_positions, np.float64)
        if rig.local_translations:  # joints that translate (a root bone's hips)
            moved = sorted(rig.local_translations)
            arrays[f"{i}_moved"] = np.stack([rig.local_translations[j] for j in moved], 1)
        arrays[f"{i}_rot"] = np.asarray(rig.local_rotations, np.float64)
        if rig.mesh is not None:
            arrays[f"{i}_verts"] = np.asarray(rig.mesh.rest_vertices, np.float64)
            arrays[f"{i}_faces"] = np.asarray(rig.mesh.faces, np.int64)
            arrays[f"{i}_weights"] = np.asarray(rig.mesh.weights, np.float64)
        dirs = rig.mesh.pose_dirs if correctives and rig.mesh is not None else None
        if dirs is not None:  # float32 like Blender's shape keys: 17 MB for SMPL instead of 34
            arrays[f"{i}_posedirs"] = np.asarray(dirs, np.float32)
        meta.append(
            {
                "name": rig.name,
                "joint_names": list(rig.joint_names),
                "parents": list(rig.parents),
                "fps": float(rig.fps),
                "frame_start": int(rig.frame_start),
                "mesh": rig.mesh is not None,
                "correctives": dirs is not None,
                "moved": sorted(rig.local_translations),
            }
        )
    job: dict[str, Any] = {"arrays": str(workdir / "rigs.npz"), "rigs": meta, "outputs": outputs}
    if camera is not None:  # one camera in every scene (exporters/camera.py)
        arrays["camera_frames"] = np.asarray(camera.frames, np.float64)
        arrays["camera_pos"] = np.asarray(camera.positions, np.float64)
        arrays["camera_rot"] = np.asarray(camera.rotations, np.float64)
        job["camera"] = {
            "name": camera.name,
            "focal_px": float(camera.focal_px),
            "width": int(camera.image_size[0]),
            "height": int(camera.image_size[1]),
            "footage": camera.footage,
        }
    np.savez(workdir / "rigs.npz", **arrays)
    job["result"] = str(workdir / "result.json")
    (workdir / "job.json").write_text(json.dumps(job))
    return workdir / "job.json", temps


def _check_pose_dirs(rig: RigAnimation) -> None:
    """Refuse pose blend shapes that do not fit the rig (a programming error, not the user's)."""
    if rig.mesh is None or rig.mesh.pose_dirs is None:
        return
    want = (9 * (len(rig.parents) - 1), len(rig.mesh.rest_vertices), 3)
    if np.shape(rig.mesh.pose_dirs) != want:
        got = np.shape(rig.mesh.pose_dirs)
        raise ValueError(f"{rig.name}: mesh.pose_dirs has shape {got}, expected {want}")


def _run_job(
    scenes: Mapping[Path, Sequence[RigAnimation]],
    timeout: float | None,
    correctives: bool = True,
    camera: CameraAnimation | None = None,
) -> tuple[dict[Path, str | None], dict[str, Any]]:
    """Write all files in one child; returns (path -> error or None, the child's result JSON)."""
    for path, people in scenes.items():
        if Path(path).suffix.lower() not in BLENDER_FORMATS:
            raise ValueError(f"{path}: Blender writes {', '.join(BLENDER_FORMATS)} only")
        if not people or len({round(r.fps, 6) for r in people}) != 1:
            raise ValueError(f"{path}: a scene needs at least one rig, all at the same fps")
        for rig in people:
            _check_pose_dirs(rig)
    with tempfile.TemporaryDirectory(prefix="mocap-blender-") as tmp:
        job, temps = _write_job(scenes, Path(tmp), correctives, camera)
        limit = _job_timeout(scenes, correctives) if timeout is None else timeout
        code, tail = _run_child(["write", str(job)], limit)
        result_file = Path(tmp) / "result.json"  # replaced atomically after every file
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
    errors: dict[Path, str | None] = {}
    for final, partial in temps.items():
        if str(final) in result.get("errors", {}):
            errors[final] = result["errors"][str(final)]
        else:
            errors[final] = _child_failure(code, limit, final.name, tail)
        if partial.is_dir():  # .gltf + .bin are written to a temporary folder
            shutil.rmtree(partial, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return errors, result


def write_with_blender(
    scenes: Mapping[Path, Sequence[RigAnimation]],
    timeout: float | None = None,
    pose_correctives: bool = True,
    camera: CameraAnimation | None = None,
) -> dict[Path, str | None]:
    """Write FBX / .blend / GLB / glTF files through Blender in one child process.

    Arguments:
        scenes: output path -> the rigs placed in that file's scene (suffix picks the format).
        timeout: seconds before the child is killed (default: generous, grows with frame count).
        pose_correctives: give meshes that carry ``pose_dirs`` their pose blend shapes (shape
            keys / morph targets driven every frame, the exact SMPL mesh); False writes plain
            linear blend skinning (about 17 MB smaller per SMPL person, faster to play back).
        camera: the video's camera, added (animated) to every scene as the scene camera, with the
            render size of the video, so the characters line up with the footage through it;
            keyed at video frames (a per-person file shifts it by the person's first frame).
    Returns:
        path -> None when written, else a one-line error (crash, timeout, exporter exception).
    """
    if importlib.util.find_spec("bpy") is None:
        missing = "Blender's Python module is missing; pip install bpy==5.0.1 (needs Python 3.11)"
        return {Path(p).resolve(): missing for p in scenes}
    errors, _ = _run_job(
        {Path(p).resolve(): r for p, r in scenes.items()}, timeout, pose_correctives, camera
    )
    return errors


def read_with_blender(path: Path, mesh_samples: int = 3, timeout: float = 300.0) -> SceneDump:
    """Import ``path`` into a fresh Blender and dump armatures (every keyed frame) and meshes.

    Arguments:
        path: an .fbx, .blend, .glb, .gltf or .bvh file.
        mesh_samples: deformed mesh vertices are evaluated at this many evenly spaced keyed frames.
    """
    from mocap.errors import MocapError

    path = Path(path).resolve()
    if path.suffix.lower() not in (*BLENDER_FORMATS, ".bvh") or not path.is_file():
        raise MocapError(f"cannot read {path} with Blender; give an existing .fbx/.blend/.glb file")
    with tempfile.TemporaryDirectory(prefix="mocap-blender-") as tmp:
        out = Path(tmp) / "dump.npz"
        code, tail = _run_child([str(path), str(out), str(mesh_samples)], timeout, _READER)
        if code != 0 or not out.exists():
            raise RuntimeError(f"Blender could not read {path.name} (exit {code}): {tail}")
        with np.load(out) as z:
            d = {k: z[k] for k in z.files}
    meta = json.loads(str(d["meta"]))
    arms = [
        ArmatureDump(
            a["name"],
            tuple(a["bones"]),
            d[f"a{i}_frames"],
            d[f"a{i}_times"],
            d[f"a{i}_joints"],
            d[f"a{i}_quats"],
        )
        for i, a in enumerate(meta["armatures"])
    ]
    meshes = [
        MeshDump(m["name"], d[f"m{i}_rest"], d[f"m{i}_frames"], d[f"m{i}_posed"], tuple(m["keys"]))
        for i, m in enumerate(meta["meshes"])
    ]
    cameras = [
        CameraDump(
            c["name"],
            d[f"c{i}_frames"],
            d[f"c{i}_times"],
            d[f"c{i}_matrices"],
            c["focal_px"],
            (c["width"], c["height"]),
        )
        for i, c in enumerate(meta.get("cameras", []))
    ]
    return SceneDump(meta["fps"], meta["frame_start"], meta["frame_end"], arms, meshes, cameras)


def benchmark_blender_export(
    rig: RigAnimation,
    formats: Sequence[str] = ("fbx", "blend", "glb"),
    pose_correctives: bool = True,
) -> dict[str, float]:
    """Seconds each format takes to write ``rig`` (scene build time under key ``"scene"``).

    Times are measured inside the child, so Blender's start-up is excluded; scale by
    1000 / rig.num_frames for a per-1,000-frame figure.
    """
    with tempfile.TemporaryDirectory(prefix="mocap-bench-") as tmp:
        scenes = {Path(tmp) / f"bench.{f}": [rig] for f in formats}
        errors, result = _run_job(scenes, None, pose_correctives)
    failed = {p.name: e for p, e in errors.items() if e}
    if failed:
        raise RuntimeError(f"benchmark export failed: {failed}")
    secs = {Path(p).suffix[1:]: float(s) for p, s in result["seconds"].items()}
    secs["scene"] = float(result["scene_seconds"])
    return secs
