"""Write the quality report of a finished clip, or the summary page of an output folder.

PATH is a clip folder (OUT/<clip>, with run.json and motion.npz): its report.html is (re)written,
with figures from run.json and motion.npz and a contact sheet from the clip's video. PATH is an
output folder (OUT, of `mocap batch` or several `mocap run`s): OUT/summary.html is written, one
sortable row per clip, after writing the report.html of every clip that has none (--redo: of all).
The pages are static files: open them in any browser, offline.

examples:
  mocap report out/walking_crowd_1080p
  mocap report out/clip --video moved/clip.mp4 --smpl ~/SMPL_NEUTRAL.pkl
  mocap report out
"""

import argparse
import logging
from pathlib import Path

from mocap.errors import MocapError
from mocap.paths import user_path

log = logging.getLogger("mocap")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", metavar="PATH", help="a clip folder OUT/<clip>, or an output folder"
    )
    parser.add_argument(
        "--video", metavar="FILE", help="the clip's video, if it moved (default: run.json's source)"
    )
    parser.add_argument(
        "--smpl",
        metavar="FILE",
        help="SMPL model file for meshes and SMPL joints (default: the run's, when it had one)",
    )
    parser.add_argument(
        "--redo", action="store_true", help="for an output folder: rewrite every clip's report"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debugging details")


def run(args: argparse.Namespace) -> int:
    from mocap.pipeline.report import run_body, write_clip_report
    from mocap.pipeline.report_batch import write_summary
    from mocap.pipeline.run_cmd import setup_logging

    setup_logging(args)
    path = user_path(args.path)
    if not path.is_dir():
        raise MocapError(f"{path} is not a folder; give OUT/<clip> or OUT written by mocap run")
    if (path / "run.json").is_file():
        out = write_clip_report(path, body=run_body(path, args.smpl), video=_video(args))
        log.info("report: %s", out)
        return 0
    if args.video:
        raise MocapError("--video is for one clip folder; give OUT/<clip>")
    clips = sorted(p for p in path.iterdir() if (p / "run.json").is_file())
    if not clips and not (path / "manifest.json").is_file():
        raise MocapError(
            f"{path} holds no mocap results (no run.json or manifest.json); give OUT or OUT/<clip>"
        )
    failed = 0
    for clip in clips:
        if (clip / "report.html").is_file() and not args.redo:
            continue
        try:
            write_clip_report(clip, body=run_body(clip, args.smpl))
        except MocapError as exc:
            failed += 1
            log.warning("%s: report not written: %s", clip.name, exc)
    log.info("summary page: %s", write_summary(path))
    return 1 if failed else 0


def _video(args: argparse.Namespace) -> Path | None:
    if args.video is None:
        return None
    video = user_path(args.video)
    if not video.exists():
        raise MocapError(f"--video {video} does not exist; check the path")
    return video
