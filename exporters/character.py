"""The user's character through Blender (parent side): read its rig, write it animated.

All ``bpy`` code runs in the child script ``_blender_retarget.py`` (see :mod:`exporters.blender`
for why); this side imports neither bpy nor torch.

    inspect_character(path) -> Character          the armature at its bind pose, its meshes
    write_characters(character, files)            each Retargeted onto the character, all or none
    render_snapshot(path, png, frames)            workbench render of a few frames, side by side

Characters: ``.fbx``, ``.glb``/``.gltf``, ``.vrm`` (glTF with a humanoid table, imported by the
glTF importer) and ``.blend`` (its scripts never run). Outputs: ``.fbx`` (game-engine settings,
docs/retargeting.md), ``.glb`` and ``.blend``, with the character's mesh, materials and skin
weights as they were. A failure leaves no output behind: files are written to temporary names
and renamed only when every one of them was written.
"""

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporters.blender import _run_child
from exporters.retarget import Retargeted
from exporters.target_rig import TargetRig
from mocap.errors import MocapError
from mocap.paths import atomic_path, user_path

CHARACTER_SUFFIXES = (".fbx", ".glb", ".gltf", ".vrm", ".blend")
OUTPUT_SUFFIXES = (".fbx", ".glb", ".blend")
_SCRIPT = Path(__file__).resolve().with_name("_blender_retarget.py")


@dataclass
class MeshInfo:
    """A mesh the armature deforms, as read from the file."""

    name: str
    vertices: int
    materials: tuple[str, ...]
    weights: dict[str, float]  # vertex group -> summed weights (a fingerprint of the skinning)


@dataclass
class Character:
    """A character file's armature and meshes."""

    path: Path
    rig: TargetRig
    meshes: list[MeshInfo]
    humanoid: dict[str, str] | None = None  # VRM humanoid bone -> bone name (from the file)
    notes: list[str] = field(default_factory=list)


def _blender_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("bpy") is None


def vrm_humanoid(path: Path) -> dict[str, str] | None:
    """VRM humanoid bone -> node name from a .vrm/.glb/.gltf's JSON (VRM 1.0 or 0.x), or None."""
    try:
        raw = path.read_bytes()
        if raw[:4] == b"glTF":
            length, kind = struct.unpack_from("<I4s", raw, 12)
            data = json.loads(raw[20 : 20 + length]) if kind == b"JSON" else {}
        else:
            data = json.loads(raw)
    except (OSError, ValueError, struct.error):
        return None
    if not isinstance(data, dict):
        return None
    nodes = data.get("nodes", [])
    ext = data.get("extensions", {})
    bones: dict[Any, Any] = {}
    if "VRMC_vrm" in ext:  # VRM 1.0: {"hips": {"node": 3}, ...}
        table = ext["VRMC_vrm"].get("humanoid", {}).get("humanBones", {})
        bones = {k: v.get("node") for k, v in table.items() if isinstance(v, dict)}
    elif "VRM" in ext:  # VRM 0.x: [{"bone": "hips", "node": 3}, ...]
        table = ext["VRM"].get("humanoid", {}).get("humanBones", [])
        bones = {b.get("bone"): b.get("node") for b in table if isinstance(b, dict)}
    out = {
        k: nodes[i].get("name", f"node{i}")
        for k, i in bones.items()
        if isinstance(k, str) and isinstance(i, int) and 0 <= i < len(nodes)
    }
    return out or None


