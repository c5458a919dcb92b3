"""The ``mocap`` command: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import heavy libraries (torch, bpy, ultralytics) inside ``run`` so that ``--help``
stays instant. User-caused errors arrive as :class:`~mocap.errors.MocapError` and are printed as one
line; Ctrl-C exits with 130 and leaves no half-written output (writers rename into place).
SIGTERM (``kill``, a job scheduler, ``docker stop``) is handled as Ctrl-C and exits with 143.
"""

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from mocap import __version__
from mocap.errors import MocapError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("mocap.pipeline.run_cmd", "turn one video (or image folder) into per-person motion"),
    "batch": (
        "mocap.pipeline.batch_cmd",
        "convert many clips; skips finished ones, survives bad ones",
    ),
    "export": ("mocap.export_cmd", "re-export a saved motion.npz to BVH / FBX / .blend / glTF"),
    "retarget": ("mocap.retarget_cmd", "put a motion.npz on your own rigged character"),
    "report": ("mocap.report_cmd", "quality report (HTML) of a clip, or summary page of a batch"),
    "weights": ("mocap.weights", "list, download and locate model weights and the SMPL file"),
    "blender-addon": (
        "mocap.addon_cmd",
        "build the Blender extension zip (panel: video -> animation)",
    ),
    "init-checkpoint": ("mocap.model.init_cmd", "write a randomly initialised model checkpoint"),
    "figures": ("mocap.model.figures", "feature-PCA and deformable-attention figures for a crop"),
    "train": ("mocap.train.cli", "train FeatUp upsamplers or the HMR decoder"),
    "eval": ("mocap.eval.cli", "evaluate a checkpoint: MPJPE, PA-MPJPE, PVE, acceleration error"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that subcommand's module is imported (fast start-up)."""
    parser = argparse.ArgumentParser(
        prog="mocap",
        description="Video to 3D body animation: SMPL motion, BVH, FBX, .blend and glTF per person.",
    )
    parser.add_argument("--version", action="version", version=f"mocap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        p = sub.add_parser(
            name,
            help=help_text,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in SUBCOMMANDS else "")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # report against the subcommand, so its usage line is the one shown
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    installed, previous = _terminate_as_interrupt()
    try:
        return int(args._module.run(args) or 0)
    except MocapError as exc:
        print(f"mocap: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"mocap: {what}; finished files are kept, unfinished ones removed", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds (and cleans up) as on Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _terminate_as_interrupt() -> tuple[bool, Any]:
    """Make SIGTERM raise :class:`Terminated`: (whether it could, the previous handler)."""
    try:
        return True, signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (mocap called from a worker thread)
        return False, None
