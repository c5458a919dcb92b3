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
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mocap.errors import MocapError
from mocap.geometry import video_focal_length
from mocap.motion import Motion, Track
from mocap.paths import user_path, write_error
from mocap.pipeline.config import RunSettings
from mocap.pipeline.outputs import (
    DONE,
    PassResult,
    check_output_root,
    clip_name,
    decoded_again,
    is_done,
    publish,
    write_done,
    write_outputs,
    write_run_json,
)
from mocap.pipeline.staging import (
    ClipFinished,
    check_clip_name,
    clean_stale,
    clip_lock,
    is_mocap_output,
    make_staging,
    staging_path,
)
from mocap.pipeline.stream import Prefetcher, StageTimer, batched

__all__ = [  # clip_name, is_done, check_output_root, DONE: used by `mocap batch` and the examples
    "DONE",
    "Engines",
    "RunResult",
    "build_track",
    "check_output_root",
    "clip_name",
    "is_done",
    "process_video",
]

log = logging.getLogger("mocap")
LOW_SCORE = 0.1  # detections down to this score may extend (never start) a track


@dataclass
class Engines:
    """Everything loaded once and shared by all clips (built by ``run_cmd.build_engines``).

    Attributes:
        detector: ``mocap.pipeline.detect.PersonDetector``.
        estimator: the body model behind ``mocap.model.estimator.Estimator`` (HMR networks or
            the embedded BlazePose model; the pipeline never asks which).
        body: ``mocap.body.smpl.BodyModel`` or None (built-in skeleton).
        model_label: one line naming the model, for logs and summaries.
        model_info: variant, checkpoint, device, precision (for run.json).
        body_label: "SMPL (path)" or "built-in skeleton (no SMPL file)".
        versions: versions of the libraries that produced the result.
        warnings: notes to store with every clip's run.json.
    """

    detector: Any
    estimator: Any
    body: Any | None
    model_label: str
    model_info: dict[str, Any]
    body_label: str
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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
        rows: per field (``frames``, ``boxes``, ``scores``, the SMPL fields and the model's
            extras as ``x_<name>``), a list of blocks of consecutive observed samples (one block
            per model batch, first axis: samples). The lists are emptied as they are used (the
            caller's copy of a long track is freed early).
        plan: ``trackers.GapFill`` for the observed frames: which samples to blend at each frame.
        times: (N,) seconds of every decoded frame, indexed by frame index.
    Rotations are slerped (``mocap.geometry.quat_slerp``, only at bridged frames), vectors lerped;
    bridged frames get detection score 0, which marks them as interpolated in ``motion.npz``.
    """
    import torch

    from mocap.geometry import quat_slerp, quat_to_rotmat, rotmat_to_quat

    gap = np.flatnonzero(~plan.observed)
    values: dict[str, np.ndarray] = {}
    for name in (*_FIELDS, "boxes"):
        v = np.concatenate(rows.pop(name)).astype(np.float32, copy=False)
        if name in ("global_orient", "body_pose"):
            out = v[plan.lo]  # observed frames: the sample itself
            if len(gap):
                q0 = rotmat_to_quat(torch.from_numpy(v[plan.lo[gap]]))
                q1 = rotmat_to_quat(torch.from_numpy(v[plan.hi[gap]]))
                alpha = torch.from_numpy(plan.alpha[gap]).reshape((-1,) + (1,) * (q0.dim() - 2))
                q = quat_slerp(q0, q1, alpha.to(q0.dtype).expand(q0.shape[:-1]))
                out[gap] = quat_to_rotmat(q).numpy()
            values[name] = out
        else:
            values[name] = plan.lerp(v)
    scores = np.where(plan.observed, np.concatenate(rows.pop("scores"))[plan.lo], 0.0)
    extras = {k[2:]: plan.lerp(np.concatenate(rows.pop(k))) for k in list(rows) if k[:2] == "x_"}
    frames = plan.frames_out
    return Track(
        track_id, frames, times[frames], scores=scores.astype(np.float32), extras=extras, **values
    )


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


@contextmanager
def _held_output(logger: logging.Logger) -> Iterator[None]:
    """Hold what ``logger``'s printing handlers would show (buffers such as the run.json
    collector still get it); show it only if the block succeeds. A full disk then is one error
    line, not first a warning for every file that did not fit."""
    held = logging.handlers.BufferingHandler(capacity=10_000)
    shown = [h for h in logger.handlers if not isinstance(h, logging.handlers.BufferingHandler)]
    for h in shown:
        logger.removeHandler(h)
    logger.addHandler(held)
    try:
        yield
    finally:
        logger.removeHandler(held)
        for h in shown:
            logger.addHandler(h)
    for record in held.buffer:  # reached only on success
        for h in shown:
            if record.levelno >= h.level:
                h.handle(record)


def process_video(
    video: str | Path,
    output: str | Path,
    settings: RunSettings | None = None,
    engines: "Engines | Callable[[], Engines] | None" = None,
    progress: bool = False,
    name: str | None = None,
    on_frames: Callable[[int], None] | None = None,
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
        on_frames: called with the number of frames just decoded, after each batch of frames
            (`mocap batch`'s progress bar, also from Ray workers).
    Raises:
        MocapError: bad input (missing / unreadable / empty video, nobody detected, unwritable
            output, missing weights, clip already finished without ``overwrite``).
    """
    settings = settings or RunSettings()
    video, output = user_path(video), user_path(output).resolve()
    if not video.exists():
        raise MocapError(f"video not found: {video}; check the path")
    clip = check_clip_name(name or clip_name(video))
    check_output_root(output)
    with clip_lock(output, clip):  # ClipBusy while another process converts this clip
        for line in clean_stale(output, clip):  # staging of killed runs, a half-done publish
            log.info("%s", line)
        final = output / clip
        if os.path.lexists(final):
            if not is_mocap_output(final):
                raise MocapError(
                    f"{final} exists but was not written by mocap; move it away or choose "
                    "another -o (--overwrite only replaces mocap's own results)"
                )
            if is_done(final) and not settings.overwrite:
                raise ClipFinished(f"{final} is already finished; pass --overwrite to redo it")
        return _convert(video, output, clip, settings, engines, progress, on_frames)


