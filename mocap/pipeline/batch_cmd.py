"""Convert many clips with one loaded model; finished clips are skipped, failing ones reported.

INPUTS are video files, folders (every video inside; a folder holding only images is one clip) and
glob patterns (quote them: 'shoot/**/*.mp4'). Each clip goes to OUT/<clip name>/ exactly as with
`mocap run`. A clip counts as finished when its .done marker exists (written last), so an
interrupted batch resumes where it stopped; --overwrite redoes everything. A clip that fails is
reported in one line and the others go on. At the end: a summary table, OUT/manifest.json, and
exit status 1 if any clip failed.

Several batches may share one OUT: each clip is locked while it is converted, so it is converted
once and the other batches skip it; OUT/manifest.json is merged (each clip's latest outcome) and
rewritten after every clip, so a killed batch still leaves the record of the clips it finished.
Staging left by killed runs is removed.

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
from typing import TYPE_CHECKING, Any

from mocap.errors import MocapError
from mocap.pipeline.config import add_settings_arguments
from mocap.pipeline.staging import clip_name

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
            name = clip_name(path)
            missing.append(ClipStatus(source=str(path), name=name, status="failed", error=error))
    unique: dict[Path, Path] = {}
    for clip in clips:
        unique.setdefault(clip.resolve(), clip)
    return list(unique.values()), missing, notes


def output_names(clips: list[Path]) -> list[str]:
    """A distinct output folder name per clip: its stem, prefixed by its folder when stems collide."""
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


def _manifest_clips(path: Path) -> list[dict[str, Any]]:
    """The clip rows of an existing manifest.json ([] when absent or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, list):
        return []
    return [c for c in clips if isinstance(c, dict) and isinstance(c.get("name"), str)]


def write_manifest(
    out: Path,
    rows: list[ClipStatus],
    settings: "RunSettings",
    model: str,
    busy: frozenset[str] = frozenset(),
) -> Path:
    """OUT/manifest.json: settings, model and every clip's latest outcome, merged with what other
    batches on OUT wrote (under a lock; temporary file, then rename). A clip in ``busy`` (skipped
    because another batch converts it) keeps that batch's row."""
    from mocap import __version__
    from mocap.paths import write_text_atomic
    from mocap.pipeline.staging import FileLock

    path = out / "manifest.json"
    with FileLock(out / ".manifest.lock").acquire(wait=True):
        merged = {c["name"]: c for c in _manifest_clips(path)}
        for row in rows:
            if row.name not in busy or row.name not in merged:
                merged[row.name] = asdict(row)
        clips = list(merged.values())
        data = {
            "mocap_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "model": model,
            "settings": settings.to_dict(),
            "counts": {
                s: sum(c.get("status") == s for c in clips) for s in ("done", "skipped", "failed")
            },
            "clips": clips,
        }
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mocap.pipeline.config import resolve_settings
    from mocap.pipeline.report_batch import write_batch_report
    from mocap.pipeline.run import check_output_root, is_done, process_video
    from mocap.pipeline.run_cmd import build_engines, setup_logging
    from mocap.pipeline.staging import DONE, ClipBusy, ClipFinished, clean_stale

    setup_logging(args)
    settings = resolve_settings(args)
    out = Path(args.output).expanduser()
    check_output_root(out)
    for line in clean_stale(out):  # staging and temporary files of killed runs
        log.info("%s", line)
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
    busy: set[str] = set()  # clips another batch converted: its manifest row is kept
    started = time.time()
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
                if (out / name / DONE).stat().st_mtime >= started:  # by a concurrent batch
                    busy.add(name)
                continue
            row.status = "interrupted"  # until it ends one way or the other
            rows.append(row)
            t0 = time.perf_counter()
            try:
                result = process_video(clip, out, settings, engines, progress=show, name=name)
            except _LoadFailed as exc:
                row.status, row.error = "failed", str(exc)
                raise MocapError(str(exc)) from None  # stop: the other clips cannot run either
            except ClipBusy:
                row.status, row.error = "skipped", "being converted by another mocap process"
                busy.add(name)
            except ClipFinished:  # finished by another batch since the check above
                row.status = "skipped"
                busy.add(name)
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
            model = loaded[0].model_label if loaded else ""
            write_manifest(out, rows, settings, model, frozenset(busy))  # survives a SIGKILL
    finally:
        model = loaded[0].model_label if loaded else ""
        manifest = write_manifest(out, rows, settings, model, frozenset(busy))
    write_batch_report(out, settings)  # OUT/summary.html (mocap.pipeline.report_batch)
    if not args.quiet:
        print(summary_table(rows))
        print(f"manifest: {manifest}")
    return 1 if any(r.status == "failed" for r in rows) else 0
