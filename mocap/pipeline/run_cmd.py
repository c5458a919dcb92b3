"""Turn one video (or a folder of images) into per-person 3D motion and animation files.

Writes OUT/<clip name>/: motion.npz (per-person SMPL motion), one BVH / FBX / .blend / glTF file per
person (--formats), optionally preview.mp4, config.yaml (the resolved settings, reusable with
--config), run.json (settings, versions, timings, tracks, warnings) and a .done marker written last.

examples:
  mocap run dance.mp4 -o out                        # npz + BVH + FBX per person
  mocap run dance.mp4 -o out --formats bvh --preview --smooth-strength 2
  mocap run shot.mov -o out --start 3 --end 9 --focal-length 1450 --combined
  mocap run frames/ -o out --checkpoint my_model.safetensors --smpl SMPL_NEUTRAL.pkl
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mocap.errors import MocapError
from mocap.pipeline.config import RunSettings, add_settings_arguments

if TYPE_CHECKING:
    from mocap.model.estimator import Estimator
    from mocap.pipeline.run import Engines

log = logging.getLogger("mocap")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file (any format FFmpeg reads) or a folder of images")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder; results go to OUT/<clip name>/",
    )
    add_settings_arguments(parser)


def resolve_model(settings: RunSettings) -> tuple[str, Path | None]:
    """Which model to run: (variant, checkpoint file; None for the embedded model).

    ``--checkpoint`` wins. ``--model auto``: the paper's trained featup-deformable weights when on
    disk, else HMR2.0's public weights when on disk, else the embedded model (``lite``), said once
    with how to get a better one. An explicit ``--model hmr2`` downloads HMR2.0's weights where
    the internet exists.

    Raises:
        MocapError: nothing usable, naming what to download or place where, or to pass --checkpoint.
    """
    from mocap.weights import _is_present, path_for, resolve

    if settings.checkpoint:
        if settings.model == "lite":
            raise MocapError("--checkpoint is for the HMR models; --model lite has no checkpoint")
        return settings.model, Path(settings.checkpoint)
    if settings.model == "lite":
        return "lite", None
    if settings.model == "auto":
        trained = path_for("featup-deformable")
        if trained.is_file():
            return "featup-deformable", trained
        if _is_present("hmr2"):
            return "hmr2", path_for("hmr2")
        log.info(
            "model: the embedded BlazePose GHUM 3D + IK (no HMR weights on disk); for more "
            "accurate bodies and shapes: `mocap weights download hmr2`, then run again"
        )
        return "lite", None
    try:
        return settings.model, Path(resolve(settings.model))
    except MocapError as exc:
        raise MocapError(f"{exc} (or pass --checkpoint FILE, or use --model lite)") from None


def auto_device(device: str, precision: str = "auto") -> str:
    """The device to run on (:func:`mocap.device.resolve_device`: cuda when visible, else cpu)."""
    from mocap.device import resolve_device

    return resolve_device(device, precision)


def auto_precision(precision: str, device: str) -> str:
    """bf16 where the hardware runs it fast (AMX/AVX512-BF16 CPUs, bf16 GPUs), else fp32; int8
    only on request (:func:`mocap.device.resolve_precision`)."""
    from mocap.device import resolve_precision

    return resolve_precision(precision, device)


def describe_checkpoint(path: Path, fallback: str) -> str:
    """The variant stored in a mocap checkpoint (e.g. "featup-deformable (tiny)"), else ``fallback``."""
    from mocap.model.checkpoint import is_mocap_checkpoint, read_config

    if not is_mocap_checkpoint(path):
        return fallback
    config = read_config(path)
    return f"{config.variant} ({config.size})"


def build_engines(settings: RunSettings) -> "Engines":
    """Load the detector, the model and the body model once (shared by every clip of a batch)."""
    import platform

    import av
    import numpy as np
    import ultralytics

    from mocap.body.smpl import find_smpl, load_body_model
    from mocap.pipeline.detect import PersonDetector, default_detector
    from mocap.pipeline.run import LOW_SCORE, Engines

    device = auto_device(settings.device, settings.precision)
    precision = auto_precision(settings.precision, device)
    variant, path = resolve_model(settings)  # first: fails fast when there are no weights
    body = load_body_model(settings.smpl, required=False)
    if body is None:  # not an error: said once, and recorded as "body" in run.json
        log.info(
            "no SMPL model file found: using the built-in skeleton (body shape not applied); "
            "pass --smpl SMPL_NEUTRAL.pkl or set $MOCAP_SMPL for shaped bodies and meshes"
        )
    estimator = build_estimator(variant, path, settings, device, precision)
    detector = PersonDetector(
        settings.detector or default_detector(),
        conf=min(LOW_SCORE, settings.det_conf),  # weak boxes feed the tracker's second stage
        classes=settings.classes,
        min_size=settings.min_box,
        device=device,
    )
    detector.detect([np.zeros((64, 64, 3), np.uint8)])  # YOLO's one-off set-up, not per clip
    label = estimator.label
    log.info("model: %s", label)
    return Engines(
        detector=detector,
        estimator=estimator,
        body=body,
        model_label=label,
        model_info={
            "variant": variant,
            "label": label,
            "checkpoint": str(path) if path is not None else None,
            "device": device if path is not None else "cpu (TFLite XNNPACK)",
            "precision": precision if path is not None else "fp32 (TFLite)",
        },
        body_label=f"SMPL ({find_smpl(settings.smpl)})"
        if body is not None
        else "built-in skeleton",
        versions={
            "av": av.__version__,
            "ultralytics": ultralytics.__version__,
            "platform": platform.platform(),
        },
    )


def build_estimator(
    variant: str, path: Path | None, settings: RunSettings, device: str, precision: str
) -> "Estimator":
    """The chosen model behind the one estimator interface (the only place that knows which)."""
    if path is None:
        from mocap.lite.blazepose import LiteEstimator

        return LiteEstimator()
    from mocap.model.estimator import HMREstimator
    from mocap.model.predictor import Predictor

    predictor = Predictor.from_checkpoint(
        path,
        device=device,
        precision=precision,
        focal_length=settings.focal_length,
        batch_size=settings.batch_size,
    )
    described = describe_checkpoint(path, "hmr2 (HMR2.0 weights)")
    return HMREstimator(predictor, f"{described} from {path}, {device}, {precision}")


def setup_logging(args: argparse.Namespace) -> None:
    """``mocap: message`` lines: information on stdout, warnings on stderr (errors come from the CLI).

    -q keeps warnings only, -v adds debugging details.
    """
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    log.handlers.clear()
    fmt = logging.Formatter("mocap: %(message)s")
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    warn = logging.StreamHandler(sys.stderr)
    warn.setLevel(logging.WARNING)
    fmt_warn = logging.Formatter("mocap: warning: %(message)s")
    info.setFormatter(fmt)
    warn.setFormatter(fmt_warn)
    log.addHandler(info)
    log.addHandler(warn)
    log.setLevel(level)
    log.propagate = False


def run(args: argparse.Namespace) -> int:
    from mocap.pipeline.config import resolve_settings
    from mocap.pipeline.outputs import clip_name, is_done
    from mocap.pipeline.run import process_video

    setup_logging(args)
    settings = resolve_settings(args)
    finished = Path(args.output) / clip_name(Path(args.video))
    if not settings.overwrite and is_done(finished):  # like `mocap batch`: a skip, not an error
        print(f"mocap: {finished} is already finished; skipped (pass --overwrite to redo it)")
        return 0
    result = process_video(args.video, args.output, settings, progress=not args.quiet)
    if not args.quiet:
        people = ", ".join(f"#{i}: {n} frames" for i, n in result.track_lengths.items())
        print(
            f"{result.clip}: {result.frames} frames, {len(result.track_lengths)} people ({people})"
        )
        print(f"outputs in {result.out_dir}")
    return 1 if result.failures else 0
