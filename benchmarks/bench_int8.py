"""``--precision int8`` on the CPU: ViT-H seconds per crop against fp32, and what it changes.

Speed: the ViT-H backbone (1280 wide, 16 heads, MLP 5120) as the Predictor runs it, fp32 against
dynamic int8 block linears (:mod:`mocap.model.int8`), timed alternately in the same run (the
machines are shared and noisy: the ratio is what holds), median of several repeats after a
warm-up. A slow machine times a slice of ``--blocks`` blocks and scales them to 32 (perf-notes:
the blocks are identical); the patch embedding and last norm are timed once and added. The three
ViT-H linears are also timed alone at 192 tokens.

Accuracy: the full HMR2.0 model (ViT-H, 32 blocks, dense head) on real person crops from the
shared photos, fp32 and then int8 (the same weights, quantised in place): relative deviation
of the backbone's final features and deviation of the 24 SMPL joints in mm (camera frame, with
translation, and root-relative). Joints come from SMPL when a SMPL file is found, else from the
built-in skeleton. Random weights unless ``--checkpoint`` gives trained ones: the head of a
random model barely reads its features, so the joint numbers then say little; the feature
deviation is the honest one.

Run: ``.venv/bin/python benchmarks/bench_int8.py`` (writes the ``int8`` section of
docs/benchmarks.md; ``--no-write`` to only print). About 3 minutes on the 2-core AVX2 machine.
"""

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import write_section  # noqa: E402
from mocap.device import cpu_has_fast_bf16  # noqa: E402
from mocap.model.crop import crop_people  # noqa: E402
from mocap.model.int8 import quantize_linears  # noqa: E402
from mocap.model.vit import ViT, build_vit  # noqa: E402

DEPTH = 32
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# Person boxes the test detector finds in the shared photos (x1, y1, x2, y2).
PHOTO_BOXES = {
    "coco_val2014_192.jpg": [[263.9, 177.5, 383.6, 420.8], [430.3, 226.7, 522.6, 475.1]],
    "coco_val2014_241.jpg": [[100.7, 16.2, 336.4, 640.0]],  # a large, anti-aliased crop
    "coco_val2014_328.jpg": [[26.5, 57.0, 290.6, 424.8]],
}


def alternating_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in turn (one warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def random_vit(blocks: int) -> ViT:
    """ViT-H width with ``blocks`` blocks and small random weights (fp32, eval)."""
    with torch.device("meta"):
        vit = build_vit(depth=blocks, taps=(blocks,))
    vit.to_empty(device="cpu")
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0.0, 0.02)
    return vit.eval()


def real_crops(limit: int) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """(N, 3, 256, 192) crops of the people in the shared photos, and (photo, boxes) pairs."""
    crops, used = [], []
    for name, boxes in PHOTO_BOXES.items():
        image = cv2.imread(str(SHARED / "images" / name))
        if image is None:
            raise SystemExit(f"missing {SHARED / 'images' / name}")
        used.append((name, np.array(boxes)))
        crops.append(crop_people(image, np.array(boxes)).images)
    return np.concatenate(crops)[:limit], used


