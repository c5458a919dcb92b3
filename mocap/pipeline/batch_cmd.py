"""Convert many clips with one loaded model; finished clips are skipped, failing ones reported.

INPUTS are video files, folders (every video inside; a folder holding only images is one clip) and
glob patterns (quote them: 'shoot/**/*.mp4'). Each clip goes to OUT/<clip name>/ exactly as with
`mocap run`. A clip counts as finished when its .done marker exists (written last), so an
interrupted batch resumes where it stopped; --overwrite redoes everything. A clip that fails is
reported in one line and the others go on. At the end: a summary table, OUT/manifest.json, and
exit status 1 if any clip failed.

examples:
  mocap batch clips/ -o out
  mocap batch 'shoot/**/*.mp4' extra.mov -o out --formats bvh,fbx --combined
"""

import argparse
import glob
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mocap.errors import MocapError
from mocap.pipeline.config import add_settings_arguments

if TYPE_CHECKING:
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.run import Engines

log = logging.getLogger("mocap")
VIDEO_SUFFIXES = {
    ".mp4",
    ".mov",
    ".m4v",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".mts",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class _LoadFailed(Exception):
    """The detector / model / body could not be loaded: the whole batch stops."""


@dataclass
class ClipStatus:
    """One line of the summary table and of manifest.json."""

    source: str
    name: str
    status: str  # "done", "skipped" (already finished), "failed", "interrupted" (Ctrl-C)
    output: str = ""
    frames: int | None = None
    people: int | None = None
    seconds: float | None = None
    error: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="video files, folders or glob patterns"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder; each clip goes to OUT/<clip name>/",
    )
    add_settings_arguments(parser)


def collect_clips(inputs: list[str]) -> tuple[list[Path], list[ClipStatus], list[str]]:
    """Expand INPUTS into clips (de-duplicated), failures for paths that do not exist, and notes on
    inputs that held nothing to convert."""
    clips: list[Path] = []
    missing: list[ClipStatus] = []
    notes: list[str] = []
    for text in inputs:
        path = Path(text).expanduser()
        if not path.exists() and glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            found = [m for m in matches if m.is_file() and m.suffix.lower() in VIDEO_SUFFIXES]
            if not found:
                notes.append(f"no videos match {text}")
            clips += found
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
            if videos:
                clips += videos
            elif any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
                clips.append(path)  # a folder of frames is one clip
            else:
                notes.append(f"{path} holds no videos or images")
        elif path.is_file():
            clips.append(path)
        else:
            error = f"{path} does not exist; check the path"
            missing.append(
                ClipStatus(source=str(path), name=path.stem, status="failed", error=error)
            )
    unique: dict[Path, Path] = {}
    for clip in clips:
        unique.setdefault(clip.resolve(), clip)
    return list(unique.values()), missing, notes


def output_names(clips: list[Path]) -> list[str]:
    """A distinct output folder name per clip: its stem, prefixed by its folder when stems collide."""
    from mocap.pipeline.run import clip_name

    names = [clip_name(c) for c in clips]
    taken: set[str] = set()
    out = []
    for clip, name in zip(clips, names, strict=True):
        if names.count(name) > 1:
            name = f"{clip.resolve().parent.name}_{name}"
        base, k = name, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        out.append(name)
    return out


def summary_table(rows: list[ClipStatus]) -> str:
    """Plain-text table of every clip's outcome."""
    header = ("clip", "status", "frames", "people", "seconds", "note")
    lines = [
        (
            r.name,
            r.status,
            "" if r.frames is None else str(r.frames),
            "" if r.people is None else str(r.people),
            "" if r.seconds is None else f"{r.seconds:.1f}",
            r.error,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    return "\n".join(fmt.format(*row).rstrip() for row in [header, *lines])


def write_manifest(out: Path, rows: list[ClipStatus], settings: "RunSettings", model: str) -> Path:
    """OUT/manifest.json: settings, model and every clip's outcome (temporary file, then rename)."""
    from mocap import __version__
    from mocap.paths import atomic_path

    path = out / "manifest.json"
    data = {
        "mocap_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": model,
        "settings": settings.to_dict(),
        "counts": {s: sum(r.status == s for r in rows) for s in ("done", "skipped", "failed")},
        "clips": [asdict(r) for r in rows],
    }
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mocap.pipeline.config import resolve_settings
    from mocap.pipeline.run import check_output_root, is_done, process_video
    from mocap.pipeline.run_cmd import build_engines, setup_logging

    setup_logging(args)
    settings = resolve_settings(args)
    out = Path(args.output).expanduser()
    check_output_root(out)
    clips, rows, notes = collect_clips(args.inputs)
    if not clips and not rows:
        raise MocapError(
            f"no videos found in {' '.join(args.inputs)}; give video files, folders or globs"
        )
    for note in notes:
        log.warning("%s; skipped", note)
    for bad in rows:
        print(f"mocap: {bad.name}: failed: {bad.error}", file=sys.stderr)
    loaded: list[Engines] = []

    def engines() -> "Engines":  # the model loads once, on the first clip that opens fine
        if not loaded:
            try:
                loaded.append(build_engines(settings))
            except MocapError as exc:  # no weights, bad SMPL file...: every clip would fail
                raise _LoadFailed(str(exc)) from None
        return loaded[0]

    show = not args.quiet and sys.stderr.isatty()
    try:
        for clip, name in tqdm(
            list(zip(clips, output_names(clips), strict=True)),
            desc="clips",
            unit="clip",
            disable=not show,
        ):
            row = ClipStatus(source=str(clip), name=name, status="skipped", output=str(out / name))
            if is_done(out / name) and not settings.overwrite:
                rows.append(row)
                continue
            row.status = "interrupted"  # until it ends one way or the other
            rows.append(row)
            t0 = time.perf_counter()
            try:
                result = process_video(clip, out, settings, engines, progress=show, name=name)
            except _LoadFailed as exc:
                row.status, row.error = "failed", str(exc)
                raise MocapError(str(exc)) from None  # stop: the other clips cannot run either
            except MocapError as exc:
                row.status, row.error = "failed", str(exc)
            except Exception as exc:  # a bug on one clip must not lose the others
                log.debug("%s failed", clip, exc_info=True)
                row.status, row.error = (
                    "failed",
                    f"internal error ({type(exc).__name__}: {exc}); please report it",
                )
            else:
                row.status, row.frames, row.people = (
                    "done",
                    result.frames,
                    len(result.track_lengths),
                )
                if result.failures:  # outputs written except these; retried by the next batch
                    row.status, row.error = "failed", "; ".join(result.failures)
            row.seconds = time.perf_counter() - t0
            if row.status == "failed":
                tqdm.write(f"mocap: {name}: failed: {row.error}", file=sys.stderr)
    finally:
        model = loaded[0].model_label if loaded else ""
        manifest = write_manifest(out, rows, settings, model)
    if not args.quiet:
        print(summary_table(rows))
        print(f"manifest: {manifest}")
    return 1 if any(r.status == "failed" for r in rows) else 0
