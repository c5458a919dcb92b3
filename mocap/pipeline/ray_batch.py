"""`mocap batch --ray`: a batch's clips on Ray workers, one actor per worker, the model loaded once.

Each worker is a Ray actor that runs :func:`mocap.pipeline.batch_cmd.convert_clip`, the function
the sequential batch runs, so a clip goes through one code path either way: the per-clip lock,
staging in ``OUT/.<clip>.partial-<pid>/``, publish by rename, ``.done`` last. This module only
schedules: the driver (the ``mocap batch`` process) hands each clip to an idle worker, merges the
rows into the manifest as they come back, writes each clip's log lines to ``OUT/logs/<clip>.log``,
and shows one bar. While a clip runs, its worker tells a small Ray actor
(:class:`~mocap.pipeline.ray_worker.ProgressFeed`) the frames it decoded and the lines it logged;
the driver drains it a few times a second and prints the lines as they come, each prefixed by its
clip (clips run at once). That needs nothing but Ray (no shared files to poll), and keeps the lines
of an attempt whose worker died for the console and the clip's log.

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

from mocap.errors import MocapError, native_stderr_silenced
from mocap.pipeline.ray_worker import ClipWorker, ProgressFeed, WorkerReport

if TYPE_CHECKING:
    from mocap.pipeline.batch_cmd import Batch
    from mocap.pipeline.clip_log import LogLine

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
    group = parser.add_argument_group(
        "Ray cluster (docs/ray.md)",
        "--workers, --gpus-per-worker and --retries need --ray (without it they are an error)",
    )
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
        metavar="N",
        help="times a clip is retried on another worker when its worker dies (default: 2)",
    )


def check_ray_flags(args: argparse.Namespace) -> None:
    """MocapError when a Ray flag is given without --ray (it would do nothing)."""
    given = [f"--{k.replace('_', '-')}" for k in RAY_FLAGS if getattr(args, k, None) is not None]
    if given and getattr(args, "ray", None) is None:
        raise MocapError(
            f"{' and '.join(given)} only apply with --ray (add --ray to convert on Ray workers; "
            "without it the clips are converted one after another in this process)"
        )


RAY_FLAGS = ("workers", "gpus_per_worker", "retries")
RETRIES = 2  # --retries' default
POLL = 0.1  # seconds between two looks at the workers' progress
SETTLE = 10.0  # seconds to wait for CPUs/GPUs a batch that just ended still holds


@dataclass
class _Worker:
    actor: Any  # a ray ActorHandle of ClipWorker
    where: Any  # ObjectRef of ClipWorker.where(): (pid, host, node), asked once it starts


@dataclass(frozen=True)
class _Place:
    """Where a worker runs: its process id, host and Ray node id."""

    pid: int
    host: str
    node: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, Ray node {self.node[:8]}"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MocapError(INSTALL) from None
    return ray


def _reachable(address: str, timeout: float = 3.0) -> None:
    """Fail at once, in one line, for a ``HOST:PORT`` nobody answers at (Ray itself retries for
    20 s or more before it says so)."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError as exc:
        raise MocapError(
            f"nothing answers at the Ray address {address} ({exc.strerror or exc}); start the "
            "cluster (`ray start --head`) or check HOST:PORT"
        ) from None


def _connect(ray: Any, address: str) -> bool:
    """Join (or, with auto and none running, start) Ray; True when this call started it."""
    if ray.is_initialized():  # a caller that set Ray up itself (tests, notebooks)
        return False
    refused = getattr(ray.exceptions, "AuthenticationError", ())  # Ray 2.52+
    try:
        if address != "auto":
            _reachable(address)
            _token_mode(ray, address)
        ray.init(
            address=None if address == "auto" else address,
            include_dashboard=False,
            log_to_driver=False,  # the driver prints each clip's log lines itself (_say)
            logging_level=logging.WARNING,
            runtime_env={
                "env_vars": {k: v for k, v in os.environ.items() if k.startswith("MOCAP_")}
            },
        )
    except refused as exc:  # no token here, or one Ray cannot read (RAY_AUTH_TOKEN_PATH)
        raise MocapError(_token_problem(address, exc)) from None
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = (_lines(exc) or [repr(exc)])[0]
        raise MocapError(f"could not join the Ray cluster at {address}: {first}") from None
    return True