def _convert(
    video: Path,
    output: Path,
    clip: str,
    settings: RunSettings,
    engines: "Engines | Callable[[], Engines] | None",
    progress: bool,
    on_frames: Callable[[int], None] | None = None,
) -> RunResult:
    """:func:`process_video` once the clip is locked: decode, estimate, write, publish."""
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
    final, staging = output / clip, None
    try:
        with timer("pass"):
            result = _estimate_motion(stream, settings, engines, timer, progress, on_frames)
        staging = staging_path(output, clip)  # named first: removed even if stopped inside
        make_staging(output, clip)
        with _held_output(log), decoded_again():
            try:
                files, failures, notes = write_outputs(
                    staging, video, result.motion, settings, engines, timer, result.contacts
                )
                warnings = [*engines.warnings, *(r.getMessage() for r in collector.buffer), *notes]
                write_run_json(
                    staging, video, result, settings, engines, timer, files, warnings, failures
                )
                if not failures:  # a clip with a failed output is redone by the next batch
                    write_done(staging)
            except OSError as exc:  # a full disk or a vanished folder, whichever writer met it
                raise write_error(final, exc) from exc
            publish(staging, final)
    except BaseException:
        if staging is not None:
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
    stream: Any,
    settings: RunSettings,
    engines: Engines,
    timer: StageTimer,
    progress: bool,
    on_frames: Callable[[int], None] | None = None,
) -> PassResult:
    """The streaming pass: frames in, finished (bridged, filtered, smoothed) tracks out."""
    import torch
    from tqdm import tqdm

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
    focal = [settings.focal_length or video_focal_length(*image_size)]
    if settings.focal_length is None:
        hfov = np.degrees(2 * np.arctan(image_size[0] / (2 * focal[0])))
        log.info(
            "focal length not given: assuming %.0f px (%.0f deg horizontal field of view); "
            "pass --focal-length if you know the camera",
            focal[0],
            hfov,
        )
    detections = 0

    estimator = engines.estimator
    # the detector runs every n-th frame where the model follows people between detections itself
    every = settings.detect_every or estimator.detect_interval
    failed: dict[int, int] = defaultdict(int)  # track id -> items the model found no body in
    following: dict[int, bool] = {}  # track id -> whether the model found its body last time
    lost_body = False  # a followed person was lost: detect again on the next frame
    since = every  # frames since the last detection

    def infer(items: list[tuple[int, int, np.ndarray, float, Any]]) -> None:
        nonlocal lost_body
        with timer("model"), torch.inference_mode():
            est = estimator.estimate([c for *_, c in items], image_size, focal[0])
        params = est.params
        by_track: dict[int, list[int]] = defaultdict(list)
        for k, (tid, *_) in enumerate(items):
            if est.valid[k]:
                by_track[tid].append(k)
            else:  # a crop without a body (or with non-finite outputs) is a missed detection
                failed[tid] += 1
                lost_body |= following.get(tid, False)
            following[tid] = bool(est.valid[k])
        for tid, ks in by_track.items():  # one block per track and batch (copies, not views)
            r, idx = rows[tid], np.asarray(ks)
            r["frames"].append(np.array([items[k][1] for k in ks], dtype=np.int64))
            r["boxes"].append(np.stack([items[k][2] for k in ks]).astype(np.float32))
            r["scores"].append(np.array([items[k][3] for k in ks], dtype=np.float32))
            for field_name in _FIELDS:
                r[field_name].append(getattr(params, field_name)[idx])
            for name, value in est.extras.items():
                r[f"x_{name}"].append(np.asarray(value)[idx])

    def detect(batch: list[Any]) -> Iterator[Any]:
        """Per frame of ``batch``: its detections, or None where the tracker predicts the boxes.

        Every frame is detected (in one batch) for a model that needs it. Otherwise a frame is
        detected every ``every`` frames, and early on the frame after the model lost a person it
        was following (it moved out of its predicted crop); the model runs on each frame's crops
        before the next frame is scheduled, so that it can say so.
        """
        nonlocal since, lost_body
        if every == 1:
            with timer("detect"):
                found = engines.detector.detect([frame.image for frame in batch])
            yield from found
            return
        for frame in batch:
            if since >= every or lost_body:
                with timer("detect"):
                    found = engines.detector.detect([frame.image])
                since, lost_body = 0, False
                yield found[0]
            else:
                yield None
            since += 1

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
            for frame, found in zip(batch, detect(batch), strict=True):
                times.append(float(frame.time))
                with timer("track"):
                    if found is not None:
                        tracked = tracker.update(found.boxes, found.scores, frame.index)
                    else:  # a frame the detector skips: the tracks' predicted boxes
                        tracked = tracker.coast(frame.index)
                with timer("crop"):
                    for t in tracked:
                        item = estimator.prepare(frame.image, np.asarray(t.box), t.track_id)
                        pending.append((t.track_id, frame.index, np.asarray(t.box), t.score, item))
                detections += len(tracked)
                # crops held: < batch + one frame's; none across frames when detection waits on them
                while len(pending) >= (settings.batch_size if every == 1 else 1):
                    infer(pending[: settings.batch_size])
                    del pending[: settings.batch_size]
            bar.update(len(batch))
            if on_frames is not None:
                on_frames(len(batch))
        if pending:
            infer(pending)
    finally:
        prefetch.close()
        bar.close()
        estimator.close()

    lost = sorted(tid for tid in failed if tid not in rows)
    for tid in lost:
        log.warning(
            "person #%d: the model found no body in any of its %d crops; skipped", tid, failed[tid]
        )
    partly = sum(n for tid, n in failed.items() if tid in rows)
    if partly:
        log.info(
            "%d crops gave no body (treated as missed detections, bridged like any gap)", partly
        )
    if not rows:
        if lost:
            raise MocapError(
                f"the model found no body in any of the {len(lost)} detected people in {video}; "
                "check that whole people are visible"
            )
        raise MocapError(
            f"no person detected in {video}; lower --det-conf or --min-box, or check --detector / --classes"
        )
    min_len = min(settings.min_track_length, len(times))
    frames_by_id = {i: np.concatenate(r.pop("frames")) for i, r in rows.items()}
    plans = finish_tracks(frames_by_id, settings.max_gap, min_len)
    people, frame_times = len(rows), np.asarray(times)
    kept, jitter = [], {}
    for tid, plan in plans.items():
        with timer("fit"):  # whole-track model steps (the embedded model's proportions and IK)
            track = build_track(tid, rows.pop(tid), plan, frame_times)
            track = estimator.finish_track(track, engines.body, image_size, focal[0])
        with timer("smooth"):  # betas held at the per-track median; rotations filtered on SO(3)
            track, report = smooth_track(
                track, settings.smooth, settings.smooth_strength, engines.body
            )
        kept.append(track)
        jitter[tid] = (report.before, report.after)
    if not kept:
        raise MocapError(
            f"all {people} people in {video} were seen in fewer than {min_len} frames; "
            "lower --min-track-length"
        )
    if len(kept) < people:
        log.info("dropped %d short tracks (< %d frames)", people - len(kept), min_len)
    motion = Motion(kept, float(stream.fps), image_size, focal[0], source=str(video))
    return PassResult(motion, len(times), detections, jitter)
