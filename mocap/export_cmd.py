"""Re-export a saved motion.npz to BVH / FBX / .blend / glTF without re-running the model.

Examples:
    mocap export out/clip/motion.npz -o out/clip/anim --formats bvh,fbx
    mocap export motion.npz -o anim --formats bvh --units cm --smooth offline --smooth-strength 2
    mocap export motion.npz -o anim --formats fbx,glb --combined --smpl ~/models/SMPL_NEUTRAL.pkl

World: Y up (BVH, glTF; Blender files are Z up), the floor fitted to the foot contacts and placed at
y = 0, all people of the clip in one world. Without the SMPL model the built-in skeleton (average
proportions, no body shape) carries the motion. Every person's arrays are checked first: a broken
one (non-finite values, matrices that are not rotations, inconsistent shapes) is left out of the
world and reported, the others are still written, and the exit status is 1.
"""

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from mocap.errors import MocapError

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
    parser.add_argument(
        "--rig",
        default=None,
        metavar="CHARACTER",
        help="also put each person on this rigged character (.fbx/.glb/.gltf/.vrm/.blend): "
        "<person>_<character>.<fmt> for each of fbx, glb, blend in --formats (fbx when none is); "
        "see `mocap retarget`",
    )
    parser.add_argument(
        "--map", default="auto", metavar="MAP", help="bone map for --rig (see `mocap retarget`)"
    )
    parser.add_argument(
        "--root-motion",
        choices=("world", "in-place", "root-bone"),
        default="world",
        help="root motion of every file (and --rig): world (default: the hips move through the "
        "world), in-place (no horizontal hip motion) or root-bone (a ground-level 'root' bone "
        "carries the horizontal motion and the smoothed heading (yaw), the hips keep height and sway: "
        "Unreal/Unity root motion)",
    )
    parser.add_argument(
        "--foot-lock",
        choices=("auto", "off"),
        default="auto",
        help="auto (default): planted feet held still on the floor (the contacts stored in "
        "motion.npz, else found); off: feet as estimated",
    )


def _load_body(path: str | None) -> "BodyModel | None":
    """SMPL body model when available (required when a path is given), else None."""
    from mocap.body.smpl import load_body_model

    return load_body_model(path, required=path is not None)


def run(args: argparse.Namespace) -> int:
    from exporters import export_motion, parse_formats
    from mocap.motion import Motion

    formats = parse_formats(args.formats)  # fail fast, before loading anything
    if not (math.isfinite(args.smooth_strength) and 0.0 <= args.smooth_strength <= 10.0):
        raise MocapError(f"--smooth-strength must be 0 to 10 (got {args.smooth_strength})")
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
        foot_lock=args.foot_lock,
        root_motion=args.root_motion,
    )
    print(report.summary())
    if args.rig is not None:  # after the other formats, which a bad character must not stop
        from exporters.retarget_export import retarget_formats, retarget_motion

        done = retarget_motion(
            motion, args.rig, out, retarget_formats(formats), bone_map=args.map,
            root_motion=getattr(args, "root_motion", "world"), body=body,
            foot_lock=getattr(args, "foot_lock", "auto"),
        )  # fmt: skip
        print(done.summary())
    return 0 if report.ok else 1
