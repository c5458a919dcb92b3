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
Staging and temporary files left by killed runs are removed. Each converted clip's log lines are
kept in OUT/logs/<clip>.log; one bar shows the clips finished and the frames decoded. With --ray
the clips run on Ray workers (the model loaded once per worker), with the same outcome
(docs/ray.md).

examples:
  mocap batch clips/ -o out
  mocap batch 'shoot/**/*.mp4' extra.mov -o out --formats bvh,fbx --combined
  mocap batch /shared/clips -o /shared/out --ray HEAD:6379
"""

import argparse
import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mocap.errors import MocapError
from mocap.paths import user_path
from mocap.pipeline.clip_log import (
    LOGS,
    LogLine,
    capture_log,
    clean_stale_logs,
    note,
    write_clip_log,
)
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
    from mocap.pipeline.ray_batch import add_ray_arguments  # no Ray import until --ray

    add_ray_arguments(parser)


def collect_clips(inputs: list[str]) -> tuple[list[Path], list[ClipStatus], list[str]]:
    """Expand INPUTS into clips (de-duplicated), failures for paths that do not exist, and notes on
    inputs that held nothing to convert."""
    clips: list[Path] = []
    missing: list[ClipStatus] = []
    notes: list[str] = []
    for text in inputs:
        path = user_path(text)
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
    """A distinct output folder name per clip: its stem, prefixed by its folder when stems collide
    (never ``logs``: OUT/logs/ holds the clips' logs)."""
    names = [clip_name(c) for c in clips]
    taken: set[str] = {LOGS}
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


@dataclass
class ClipOutcome:
    """What :func:`convert_clip` gives back: the clip's row, whether another batch owns the clip
    (its manifest row is kept), whether the model failed to load (the batch stops), and the lines
    logged while it was converted (for OUT/logs/<clip>.log)."""

    row: ClipStatus
    busy: bool = False
    load_failed: bool = False
    log: list[LogLine] = field(default_factory=list)


def convert_clip(
    clip: Path,
    name: str,
    out: Path,
    settings: "RunSettings",
    engines: "Callable[[], Engines]",
    started: float,
    on_frames: Callable[[int], None] | None = None,
    on_line: Callable[[LogLine], None] | None = None,
) -> ClipOutcome:
    """One clip of a batch, the same for the sequential batch and every Ray worker: skipped when
    finished (``.done``, unless --overwrite), else converted by process_video (locked, staged,
    published by rename); every failure becomes the row's error. ``engines`` loads the model on the
    first clip that needs it; ``started``: the batch's start (a clip finished since then was
    converted by a concurrent batch); ``on_frames(n)``: n more frames decoded; ``on_line``: each
    log line as it is logged (both for progress while the clip runs)."""
    from mocap.pipeline.run import is_done
    from mocap.pipeline.staging import DONE

    row = ClipStatus(source=str(clip), name=name, status="skipped", output=str(out / name))
    if is_done(out / name) and not settings.overwrite:
        return ClipOutcome(row, busy=(out / name / DONE).stat().st_mtime >= started)
    outcome = ClipOutcome(row)
    with capture_log(on_line) as outcome.log:
        log.info("%s: converting %s", name, clip)
        _convert(clip, out, settings, engines, on_frames, outcome)
    return outcome


def _convert(
    clip: Path,
    out: Path,
    settings: "RunSettings",
    engines: "Callable[[], Engines]",
    on_frames: Callable[[int], None] | None,
    outcome: ClipOutcome,
) -> None:
    """:func:`convert_clip` past the skip: process_video, its result or failure in the row."""
    from mocap.pipeline.run import process_video
    from mocap.pipeline.staging import ClipBusy, ClipFinished

    row = outcome.row
    t0 = time.perf_counter()
    try:
        result = process_video(clip, out, settings, engines, name=row.name, on_frames=on_frames)
    except _LoadFailed as exc:  # the other clips cannot run either
        row.status, row.error, outcome.load_failed = "failed", str(exc), True
    except ClipBusy:
        row.status, row.error = "skipped", "being converted by another mocap process"
        outcome.busy = True
    except ClipFinished:  # finished by another batch since the check above
        row.status, outcome.busy = "skipped", True
    except MocapError as exc:
        row.status, row.error = "failed", str(exc)
    except Exception as exc:  # a bug on one clip must not lose the others
        log.debug("%s failed", clip, exc_info=True)
        row.status, row.error = (
            "failed",
            f"internal error ({type(exc).__name__}: {exc}); please report it",
        )
    else:
        row.status, row.frames, row.people = "done", result.frames, len(result.track_lengths)
        if result.failures:  # outputs written except these; retried by the next batch
            row.status, row.error = "failed", "; ".join(result.failures)
    row.seconds = time.perf_counter() - t0


def engine_loader(settings: "RunSettings") -> "tuple[Callable[[], Engines], list[Engines]]":
    """A loader that builds the engines once, on the first clip that opens fine (_LoadFailed when
    they cannot load), and the list that then holds them."""
    from mocap.pipeline.run_cmd import build_engines

    loaded: list[Engines] = []

    def engines() -> "Engines":
        if not loaded:
            try:
                loaded.append(build_engines(settings))
            except MocapError as exc:  # no weights, bad SMPL file...: every clip would fail
                raise _LoadFailed(str(exc)) from None
        return loaded[0]

    return engines, loaded


@dataclass
class Batch:
    """One batch: where it writes, its settings, its start time, whether bars show, and every
    clip's row so far (``busy``: clips another batch converted; ``model``: the loaded label)."""

    out: Path
    settings: "RunSettings"
    started: float
    show: bool
    rows: list[ClipStatus]
    busy: set[str] = field(default_factory=set)
    model: str = ""

    def record(self, outcome: ClipOutcome, lines: list[LogLine] | None = None) -> None:
        """Put a finished clip's row in place of its placeholder; say a failure in one line; write
        the log of a clip that was converted (``lines``: all its attempts') with the outcome."""
        from tqdm import tqdm

        row = outcome.row
        if row.status in ("done", "failed") and not outcome.busy:
            outcome_line = note(logging.INFO, f"{row.name}: done: {row.frames} frames, "
                                f"{row.people} people, {row.seconds or 0:.1f} s")  # fmt: skip
            if row.status == "failed":
                outcome_line = note(logging.ERROR, f"{row.name}: failed: {row.error}")
            write_clip_log(self.out, row.name, [*(lines or outcome.log), outcome_line])
        waiting = [
            i for i, r in enumerate(self.rows) if (r.name, r.status) == (row.name, "interrupted")
        ]
        if waiting:
            self.rows[waiting[0]] = row
        else:
            self.rows.append(row)
        if outcome.busy:
            self.busy.add(row.name)
        if row.status == "failed" and not outcome.load_failed:
            tqdm.write(f"mocap: {row.name}: failed: {row.error}", file=sys.stderr)

    def save(self) -> Path:
        """Write OUT/manifest.json now (after every clip: it survives a SIGKILL)."""
        return write_manifest(self.out, self.rows, self.settings, self.model, frozenset(self.busy))


def _run_sequential(batch: Batch, pairs: list[tuple[Path, str]]) -> None:
    """Every clip in this process, one after another, with one loaded model."""
    from functools import partial

    from mocap.pipeline.batch_progress import BatchProgress

    engines, loaded = engine_loader(batch.settings)
    with BatchProgress(len(pairs), batch.show) as progress:
        for clip, name in pairs:
            batch.rows.append(ClipStatus(str(clip), name, "interrupted", str(batch.out / name)))
            frames = partial(progress.add_frames, name)
            outcome = convert_clip(
                clip, name, batch.out, batch.settings, engines, batch.started, on_frames=frames
            )
            batch.model = loaded[0].model_label if loaded else batch.model
            batch.record(outcome)
            if outcome.load_failed:
                raise MocapError(outcome.row.error)  # stop: the other clips cannot run either
            batch.save()
            progress.finish(name, outcome.row.frames)


def run(args: argparse.Namespace) -> int:
    from mocap.pipeline.config import resolve_settings
    from mocap.pipeline.ray_batch import check_ray_flags
    from mocap.pipeline.report_batch import write_batch_report
    from mocap.pipeline.run import check_output_root
    from mocap.pipeline.run_cmd import setup_logging
    from mocap.pipeline.staging import clean_stale

    check_ray_flags(args)  # --workers without --ray: one error line, before anything runs
    setup_logging(args)
    settings = resolve_settings(args)
    out = user_path(args.output)
    check_output_root(out)
    for line in [*clean_stale(out), *clean_stale_logs(out)]:  # what killed runs left
        log.info("%s", line)
    clips, rows, notes = collect_clips(args.inputs)
    if not clips and not rows:
        raise MocapError(
            f"no videos found in {' '.join(args.inputs)}; give video files, folders or globs"
        )
    for remark in notes:
        log.warning("%s; skipped", remark)
    for bad in rows:
        print(f"mocap: {bad.name}: failed: {bad.error}", file=sys.stderr)
    batch = Batch(out, settings, time.time(), not args.quiet and sys.stderr.isatty(), rows)
    pairs = list(zip(clips, output_names(clips), strict=True))
    try:
        if args.ray is not None:  # the same convert_clip on Ray workers (mocap.pipeline.ray_batch)
            from mocap.pipeline.ray_batch import run_on_ray

            run_on_ray(args, batch, pairs)
        else:
            _run_sequential(batch, pairs)
    finally:
        manifest = batch.save()
    write_batch_report(out, settings)  # OUT/summary.html (mocap.pipeline.report_batch)
    if not args.quiet:
        print(summary_table(rows))
        print(f"manifest: {manifest}")
    return 1 if any(r.status == "failed" for r in rows) else 0
