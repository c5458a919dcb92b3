"""The ``mocap`` command: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import heavy libraries (torch, bpy, ultralytics) inside ``run`` so that ``--help``
stays instant. User-caused errors arrive as :class:`~mocap.errors.MocapError` and are printed as one
line; Ctrl-C exits with 130 and leaves no half-written output (writers rename into place).
"""

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

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
    "weights": ("mocap.weights", "list, download and locate model weights and the SMPL file"),
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
    try:
        return int(args._module.run(args) or 0)
    except MocapError as exc:
        print(f"mocap: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(
            "mocap: interrupted; finished files are kept, unfinished ones removed", file=sys.stderr
        )
        return 130
