"""Put each person's motion on your own character: Mixamo, Rigify, Unreal mannequin, VRM or any rig.

Examples:
    mocap retarget out/clip/motion.npz --rig hero.fbx -o hero_walk.fbx
    mocap retarget motion.npz --rig avatar.vrm -o avatar.glb --person 3
    mocap retarget motion.npz --rig mannequin.fbx -o run.fbx --root-motion root-bone
    mocap retarget motion.npz --rig custom.blend -o custom.blend --map auto --save-map custom.json

The character's mesh, materials and skin weights are kept; its bones are keyed every frame. Bones
are mapped by a preset (mixamo, rigify, unreal, vrm), matched automatically (auto: a preset, else
bone names; the log says what matched) or read from your JSON map (keys: SMPL joint names, values:
bone names). Bones the map doesn't name (twist, fingers, props) stay at rest. Root motion is
scaled by the legs' length ratio and the feet are placed on the character's floor; planted feet
(the motion's foot contacts, else found from foot speed and height) are re-locked with IK. With
several people and no --person, OUT gets one file per person (OUT_person_<id>.fbx). FBX import
settings that game engines need: docs/retargeting.md.
"""

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("motion", type=Path, help="motion.npz written by `mocap run`")
    parser.add_argument(
        "--rig",
        required=True,
        metavar="CHARACTER",
        help="the rigged character: .fbx, .glb, .gltf, .vrm or .blend",
    )
    parser.add_argument(
        "-o", "--out", required=True, type=Path, metavar="OUT", help="output .fbx, .glb or .blend"
    )
    parser.add_argument(
        "--map",
        default="auto",
        metavar="auto|mixamo|rigify|unreal|vrm|FILE.json",
        help="bone map (default: auto)",
    )
    parser.add_argument(
        "--save-map", default=None, metavar="FILE.json", help="write the bone map used as JSON"
    )
    parser.add_argument("--person", type=int, default=None, metavar="ID", help="only this track")
    parser.add_argument(
        "--root-motion",
        choices=("world", "in-place", "root-bone"),
        default="world",
        help="world: the hips travel (default); in-place: no horizontal hip motion; root-bone: "
        "the rig's top bone carries the horizontal motion on the floor and the smoothed heading (yaw)",
    )
    parser.add_argument(
        "--foot-lock",
        choices=("auto", "off"),
        default="auto",
        help="auto: planted feet re-locked on the character with IK (default); off: legs as "
        "retargeted",
    )
    parser.add_argument(
        "--smpl",
        default=None,
        metavar="PATH",
        help="SMPL model file for each person's own proportions (default: $MOCAP_SMPL or the "
        "mocap cache; the built-in skeleton when absent)",
    )
    parser.add_argument(
        "--snapshot",
        default=None,
        type=Path,
        metavar="PNG",
        help="also render a few frames of the result (Blender workbench) to this PNG",
    )


def run(args: argparse.Namespace) -> int:
    from exporters.retarget_export import retarget_motion
    from mocap.body.smpl import load_body_model
    from mocap.motion import Motion

    motion = Motion.load(args.motion)
    body = load_body_model(args.smpl, required=args.smpl is not None)
    report = retarget_motion(
        motion,
        args.rig,
        args.out,
        person=args.person,
        bone_map=args.map,
        save_map=args.save_map,
        root_motion=args.root_motion,
        body=body,
        foot_lock=args.foot_lock,
    )
    print(report.summary())
    if args.snapshot is not None and report.people:
        from exporters.character import render_snapshot

        frames = len(report.people[0].quaternions)
        picks = sorted({round(f) for f in (0.0, frames / 3, 2 * frames / 3, frames - 1)})
        print(f"  {render_snapshot(report.files[0], args.snapshot, picks)}")
    return 0
