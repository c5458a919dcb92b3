"""Deformable decoder and JBU upsampler cost against feature size; writes the "decoder" section.

Run: ``.venv/bin/python benchmarks/bench_decoder.py [--repeats 3] [--budget 60]``.

Full-size numbers (d_model 1280, 8 heads, 8 points, FFN 1024, 26 queries) on the paper's levels:
layer-16 and layer-32 maps, each native 16x12 and at x r, i.e. memory of 768 / 6,528 / 24,960 /
98,688 tokens for r = 1 / 4 / 8 / 16. Random weights and features: the cost does not depend on
them. Times are seconds per crop (batch 2 for the decoder, 1 for the upsampler), median of the
repeats, fp32 and bf16 (weights and maps stored in bf16). "reference" is Deformable-DETR's
formulation (value_proj on every memory token, then grid_sample); "fast" samples the raw maps and
projects the samples. A configuration whose first run exceeds ``--budget`` seconds is not repeated,
and larger maps of the same configuration are skipped (marked "-"). Peak memory of x16 with
batch 8 (JBU x16 of both tapped layers + the 6-layer head, inference) is measured in a fresh
process as the growth of its peak resident set.

The reference path runs in fp32 only unless ``--reference-bf16``: on a CPU without AVX-512-BF16 /
AMX, PyTorch's bf16 GEMM is a slow fallback (a 1024^3 product took ~7 s), and one bf16 reference
layer at x1 had not finished after 12 minutes.

Threads: default 1. The team's 2-core machine is shared by several engineers; under that load two
OpenMP threads spin against each other and ran a decoder layer ~10x slower than one thread.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import write_section  # noqa: E402
from mocap.model.deformable_head import build_decoder_layer, build_deformable_head  # noqa: E402
from mocap.model.featup import JBUStack  # noqa: E402

D_MODEL, HEADS, POINTS, FFN, QUERIES = 1280, 8, 8, 1024, 26
FACTORS = (1, 4, 8, 16)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def levels_for(factor: int, batch: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """[L16 x1, L16 x r, L32 x1, L32 x r] random channels-last maps (B, 1280, H, W)."""
    shapes = [(16, 12), (16 * factor, 12 * factor)] * 2
    return [
        torch.randn(batch, D_MODEL, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
        for h, w in shapes
    ]


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - start


def timed_interleaved(
    fns: dict[int, Callable[[], object]], repeats: int, budget: float
) -> dict[int, float]:
    """Median seconds per key, the keys run in turn in every repeat.

    Interleaving makes the ratios between keys robust to the load of a shared machine drifting
    during the run. A key whose warm-up exceeds ``budget`` gets that single time, and the keys
    after it (larger maps) are skipped.
    """
    active: list[int] = []
    first: dict[int, float] = {}
    for key, fn in fns.items():
        first[key] = _once(fn)
        if first[key] > budget:
            break
        active.append(key)
    runs: dict[int, list[float]] = {key: [] for key in active}
    for _ in range(repeats):
        for key in active:
            runs[key].append(_once(fns[key]))
    return {key: statistics.median(runs[key]) if key in runs else first[key] for key in first}


def bench_decoder(
    repeats: int, budget: float, reference_dtypes: tuple[str, ...] = ("fp32",), batch: int = 2
) -> dict[str, dict[int, float]]:
    """Seconds per crop by '<part> <path> <dtype>' and factor."""
    torch.manual_seed(0)
    results: dict[str, dict[int, float]] = {}
    layer = build_decoder_layer(D_MODEL, [D_MODEL] * 4, HEADS, POINTS, FFN).eval()
    head = build_deformable_head(D_MODEL, [D_MODEL] * 4, 6, HEADS, POINTS, FFN).eval()
    for name, dtype in DTYPES.items():
        layer_d, head_d = layer.to(dtype), head.to(dtype)
        tgt = torch.randn(batch, QUERIES, D_MODEL, dtype=dtype)
        pos = torch.randn(batch, QUERIES, D_MODEL, dtype=dtype)
        ref = torch.rand(batch, QUERIES, 2, dtype=dtype)
        maps = {factor: levels_for(factor, batch, dtype) for factor in FACTORS}
        for path in ("fast", "reference") if name in reference_dtypes else ("fast",):
            reference = path == "reference"
            for part in ("layer", "head"):
                key = f"{part} {path} {name}"
                fns: dict[int, Callable[[], object]] = {
                    factor: (
                        partial(layer_d, tgt, pos, ref, levels, head_d.level_embed, reference)
                        if part == "layer"
                        else partial(head_d, levels, reference=reference)
                    )
                    for factor, levels in maps.items()
                }
                seconds = timed_interleaved(fns, repeats, budget)
                results[key] = {factor: t / batch for factor, t in seconds.items()}
                print(key, {f: round(t, 4) for f, t in results[key].items()}, flush=True)
    return results


def bench_jbu(repeats: int, budget: float) -> dict[str, dict[int, float]]:
    """Seconds per crop of one JBU stack (one tapped layer) up to each factor."""
    torch.manual_seed(0)
    stack = JBUStack(D_MODEL).eval()
    results: dict[str, dict[int, float]] = {}
    for name, dtype in DTYPES.items():
        stack_d = stack.to(dtype)
        source = torch.randn(1, D_MODEL, 16, 12, dtype=dtype)
        image = torch.randn(1, 3, 256, 192, dtype=dtype)
        fns: dict[int, Callable[[], object]] = {
            factor: partial(stack_d, source, image, factor) for factor in (2, 4, 8, 16)
        }
        results[f"jbu {name}"] = timed_interleaved(fns, repeats, budget)
        print(f"jbu {name}", results[f"jbu {name}"], flush=True)
    return results


PEAK_CODE = """
import json, resource, sys, time, torch
sys.path.insert(0, {repo!r})
from mocap.model.deformable_head import build_deformable_head
from mocap.model.featup import JBUStack
torch.manual_seed(0)
stacks = [JBUStack(1280).eval() for _ in range(2)]
head = build_deformable_head(1280, [1280] * 4, 6, 8, 8, 1024).eval()
taps = [torch.randn(8, 1280, 16, 12) for _ in range(2)]
image = torch.randn(8, 3, 256, 192)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
with torch.inference_mode():
    levels = []
    for stack, tap in zip(stacks, taps):
        levels += [tap.contiguous(memory_format=torch.channels_last), stack(tap, image, 16)[-1]]
    out = head(levels)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
