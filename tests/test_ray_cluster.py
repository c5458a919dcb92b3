"""`mocap batch --ray HOST:PORT` on a Ray cluster started the way docs/ray.md says (`ray start
--head`, then `ray start --address` for another node), here two nodes of one CPU each on this
machine: the batch, a separate driver process, places one worker on each node, each clip's log
names its node, and motion.npz comes out byte-for-byte as from the sequential batch. The cluster
is left running, as the docs promise; the test stops only its own Ray processes."""

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from mocap.cli import main

pytest.importorskip("ray", reason="ray comes with the dev extra: pip install -e '.[dev]'")

RAY = Path(sys.executable).with_name("ray")
REPO = Path(__file__).resolve().parents[1]
VIDEOS = ("street_5frames_540p", "posetrack_5frames_mpeg4", "walking_crowd_1080p")
TOKENS = importlib.util.find_spec("ray._private.authentication") is not None  # Ray 2.52+


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run([str(RAY), *args], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): a pid reused later has another."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _processes_under(folder: str, port: str) -> dict[int, str]:
    """Processes whose command line names ``folder`` (this cluster's Ray temp folder) or its GCS
    port (the Ray Client server, which ``ray start`` leaves to init), and their descendants
    (Ray's agents rename themselves, ``ray::DashboardAgent``), with their start times."""
    parents, starts, named = {}, {}, set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)], starts[int(entry.name)] = int(fields[1]), fields[19]
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                ours = (
                    folder in arg or re.fullmatch(rf"--address=\S+:{port}", arg) for arg in args
                )
                if any(ours):
                    named.add(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    found, grew = set(named), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found, grew = found | more, bool(more)
    return {pid: starts[pid] for pid in found}


def _ports(*flags: str) -> list[str]:
    """Each flag with a free port: Ray's fixed defaults (10001, 52365) may be another Ray's."""
    return [part for flag in flags for part in (flag, str(_free_port()))]


class Cluster(NamedTuple):
    address: str  # the head's GCS, HOST:PORT
    env: dict[str, str]  # the driver's: RAY_AUTH_MODE unset, as a user's shell has it
    client: int  # the head's Ray Client server port


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and a second node, 1 CPU each (its own temp folder: short, Ray's socket paths are
    limited)."""
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    token = Path(temp) / "auth_token"  # this cluster's own token: ~/.ray is left alone
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_TOKEN_PATH=str(token))
    nodes = dict(env, RAY_AUTH_MODE="token")  # as Ray 2.59+ starts a cluster once a token exists
    address, client = f"127.0.0.1:{_free_port()}", _free_port()
    try:
        _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1],
             "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "false",
             "--ray-client-server-port", str(client), *_ports("--dashboard-agent-listen-port"),
             "--temp-dir", temp, env=nodes)  # fmt: skip
        _ray("start", "--address", address, "--node-ip-address", "127.0.0.1",
             "--num-cpus", "1", "--num-gpus", "0", *_ports("--dashboard-agent-listen-port"),
             env=nodes)  # fmt: skip
        yield Cluster(address, env, client)
    finally:
        ours: dict[int, str] = {}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # before they die (orphans lose their parent), and what they started meanwhile
            ours |= _processes_under(temp, address.split(":")[1])
            for pid, started in ours.items():
                if _start_time(pid) == started:  # still that process, not a reused pid
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
            time.sleep(2.0)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name in VIDEOS:
        (folder / f"{name}.mp4").symlink_to(shared_data / "videos" / f"{name}.mp4")
    return folder


@pytest.fixture(scope="module")
def flags(tmp_path_factory: pytest.TempPathFactory, yolo_weights: Path) -> list[str]:
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(ckpt)]) == 0
    return ["--checkpoint", str(ckpt), "--detector", str(yolo_weights), "--formats", "npz",
            "--end", "0.2", "--device", "cpu", "--no-report"]  # fmt: skip


def _batch(
    clips: Path, out: Path, flags: list[str], *more: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``mocap batch CLIPS -o OUT FLAGS MORE`` in its own process (a driver as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "mocap", "batch", str(clips), "-o", str(out), *flags, *more],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip


def test_two_nodes_each_convert_clips_as_the_sequential_batch(
    cluster: Cluster, clips: Path, flags: list[str], tmp_path: Path
) -> None:
    address, env = cluster.address, cluster.env
    seq, out = tmp_path / "sequential", tmp_path / "cluster"
    done = _batch(clips, seq, flags, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = _batch(clips, out, flags, "--ray", address, "--workers", "2", env=env)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr[-3000:]
    assert "on 2 Ray workers" in ran.stdout + ran.stderr
    if TOKENS:  # refused for the token first, then joined with the one RAY_AUTH_TOKEN_PATH names
        assert f"the Ray cluster at {address} uses token authentication" in ran.stdout + ran.stderr
    # only mocap speaks on the console: no line of Ray's (its client logs the token refusal)
    assert [line for line in ran.stderr.splitlines() if not line.startswith("mocap")] == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted((c["name"], c["status"]) for c in manifest["clips"]) == sorted(
        (name, "done") for name in VIDEOS
    )
    nodes = set()
    for name in VIDEOS:
        assert (out / name / "motion.npz").read_bytes() == (seq / name / "motion.npz").read_bytes()
        by = re.search(r"converted by the Ray worker pid \d+ on .+, Ray node ([0-9a-f]{8})$",
                       (out / "logs" / f"{name}.log").read_text().splitlines()[-2])  # fmt: skip
        assert by is not None, name
        nodes.add(by[1])
    assert len(nodes) == 2  # 1 CPU per node, a worker holds one: one worker on each node
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    # the cluster was running before the batch: it still is, with both nodes
    probe = "import ray; ray.init(address=%r); print(len([n for n in ray.nodes() if n['Alive']]))"
    alive = subprocess.run([sys.executable, "-c", probe % address], capture_output=True,
                           text=True, timeout=120, env=dict(env, RAY_AUTH_MODE="token"))  # fmt: skip
    assert alive.returncode == 0 and alive.stdout.strip().splitlines()[-1] == "2", alive.stderr


ASKS = (
    "the Ray cluster at {address} asks for its token (token authentication); copy the head "
    "node's ~/.ray/auth_token to this machine, or set RAY_AUTH_TOKEN, and run again"
)
REFUSES = (
    "the Ray cluster at {address} refuses this machine's Ray token (RAY_AUTH_TOKEN, "
    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): it is not the cluster's; copy the head node's "
    "~/.ray/auth_token to this machine and run again"
)
OFF = (
    "the Ray cluster at {address} asks for its token, and RAY_AUTH_MODE=disabled turns tokens "
    "off here; unset RAY_AUTH_MODE (or set it to token) and run again"
)
UNREADABLE = (
    "Ray's token on this machine cannot be used: RAY_AUTH_TOKEN_PATH is set but file cannot be "
    "opened or is empty: {file}"
)
NOT_GCS = (
    "something answers at {address} but it is not a Ray cluster's GCS: give the port `ray start "
    "--head` printed (6379 unless --port; Ray Client's 10001 takes ray://HOST:10001)"
)


@pytest.mark.skipif(not TOKENS, reason="Ray before 2.52 has no token authentication")
@pytest.mark.parametrize(
    ("token", "mode", "said"),
    [
        (None, None, ASKS),  # no token anywhere
        (None, "token", ASKS),  # Ray's client would abort the process (a failed C++ check)
        ("other", None, REFUSES),  # switched to token mode, refused again
        ("other", "token", REFUSES),
        ("other", "TOKEN", REFUSES),  # Ray reads the mode in any case
        ("other in RAY_AUTH_TOKEN", None, REFUSES),
        ("cluster's", "disabled", OFF),
        ("a missing file", None, UNREADABLE),  # Ray raised its AuthenticationError: traceback
        ("a missing file", "token", UNREADABLE),
    ],
)
def test_a_token_the_cluster_refuses_is_one_line(
    cluster: Cluster,
    clips: Path,
    flags: list[str],
    tmp_path: Path,
    token: str | None,
    mode: str | None,
    said: str,
) -> None:
    address, env = cluster.address, cluster.env
    home = tmp_path / "home"  # no ~/.ray/auth_token there
    home.mkdir()
    given = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"} | {"HOME": str(home)}
    if token == "other":
        (home / "token").write_text(secrets.token_hex(32))
        given["RAY_AUTH_TOKEN_PATH"] = str(home / "token")
    elif token == "other in RAY_AUTH_TOKEN":
        given["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    elif token == "a missing file":
        given["RAY_AUTH_TOKEN_PATH"] = str(home / "tokn")
    elif token is not None:
        given["RAY_AUTH_TOKEN_PATH"] = env["RAY_AUTH_TOKEN_PATH"]
    if mode is not None:
        given["RAY_AUTH_MODE"] = mode
    ran = _batch(clips, tmp_path / "out", flags, "--ray", address, env=given)
    assert ran.returncode == 1, ran.stderr[-3000:]
    line = "mocap: error: " + said.format(address=address, file=home / "tokn")
    assert ran.stderr.strip().splitlines() == [line], ran.stderr[-3000:]
    assert not (tmp_path / "out" / VIDEOS[0]).exists()


@pytest.mark.skipif(not TOKENS, reason="Ray before 2.52 has no token authentication")
@pytest.mark.parametrize("port", ["Ray Client's", "silent"])
def test_a_port_that_is_not_the_clusters_is_one_line(
    cluster: Cluster, clips: Path, flags: list[str], tmp_path: Path, port: str
) -> None:
    """The head's Ray Client port (gRPC, not the GCS), and a port that takes the connection and
    never answers: one line, not Ray's minutes of retries."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        given = cluster.client if port == "Ray Client's" else silent.getsockname()[1]
        address = f"127.0.0.1:{given}"
        ran = _batch(clips, tmp_path / "out", flags, "--ray", address, env=cluster.env)
    assert ran.returncode == 1, ran.stderr[-3000:]
    assert ran.stderr.strip().splitlines() == ["mocap: error: " + NOT_GCS.format(address=address)]
    assert not (tmp_path / "out" / VIDEOS[0]).exists()
