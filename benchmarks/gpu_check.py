"""GPU readiness check of the HMR models (run through ``benchmarks/gpu_check.sh``).

On a CUDA machine, with random weights and full-size models (about 3 minutes on one H200):

1. **agreement**: every variant (hmr2, vitpose-deformable x4, featup-deformable x4) on the same
   real person crops, CPU fp32 (the reference) against CUDA fp32 (TF32 off) and CUDA bf16 (the
   Predictor's path: block linears stored in bf16): backbone features (relative L2), rotation
   matrices, betas (max abs) and crop camera (relative). Outside the tolerances -> exit 1;
2. **throughput**: full-model crops per second at batch 64 in bf16 and fp16, and the peak GPU
   memory of each;
3. **end to end**: ``mocap run`` on the walking-crowd clip (1080p, 32 frames) with a full-size
   random featup-deformable checkpoint: frames per second from its run.json.

Without CUDA it does what it can (the CPU side of 1 with tiny models, 3 on a few frames with a
tiny model), prints "no CUDA device" and exits 0. Parts whose packages are missing (``mocap
run`` needs av, ultralytics, smplx; see gpu_prepare.sh) are skipped and said so. A JSON summary
goes to ``--json`` when given.
"""

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mocap.model.build import build_model, model_config  # noqa: E402
from mocap.model.crop import crop_people  # noqa: E402
from mocap.model.hmr import HMR  # noqa: E402
from mocap.model.predictor import Predictor  # noqa: E402

VARIANTS = (("hmr2", None), ("vitpose-deformable", 4), ("featup-deformable", 4))
PHOTO_BOXES = {  # people the test detector finds in the shared photos (x1, y1, x2, y2)
    "coco_val2014_192.jpg": [[263.9, 177.5, 383.6, 420.8], [430.3, 226.7, 522.6, 475.1]],
    "coco_val2014_241.jpg": [[100.7, 16.2, 336.4, 640.0]],  # large: the anti-aliased path
    "coco_val2014_328.jpg": [[26.5, 57.0, 290.6, 424.8]],
}
# CUDA against CPU fp32: (features rel L2, rotmat max abs, betas max abs, cam rel)
TOLERANCE = {"fp32": (1e-3, 1e-3, 1e-3, 1e-3), "bf16": (0.1, 0.05, 0.05, 0.05)}
BUDGET_S = 270.0  # stop starting new parts past this (the whole check must end within 5 min)