def bench_speed(blocks: int, batch: int, repeats: int) -> tuple[list[str], dict[str, float]]:
    """Backbone rows (fp32 / int8 s per crop, scaled to 32 blocks) and per-linear speed-ups."""
    torch.manual_seed(0)
    crops, _ = real_crops(batch)
    images = torch.from_numpy(np.resize(crops, (batch, 3, 256, 192)).astype(np.float32))
    fp32 = random_vit(blocks)
    models = {"fp32": fp32, "int8": copy.deepcopy(fp32).quantize_int8()}
    if cpu_has_fast_bf16():  # auto's choice on such CPUs: the row int8 has to beat there
        models["bf16"] = copy.deepcopy(fp32).set_matmul_dtype(torch.bfloat16)
    with torch.inference_mode():
        # The blocks are timed on their own and scaled; the parts outside them (patch embedding,
        # position embedding, last norm: the same in every precision) once, not 32 / blocks times.
        tokens = fp32.patch_embed(images).flatten(2).transpose(1, 2) + fp32.pos_embed[:, 1:]
        fns = {k: (lambda m=m: _blocks(m, tokens)) for k, m in models.items()}
        fns["outside"] = lambda: fp32.last_norm(fp32.patch_embed(images).flatten(2).transpose(1, 2))
        med = alternating_medians(fns, repeats)
    per_crop = {
        k: (v * DEPTH / blocks + med["outside"]) / batch for k, v in med.items() if k != "outside"
    }
    linears = {}
    x = torch.randn(192, 5120)
    for fan_in, fan_out in ((1280, 3840), (1280, 5120), (5120, 1280)):
        lin = nn.Sequential(nn.Linear(fan_in, fan_out)).eval()
        q = quantize_linears(copy.deepcopy(lin))
        xi = x[:, :fan_in].contiguous()
        with torch.inference_mode():
            pair = {"fp32": lambda m=lin, v=xi: m(v), "int8": lambda m=q, v=xi: m(v)}
            t = alternating_medians(pair, 3 * repeats)
        linears[f"{fan_in}x{fan_out}"] = t["fp32"] / t["int8"]
    note = f"(timed {blocks} of {DEPTH} blocks, batch {batch}, scaled)" if blocks < DEPTH else ""
    rows = [
        f"| ViT-H backbone | fp32 | {per_crop['fp32']:.3f} | 1.00x | {note} |",
        f"| ViT-H backbone | int8 | {per_crop['int8']:.3f} | "
        f"**{per_crop['fp32'] / per_crop['int8']:.2f}x** | {note} |",
    ]
    if "bf16" in per_crop:
        rows.append(
            f"| ViT-H backbone | bf16 | {per_crop['bf16']:.3f} | "
            f"{per_crop['fp32'] / per_crop['bf16']:.2f}x | {note} (`auto`'s choice on this CPU) |"
        )
    return rows, linears


def _blocks(vit: ViT, tokens: torch.Tensor) -> torch.Tensor:
    for block in vit.blocks:
        tokens = block(tokens)
    return tokens


def joints_of(params: object, body: object | None) -> np.ndarray:
    """(N, 24, 3) camera-frame SMPL joints (metres) of predicted parameters."""
    from mocap.body.skeleton import builtin_skeleton, forward_kinematics

    rot = np.concatenate([params.global_orient[:, None], params.body_pose], 1)  # type: ignore[attr-defined]
    transl = params.transl.astype(np.float64)  # type: ignore[attr-defined]
    if body is not None:
        with torch.no_grad():
            out = body(  # type: ignore[operator]
                torch.from_numpy(rot[:, 0]), torch.from_numpy(rot[:, 1:]),
                torch.from_numpy(params.betas),  # type: ignore[attr-defined]
            )  # fmt: skip
        return out.joints.double().numpy()[:, :24] + transl[:, None]
    return forward_kinematics(builtin_skeleton().rest_joints, rot.astype(np.float64), transl)


