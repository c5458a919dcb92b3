"""Train the HMR decoder (``mocap train hmr``) or pretrain FeatUp upsamplers (``mocap train featup``).

Decoder training on SPIN-format npz files, e.g. the paper's 20% setting on four datasets:

    mocap train hmr --variant featup-deformable --subset 0.2 --out runs/x4 \\
        --data 3dpw_train.npz:imgs/3dpw:0.3 --data mpi_inf_3dhp.npz:imgs/3dhp:0.2 \\
        --data coco_cliff.npz:imgs/coco:0.3 --data mpii_cliff.npz:imgs/mpii:0.2

Several GPUs: ``torchrun --nproc_per_node 4 -m mocap train hmr ...`` (same global --batch-size).
Fast decoder iterations: ``--feature-cache DIR`` runs the frozen backbone once and reuses its features
(no augmentation then). Continue a stopped run with ``--resume`` and the same ``--out``.
"""

import argparse
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from mocap.errors import MocapError

if TYPE_CHECKING:
    from mocap.train.hmr import TrainConfig

FEATUP_MODULE = "mocap.train.featup"


def _add_hmr_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", required=True, metavar="NPZ[:IMGROOT[:WEIGHT]]",
                   help="SPIN-layout npz, its image folder and mixing weight; repeat to mix datasets")  # fmt: skip
    p.add_argument(
        "--out", required=True, help="run folder (config, metrics.jsonl, tb/, checkpoints/)"
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--variant", default="featup-deformable", help="model variant (see mocap init-checkpoint)"
    )
    model.add_argument("--init", help="start from this mocap checkpoint (its architecture is used)")
    p.add_argument(
        "--size", choices=("tiny", "full"), default="full", help="model size (tiny: for tests)"
    )
    p.add_argument(
        "--factor", type=int, help="upsampling factor of deformable variants (default 4)"
    )
    p.add_argument(
        "--mean-params", help="smpl_mean_params.npz (default: the HMR2.0 data in the cache)"
    )
    p.add_argument("--smpl", help="SMPL_NEUTRAL.pkl (default: $MOCAP_SMPL or the cache)")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument(
        "--batch-size", type=int, default=48, help="global batch (all processes together)"
    )
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--checkpoint-every", type=int, default=5000)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--subset",
        type=float,
        default=1.0,
        help="deterministic fraction of every dataset (paper: 0.2)",
    )
    p.add_argument(
        "--no-augment", action="store_true", help="plain crops (always so with --feature-cache)"
    )
    p.add_argument(
        "--feature-cache", metavar="DIR", help="cache of backbone features (built if missing)"
    )
    p.add_argument("--workers", type=int, default=2, help="data-loader processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-subcommands ``hmr`` and ``featup``."""
    sub = parser.add_subparsers(dest="train_command", metavar="WHAT")
    hmr = sub.add_parser("hmr", help="train the SMPL decoder on SPIN-format npz datasets",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _add_hmr_arguments(hmr)
    featup = sub.add_parser("featup", help="pretrain FeatUp JBU upsamplers on a folder of images")
    try:
        module = importlib.import_module(FEATUP_MODULE)
    except ImportError:
        featup.description = "FeatUp pretraining is not available in this install."
        featup.set_defaults(_featup=None)
    else:
        module.add_arguments(featup)
        featup.set_defaults(_featup=module)


def _config(args: argparse.Namespace) -> "TrainConfig":
    from mocap.train.hmr import TrainConfig

    if args.init and not Path(args.init).is_file():
        raise MocapError(f"--init {args.init} does not exist; give a mocap .safetensors checkpoint")
    for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
        if getattr(args, name) < 1:
            raise MocapError(f"--{name.replace('_', '-')} must be at least 1")
    return TrainConfig(
        out=args.out, data=args.data, variant=args.variant, size=args.size, factor=args.factor,
        init=args.init, mean_params=args.mean_params,
        smpl=args.smpl, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, clip_grad=args.clip_grad,
        precision=args.precision, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        seed=args.seed, subset=args.subset, augment=not args.no_augment and not args.feature_cache,
        feature_cache=args.feature_cache, num_workers=args.workers, device=args.device,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "train_command", None)
    if command == "featup":
        module = args._featup
        if module is None:
            raise MocapError(
                "FeatUp pretraining is not available in this install (mocap.train.featup is missing)"
            )
        return int(module.run(args) or 0)
    if command != "hmr":
        raise MocapError("say what to train: 'mocap train hmr ...' or 'mocap train featup ...'")
    from mocap.train.hmr import train

    cfg = _config(args)
    history = train(cfg, resume=args.resume)
    if history:
        last = history[-1]
        print(f"step {int(last['step'])}: loss {last['total']:.4g}; run folder {args.out}")
    return 0