def _lines(exc: BaseException) -> list[str]:
    """The non-blank lines of an error's message, stripped (Ray's run to many)."""
    return [line.strip() for line in str(exc).splitlines() if line.strip()]


def _token_problem(address: str, exc: Exception) -> str:
    first = (_lines(exc) or [repr(exc)])[0]
    if "no authentication token was found" in first:
        return _ask_token(address)
    said = re.split(r"[.]\s", first, maxsplit=1)[0]  # Ray's first sentence: what is wrong
    return f"Ray's token on this machine cannot be used: {said}"


def _ask_token(address: str) -> str:
    return (
        f"the Ray cluster at {address} asks for its token (token authentication); copy the "
        "head node's ~/.ray/auth_token to this machine, or set RAY_AUTH_TOKEN, and run again"
    )


def _token_mode(ray: Any, address: str) -> None:
    """Join a cluster that asks for a token with this machine's Ray token, or say in one line
    what is wrong.

    Ray 2.59 and later start a cluster with token authentication on (``ray start --head``, once a
    token exists in ``~/.ray/auth_token``), but a driver given its address stays in the mode
    ``RAY_AUTH_MODE`` says, off when unset: it is refused, after 20 s of retries, as "failed to
    connect". So ask the cluster (GCS) first. When it refuses us for a token and ``RAY_AUTH_MODE``
    is unset, switch this process to token mode if a token is here (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and ask again; a token it still refuses is
    not the cluster's. In token mode with no token at all Ray's client aborts the process (a
    failed C++ check), so that is said before asking."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if address.startswith("ray://"):  # Ray Client: no GCS to ask here
        return
    try:  # Ray's own calls (ray start --head uses the second); absent before Ray 2.52
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]
    except ImportError:
        return
    if mode is not None and mode.lower() != "token":  # the user turned tokens off
        if _refused(ray, address):
            raise MocapError(
                f"the Ray cluster at {address} asks for its token, and RAY_AUTH_MODE={mode} "
                "turns tokens off here; unset RAY_AUTH_MODE (or set it to token) and run again"
            )
        return
    if mode is not None and not AuthenticationTokenLoader.instance().has_token(
        ignore_auth_mode=True
    ):
        raise MocapError(_ask_token(address))
    if not _refused(ray, address):
        return
    if mode is None:
        quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
        was, quiet.disabled = quiet.disabled, True  # its "opt out with RAY_AUTH_MODE" warning
        try:
            enabled = maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        finally:
            quiet.disabled = was
        if not enabled:
            raise MocapError(_ask_token(address))
        if not _refused(ray, address):
            log.info("the Ray cluster at %s uses token authentication: joining with this "
                     "machine's token", address)  # fmt: skip
            return
    raise MocapError(
        f"the Ray cluster at {address} refuses this machine's Ray token (RAY_AUTH_TOKEN, "
        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): it is not the cluster's; copy the head "
        "node's ~/.ray/auth_token to this machine and run again"
    )


GCS_WAIT = "5"  # seconds Ray's client may wait for the GCS to answer (Ray's own: 60)
# what Ray's client says when the port is not a GCS: silent or not gRPC, another gRPC service
NOT_GCS = ("Timed out while waiting for GCS", "Method not found")


def _refused(ray: Any, address: str) -> bool:
    """Whether the cluster's GCS at ``address`` refuses this process for its token; MocapError
    when something answers there that is not a Ray GCS (another port of the head: the
    dashboard's, Ray Client's), instead of Ray's minutes of retries."""
    from ray._raylet import Config, GcsClient  # type: ignore[attr-defined]

    key = "RAY_py_gcs_connect_timeout_s"
    was = os.environ.get(key)
    os.environ[key] = GCS_WAIT
    Config.initialize("")  # Ray reads its settings from the environment here
    try:
        with native_stderr_silenced():  # Ray's C++ client logs the refusal itself, as a warning
            GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        return True
    except Exception as exc:  # noqa: BLE001 (any other answer: ray.init says what is wrong)
        if any(why in str(exc) for why in NOT_GCS):
            raise MocapError(
                f"something answers at {address} but it is not a Ray cluster's GCS: give the "
                "port `ray start --head` printed (6379 unless --port; Ray Client's 10001 takes "
                "ray://HOST:10001)"
            ) from None
        return False
    finally:
        if was is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = was
        Config.initialize("")
    return False