def bench_accuracy(crops_n: int, checkpoint: str | None) -> tuple[list[str], str]:
    """fp32 vs int8 deviation rows on real crops, full model; and which weights / joints."""
    from mocap.body.smpl import load_body_model
    from mocap.model.build import build_model, model_config
    from mocap.model.checkpoint import load_any_checkpoint
    from mocap.model.predictor import Predictor

    torch.manual_seed(0)
    if checkpoint:
        model, _ = load_any_checkpoint(checkpoint)
        weights = f"weights of {Path(checkpoint).name}"
    else:
        model = build_model(
            model_config("hmr2", "full"), SHARED / "spin_npz" / "smpl_mean_params.npz"
        )
        weights = "random weights (HMR2.0 architecture, mean-parameter start)"
    body = load_body_model(None, required=False)
    feats: list[torch.Tensor] = []
    model.backbone.register_forward_hook(lambda _m, _i, out: feats.append(out.final.float()))
    _, used = real_crops(crops_n)
    results = {}
    for precision in ("fp32", "int8"):  # int8 last: it quantises the model in place
        predictor = Predictor(model, device="cpu", precision=precision, batch_size=crops_n)
        outs, n = [], 0
        for name, boxes in used:
            if n >= crops_n:
                break
            boxes = boxes[: crops_n - n]
            outs.append(predictor.predict(cv2.imread(str(SHARED / "images" / name)), boxes))
            n += len(boxes)
        results[precision] = outs
    half = len(feats) // 2
    f32, i8 = torch.cat(feats[:half]), torch.cat(feats[half:])
    rel = ((i8 - f32).flatten(1).norm(dim=1) / f32.flatten(1).norm(dim=1)).numpy()
    cos = torch.nn.functional.cosine_similarity(i8.flatten(1), f32.flatten(1)).numpy()
    j32 = np.concatenate([joints_of(p, body) for p in results["fp32"]])
    j8 = np.concatenate([joints_of(p, body) for p in results["int8"]])
    err = np.linalg.norm(j8 - j32, axis=-1) * 1000
    rr = np.linalg.norm((j8 - j8[:, :1]) - (j32 - j32[:, :1]), axis=-1) * 1000
    rot32 = np.concatenate(
        [np.concatenate([p.global_orient[:, None], p.body_pose], 1) for p in results["fp32"]]
    )
    rot8 = np.concatenate(
        [np.concatenate([p.global_orient[:, None], p.body_pose], 1) for p in results["int8"]]
    )
    rows = [
        f"| backbone final features | relative L2 {rel.mean():.4f} (max {rel.max():.4f}); "
        f"cosine {cos.min():.5f} at worst |",
        f"| SMPL joints, camera frame | mean {err.mean():.2f} mm, max {err.max():.2f} mm |",
        f"| SMPL joints, root-relative | mean {rr.mean():.2f} mm, max {rr.max():.2f} mm |",
        f"| rotation matrices | max abs {np.abs(rot8 - rot32).max():.2e} |",
    ]
    joints = "SMPL" if body is not None else "the built-in skeleton (no SMPL file found)"
    return rows, f"{len(j32)} real person crops, {weights}; joints from {joints}"


def cpu_features() -> str:
    """The matrix-relevant instruction sets of this CPU (int8 and bf16 speed depend on them)."""
    try:
        text = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(x for x in text if x.startswith("flags")).split()
    except (OSError, StopIteration):
        return "features unknown"
    names = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return ", ".join(n for n in names if n in flags) or "no AVX2 / AVX-512 / AMX"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=2, help="ViT-H blocks timed (scaled to 32)")
    parser.add_argument("--batch", type=int, default=2, help="crops per timed forward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--crops", type=int, default=3, help="real crops for the deviation")
    parser.add_argument("--checkpoint", help="trained weights for the deviation (default random)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    start = time.perf_counter()
    speed, linears = bench_speed(args.blocks, args.batch, args.repeats)
    accuracy, what = bench_accuracy(args.crops, args.checkpoint)
    lin = ", ".join(f"{k} {v:.2f}x" for k, v in linears.items())
    ratio = speed[1].split("**")[1]
    verdict = "meets" if float(ratio.rstrip("x")) >= 1.8 else "misses"
    md = "\n".join(
        [
            "## int8 on the CPU (`benchmarks/bench_int8.py`)",
            "",
            "Dynamic int8 quantisation of the ViT-H block linears (per-channel int8 weights, "
            "activations quantised per call, fbgemm/x86 kernels); everything else fp32. "
            f"fp32 and int8 timed alternately in one run, median of {args.repeats} after a "
            f"warm-up, {torch.get_num_threads()} threads. Speed-up {ratio}: it {verdict} the 1.8x "
            f"target. The ViT-H linears alone at 192 tokens: {lin}. CPU: {cpu_features()}.",
            "",
            "| what | precision | s / crop | vs fp32 | notes |",
            "|---|---|---|---|---|",
            *speed,
            "",
            f"Deviation of int8 from fp32 ({what}):",
            "",
            "| output | int8 vs fp32 |",
            "|---|---|",
            *accuracy,
            "",
            "`--precision auto` never picks int8: it stays opt-in until the deviation has been "
            "measured on trained weights (`--checkpoint` here).",
        ]
    )
    print(md)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if not args.no_write:
        write_section("int8", md)


if __name__ == "__main__":
    main()
