"""`mocap batch --ray`: a batch's clips on Ray workers, one actor per worker, the model loaded once.

Each worker is a Ray actor that runs :func:`mocap.pipeline.batch_cmd.convert_clip`, the function
the sequential batch runs, so a clip goes through one code path either way: the per-clip lock,
staging in ``OUT/.<clip>.partial-<pid>/``, publish by rename, ``.done`` last. This module only
schedules: the driver (the ``mocap batch`` process) hands each clip to an idle worker, merges the
rows into the manifest as they come back, replays each clip's log lines, and shows one bar.

Faults: a worker that dies mid-clip (SIGKILL, out of memory, its node gone) is replaced by a new
actor; its staging is removed (a half-done publish is undone) and the clip is retried, up to
``--retries`` times, then reported as failed. Ctrl-C kills the workers and removes their staging.
Outputs go to OUT as given, which on a cluster must be a shared filesystem (docs/ray.md).
"""

import argparse
import contextlib
import logging
import os
import re
import shutil
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mocap.errors import MocapError

if TYPE_CHECKING:
    from mocap.pipeline.batch_cmd import Batch, ClipOutcome
    from mocap.pipeline.config import RunSettings

log = logging.getLogger("mocap")
INSTALL = "--ray needs Ray, which is not installed: pip install 'mocap[cluster]'"
_ADDRESS = re.compile(r"^(auto|(ray://)?[\w.\-\[\]:]+:\d+)$")


def _address(text: str) -> str:
    if not _ADDRESS.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Ray address: give auto or HOST:PORT (put --ray after the inputs)"
        )
    return text


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray cluster (docs/ray.md)")
    group.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        type=_address,
        metavar="ADDRESS",
        help="convert the clips on Ray workers: 'auto' (the default when no ADDRESS is given) "
        "joins the Ray already running on this machine or starts one; HOST:PORT or "
        "ray://HOST:PORT joins that cluster (OUT must then be on storage every node sees)",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray workers, each with the model loaded once (default: one per GPU of the "
        "cluster, or one per CPU when it has none; never more than the clips to convert)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs reserved by each worker (default: 1 when the cluster has GPUs, else 0)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="times a clip is retried on another worker when its worker dies (default: 2)",
    )


@dataclass
class WorkerReport:
    """One clip's result from a worker: the outcome, the model label, and the clip's log lines."""

    outcome: "ClipOutcome"
    model: str = ""
    logs: list[tuple[int, str]] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


class ClipWorker:
    """A Ray actor's body: loads the engines on its first clip and keeps them for the next ones."""

    def __init__(self, settings: "RunSettings", level: int, cwd: str) -> None:
        from mocap.pipeline.batch_cmd import engine_loader

        if os.path.isdir(cwd):  # relative inputs / OUT resolve as on the driver (shared storage)
            os.chdir(cwd)
        self.collect = _Collect()
        stream = logging.StreamHandler()  # also in Ray's worker log files (docs/ray.md)
        stream.setFormatter(logging.Formatter("mocap: %(levelname)s: %(message)s"))
        log.handlers[:] = [self.collect, stream]
        log.setLevel(level)
        log.propagate = False
        self.settings = settings
        self.engines, self.loaded = engine_loader(settings)

    def where(self) -> tuple[int, str]:
        """This worker's process id and host: its staging is ``OUT/.<clip>.partial-<pid>``."""
        return os.getpid(), socket.gethostname()

    def convert(self, clip: str, name: str, out: str, started: float) -> WorkerReport:
        from mocap.pipeline.batch_cmd import convert_clip

        self.collect.lines = []
        log.info("%s: converting %s", name, clip)
        outcome = convert_clip(Path(clip), name, Path(out), self.settings, self.engines, started)
        model = self.loaded[0].model_label if self.loaded else ""
        return WorkerReport(outcome, model, self.collect.lines)


@dataclass
class _Worker:
    actor: Any  # a ray ActorHandle of ClipWorker
    where: Any  # ObjectRef of ClipWorker.where(): (pid, host), asked once it starts


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MocapError(INSTALL) from None
    return ray


