"""Decoder-training speed with and without the feature cache (tiny and full-size models, CPU).

    python benchmarks/bench_train.py [--sizes tiny,full] [--variants vitpose-deformable,featup-deformable]
                                     [--batch 4] [--steps 5] [--threads 1] [--smpl SMPL_NEUTRAL.pkl]

Each configuration trains on the 4 real H36M samples of ../shared/data/spin_npz through
:class:`mocap.train.hmr.Trainer` (bf16 autocast, AdamW, SMPL losses): one warm-up step, then the
median of ``--steps`` timed optimisation steps, data loading included (in the main process).
Without the cache every step crops and augments the images and runs the frozen ViT; with it, the
step reads the stored layer-16/32 maps from memory-mapped shards and runs only what follows the
backbone (the frozen upsamplers and the trainable decoder). Without ``--smpl`` (or $MOCAP_SMPL)
the synthetic SMPL-format test body is used: same vertex and joint counts, same cost.
Writes the ``train`` section of docs/benchmarks.md.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mocap.body.smpl import find_smpl
from mocap.train import hmr as H

REPO = Path(__file__).resolve().parents[1]
SPIN = REPO.parent / "shared" / "data" / "spin_npz"


def smpl_path(given: str | None, tmp: Path) -> str:
    """A usable SMPL file: the given/configured one, else the synthetic test body."""
    found = find_smpl(given)
    if found is not None:
        return str(found)
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic_smpl import write_synthetic_smpl

    write_synthetic_smpl(tmp)
    return str(tmp / "SMPL_NEUTRAL.pkl")


def measure(cfg: H.TrainConfig, steps: int) -> tuple[float, float]:
    """(median seconds per step, seconds to open the data incl. building the cache)."""
    torch.manual_seed(cfg.seed)
    model = H.build_model(cfg)
    body = H.load_body(cfg.smpl, "cpu")
    start = time.perf_counter()
    dataset, pools, weights = H.build_dataset(cfg, model, "cpu")
    setup = time.perf_counter() - start
    trainer = H.Trainer(cfg, model, body, dataset, pools, weights, body.j19)
    batches = trainer.batches()
    trainer.train_step(next(batches))  # warm-up
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        trainer.train_step(next(batches))
        times.append(time.perf_counter() - tick)
    return statistics.median(times), setup


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="tiny,full")
    parser.add_argument("--variants", default="vitpose-deformable,featup-deformable")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)"
    )
    parser.add_argument("--smpl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        smpl = smpl_path(args.smpl, tmp / "smpl")
        for size in args.sizes.split(","):
            for variant in args.variants.split(","):
                result = {}
                for cached in (False, True):
                    name = f"{variant}-{size}-{'cache' if cached else 'images'}"
                    cfg = H.TrainConfig(
                        out=str(tmp / name), data=[f"{SPIN}/test_h36m.npz:{SPIN}/images/h36m"], variant=variant,
                        size=size, smpl=smpl, steps=10**6, batch_size=args.batch, warmup_steps=1,
                        precision="bf16", augment=not cached, num_workers=0,
                        feature_cache=str(tmp / f"cache-{variant}-{size}") if cached else None,
                    )  # fmt: skip
                    result[cached] = measure(cfg, args.steps)
                    print(
                        f"{name}: {result[cached][0]:.3f} s/step (setup {result[cached][1]:.1f} s)",
                        flush=True,
                    )
                (img, img_setup), (cache, cache_setup) = result[False], result[True]
                rows.append(f"| {variant} | {size} | {1 / img:.3g} | {1 / cache:.3g} | {img / cache:.1f}x |"
                            f" {cache_setup - img_setup:.1f} s |")  # fmt: skip
    table = "\n".join(
        [
            "## Decoder training: feature cache",
            "",
            f"`benchmarks/bench_train.py`: optimisation steps per second on CPU, batch {args.batch}, bf16 autocast,",
            f"{args.threads} torch thread(s), median of {args.steps} steps after a warm-up, data loading included.",
            "'images': crop + augment + frozen ViT every step; 'cache': stored layer-16/32 maps (bf16,",
            "memory-mapped), no augmentation. The last column is the one-off cost of building the cache",
            "for these 4 samples (one backbone pass per sample; it grows linearly with the dataset).",
            "",
            "| variant | size | steps/s (images) | steps/s (cache) | speed-up | cache build |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import write_section

    write_section("train", table)


if __name__ == "__main__":
    main()
