"""Write a randomly initialised mocap checkpoint: the start of training, and what smoke tests run.

Examples:
  mocap init-checkpoint featup-deformable --size tiny -o tiny.safetensors
  mocap init-checkpoint featup-deformable --factor 8 --mean-params smpl_mean_params.npz -o x8.safetensors
  mocap init-checkpoint hmr2 --size full -o hmr2_random.safetensors
"""

import argparse
from pathlib import Path

VARIANT_NAMES = ("hmr2", "vitpose-deformable", "featup-deformable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mocap init-checkpoint``."""
    parser.add_argument("variant", choices=VARIANT_NAMES, help="model variant (the paper's rows)")
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="default: full")
    parser.add_argument(
        "--factor",
        type=int,
        choices=(1, 2, 4, 8, 16),
        default=None,
        help="upsampling factor r of the deformable variants (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--mean-params",
        type=Path,
        default=None,
        help="smpl_mean_params.npz for the starting estimate (default: the one `mocap weights` "
        "placed, else identity pose and zero shape)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write")


def run(args: argparse.Namespace) -> int:
    """Build the variant, seed it, save it atomically; returns the exit status."""
    import torch

    from mocap.errors import MocapError
    from mocap.model.build import build_model, model_config
    from mocap.model.checkpoint import save_checkpoint
    from mocap.weights import path_for

    config = model_config(args.variant, args.size, args.factor)
    means = args.mean_params
    if means is not None and not means.is_file():
        raise MocapError(f"mean parameters {means} not found; pass smpl_mean_params.npz")
    if means is None:
        cached = path_for("smpl-mean-params")
        means = cached if cached.is_file() else None
        print(f"mean parameters: {cached if means else 'identity pose, zero shape (none cached)'}")
    if not args.output.parent.is_dir():
        raise MocapError(f"folder {args.output.parent} does not exist; create it first")
    torch.manual_seed(args.seed)
    model = build_model(config, mean_params=means)
    save_checkpoint(args.output, model, config, metadata={"seed": str(args.seed)})
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({config.variant}, {config.size}, {params:,} parameters)")
    return 0
