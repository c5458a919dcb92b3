"""Video -> per-person SMPL motion and animation files: the pipeline behind `mocap run` / `mocap batch`.

Data flow (one pass, memory flat in video length):

    decoder thread --(bounded queue of frames)--> detect (batches of frames) -> track -> crop
        -> model (batches of crops across frames and people) -> per-track arrays (small)

Only ``batch_size`` frames and ``batch_size`` crops are alive at any time. After the pass, tracks are
finished (gaps bridged, short tracks dropped, betas held, smoothed) and written to a hidden staging
folder that is renamed to ``OUT/<clip>`` only when complete, so an interrupted run never leaves
output that looks finished; ``.done`` is the last file written, and only when every requested
output was written (a clip with a failed export is redone by the next `mocap batch`).
"""

import logging
import logging.handlers
import os
import queue
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mocap.errors import MocapError
from mocap.motion import Motion, Track
from mocap.pipeline.config import RunSettings

log = logging.getLogger("mocap")
DONE = ".done"
LOW_SCORE = 0.1  # detections down to this score may extend (never start) a track
_END = object()


@dataclass
class Engines:
    """Everything loaded once and shared by all clips (built by ``run_cmd.build_engines``).

    Attributes:
        detector: ``mocap.pipeline.detect.PersonDetector``.
        predictor: ``mocap.model.predictor.Predictor``.
        body: ``mocap.body.smpl.BodyModel`` or None (built-in skeleton).
        model_label: one line naming the model, for logs and summaries.
        model_info: variant, checkpoint, device, precision (for run.json).
        body_label: "SMPL (path)" or "built-in skeleton (no SMPL file)".
        versions: versions of the libraries that produced the result.
        warnings: notes to store with every clip's run.json.
    """

    detector: Any
    predictor: Any
    body: Any | None
    model_label: str
    model_info: dict[str, Any]
    body_label: str
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class StageTimer:
    """Wall-clock seconds per pipeline stage (thread-safe: the decoder adds from its thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)


class Prefetcher:
    """Decode in a background thread into a bounded queue, so the model never waits on decoding.

    At most ``maxsize`` frames are buffered. Errors of the decoder (e.g. MocapError) re-raise in the
    consumer; :meth:`close` stops the thread early (error, Ctrl-C). Time the consumer spends blocked
    on an empty queue is recorded as the ``decode_wait`` stage.
    """

    def __init__(self, frames: Iterator[Any], maxsize: int, timer: StageTimer) -> None:
        self._frames, self._timer = frames, timer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mocap-decode", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while True:
                t0 = time.perf_counter()
                item = next(self._frames, _END)
                self._timer.add("decode", time.perf_counter() - t0)
                if not self._put(item) or item is _END:
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)

    def __iter__(self) -> Iterator[Any]:
        while True:
            t0 = time.perf_counter()
            item = self._queue.get()
            self._timer.add("decode_wait", time.perf_counter() - t0)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class RunResult:
    """What one call of :func:`process_video` produced."""

    clip: str
    out_dir: Path
    frames: int  # decoded frames (after --start/--end/--stride)
    track_lengths: dict[int, int]  # track id -> frames
    files: list[Path]
    timings: dict[str, float]  # seconds per stage
    model: str
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # outputs that could not be written


_FIELDS = ("global_orient", "body_pose", "betas", "cam_crop", "transl")


def build_track(track_id: int, rows: dict[str, list[Any]], plan: Any, times: np.ndarray) -> Track:
    """Per-frame model outputs of one identity -> a :class:`Track` with its short gaps bridged.

    Arguments:
        rows: lists of per-frame values (``frames``, ``boxes``, ``scores`` and the SMPL fields).
        plan: ``trackers.GapFill`` for ``rows["frames"]``: which samples to blend at each frame.
        times: (N,) seconds of every decoded frame, indexed by frame index.
    Rotations are slerped (``mocap.geometry.quat_slerp``), vectors lerped; bridged frames get
    detection score 0, which marks them as interpolated in ``motion.npz``.
    """
    import torch

    from mocap.geometry import quat_slerp, quat_to_rotmat, rotmat_to_quat

    values: dict[str, np.ndarray] = {}
    for name in (*_FIELDS, "boxes"):
        v = np.asarray(np.stack(rows[name]), dtype=np.float32)
        if name in ("global_orient", "body_pose"):
            q = rotmat_to_quat(torch.from_numpy(v))
            alpha = torch.from_numpy(plan.alpha).reshape((-1,) + (1,) * (q.dim() - 2))
            q = quat_slerp(q[plan.lo], q[plan.hi], alpha.to(q.dtype).expand(q[plan.lo].shape[:-1]))
            values[name] = np.where(
                plan.observed.reshape((-1,) + (1,) * (v.ndim - 1)),
                v[plan.lo],
                quat_to_rotmat(q).numpy(),
            )
        else:
            values[name] = plan.lerp(v)
    scores = np.where(plan.observed, np.asarray(rows["scores"], np.float32)[plan.lo], 0.0)
    frames = plan.frames_out
    return Track(track_id, frames, times[frames], scores=scores.astype(np.float32), **values)


def clip_name(video: Path) -> str:
    """Output folder name of a clip: the file stem, or the folder name for an image folder."""
    return video.name if video.is_dir() else video.stem


def is_done(out_dir: Path) -> bool:
    """True when ``out_dir`` holds a finished run (its ``.done`` marker exists)."""
    return (out_dir / DONE).is_file()


def check_output_root(output: Path) -> None:
    """Create ``output`` and make sure files can be written there (before any model is loaded)."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".mocap-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise MocapError(
            f"cannot write to output folder {output} ({reason}); choose a writable folder with -o"
        ) from exc


