"""Evaluate checkpoints on SPIN-layout npz datasets (3DPW test protocol: MPJPE, PA-MPJPE, PVE in mm,
acceleration error in mm/frame^2) and write the paper's Table 1 (methods) and Table 2 (upsampling
factors) as Markdown, plus the raw numbers as JSON.

Example:
  mocap eval --checkpoint hmr2.ckpt featup_x4.safetensors --data 3dpw_test.npz:3DPW/imageFiles -o results/
"""

import argparse
import json
from pathlib import Path

from mocap.paths import atomic_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", nargs="+", required=True, help="mocap or HMR2.0 checkpoints"
    )
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="NPZ[:IMGROOT] in the SPIN layout; repeat for several datasets (one table each)",
    )
    parser.add_argument("--smpl", help="neutral SMPL file or folder (default: $MOCAP_SMPL, cache)")
    parser.add_argument("--gt-smpl", help="SMPL model for ground-truth parameters (default --smpl)")
    parser.add_argument("-o", "--out", default="eval", help="output folder (default: eval)")
    parser.add_argument("--batch-size", type=int, default=16, help="crops per forward pass")
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="backbone precision (default fp32, the paper's numbers)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")


def describe(model: object) -> tuple[str, int | None]:
    """Table row name and upsampling factor (None for models without upsampled maps)."""
    config = getattr(model, "config", None)
    if config is None:
        return "HMR2.0", None
    levels = getattr(config, "levels", None)
    if config.variant == "hmr2":
        return "HMR2.0 (dense head)", None
    factor = levels.factor if levels is not None else 1
    up = {"jbu": f"FeatUp x{factor}", "bilinear": f"bilinear x{factor}"}.get(
        getattr(levels, "upsample", "none"), "native maps"
    )
    return f"ViTPose + {up} + deformable", factor if "FeatUp" in up else None


def _fmt(row: dict[str, float], key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "-"


def tables(rows: list[tuple[str, int | None, dict[str, float]]], dataset: str) -> str:
    """Markdown Table 1 (every model) and Table 2 (FeatUp rows by factor) for one dataset."""
    keys = ("MPJPE", "PA-MPJPE", "PVE", "Accel")
    head = "| Method | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    out = f"## Table 1: {dataset} (mm; Accel mm/frame^2)\n\n" + head
    out += "".join(f"| {n} | " + " | ".join(_fmt(r, k) for k in keys) + " |\n" for n, _, r in rows)
    featup = sorted(((f, n, r) for n, f, r in rows if f is not None), key=lambda row: row[0])
    if featup:
        out += f"\n## Table 2: upsampling factor, {dataset}\n\n| r | model | "
        out += " | ".join(keys[:3]) + " |\n|---|---|---|---|---|\n"
        out += "".join(
            f"| x{f} | {n} | " + " | ".join(_fmt(r, k) for k in keys[:3]) + " |\n"
            for f, n, r in featup
        )
    return out


def _write(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def run(args: argparse.Namespace) -> int:
    from mocap.body.smpl import load_body_model
    from mocap.errors import MocapError
    from mocap.eval.evaluate import evaluate
    from mocap.model.predictor import Predictor
    from mocap.train.data import load_annotations, parse_data_spec

    specs = [parse_data_spec(d) for d in args.data]
    datasets = [(spec, load_annotations(spec)) for spec in specs]  # fail fast on bad data
    body = load_body_model(args.smpl, required=True)
    gt_body = load_body_model(args.gt_smpl, required=True) if args.gt_smpl else None
    assert body is not None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MocapError(f"cannot create output folder {out}: {exc.strerror}") from None
    rows: dict[str, list[tuple[str, int | None, dict[str, float]]]] = {}
    results = []
    for ckpt in args.checkpoint:
        predictor = Predictor.from_checkpoint(
            ckpt, args.device, args.precision, batch_size=args.batch_size
        )
        method, factor = describe(predictor.model)
        name = f"{method} [{Path(ckpt).name}]" if len(args.checkpoint) > 1 else method
        for spec, ann in datasets:
            summary = evaluate(predictor, ann, body, gt_body, args.limit).summary()
            line = ", ".join(f"{k} {v:.2f}" for k, v in summary.items())
            print(f"{Path(ckpt).name} on {spec.npz.name}: {method}: {line}")
            rows.setdefault(spec.npz.name, []).append((name, factor, summary))
            results.append(
                {"checkpoint": str(ckpt), "data": str(spec.npz), "method": method,
                 "factor": factor, **summary}
            )  # fmt: skip
    report = "\n".join(tables(r, dataset) for dataset, r in rows.items())
    _write(out / "tables.md", report)
    _write(out / "results.json", json.dumps(results, indent=2))
    print(report)
    return 0