def _connect(ray: Any, address: str) -> bool:
    """Join (or, with auto and none running, start) Ray; True when this call started it."""
    if ray.is_initialized():  # a caller that set Ray up itself (tests, notebooks)
        return False
    try:
        ray.init(
            address=None if address == "auto" else address,
            include_dashboard=False,
            log_to_driver=False,  # each clip's log lines are replayed by the driver instead
            logging_level=logging.WARNING,
            runtime_env={
                "env_vars": {k: v for k, v in os.environ.items() if k.startswith("MOCAP_")}
            },
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise MocapError(f"could not join the Ray cluster at {address}: {exc}") from None
    return True


def _plan(ray: Any, args: argparse.Namespace, clips: int) -> tuple[int, float]:
    """(workers, GPUs per worker) from the flags and the cluster's resources."""
    have = ray.cluster_resources()
    gpus = have.get("GPU", 0.0)
    per = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per < 0 or (args.workers is not None and args.workers < 1) or args.retries < 0:
        raise MocapError("--workers must be 1 or more, --gpus-per-worker and --retries 0 or more")
    if per > 0 and gpus < per:
        raise MocapError(
            f"--gpus-per-worker {per:g} but the Ray cluster has {gpus:g} GPUs; "
            "pass --gpus-per-worker 0 to run on CPUs"
        )
    fits = int(gpus // per) if per > 0 else int(have.get("CPU", 1.0))
    return max(1, min(args.workers or fits, clips)), per


def _clear_dead(out: Path, clip: str, where: tuple[int, str] | None) -> None:
    """Remove what a dead worker left of ``clip``: its staging and lock file, or undo its
    half-done publish (under the clip's lock, unless a live process holds it and cleans up)."""
    from mocap.paths import pid_alive
    from mocap.pipeline.staging import ClipBusy, clean_stale, clip_lock

    if where is None:  # it died before it could start a clip
        return
    pid, host = where
    here = host == socket.gethostname()
    deadline = time.monotonic() + 10
    while here and pid_alive(pid) and time.monotonic() < deadline:  # ray.kill is asynchronous
        time.sleep(0.05)
    staging, old = out / f".{clip}.partial-{pid}", out / f".{clip}.old-{pid}"
    try:
        lock = clip_lock(out, clip)
    except ClipBusy:  # a live process converts the clip (and cleans up after dead ones)
        shutil.rmtree(staging, ignore_errors=True)  # that pid is gone: nobody writes there
        return
    with lock:  # released: the dead worker's lock file is removed
        if here:
            for line in clean_stale(out, clip):
                log.info("%s", line)
            return
        shutil.rmtree(staging, ignore_errors=True)  # another host: its pids mean nothing here
        if old.is_dir() and not os.path.lexists(out / clip):
            with contextlib.suppress(OSError):
                os.rename(old, out / clip)
        shutil.rmtree(old, ignore_errors=True)


def _where(ray: Any, worker: _Worker) -> tuple[int, str] | None:
    try:
        pid, host = ray.get(worker.where, timeout=5)
    except Exception:  # the actor died before answering: it never started a clip
        return None
    return int(pid), str(host)


def run_on_ray(args: argparse.Namespace, batch: "Batch", pairs: list[tuple[Path, str]]) -> None:
    """Convert ``pairs`` (clip, output name) on Ray workers, recording each outcome in ``batch``."""
    from mocap.pipeline.batch_cmd import convert_clip
    from mocap.pipeline.run import is_done

    ray = _import_ray()
    todo = []
    for clip, name in pairs:  # finished clips are skipped here, without starting any worker
        if is_done(batch.out / name) and not batch.settings.overwrite:
            outcome = convert_clip(
                clip, name, batch.out, batch.settings, _no_engines, batch.started
            )
            batch.record(outcome)
        else:
            todo.append((clip, name))
    if not todo:
        return
    started_here = _connect(ray, args.ray)
    try:
        _schedule(ray, args, batch, todo)
    finally:
        if started_here:
            ray.shutdown()


def _why(exc: Exception) -> str:
    """The last line of a Ray error (the cause), shortened; a worker that could not even start
    (mocap missing on a node...) stops the batch instead of failing every clip in turn."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = f"{type(exc).__name__}: {lines[-1] if lines else 'killed, or out of memory'}"[:300]
    if getattr(exc, "actor_init_failed", False) or "raised in its creation task" in str(exc):
        raise MocapError(f"Ray workers could not start ({why}); is mocap installed on every node?")
    return why


def _failed(clip: Path, name: str, error: str) -> WorkerReport:
    from mocap.pipeline.batch_cmd import ClipOutcome, ClipStatus

    return WorkerReport(ClipOutcome(ClipStatus(str(clip), name, "failed", error=error)))


def _no_engines() -> Any:
    raise RuntimeError("a finished clip needs no model")


def _schedule(
    ray: Any, args: argparse.Namespace, batch: "Batch", todo: list[tuple[Path, str]]
) -> None:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from mocap.pipeline.batch_cmd import ClipStatus

    workers, gpus = _plan(ray, args, len(todo))
    log.info("converting %d clips on %d Ray workers (%g GPUs each)", len(todo), workers, gpus)
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(ClipWorker)
    level, cwd = log.getEffectiveLevel(), os.getcwd()

    def start() -> _Worker:
        actor = remote.remote(batch.settings, level, cwd)
        return _Worker(actor, actor.where.remote())

    idle = [start() for _ in range(workers)]
    queue, tries = deque(todo), dict.fromkeys((n for _, n in todo), 0)
    running: dict[Any, tuple[_Worker, Path, str]] = {}
    bar = tqdm(total=len(todo), desc="clips", unit="clip", disable=not batch.show)
    frames = 0
    died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
            ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError)  # fmt: skip
    try:
        with logging_redirect_tqdm([log]) if batch.show else contextlib.nullcontext():
            while queue or running:
                while queue and idle:
                    worker, (clip, name) = idle.pop(), queue.popleft()
                    if tries[name] == 0:  # the row says "interrupted" until it comes back
                        batch.rows.append(
                            ClipStatus(str(clip), name, "interrupted", str(batch.out / name))
                        )
                    ref = worker.actor.convert.remote(
                        str(clip), name, str(batch.out), batch.started
                    )
                    running[ref] = (worker, clip, name)
                (ref,), _ = ray.wait(list(running), num_returns=1)
                worker, clip, name = running.pop(ref)
                try:
                    report: WorkerReport = ray.get(ref)
                except died as exc:
                    _clear_dead(batch.out, name, _where(ray, worker))
                    idle.append(start())
                    tries[name] += 1
                    if tries[name] <= args.retries:
                        log.warning("%s: its worker died (%s); retrying on another worker",
                                    name, _why(exc))  # fmt: skip
                        queue.appendleft((clip, name))
                        continue
                    error = f"its worker died {tries[name]} times ({_why(exc)}); see Ray's logs"
                    report = _failed(clip, name, error)
                except ray.exceptions.RayError as exc:  # the clip's task itself broke
                    idle.append(worker)
                    report = _failed(clip, name, f"internal error on its worker ({_why(exc)})")
                else:
                    idle.append(worker)
                for levelno, line in report.logs:
                    log.log(levelno, "%s", line)
                row = report.outcome.row
                row.source = str(clip)  # as the driver named them, not as the worker saw them
                row.output = str(batch.out / name)
                batch.model = report.model or batch.model
                batch.record(report.outcome)
                if report.outcome.load_failed:
                    raise MocapError(row.error)  # stop: the other clips cannot run either
                batch.save()
                frames += row.frames or 0
                bar.set_postfix(frames=frames)
                bar.update()
    finally:
        bar.close()
        for worker in [*idle, *(w for w, _, _ in running.values())]:
            ray.kill(worker.actor, no_restart=True)
        for worker, _, name in running.values():  # Ctrl-C / a failed load: nothing half-written
            _clear_dead(batch.out, name, _where(ray, worker))