@contextmanager
def _held_warnings(name: str) -> Iterator[None]:
    """Hold the log records of logger ``name``; replay them only if the block succeeds.

    A probe that fails raises one MocapError line; the warnings that led to it would only repeat it.
    """
    logger, held = logging.getLogger(name), logging.handlers.BufferingHandler(capacity=10_000)
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(held)
    try:
        yield
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate
    for record in held.buffer:  # reached only on success
        logger.handle(record)


@dataclass
class _Pass:
    """Result of the streaming pass over one clip."""

    motion: Motion
    frames: int  # decoded frames
    detections: int  # person boxes sent to the model
    jitter: dict[int, tuple[float, float]]  # track id -> mean joint acceleration before / after


def process_video(
    video: str | Path,
    output: str | Path,
    settings: RunSettings | None = None,
    engines: "Engines | Callable[[], Engines] | None" = None,
    progress: bool = False,
    name: str | None = None,
) -> RunResult:
    """Run the whole pipeline on one clip and write ``output/<clip name>/``.

    Arguments:
        video: a video file or a folder of images.
        output: the output root; results go to ``output/<clip name>/``.
        settings: run settings (defaults when None).
        engines: loaded detector / model / body, or a function returning them (called only once
            the video opened fine); built from ``settings`` when None. `mocap batch` passes one
            loader for all clips, so the model loads once, and not at all for unreadable clips.
        progress: show a tqdm bar over frames (hidden when stderr is not a terminal).
        name: output folder name (default: :func:`clip_name`).
    Raises:
        MocapError: bad input (missing / unreadable / empty video, nobody detected, unwritable
            output, missing weights, clip already finished without ``overwrite``).
    """
    settings = settings or RunSettings()
    video, output = Path(video).expanduser(), Path(output).expanduser().resolve()
    if not video.exists():
        raise MocapError(f"video not found: {video}; check the path")
    clip = name or clip_name(video)
    final = output / clip
    check_output_root(output)
    if final.exists() and not settings.overwrite:
        if is_done(final):
            raise MocapError(f"{final} is already finished; pass --overwrite to redo it")
        if not (final / "run.json").is_file():  # an unfinished run of ours is redone silently
            raise MocapError(
                f"{final} exists but is not a mocap output; remove it or pass --overwrite"
            )
    from mocap.pipeline.video import open_video

    # open (and probe) the video before loading any model, so bad input fails fast
    with _held_warnings("mocap.pipeline.video"):
        stream = open_video(video, start=settings.start, end=settings.end, stride=settings.stride)
    timer = StageTimer()
    if not isinstance(engines, Engines):
        from mocap.pipeline.run_cmd import build_engines

        with timer("load"):
            engines = engines() if engines is not None else build_engines(settings)
    collector = logging.handlers.BufferingHandler(capacity=10_000)  # warnings for run.json
    collector.setLevel(logging.WARNING)
    log.addHandler(collector)
    staging = output / f".{clip}.partial-{os.getpid()}"
    try:
        with timer("pass"):
            result = _estimate_motion(stream, settings, engines, timer, progress)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        files, failures, notes = _write_outputs(
            staging, video, result.motion, settings, engines, timer
        )
        warnings = [*engines.warnings, *(r.getMessage() for r in collector.buffer), *notes]
        _write_run_json(staging, video, result, settings, engines, timer, files, warnings, failures)
        if not failures:  # a clip with a failed output is redone by the next batch
            (staging / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
        _publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        log.removeHandler(collector)
    return RunResult(
        clip=clip,
        out_dir=final,
        frames=result.frames,
        track_lengths={t.track_id: len(t) for t in result.motion.tracks},
        files=[final / p.relative_to(staging) for p in files],
        timings=dict(timer.seconds),
        model=engines.model_label,
        warnings=warnings,
        failures=failures,
    )


def _estimate_motion(
    stream: Any, settings: RunSettings, engines: Engines, timer: StageTimer, progress: bool
) -> _Pass:
    """The streaming pass: frames in, finished (bridged, filtered, smoothed) tracks out."""
    import torch
    from tqdm import tqdm

    from mocap.model.crop import crop_person
    from mocap.smoothing import smooth_track
    from trackers import build_tracker, finish_tracks

    video = stream.info.path
    image_size = (int(stream.info.width), int(stream.info.height))
    # ByteTrack: confident boxes (>= det_conf) start and match tracks, weaker ones only extend them
    low = min(LOW_SCORE, settings.det_conf)
    tracker = build_tracker(max_gap=settings.max_gap, high_thresh=settings.det_conf, low_thresh=low)
    rows: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    times: list[float] = []  # per decoded frame
    pending: list[tuple[int, int, np.ndarray, float, Any]] = []  # (id, frame, box, score, crop)
    focal = [settings.focal_length or 0.0]
    detections = 0

    def infer(items: list[tuple[int, int, np.ndarray, float, Any]]) -> None:
        with timer("model"), torch.inference_mode():
            params = engines.predictor.predict_crops(
                np.stack([c.image for *_, c in items]),
                np.stack([c.center for *_, c in items]),
                np.array([c.size for *_, c in items], dtype=np.float32),
                image_size,
            )
        focal[0] = float(params.focal_length)
        for k, (tid, index, box, score, _) in enumerate(items):
            r = rows[tid]
            r["frames"].append(index)
            r["boxes"].append(box)
            r["scores"].append(score)
            for field_name in ("global_orient", "body_pose", "betas", "cam_crop", "transl"):
                r[field_name].append(getattr(params, field_name)[k])

    bar = tqdm(
        desc=video.name,
        unit="frame",
        total=stream.expected_frames,
        disable=None if progress else True,
        leave=False,
    )
    prefetch = Prefetcher(iter(stream), maxsize=2 * settings.batch_size, timer=timer)
    try:
        for batch in batched(prefetch, settings.batch_size):
            with timer("detect"):
                found = engines.detector.detect([f.image for f in batch])
            for frame, det in zip(batch, found, strict=True):
                times.append(float(frame.time))
                with timer("track"):
                    tracked = tracker.update(det.boxes, det.scores, frame.index)
                with timer("crop"):
                    for t in tracked:
                        crop = crop_person(frame.image, t.box)
                        pending.append((t.track_id, frame.index, np.asarray(t.box), t.score, crop))
                detections += len(tracked)
                while len(pending) >= settings.batch_size:  # crops held: < batch + one frame's
                    infer(pending[: settings.batch_size])
                    del pending[: settings.batch_size]
            bar.update(len(batch))
        if pending:
            infer(pending)
    finally:
        prefetch.close()
        bar.close()

    if not rows:
        raise MocapError(
            f"no person detected in {video}; lower --det-conf or --min-box, or check --detector / --classes"
        )
    min_len = min(settings.min_track_length, len(times))
    plans = finish_tracks({i: r["frames"] for i, r in rows.items()}, settings.max_gap, min_len)
    kept, jitter = [], {}
    with timer("smooth"):
        for tid, plan in plans.items():
            track = build_track(tid, rows[tid], plan, np.asarray(times))
            # betas held at the per-track median; rotations filtered on SO(3)
            track, report = smooth_track(
                track, settings.smooth, settings.smooth_strength, engines.body
            )
            kept.append(track)
            jitter[tid] = (report.before, report.after)
    if not kept:
        raise MocapError(
            f"all {len(rows)} people in {video} were seen in fewer than {min_len} frames; "
            "lower --min-track-length"
        )
    if len(kept) < len(rows):
        log.info("dropped %d short tracks (< %d frames)", len(rows) - len(kept), min_len)
    motion = Motion(kept, float(stream.fps), image_size, focal[0], source=str(video))
    return _Pass(motion, len(times), detections, jitter)


def _write_outputs(
    staging: Path,
    video: Path,
    motion: Motion,
    settings: RunSettings,
    engines: Engines,
    timer: StageTimer,
) -> tuple[list[Path], list[str], list[str]]:
    """motion.npz (always), config.yaml, exporter files and the preview into ``staging``.

    Returns the files written, one line per output that failed (the others are still written) and
    the exporters' notes.
    """
    from mocap.pipeline.config import save_config

    with timer("write"):
        files = [motion.save(staging / "motion.npz"), staging / "config.yaml"]
        save_config(settings, staging / "config.yaml")
    failures: list[str] = []
    notes: list[str] = []
    if settings.formats:
        from exporters import export_motion

        with timer("export"):
            report = export_motion(
                motion,
                staging,
                settings.formats,
                body=engines.body,
                per_person=settings.per_person,
                units=settings.units,
            )
        files += report.files
        failures += [f"{f.person} {f.format}: {f.message}" for f in report.failures]
        notes += report.notes
    if settings.preview:
        from mocap.pipeline.preview import render_preview

        with timer("preview"):
            try:
                files.append(
                    render_preview(video, motion, staging / "preview.mp4", settings, engines.body)
                )
            except MocapError as exc:
                failures.append(f"preview: {exc}")
    for line in notes:
        log.debug("%s", line)
    for line in failures:
        log.warning("%s", line)
    return files, failures, notes


def _write_run_json(
    staging: Path,
    video: Path,
    result: _Pass,
    settings: RunSettings,
    engines: Engines,
    timer: StageTimer,
    files: list[Path],
    warnings: list[str],
    failures: list[str],
) -> None:
    """run.json: what was run, with which software and model, how long each stage took."""
    import json
    import platform

    import torch

    from mocap import __version__
    from mocap.paths import atomic_path

    sec = timer.seconds
    motion, pass_s = result.motion, sec.get("pass", 0.0)
    data = {
        "mocap_version": __version__,
        "source": str(video.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": settings.to_dict(),
        "model": engines.model_info,
        "body": engines.body_label,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        }
        | engines.versions,
        "video": {
            "frames": result.frames,
            "fps": motion.fps,
            "image_size": list(motion.image_size),
            "focal_length": motion.focal_length,
        },
        "detections": result.detections,
        "tracks": [
            {
                "id": t.track_id,
                "frames": len(t),
                "first_frame": int(t.frames[0]),
                "last_frame": int(t.frames[-1]),
                "interpolated_frames": int(np.sum(t.scores == 0)),
                "jitter_before_m_s2": round(result.jitter[t.track_id][0], 4),
                "jitter_after_m_s2": round(result.jitter[t.track_id][1], 4),
            }
            for t in motion.tracks
        ],
        "timings_s": {k: round(v, 4) for k, v in sec.items()},
        "frames_per_s": round(result.frames / pass_s, 3) if pass_s else None,
        "share_outside_model": round(1 - sec.get("model", 0.0) / pass_s, 4) if pass_s else None,
        "files": sorted(str(p.relative_to(staging)) for p in files),
        "warnings": warnings,
        "failures": failures,
    }
    path = staging / "run.json"
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _publish(staging: Path, final: Path) -> None:
    """Rename the finished staging folder to ``final``, replacing an older result."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
