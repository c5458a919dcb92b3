"""The files of one clip: the staging folder's contents, run.json, the ``.done`` marker.

Everything is written into a hidden staging folder next to the final one and renamed to
``OUT/<clip>`` only when complete (:mod:`mocap.pipeline.staging`: names, locks, publishing);
``.done`` is the last file written, and only when every requested output was written, so an
interrupted or partly failed run never looks finished.
"""

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mocap.errors import MocapError
from mocap.motion import Motion
from mocap.paths import write_text_atomic
from mocap.pipeline.config import RunSettings
from mocap.pipeline.staging import DONE, clip_name, is_done, publish
from mocap.pipeline.stream import StageTimer

if TYPE_CHECKING:
    from mocap.pipeline.run import Engines

__all__ = ["DONE", "PassResult", "clip_name", "is_done", "publish", "write_done"]  # + writers
log = logging.getLogger("mocap")


@dataclass
class PassResult:
    """Result of the streaming pass over one clip."""

    motion: Motion
    frames: int  # decoded frames
    detections: int  # person boxes sent to the model
    jitter: dict[int, tuple[float, float]]  # track id -> mean joint acceleration before / after
    contacts: dict[int, Any] = field(default_factory=dict)  # track id -> contacts.FootLockReport


@contextmanager
def decoded_again() -> Iterator[None]:
    """Passes that decode the clip again after the streaming pass (camera, preview, report)
    would repeat its damage warnings (truncated file, broken images): they are said once."""
    video_log = logging.getLogger("mocap.pipeline.video")
    was, video_log.disabled = video_log.disabled, True
    try:
        yield
    finally:
        video_log.disabled = was


def check_output_root(output: Path) -> None:
    """Create ``output`` and make sure files can be written there (before any model is loaded)."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".mocap-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise MocapError(
            f"cannot write to output folder {output} ({reason}); choose a writable folder with -o"
        ) from exc


def write_outputs(
    staging: Path,
    video: Path,
    motion: Motion,
    settings: RunSettings,
    engines: "Engines",
    timer: StageTimer,
    contacts: dict[int, Any] | None = None,
) -> tuple[list[Path], list[str], list[str]]:
    """motion.npz (always), config.yaml, exporter files and the preview into ``staging``.

    Returns the files written, one line per output that failed (the others are still written) and
    the exporters' notes. Fills ``contacts`` (track id -> ``mocap.contacts.FootLockReport``).
    """
    from mocap.contacts import find_contacts
    from mocap.pipeline.camera_pass import camera_pass
    from mocap.pipeline.config import save_config

    with timer("camera"):  # --camera: the camera's path joins the motion before anything is written
        motion, notes = camera_pass(
            video, motion, settings.camera, settings.start, settings.end, settings.stride
        )
    with timer("contacts"):  # foot contacts into motion.npz; what locking them does, to run.json
        try:
            motion, feet = find_contacts(motion, engines.body, settings.foot_lock)
            notes += feet.notes
            for line in (r.summary() for r in feet.reports.values()):
                log.info("%s", line)
            if contacts is not None:
                contacts.update(feet.reports)
        except MocapError as exc:  # e.g. no usable person: the exporters say it again
            notes.append(f"foot contacts not found: {exc}")
    with timer("write"):
        files = [motion.save(staging / "motion.npz"), staging / "config.yaml"]
        save_config(settings, staging / "config.yaml")
    failures: list[str] = []
    if settings.formats:
        from exporters import export_motion

        with timer("export"):
            report = export_motion(
                motion,
                staging,
                settings.formats,
                body=engines.body,
                per_person=settings.per_person,
                units=settings.units,
                foot_lock=settings.foot_lock,  # with the contacts just stored in the motion
                root_motion=settings.root_motion,
            )
        files += report.files
        failures += [f"{f.person} {f.format}: {f.message}" for f in report.failures]
        notes += [n for n in report.notes if n not in notes]  # foot-lock notes are said once
    if settings.rig:  # --rig: each person on the user's character (exporters.retarget_export)
        from exporters.retarget_export import retarget_formats, retarget_motion

        with timer("retarget"):
            try:
                fmts = retarget_formats(settings.formats)
                root = getattr(settings, "root_motion", "world")  # the foot-locking issue's
                lock = getattr(settings, "foot_lock", "auto")
                done = retarget_motion(
                    motion, settings.rig, staging, fmts, root_motion=root,
                    body=engines.body, foot_lock=lock,
                )  # fmt: skip
                files += done.files
                notes += [done.bone_map.how, *done.notes]
            except Exception as exc:  # noqa: BLE001 - a character must not lose the clip's outputs
                why = str(exc) if isinstance(exc, MocapError) else f"{type(exc).__name__}: {exc}"
                failures.append(f"retarget: {why}")
    if settings.preview:
        from mocap.pipeline.preview import render_preview

        with timer("preview"):
            try:
                files.append(
                    render_preview(video, motion, staging / "preview.mp4", settings, engines.body)
                )
            except MocapError as exc:
                failures.append(f"preview: {exc}")
    for line in notes:
        log.debug("%s", line)
    for line in failures:
        log.warning("%s", line)
    return files, failures, notes


def write_run_json(
    staging: Path,
    video: Path,
    result: PassResult,
    settings: RunSettings,
    engines: "Engines",
    timer: StageTimer,
    files: list[Path],
    warnings: list[str],
    failures: list[str],
) -> None:
    """run.json: what was run, with which software and model, how long each stage took."""
    import json
    import platform

    import torch

    from mocap import __version__

    sec = timer.seconds
    motion, pass_s = result.motion, sec.get("pass", 0.0)
    data = {
        "mocap_version": __version__,
        "source": str(video.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": settings.to_dict(),
        "model": engines.model_info,
        "body": engines.body_label,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        }
        | engines.versions,
        "video": {
            "frames": result.frames,
            "fps": motion.fps,
            "image_size": list(motion.image_size),
            "focal_length": motion.focal_length,
        },
        "detections": result.detections,
        "tracks": [
            {
                "id": t.track_id,
                "frames": len(t),
                "first_frame": int(t.frames[0]),
                "last_frame": int(t.frames[-1]),
                "interpolated_frames": int(np.sum(t.scores == 0)),
                "jitter_before_m_s2": round(result.jitter[t.track_id][0], 4),
                "jitter_after_m_s2": round(result.jitter[t.track_id][1], 4),
                "contacts": result.contacts[t.track_id].to_dict()
                if t.track_id in result.contacts
                else None,
            }
            for t in motion.tracks
        ],
        "timings_s": {k: round(v, 4) for k, v in sec.items()},
        "frames_per_s": round(result.frames / pass_s, 3) if pass_s else None,
        "share_outside_model": round(1 - sec.get("model", 0.0) / pass_s, 4) if pass_s else None,
        "files": sorted(str(p.relative_to(staging)) for p in files),
        "warnings": warnings,
        "failures": failures,
    }
    if settings.report:  # needs run.json's numbers; adds its "quality" block (never fails the run)
        from mocap.pipeline.report import add_report

        add_report(staging, video, motion, data, engines.body)
    write_text_atomic(staging / "run.json", json.dumps(data, indent=2) + "\n")


def write_done(staging: Path) -> None:
    """The ``.done`` marker: the last file of a clip whose every output was written."""
    write_text_atomic(staging / DONE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
