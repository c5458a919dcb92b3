"""Re-export a saved motion.npz to BVH / FBX / .blend / glTF without re-running the model.

Examples:
    mocap export out/clip/motion.npz -o out/clip/anim --formats bvh,fbx
    mocap export motion.npz -o anim --formats bvh --units cm --smooth offline --smooth-strength 2
    mocap export motion.npz -o anim --formats fbx,glb --combined --smpl ~/models/SMPL_NEUTRAL.pkl

World: Y up (BVH, glTF; Blender files are Z up), the floor fitted to the foot contacts and placed at
y = 0, all people of the clip in one world. Without the SMPL model the built-in skeleton (average
proportions, no body shape) carries the motion.
"""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mocap.body.smpl import BodyModel

FORMATS_HELP = "comma-separated: npz,bvh,fbx,blend,glb,gltf (default: bvh,fbx)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("motion", type=Path, help="motion.npz written by `mocap run`")
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: next to motion.npz)",
    )
    parser.add_argument("--formats", default="bvh,fbx", metavar="LIST", help=FORMATS_HELP)
    parser.add_argument(
        "--smpl",
        default=None,
        metavar="PATH",
        help="SMPL model file (.pkl/.npz) for shaped skeletons and skinned meshes "
        "(default: $MOCAP_SMPL or the mocap cache; the built-in skeleton when absent)",
    )
    parser.add_argument("--units", choices=("m", "cm"), default="m", help="BVH units (default: m)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--per-person",
        dest="per_person",
        action="store_true",
        default=True,
        help="one file per person (default)",
    )
    group.add_argument(
        "--combined",
        dest="per_person",
        action="store_false",
        help="all people in one scene (FBX/.blend/glTF; BVH stays per person)",
    )
    parser.add_argument(
        "--smooth",
        choices=("none", "offline", "oneeuro"),
        default="none",
        help="temporal smoothing before export: none (default: motion.npz from `mocap run` is "
        "already smoothed), offline (zero-lag) or oneeuro (causal)",
    )
    parser.add_argument(
        "--smooth-strength",
        type=float,
        metavar="S",
        default=1.0,
        help="0 = off, 1 = default, 2 = strong (default: 1)",
    )
    parser.add_argument(
        "--no-correctives",
        dest="pose_correctives",
        action="store_false",
        help="skinned meshes without SMPL's pose-corrective blend shapes (smaller files, plain "
        "skinning; default: exact SMPL mesh)",
    )


def _load_body(path: str | None) -> "BodyModel | None":
    """SMPL body model when available (required when a path is given), else None."""
    from mocap.body.smpl import load_body_model

    return load_body_model(path, required=path is not None)


def run(args: argparse.Namespace) -> int:
    from exporters import export_motion, parse_formats
    from mocap.motion import Motion

    formats = parse_formats(args.formats)  # fail fast, before loading anything
    motion = Motion.load(args.motion)
    out = args.out if args.out is not None else Path(args.motion).resolve().parent
    body = _load_body(args.smpl)
    report = export_motion(
        motion,
        out,
        formats,
        body=body,
        per_person=args.per_person,
        units=args.units,
        smoothing=args.smooth,
        smooth_strength=args.smooth_strength,
        pose_correctives=args.pose_correctives,
    )
    print(report.summary())
    return 0 if report.ok else 1
