"""Write the seed corpus of the fuzz targets into tests/fuzz/corpus/<target>/ (small files).

python tests/fuzz/make_corpus.py
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def motion(n: int, track_id: int, depth: float) -> "object":
    from mocap.motion import Track

    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    rot[:, 0] = np.diag([1.0, -1.0, -1.0])
    return Track(
        track_id,
        np.arange(n),
        np.arange(n) / 30.0,
        rot[:, 0],
        rot[:, 1:],
        np.zeros((n, 10)),
        np.zeros((n, 3)),
        np.tile([0.0, 0.3, depth], (n, 1)),
        np.tile([10.0, 10.0, 50.0, 150.0], (n, 1)),
        np.ones(n),
    )


def main() -> None:
    import torch
    from safetensors.torch import save_file

    from mocap.model.build import model_config
    from mocap.motion import Motion
    from mocap.pipeline.config import RunSettings, save_config

    out = HERE / "corpus"
    for sub in ("motion", "config", "checkpoint_config", "checkpoint"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    two = [motion(4, 1, 4.0), motion(3, 2, 5.0)]
    two[1].extras["keypoints2d"] = np.zeros((3, 5, 3), np.float32)
    Motion(two, 30.0, (64, 48), 80.0, "a.mp4").save(out / "motion" / "two_people.npz")
    Motion(two[:1], 25.0, (64, 48), 80.0).save(out / "motion" / "one_person.npz")
    Motion([], 30.0, (64, 48), 80.0).save(out / "motion" / "nobody.npz")
    save_config(RunSettings(), out / "config" / "defaults.yaml")
    (out / "config" / "flags.yaml").write_text(
        "det-conf: 0.5\nstride: 2\nformats: bvh,fbx\nclasses: [0, person]\npreview: true\n"
        "end: null\nfocal_length: 1400.0\ncombined: false\n"
    )
    (out / "config" / "types.yaml").write_text('stride: "abc"\nbatch_size: 1.5\npreview: "no"\n')
    for variant in ("featup-deformable", "vitpose-deformable", "hmr2"):
        config = model_config(variant, "tiny")
        (out / "checkpoint_config" / f"{variant}_tiny.json").write_text(config.to_json())
    meta = {"format": "mocap", "config": model_config("featup-deformable", "tiny").to_json()}
    save_file({"x": torch.zeros(2)}, str(out / "checkpoint" / "tiny_header.safetensors"), meta)
    for p in sorted(out.rglob("*.*")):
        print(p.relative_to(HERE), p.stat().st_size)


if __name__ == "__main__":
    main()
