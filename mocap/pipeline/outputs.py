"""The files of one clip: names, the staging folder's contents, run.json, and publishing.

Everything is written into a hidden staging folder next to the final one and renamed to
``OUT/<clip>`` only when complete; ``.done`` is the last file written, and only when every
requested output was written, so an interrupted or partly failed run never looks finished.
"""

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mocap.errors import MocapError
from mocap.motion import Motion
from mocap.pipeline.config import RunSettings
from mocap.pipeline.stream import StageTimer

if TYPE_CHECKING:
    from mocap.pipeline.run import Engines

log = logging.getLogger("mocap")
DONE = ".done"


@dataclass
class PassResult:
    """Result of the streaming pass over one clip."""

    motion: Motion
    frames: int  # decoded frames
    detections: int  # person boxes sent to the model
    jitter: dict[int, tuple[float, float]]  # track id -> mean joint acceleration before / after


def clip_name(video: Path) -> str:
    """Output folder name of a clip: the file stem, or the folder name for an image folder."""
    return video.name if video.is_dir() else video.stem


def is_done(out_dir: Path) -> bool:
    """True when ``out_dir`` holds a finished run (its ``.done`` marker exists)."""
    return (out_dir / DONE).is_file()


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
) -> tuple[list[Path], list[str], list[str]]:
    """motion.npz (always), config.yaml, exporter files and the preview into ``staging``.

    Returns the files written, one line per output that failed (the others are still written) and
    the exporters' notes.
    """
    from mocap.pipeline.config import save_config

    with timer("write"):
        files = [motion.save(staging / "motion.npz"), staging / "config.yaml"]
        save_config(settings, staging / "config.yaml")
    failures: list[str] = []
    notes: list[str] = []
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
            )
        files += report.files
        failures += [f"{f.person} {f.format}: {f.message}" for f in report.failures]
        notes += report.notes
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
    from mocap.paths import atomic_path

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
    path = staging / "run.json"
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def publish(staging: Path, final: Path) -> None:
    """Rename the finished staging folder to ``final``, replacing an older result."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