def _plan(ray: Any, args: argparse.Namespace, clips: int) -> tuple[int, float]:
    """(workers, GPUs per worker) from the flags and the cluster's free resources: never more
    workers than it can place now (a worker it cannot place would hold its clips forever)."""
    have, free = ray.cluster_resources(), ray.available_resources()
    gpus = have.get("GPU", 0.0)
    on_gpus = gpus > 0 and getattr(args, "device", "auto") != "cpu"
    per = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if on_gpus else 0.0)
    if per < 0 or (args.workers is not None and args.workers < 1) or _retries(args) < 0:
        raise MocapError("--workers must be 1 or more, --gpus-per-worker and --retries 0 or more")
    if per > 0 and gpus < per:
        raise MocapError(
            f"--gpus-per-worker {per:g} but the Ray cluster has {gpus:g} GPUs; "
            "pass --gpus-per-worker 0 to run on CPUs"
        )

    def room(free: dict[str, float]) -> int:
        cpus = int(free.get("CPU", 0.0))  # each worker holds one CPU
        return min(cpus, int(free.get("GPU", 0.0) // per)) if per > 0 else cpus

    fits, want = room(free), min(args.workers or room(have), clips)
    deadline = time.monotonic() + SETTLE

    def held(free: dict[str, float]) -> bool:  # CPUs or GPUs in use by someone
        return any(free.get(k, 0.0) < have.get(k, 0.0) for k in ("CPU", "GPU"))

    while fits < want and held(free) and time.monotonic() < deadline:
        time.sleep(0.2)  # held by workers of a batch that just ended: Ray frees them shortly
        free = ray.available_resources()
        fits = room(free)
    if fits < 1:
        what = f"{per:g} GPU and 1 CPU" if per > 0 else "1 CPU"
        raise MocapError(
            f"the Ray cluster has no room for a worker now (each needs {what}; free: "
            f"{free.get('CPU', 0.0):g} CPUs, {free.get('GPU', 0.0):g} GPUs); wait for its other "
            "jobs or add nodes"
        )
    if args.workers is not None and args.workers > fits:
        log.warning("--workers %d, but the Ray cluster has room for %d now: %d workers",
                    args.workers, fits, fits)  # fmt: skip
    return min(args.workers or fits, fits, clips), per


def _actor_env(cluster_gpus: float, per: float) -> dict[str, Any]:
    """Ray options of a worker: one with no GPU reserved sees none (else Ray leaves every GPU
    visible and `--device auto` puts all the workers on the first)."""
    if per > 0 or cluster_gpus <= 0:
        return {}
    return {"runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}


def _clear_dead(out: Path, clip: str, where: _Place | None) -> None:
    """Remove what a dead worker left of ``clip``: its staging and lock file, or undo its
    half-done publish (under the clip's lock, unless a live process holds it and cleans up)."""
    from mocap.paths import pid_alive
    from mocap.pipeline.staging import ClipBusy, clean_stale, clip_lock

    if where is None:  # it died before it could start a clip
        return
    pid, here = where.pid, where.host == socket.gethostname()
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


def _retries(args: argparse.Namespace) -> int:
    return RETRIES if args.retries is None else int(args.retries)


def _where(ray: Any, worker: _Worker) -> _Place | None:
    try:
        pid, host, node = ray.get(worker.where, timeout=5)
    except Exception:  # the actor died before answering: it never started a clip
        return None
    return _Place(int(pid), str(host), str(node))


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
    lines = _lines(exc)
    why = f"{type(exc).__name__}: {lines[-1] if lines else 'killed, or out of memory'}"[:300]
    if getattr(exc, "actor_init_failed", False) or "raised in its creation task" in str(exc):
        raise MocapError(f"Ray workers could not start ({why}); is mocap installed on every node?")
    return why


def _failed(clip: Path, name: str, error: str) -> WorkerReport:
    from mocap.pipeline.batch_cmd import ClipOutcome, ClipStatus

    return WorkerReport(ClipOutcome(ClipStatus(str(clip), name, "failed", error=error)))


def _no_engines() -> Any:
    raise RuntimeError("a finished clip needs no model")


def _say(name: str, line: "LogLine") -> None:
    """Print a worker's line on the driver's console (above the bar), prefixed by its clip:
    the clips in flight interleave, unlike in the sequential batch."""
    prefixed = line.message.startswith(f"{name}: ")
    log.log(line.level, "%s", line.message if prefixed else f"{name}: {line.message}")


def _unseen(lines: list["LogLine"], said: list["LogLine"]) -> list["LogLine"]:
    """``lines`` less those already printed: ``said``, in the same order, some perhaps missing
    (a call to the feed that failed is dropped)."""
    left, rest = iter(said), []
    expected = next(left, None)
    for line in lines:
        if line == expected:
            expected = next(left, None)
        else:
            rest.append(line)
    return rest


@dataclass
class _Clip:
    """A clip the driver hands out: its attempt (0 first), the lines of its earlier attempts with
    the notes on them, and the lines its attempt in flight sent so far."""

    clip: Path
    name: str
    attempt: int = 0
    earlier: list["LogLine"] = field(default_factory=list)
    live: list["LogLine"] = field(default_factory=list)


class _Driver:
    """The driver's loop: clips to idle workers, progress drained from the feed, results in."""

    def __init__(self, ray: Any, args: argparse.Namespace, batch: "Batch", todo: list[_Clip]):
        from mocap.pipeline.batch_progress import BatchProgress

        workers, gpus = _plan(ray, args, len(todo))
        log.info("converting %d clips on %d Ray workers (%g GPUs each)", len(todo), workers, gpus)
        self.ray, self.batch, self.retries = ray, batch, _retries(args)
        self.feed: Any = ray.remote(num_cpus=0)(ProgressFeed).remote()
        self.said: Any = self.feed.drain.remote()  # the drain in flight
        options = _actor_env(ray.cluster_resources().get("GPU", 0.0), gpus)
        self.remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0, **options)(ClipWorker)
        self.idle = [self.start() for _ in range(workers)]
        self.queue, self.running = deque(todo), dict[Any, tuple[_Worker, _Clip]]()
        self.progress = BatchProgress(len(todo), batch.show)
        exceptions = ray.exceptions
        self.died = (exceptions.RayActorError, exceptions.WorkerCrashedError,
                     exceptions.OutOfMemoryError, exceptions.NodeDiedError)  # fmt: skip

    def start(self) -> _Worker:
        level, cwd = log.getEffectiveLevel(), os.getcwd()
        actor = self.remote.remote(self.batch.settings, level, cwd, self.feed)
        return _Worker(actor, actor.where.remote())

    def run(self) -> None:
        from mocap.pipeline.batch_cmd import ClipStatus

        batch = self.batch
        with self.progress:
            while self.queue or self.running:
                while self.queue and self.idle:
                    worker, clip = self.idle.pop(), self.queue.popleft()
                    if clip.attempt == 0:  # the row says "interrupted" until it comes back
                        batch.rows.append(
                            ClipStatus(str(clip.clip), clip.name, "interrupted",
                                       str(batch.out / clip.name))
                        )  # fmt: skip
                    ref = worker.actor.convert.remote(  # absolute: a worker's cwd may differ
                        str(clip.clip.absolute()), clip.name, str(batch.out.absolute()),
                        batch.started, clip.attempt,
                    )  # fmt: skip
                    self.running[ref] = (worker, clip)
                ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=POLL)
                self.drain()
                for ref in ready:
                    self.finish(ref, *self.running.pop(ref))

    def drain(self, wait: float = 0.0, also: _Clip | None = None) -> None:
        """Frames and lines the workers sent, for their attempts in flight (and ``also``'s); a
        look that finds the drain in flight unfinished leaves it for the next look."""
        if self.feed is None:
            return
        ready, _ = self.ray.wait([self.said], num_returns=1, timeout=wait)
        if not ready:
            return
        try:
            frames, lines = self.ray.get(self.said)
        except self.ray.exceptions.RayError as exc:  # the feed died: no more progress, no harm
            log.debug("progress feed lost: %s", exc)
            self.feed = None
            return
        self.said = self.feed.drain.remote()
        current = {c.name: c for _, c in self.running.values()} | (
            {also.name: also} if also else {}
        )
        for (name, attempt), count in frames.items():
            if name in current and current[name].attempt == attempt:
                self.progress.add_frames(name, count)
        for name, attempt, line in lines:
            if name in current and current[name].attempt == attempt:
                current[name].live.append(line)
                _say(name, line)

    def finish(self, ref: Any, worker: _Worker, clip: _Clip) -> None:
        """Record the clip whose task ``ref`` ended (or queue its retry when its worker died)."""
        from mocap.pipeline.clip_log import note

        batch = self.batch
        try:
            report: WorkerReport | None = self.ray.get(ref)
        except self.died as exc:
            report = self.lost(worker, clip, exc)
            if report is None:
                return
        except self.ray.exceptions.RayError as exc:  # the clip's task itself broke
            self.idle.append(worker)
            report = _failed(clip.clip, clip.name, f"internal error on its worker ({_why(exc)})")
        else:
            self.idle.append(worker)
        assert report is not None
        outcome, row = report.outcome, report.outcome.row
        for line in _unseen(outcome.log, clip.live):  # the lines that had not come through the feed
            _say(clip.name, line)
        row.source = str(clip.clip)  # as the driver named them, not as the worker saw them
        row.output = str(batch.out / clip.name)
        batch.model = report.model or batch.model
        place = _where(self.ray, worker)  # which machine converted it, in the clip's log
        here = (
            [note(logging.INFO, f"{clip.name}: converted by the Ray worker {place}")]
            if place
            else []
        )
        batch.record(outcome, [*clip.earlier, *outcome.log, *here])
        if outcome.load_failed:
            raise MocapError(row.error)  # stop: the other clips cannot run either
        batch.save()
        self.progress.finish(clip.name, row.frames)

    def lost(self, worker: _Worker, clip: _Clip, exc: Exception) -> WorkerReport | None:
        """``clip``'s worker died: clean up after it, start another; retry the clip (None) or,
        past --retries, the report of its failure."""
        from mocap.pipeline.clip_log import note, write_clip_log

        why, place = _why(exc), _where(self.ray, worker)
        self.drain(wait=2.0, also=clip)  # what the dead attempt said, for the clip's log
        _clear_dead(self.batch.out, clip.name, place)
        self.idle.append(self.start())
        self.progress.restart(clip.name)
        clip.earlier, clip.live = [*clip.earlier, *clip.live], []
        clip.attempt += 1
        if clip.attempt <= self.retries:
            worker_is = f"its worker ({place})" if place else "its worker"
            message = (f"{clip.name}: {worker_is} died ({why}); retrying on another worker "
                       f"(attempt {clip.attempt + 1} of {self.retries + 1})")  # fmt: skip
            log.warning("%s", message)
            clip.earlier.append(note(logging.WARNING, message))
            write_clip_log(self.batch.out, clip.name, clip.earlier)
            self.queue.appendleft(clip)
            return None
        error = f"its worker died {clip.attempt} times ({why}); see Ray's logs"
        return _failed(clip.clip, clip.name, error)

    def close(self) -> None:
        """Stop every worker (and the feed); remove what the ones in flight left."""
        self.progress.close()
        for worker in [*self.idle, *(w for w, _ in self.running.values())]:
            self.ray.kill(worker.actor, no_restart=True)
        if self.feed is not None:
            self.ray.kill(self.feed, no_restart=True)
        for worker, clip in self.running.values():  # Ctrl-C / a failed load: nothing half-written
            _clear_dead(self.batch.out, clip.name, _where(self.ray, worker))


def _schedule(
    ray: Any, args: argparse.Namespace, batch: "Batch", todo: list[tuple[Path, str]]
) -> None:
    driver = _Driver(ray, args, batch, [_Clip(clip, name) for clip, name in todo])
    try:
        driver.run()
    finally:
        driver.close()