def shared_data() -> Path:
    env = os.environ.get("MOCAP_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@dataclass
class Outputs:
    features: torch.Tensor  # (N, C, 16, 12) backbone final map, float32, CPU
    rotmat: np.ndarray  # (N, 24, 3, 3)
    betas: np.ndarray  # (N, 10)
    cam: np.ndarray  # (N, 3)


def real_crops(n: int) -> np.ndarray:
    """(n, 3, 256, 192) normalised crops of real people (the shared photos, repeated to n)."""
    crops = []
    for name, boxes in PHOTO_BOXES.items():
        image = cv2.imread(str(shared_data() / "images" / name))
        if image is None:
            raise SystemExit(f"gpu_check: missing {shared_data() / 'images' / name}")
        crops.append(crop_people(image, np.array(boxes)).images)
    every = np.concatenate(crops)
    return every[np.arange(n) % len(every)]


def run_model(model: HMR, device: str, precision: str, crops: np.ndarray) -> Outputs:
    """The Predictor's forward on ``crops``; it takes ``model`` over (moves and casts it)."""
    feats: list[torch.Tensor] = []
    hook = model.backbone.register_forward_hook(
        lambda _m, _i, out: feats.append(out.final.float().cpu())
    )
    try:
        predictor = Predictor(model, device=device, precision=precision, batch_size=len(crops))
        n = len(crops)
        p = predictor.predict_crops(crops, np.zeros((n, 2)) + 100, np.full(n, 200.0), (640, 480))
    finally:
        hook.remove()
    rot = np.concatenate([p.global_orient[:, None], p.body_pose], 1)
    return Outputs(torch.cat(feats), rot, p.betas, p.cam_crop)


def deviation(got: Outputs, ref: Outputs) -> tuple[float, float, float, float]:
    """(features rel L2, rotmat max abs, betas max abs, cam rel) of ``got`` against ``ref``."""
    f = float((got.features - ref.features).norm() / ref.features.norm())
    rot = float(np.abs(got.rotmat - ref.rotmat).max())
    betas = float(np.abs(got.betas - ref.betas).max())
    cam = float(np.abs(got.cam - ref.cam).max() / np.abs(ref.cam).max())
    return f, rot, betas, cam


def build(variant: str, factor: int | None, size: str) -> HMR:
    torch.manual_seed(0)
    means = shared_data() / "spin_npz" / "smpl_mean_params.npz"
    return build_model(model_config(variant, size, factor), means if means.is_file() else None)


def check_agreement(size: str, n_crops: int, cuda: bool, report: dict) -> list[str]:
    """Part 1; returns the disagreements."""
    crops, bad = real_crops(n_crops), []
    for variant, factor in VARIANTS:
        name = f"{variant}" + (f" x{factor}" if factor else "")
        model = build(variant, factor, size)
        start = time.perf_counter()
        ref = run_model(copy.deepcopy(model) if cuda else model, "cpu", "fp32", crops)
        cpu_s = time.perf_counter() - start
        print(f"  {name}: CPU fp32 reference, {n_crops} crops, {cpu_s:.1f} s")
        report.setdefault("agreement", {})[name] = {"cpu_fp32_s": round(cpu_s, 2)}
        if not cuda:
            continue
        for precision in ("fp32", "bf16"):
            dev = deviation(run_model(copy.deepcopy(model), "cuda", precision, crops), ref)
            ok = all(d <= t for d, t in zip(dev, TOLERANCE[precision], strict=True))
            print(
                f"  {name}: CUDA {precision} vs CPU fp32: features {dev[0]:.2e}, rotmat "
                f"{dev[1]:.2e}, betas {dev[2]:.2e}, cam {dev[3]:.2e}  {'ok' if ok else 'DISAGREE'}"
            )
            report["agreement"][name][precision] = [float(f"{d:.3e}") for d in dev]
            if not ok:
                bad.append(f"{name} {precision}: {dev} beyond {TOLERANCE[precision]}")
        del model
        torch.cuda.empty_cache()
    return bad


def cuda_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` on the GPU after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def check_throughput(batch: int, repeats: int, report: dict) -> None:
    """Part 2: full-model crops/s at ``batch`` in bf16 and fp16, peak GPU memory."""
    crops = real_crops(batch)
    for variant, factor in VARIANTS:
        name = f"{variant}" + (f" x{factor}" if factor else "")
        base = build(variant, factor, "full")
        for precision in ("bf16", "fp16"):
            predictor = Predictor(copy.deepcopy(base), "cuda", precision, batch_size=batch)
            n = len(crops)
            centers, sizes = np.zeros((n, 2)) + 100, np.full(n, 200.0)
            torch.cuda.reset_peak_memory_stats()
            run = lambda p=predictor, c=centers, z=sizes: p.predict_crops(crops, c, z, (640, 480))  # noqa: E731
            s = cuda_seconds(run, repeats)
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(
                f"  {name} {precision}: {batch / s:.1f} crops/s at batch {batch}, peak {peak:.1f} GiB"
            )
            report.setdefault("throughput", {})[f"{name} {precision}"] = {
                "crops_per_s": round(batch / s, 2),
                "peak_gib": round(peak, 2),
            }
            del predictor
            torch.cuda.empty_cache()


def missing_for_run() -> list[str]:
    need = ("av", "ultralytics", "smplx", "yaml", "safetensors", "scipy")
    return [m for m in need if importlib.util.find_spec(m) is None]


def find_detector(given: str | None) -> Path | None:
    if given:
        return Path(given)
    local = REPO / ".gpu" / "best.pt"
    if local.is_file():
        return local
    spec = importlib.util.find_spec("fall_detection")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "models" / "best.pt"
        return path if path.is_file() else None
    return None


def check_run(cuda: bool, detector: str | None, report: dict) -> str | None:
    """Part 3: ``mocap run`` on the walking-crowd clip; returns a failure, if any."""
    missing = missing_for_run()
    weights = find_detector(detector)
    if missing or weights is None:
        why = f"missing packages {', '.join(missing)}" if missing else "no detector weights"
        print(f"  skipped: {why} (benchmarks/gpu_prepare.sh carries them; or --detector FILE)")
        report["run"] = {"skipped": why}
        return None
    from mocap.model.checkpoint import save_checkpoint

    clip = shared_data() / "videos" / "walking_crowd_1080p.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.safetensors"
        size = "full" if cuda else "tiny"
        save_checkpoint(ckpt, build("featup-deformable", 4 if cuda else 2, size))
        cmd = [sys.executable, "-m", "mocap", "run", str(clip), "-o", tmp, "--checkpoint", str(ckpt),
               "--detector", str(weights), "--formats", "npz", "--device", "cuda" if cuda else "cpu",
               *([] if cuda else ["--end", "0.2"]), "-q"]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=200)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(f"  mocap run failed ({done.returncode}):\n{done.stderr[-2000:]}")
            report["run"] = {"failed": done.stderr[-2000:]}
            return f"mocap run exited {done.returncode}"
        info = json.loads((Path(tmp) / clip.stem / "run.json").read_text())
    frames, fps = info["video"]["frames"], info["frames_per_s"]
    print(
        f"  mocap run ({size} featup-deformable, {info['model']['precision']}): {frames} frames, "
        f"{fps:.2f} frames/s in the pass ({wall:.1f} s wall with loading), "
        f"{len(info['tracks'])} tracks; stages {info['timings_s']}"
    )
    report["run"] = {"size": size, "frames": frames, "frames_per_s": fps, "wall_s": round(wall, 1),
                     "timings_s": info["timings_s"]}  # fmt: skip
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=4, help="real crops for the agreement check")
    parser.add_argument("--batch", type=int, default=64, help="crops per batch for throughput")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detector", help="YOLO .pt for `mocap run` (default: the test detector)")
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args()

    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    print(f"gpu_check: torch {torch.__version__}, {gpu}, {os.cpu_count()} CPU cores")
    report: dict = {"torch": torch.__version__, "device": gpu}
    if cuda:  # exact fp32 on the GPU for the comparison (TF32 would differ by ~1e-3)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    failures: list[str] = []
    size = "full" if cuda else "tiny"
    print(f"1. agreement with CPU fp32 ({size} models, random weights)")
    failures += check_agreement(size, args.crops, cuda, report)
    if cuda and time.perf_counter() - start < BUDGET_S:
        print(f"2. throughput (full models, batch {args.batch})")
        check_throughput(args.batch, args.repeats, report)
    if time.perf_counter() - start < BUDGET_S:
        print("3. mocap run end to end")
        failure = check_run(cuda, args.detector, report)
        failures += [failure] if failure else []
    else:
        print("over the time budget: later parts skipped")
    report["failures"] = failures
    report["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if failures:
        print("gpu_check: FAILED: " + "; ".join(failures))
        return 1
    if not cuda:
        print(
            "gpu_check: no CUDA device: the CPU parts ran; agreement, throughput and memory need a GPU"
        )
        return 0
    print(f"gpu_check: all agree ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