def _pick_armature(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """The armature that deforms the most vertices (then: the most bones)."""
    return max(arms, key=lambda a: (sum(m["vertices"] for m in a["meshes"]), len(a["bones"])))


def inspect_character(path: str | Path, timeout: float = 300.0) -> Character:
    """Read a character's armature at its bind pose and the meshes it deforms.

    Raises:
        MocapError: unsupported suffix, missing or unreadable file, no armature.
    """
    path = user_path(path).resolve()
    if path.suffix.lower() not in CHARACTER_SUFFIXES:
        raise MocapError(
            f"cannot read a character from {path.name}; give a {'/'.join(CHARACTER_SUFFIXES)} file"
        )
    if not path.is_file():
        raise MocapError(f"character file not found: {path}; check the --rig path")
    if _blender_missing():
        raise MocapError("retargeting needs Blender's Python module: pip install bpy==5.0.1")
    with tempfile.TemporaryDirectory(prefix="mocap-rig-") as tmp:
        out = Path(tmp) / "rig.json"
        code, line = _run_child(["inspect", str(path), str(out)], timeout, _SCRIPT)
        if code != 0 or not out.is_file():
            why = "timed out" if code is None else line or f"exit code {code}"
            raise MocapError(
                f"Blender cannot read {path.name} ({why}); is it a valid character file?"
            )
        dump = json.loads(out.read_text())
    if not dump["armatures"]:
        raise MocapError(f"{path.name} has no armature; give a rigged character (a skeleton)")
    arm = _pick_armature(dump["armatures"])
    names = tuple(b["name"] for b in arm["bones"])
    index = {n: i for i, n in enumerate(names)}
    rig = TargetRig(
        name=arm["name"],
        bone_names=names,
        parents=tuple(index[b["parent"]] if b["parent"] else -1 for b in arm["bones"]),
        rest=np.array([b["matrix_local"] for b in arm["bones"]], dtype=np.float64),
        tails=np.array([b["tail"] for b in arm["bones"]], dtype=np.float64),
        connected=tuple(bool(b["connect"]) for b in arm["bones"]),
        deform=tuple(bool(b["deform"]) for b in arm["bones"]),
        object_matrix=np.array(arm["matrix_world"], dtype=np.float64),
        floor=float(arm["floor"]),
    )
    meshes = [
        MeshInfo(m["name"], int(m["vertices"]), tuple(m["materials"]), dict(m["weights"]))
        for m in arm["meshes"]
    ]
    notes = []
    if len(dump["armatures"]) > 1:
        notes.append(
            f"{path.name} holds {len(dump['armatures'])} armatures: animating {arm['name']}"
        )
    if not meshes:
        notes.append(f"{path.name}: armature {arm['name']} deforms no mesh")
    humanoid = vrm_humanoid(path) if path.suffix.lower() in (".vrm", ".glb", ".gltf") else None
    return Character(path, rig, meshes, humanoid, notes)


def constrained_bones(rig: TargetRig, anim: Retargeted) -> list[str]:
    """Bones whose constraints are muted: the keyed ones, re-parented ones, and the deform bones
    hanging below them (in the written hierarchy), so that the keys alone drive the mesh."""
    index = {n: i for i, n in enumerate(rig.bone_names)}
    parents = [
        index[anim.reparent[n]] if n in anim.reparent else p
        for n, p in zip(rig.bone_names, rig.parents, strict=True)
    ]
    driven = {index[n] for n in anim.bones} | {index[n] for n in anim.reparent}
    out = set(driven)
    for b in range(len(parents)):
        p = parents[b]
        while p >= 0 and p not in driven:
            p = parents[p]
        if p >= 0 and rig.deform[b]:
            out.add(b)
    return sorted(rig.bone_names[b] for b in out)


def write_characters(
    character: Character, files: Mapping[Path, Retargeted], timeout: float | None = None
) -> list[Path]:
    """Write each person's animation on the character to its file (suffix picks the format).

    All files or none: on any failure every temporary file is removed and MocapError says why.
    """
    if _blender_missing():
        raise MocapError("retargeting needs Blender's Python module: pip install bpy==5.0.1")
    finals = {Path(p).resolve(): anim for p, anim in files.items()}
    for path in finals:
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise MocapError(f"cannot write {path.name}; give a {'/'.join(OUTPUT_SUFFIXES)} file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MocapError(f"cannot create {path.parent}: {exc.strerror}") from exc
    rig = character.rig
    deform_only = not all(rig.deform)
    jobs: dict[int, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    temps = {path: atomic_path(path) for path in finals}
    for path, anim in finals.items():
        key = next((k for k, j in jobs.items() if j["anim"] is anim), len(jobs))
        if key not in jobs:
            arrays[f"{key}_quats"], arrays[f"{key}_locs"] = anim.quaternions, anim.locations
            jobs[key] = {
                "anim": anim,
                "name": anim.name,
                "key": str(key),
                "character": str(character.path),
                "armature": rig.name,
                "fps": anim.fps,
                "bones": list(anim.bones),
                "located": list(anim.located),
                "reparent": anim.reparent,
                "mute": constrained_bones(rig, anim),
                "deform_only": deform_only and bool(anim.reparent),
                "outputs": [],
            }
        fmt = path.suffix.lower()[1:]
        jobs[key]["outputs"].append({"path": str(path), "tmp": str(temps[path]), "format": fmt})
    frames = sum(len(j["anim"].quaternions) * len(j["outputs"]) for j in jobs.values())
    limit = timeout if timeout is not None else 300.0 + 60.0 * len(jobs) + 0.05 * frames
    try:
        with tempfile.TemporaryDirectory(prefix="mocap-retarget-") as tmp:
            np.savez(Path(tmp) / "keys.npz", **arrays)
            spec = {
                "arrays": str(Path(tmp) / "keys.npz"),
                "result": str(Path(tmp) / "result.json"),
                "jobs": [{k: v for k, v in j.items() if k != "anim"} for j in jobs.values()],
            }
            (Path(tmp) / "job.json").write_text(json.dumps(spec))
            code, line = _run_child(["apply", str(Path(tmp) / "job.json")], limit, _SCRIPT)
            result_file = Path(tmp) / "result.json"
            result = json.loads(result_file.read_text()) if result_file.is_file() else {}
        errors = result.get("errors", {})
        if errors or code != 0 or len(result) == 0:
            name, why = next(iter(errors.items()), ("the character", line or f"exit {code}"))
            if code is None:
                why = f"Blender timed out after {limit:.0f} s"
            raise MocapError(f"writing {name} on {character.path.name} failed: {why}")
        missing = [p.name for p, t in temps.items() if not t.is_file()]
        if missing:
            raise MocapError(f"Blender wrote no {', '.join(missing)}; check the character file")
        for path, tmp_path in temps.items():
            os.replace(tmp_path, path)
    finally:
        for tmp_path in temps.values():
            tmp_path.unlink(missing_ok=True)
    return list(finals)


def render_snapshot(path: str | Path, png: str | Path, frames: list[int]) -> Path:
    """Workbench render of ``frames`` of a written character file, side by side, as PNG."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(png)
    code, line = _run_child(
        ["render", str(Path(path).resolve()), str(tmp), ",".join(map(str, frames))], 600.0, _SCRIPT
    )
    if code != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise MocapError(f"rendering {Path(path).name} failed: {line or f'exit {code}'}")
    os.replace(tmp, png)
    return png
