"""Animation exporters: one entry point, :func:`export_motion`, for every format.

``export_motion`` turns a clip's :class:`~mocap.motion.Motion` into one Y-up world
(:mod:`mocap.world`: gap filling, optional smoothing, floor, shared origin), builds one
:class:`~exporters.rig.RigAnimation` per person (SMPL skeleton and skinned mesh from the track's
betas when a body model is given, else the built-in skeleton) and writes:

    ``npz``   per person, native: the rig arrays, joint world positions and the SMPL parameters
              in the world frame (see :func:`write_rig_npz`), metres
    ``bvh``   per person, native (:mod:`exporters.bvh`), metres or centimetres
    ``fbx``, ``blend``, ``glb``, ``gltf``   through Blender in a child process
              (:mod:`exporters.blender`), one file per person or all people in one scene, each
              with the video's camera (animated when the motion holds its path, `--camera`;
              :mod:`exporters.camera`)

Files are named ``person_<id>.<ext>`` (combined scenes: ``people.<ext>``). Every file is written to
a temporary name and renamed; a failure of one person or format is recorded in the report and
the others are still written.
"""

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from exporters.bvh import UNIT_SCALE, write_bvh
from exporters.rig import RigAnimation
from mocap.errors import MocapError
from mocap.motion import Motion
from mocap.paths import StorageError, atomic_output
from mocap.smoothing import MODES, JitterReport

if TYPE_CHECKING:  # mocap.world imports exporters.rig: import it lazily to avoid a cycle
    from exporters.camera import CameraAnimation
    from mocap.body.skeleton import BodySource
    from mocap.contacts import FootLockReport
    from mocap.world import WorldFrame

NATIVE_FORMATS = ("npz", "bvh")
BLENDER_FORMATS = ("fbx", "blend", "glb", "gltf")
FORMATS = NATIVE_FORMATS + BLENDER_FORMATS


@dataclass
class ExportFailure:
    """One person (or a combined scene, person ``"all"``) that could not be written in one format."""

    person: str
    format: str
    message: str


@dataclass
class ExportReport:
    """What :func:`export_motion` wrote and what failed."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    failures: list[ExportFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    jitter: dict[int, JitterReport] = field(default_factory=dict)  # track id -> smoothing effect
    world: "WorldFrame | None" = None
    contacts: "dict[int, FootLockReport]" = field(default_factory=dict)  # track id -> feet

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """Human-readable lines: files, smoothing, notes, failures."""
        lines = [f"wrote {len(self.files)} file(s) to {self.out_dir}"]
        lines += [f"  {p.name}" for p in self.files]
        if self.world is not None:
            x, y, z = self.world.camera_position
            lines.append(f"  world: Y up, floor y = 0, camera at ({x:.2f}, {y:.2f}, {z:.2f}) m")
        for tid, rep in self.jitter.items():
            lines.append(f"  track {tid}: jitter {rep.before:.2f} -> {rep.after:.2f} m/s^2")
        lines += [f"  {rep.summary()}" for rep in self.contacts.values()]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"failed: {f.person} {f.format}: {f.message}" for f in self.failures]
        return "\n".join(lines)


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """``"bvh,fbx"`` or ``["bvh", "fbx"]`` -> validated, de-duplicated, lower-case list."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for item in (i.strip().lower().lstrip(".") for i in items):
        if not item:
            continue
        if item not in FORMATS:
            raise MocapError(f"unknown export format {item!r}; choose from {','.join(FORMATS)}")
        if item not in out:
            out.append(item)
    if not out:
        raise MocapError(f"no export format given; choose from {','.join(FORMATS)}")
    return out


def joint_positions(rig: RigAnimation, chunk: int = 1024) -> np.ndarray:
    """``rig.world_positions()`` (T,J,3), computed ``chunk`` frames at a time.

    Forward kinematics keeps a float64 (T,J,3,3) array of global rotations; blocks keep that
    working set flat in clip length. Same values as ``rig.world_positions()``.
    """
    t, j = rig.local_rotations.shape[:2]
    out = np.empty((t, j, 3))
    for start in range(0, t, chunk):
        sl = slice(start, start + chunk)
        part = replace(
            rig,
            local_rotations=rig.local_rotations[sl],
            root_positions=rig.root_positions[sl],
            local_translations={k: v[sl] for k, v in rig.local_translations.items()},
        )
        out[sl] = part.world_positions()
    return out