maps = sum(x.numel() * x.element_size() for x in levels)
print(json.dumps({{"peak": peak, "maps": maps, "seconds": seconds}}))
"""


def peak_memory_x16_batch8() -> dict[str, float]:
    """Growth of peak RSS for x16 upsampling + head on a batch of 8 (fp32, inference)."""
    repo = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_CODE.format(repo=repo)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def report(
    dec: dict[str, dict[int, float]], jbu: dict[str, dict[int, float]], peak: dict[str, float]
) -> str:
    """Markdown for docs/benchmarks.md."""
    tokens = {f: 2 * 192 * (1 + f * f) for f in FACTORS}
    lines = [
        "## Deformable decoder and JBU upsampler (`benchmarks/bench_decoder.py`)",
        "",
        "Full size: d_model 1280, 8 heads, 4 levels (L16, L32 native and x r), 8 points, 26 queries;",
        f"seconds per crop (batch 2), median of repeats (map sizes interleaved), {torch.get_num_threads()} thread(s). "
        "*reference*: value_proj on every memory token",
        "then grid_sample (Deformable-DETR); *fast*: sample the raw maps, project only the samples.",
        "",
        "| part | path | dtype | "
        + " | ".join(f"x{f} ({tokens[f]:,} tok)" for f in FACTORS)
        + " | x16 / x1 |",
        "|---|---|---|" + "---|" * (len(FACTORS) + 1),
    ]
    for key, row in dec.items():
        part, path, dtype = key.split()
        ratio = f"{row[16] / row[1]:.2f}x" if 16 in row and 1 in row else "-"
        cells = " | ".join(_fmt(row.get(f)) for f in FACTORS)
        lines.append(
            f"| {'one layer' if part == 'layer' else 'head (6 layers)'} | {path} | {dtype} | {cells} | {ratio} |"
        )
    lines += [
        "",
        "JBU stack (one tapped layer, 1280 channels, 16x12 -> x r, batch 1), seconds per crop:",
        "",
        "| dtype | x2 | x4 | x8 | x16 |",
        "|---|---|---|---|---|",
    ]
    for key, row in jbu.items():
        lines.append(
            f"| {key.split()[1]} | " + " | ".join(_fmt(row.get(f)) for f in (2, 4, 8, 16)) + " |"
        )
    lines += [
        "",
        f"x16, batch 8, fp32 inference (JBU x16 of layers 16 and 32 + 6-layer head): peak memory "
        f"growth {peak['peak'] / 2**30:.2f} GiB (the four level maps alone are "
        f"{peak['maps'] / 2**30:.2f} GiB), {peak['seconds']:.1f} s for the batch.",
        "",
        f"Targets: fast decoder x16 <= 1.5x x1 (head fp32: "
        f"{dec['head fast fp32'][16] / dec['head fast fp32'][1]:.2f}x); x16 batch 8 within 24 GB "
        f"({'yes' if peak['peak'] < 24e9 else 'no'}).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds before skipping")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (see docstring)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--reference-bf16", action="store_true", help="also time the reference path in bf16"
    )
    parser.add_argument("--decoder-json", type=Path, help="reuse decoder times saved by a run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.decoder_json is not None:
        saved = json.loads(args.decoder_json.read_text())
        dec = {k: {int(f): t for f, t in row.items()} for k, row in saved.items()}
    else:
        dec = bench_decoder(
            args.repeats, args.budget, ("fp32", "bf16") if args.reference_bf16 else ("fp32",)
        )
        Path("/tmp/bench_decoder.json").write_text(json.dumps(dec))
    jbu = bench_jbu(args.repeats, args.budget)
    peak = peak_memory_x16_batch8()
    text = report(dec, jbu, peak)
    print(text)
    print(
        f"(this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB)"
    )
    if not args.no_write:
        write_section("decoder", text)


if __name__ == "__main__":
    main()
