"""The Python API on one photo: detect the people, estimate each one's 3D body, draw it.

    python examples/api_single_image.py                    # a COCO photo from ../shared/data
    python examples/api_single_image.py photo.jpg --smpl SMPL_NEUTRAL.pkl -o people.png

Prints each person's box, distance from the camera and root rotation, and writes the photo with
every body drawn over it: the SMPL mesh when --smpl is given, else the built-in skeleton.
"""

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from mocap.body.skeleton import builtin_skeleton, forward_kinematics
from mocap.body.smpl import load_body_model
from mocap.errors import MocapError
from mocap.model.predictor import Predictor
from mocap.paths import atomic_path
from mocap.pipeline.config import RunSettings
from mocap.pipeline.detect import DEFAULT_DETECTOR, PersonDetector
from mocap.pipeline.preview import draw_mesh, draw_skeleton, track_colour
from mocap.pipeline.run_cmd import resolve_model

DATA = Path(
    os.environ.get("MOCAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", nargs="?", default=str(DATA / "images" / "coco_val2014_192.jpg"))
    parser.add_argument("-o", "--output", default="out/api_single_image.png")
    parser.add_argument(
        "--checkpoint", help="model weights (default: trained featup-deformable, else HMR2.0)"
    )
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help="YOLO .pt file or model name")
    parser.add_argument("--smpl", help="SMPL_NEUTRAL.pkl to draw meshes")
    args = parser.parse_args()

    image = cv2.imread(args.image)
    if image is None:
        raise SystemExit(f"cannot read {args.image}")
    people = PersonDetector(args.detector, conf=0.4, device="cpu").detect([image])[0]
    _, checkpoint = resolve_model(RunSettings(checkpoint=args.checkpoint))
    predictor = Predictor.from_checkpoint(checkpoint, device="auto", precision="fp32")
    smpl = predictor.predict(image, people.boxes)  # SMPLParams: rotation matrices, betas, camera
    body = load_body_model(args.smpl) if args.smpl else None

    canvas = image.copy()
    for i, box in enumerate(people.boxes):
        angle = np.degrees(np.arccos(np.clip((np.trace(smpl.global_orient[i]) - 1) / 2, -1, 1)))
        print(f"person {i}: box {box.round().astype(int).tolist()}, score {people.scores[i]:.2f}, "
              f"{smpl.transl[i, 2]:.1f} m away, root rotated {angle:.0f} deg")  # fmt: skip
        if body is not None:
            import torch

            out = body.forward(
                *(
                    torch.from_numpy(a[i : i + 1])
                    for a in (smpl.global_orient, smpl.body_pose, smpl.betas)
                )
            )
            vertices = out.vertices[0].detach().numpy() + smpl.transl[i]
            draw_mesh(canvas, vertices, np.asarray(body.faces), smpl.focal_length, track_colour(i))
        else:
            rot = np.concatenate(
                [smpl.global_orient[i : i + 1, None], smpl.body_pose[i : i + 1]], axis=1
            )
            joints = forward_kinematics(
                builtin_skeleton().rest_joints, rot.astype(np.float64), smpl.transl[i : i + 1]
            )
            draw_skeleton(canvas, joints[0], smpl.focal_length, track_colour(i))
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(out_path)
    cv2.imwrite(str(tmp), canvas)
    os.replace(tmp, out_path)
    print(f"{len(people)} people -> {out_path}")


if __name__ == "__main__":
    try:
        main()
    except MocapError as exc:  # a user-caused problem: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