def write_rig_npz(rig: RigAnimation, path: Path, betas: np.ndarray | None = None) -> Path:
    """Write one person's animation as npz (atomic). Y-up world, metres, rotation matrices.

    Keys: ``joint_names`` (J,), ``parents`` (J,), ``rest_offsets`` (J,3), ``root_positions`` (T,3),
    ``local_rotations`` (T,J,3,3), ``joint_positions`` (T,J,3) world, ``fps``, ``frame_start``; and
    SMPL's parameters in the world frame: ``global_orient`` (T,3,3), ``body_pose`` (T,23,3,3),
    ``transl`` (T,3) and, when the skeleton came from SMPL, ``betas`` (10,), so that SMPL with
    these parameters reproduces ``joint_positions``. With a root bone (``--root-motion
    root-bone``) the rig arrays hold it, and ``local_translations`` (T,J,3) the joints' offsets
    from their parents (the rest offsets, but the hips'); SMPL's parameters stay the hips'.
    """
    from exporters.root_motion import smpl_view

    smpl = smpl_view(rig)
    arrays = {
        "joint_names": np.array(rig.joint_names),
        "parents": np.array(rig.parents, dtype=np.int64),
        "rest_offsets": rig.rest_offsets,
        "root_positions": rig.root_positions,
        "local_rotations": rig.local_rotations,
        "joint_positions": joint_positions(rig),
        "fps": np.array(rig.fps),
        "frame_start": np.array(rig.frame_start),
        "global_orient": smpl.local_rotations[:, 0],
        "body_pose": smpl.local_rotations[:, 1:],
        # SMPL rotates about the root joint and translates its origin: origin = root - rest root
        "transl": smpl.root_positions - smpl.rest_offsets[0],
    }
    if rig.local_translations:
        moved = np.broadcast_to(rig.rest_offsets, (rig.num_frames, *rig.rest_offsets.shape)).copy()
        for j, v in rig.local_translations.items():
            moved[:, j] = v
        arrays["local_translations"] = moved
    if betas is not None:
        arrays["betas"] = np.asarray(betas)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        _savez_blocks(fh, arrays)
    return path


def _savez_blocks(fh: BinaryIO, arrays: dict[str, np.ndarray], block_bytes: int = 1 << 20) -> None:
    """``np.savez`` (uncompressed, same keys, read back by ``np.load``) written a block of rows at a time.

    ``np.savez`` copies each array through 16 MiB buffers (two at once); blocks keep the copy
    of a long clip's arrays to about ``block_bytes``.
    """
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            a = np.asarray(value)
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array_header_1_0(
                    out, np.lib.format.header_data_from_array_1_0(a)
                )
                if a.ndim == 0:
                    out.write(a.tobytes())
                    continue
                rows = max(1, block_bytes // max(a[:1].nbytes, 1))
                for start in range(0, len(a), rows):
                    out.write(np.ascontiguousarray(a[start : start + rows]).tobytes())


def _write_native(
    fmt: str, rig: RigAnimation, path: Path, units: str, betas: np.ndarray | None
) -> Path:
    return write_bvh(rig, path, units) if fmt == "bvh" else write_rig_npz(rig, path, betas)


def _write_blender(
    rigs: list[RigAnimation],
    formats: list[str],
    out_dir: Path,
    per_person: bool,
    report: ExportReport,
    pose_correctives: bool = True,
    camera: "CameraAnimation | None" = None,
) -> None:
    """All Blender formats in one child process; failures recorded per person and format."""
    scenes: dict[Path, list[RigAnimation]] = {}
    owner: dict[Path, str] = {}
    for fmt in formats:
        if per_person:
            for rig in rigs:
                path = (out_dir / f"{rig.name}.{fmt}").resolve()
                scenes[path], owner[path] = [rig], rig.name
        else:
            path = (out_dir / f"people.{fmt}").resolve()
            scenes[path], owner[path] = rigs, "all"
    if not scenes:
        return
    try:
        from exporters.blender import write_with_blender

        errors = write_with_blender(scenes, pose_correctives=pose_correctives, camera=camera)
    except Exception as exc:  # noqa: BLE001 - Blender's failure must not stop the native formats
        errors = {p: f"{type(exc).__name__}: {exc}" for p in scenes}
    for path in scenes:
        err = errors.get(path, "no result from the Blender writer")
        if err is None and path.exists():
            report.files.append(path)
            sidecar = path.with_suffix(".bin")  # .gltf keeps its buffers beside it
            if path.suffix == ".gltf" and sidecar.exists():
                report.files.append(sidecar)
        else:
            report.failures.append(
                ExportFailure(owner[path], path.suffix[1:], err or "file missing")
            )


def export_motion(
    motion: Motion,
    out_dir: str | Path,
    formats: str | Sequence[str],
    body: "BodySource | None" = None,
    per_person: bool = True,
    units: str = "m",
    smoothing: str | None = None,
    smooth_strength: float = 1.0,
    pose_correctives: bool = True,
    foot_lock: str = "auto",
    root_motion: str = "world",
) -> ExportReport:
    """Write a clip's animation in every requested format.

    Args:
        motion: the clip (camera frame, as saved by ``mocap run``).
        out_dir: output folder (created).
        formats: e.g. ``"bvh,fbx"`` or ``["npz", "bvh", "glb"]`` (see ``FORMATS``).
        body: ``mocap.body.smpl.BodyModel`` for shaped skeletons and skinned meshes; None uses the
            built-in skeleton (no body shape, no mesh).
        per_person: one file per person (default) or all people in one scene (Blender formats;
            BVH and npz always hold one person).
        units: "m" or "cm" for BVH.
        smoothing: None/"none" (motion as saved), "offline" or "oneeuro".
        smooth_strength: 0 off, 1 default, 2 strong.
        pose_correctives: skinned meshes carry SMPL's 207 pose-corrective blend shapes (exact SMPL
            mesh; about 17 MB per person); False gives plain skinning.
        foot_lock: "auto" holds planted feet (:mod:`mocap.contacts`; the contacts stored in the
            motion when it has them, else found), "off" leaves them as estimated.
        root_motion: "world", "in-place" or "root-bone" (:mod:`exporters.root_motion`).

    Returns:
        ExportReport with the files written and the per-person/per-format failures.
    """
    from exporters.camera import camera_animation
    from exporters.root_motion import ROOT_MOTIONS, apply_root_motion
    from mocap.contacts import lock_world
    from mocap.world import build_world

    fmts = parse_formats(formats)
    if units not in UNIT_SCALE:
        raise MocapError(f"unknown units {units!r}; use m or cm")
    if smoothing is not None and smoothing not in MODES:
        raise MocapError(f"unknown smoothing mode {smoothing!r}; use one of {', '.join(MODES)}")
    if root_motion not in ROOT_MOTIONS:
        raise MocapError(f"unknown root motion {root_motion!r}; use {', '.join(ROOT_MOTIONS)}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MocapError(
            f"cannot create output folder {out}: {exc.strerror}; choose a writable folder"
        ) from exc
    built = build_world(motion, body, smoothing, smooth_strength)
    report = ExportReport(
        out_dir=out, notes=list(built.notes), jitter=built.jitter, world=built.world
    )
    for tid, why in {**motion.rejected, **built.skipped}.items():  # the others are still written
        report.failures.append(ExportFailure(f"person_{tid}", ",".join(fmts), f"left out: {why}"))
    locked = lock_world(built, motion, foot_lock)  # planted feet held: replaces built.rigs' items
    report.contacts, report.notes = locked.reports, report.notes + locked.notes
    rigs = [  # rest floor: under the rest pose's soles
        apply_root_motion(rig, root_motion, 0.0, rig.rest_offsets[0, 1] - skel.sole_clearance[0])
        for rig, skel in zip(built.rigs, built.skeletons, strict=True)
    ]
    if not per_person and any(f in NATIVE_FORMATS for f in fmts) and len(rigs) > 1:
        report.notes.append("BVH and npz hold one skeleton per file: written per person")
    for fmt in (f for f in fmts if f in NATIVE_FORMATS):
        for rig, skeleton in zip(rigs, built.skeletons, strict=True):
            path = out / f"{rig.name}.{fmt}"
            try:
                report.files.append(_write_native(fmt, rig, path, units, skeleton.betas))
            except StorageError:  # a full disk: every other file would fail the same way
                raise
            except Exception as exc:  # noqa: BLE001 - one person's failure must not stop the others
                msg = str(exc) if isinstance(exc, MocapError) else f"{type(exc).__name__}: {exc}"
                report.failures.append(ExportFailure(rig.name, fmt, msg))
    blender_formats = [f for f in fmts if f in BLENDER_FORMATS]
    camera = camera_animation(motion, built.world) if blender_formats else None  # the video's
    _write_blender(rigs, blender_formats, out, per_person, report, pose_correctives, camera)
    return report
