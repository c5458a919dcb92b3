"""`mocap weights`: downloads from a local HTTP server (resume, checksums, archives, offline)."""

import hashlib
import http.server
import io
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mocap import cli, weights
from mocap.errors import MocapError
from mocap.weights import WeightFile

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MB, so the transfer spans several reads


@dataclass
class Server:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: list[str | None] = field(default_factory=list)
    honour_range: bool = True
    delay: float = 0.0
    cut_after: int | None = None  # send only this many bytes, then drop the connection


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = state.files.get(self.path)
            range_header = self.headers.get("Range")
            state.ranges.append(range_header)
            time.sleep(state.delay)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if range_header and state.honour_range:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            end = len(body) if state.cut_after is None else start + state.cut_after
            self.wfile.write(body[start:end])

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # no 4D-Humans cache of the real user
    monkeypatch.delenv("MOCAP_SMPL", raising=False)
    return tmp_path / "cache"


def _register(monkeypatch: pytest.MonkeyPatch, *entries: WeightFile) -> None:
    for entry in entries:
        monkeypatch.setitem(weights.REGISTRY, entry.name, entry)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_full_download_verifies_and_renames(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/w.bin"] = PAYLOAD
    _register(monkeypatch, WeightFile("t", "sub/w.bin", "test", url=f"{server.url}/w.bin", sha256=_sha(PAYLOAD)))  # fmt: skip
    path = weights.resolve("t", progress=False)
    assert path == home / "sub" / "w.bin" == weights.path_for("t")
    assert path.read_bytes() == PAYLOAD
    assert not list(path.parent.glob("*.partial"))
    assert server.ranges == [None]
    # Present: resolved without touching the network again.
    assert weights.resolve("t", progress=False) == path and len(server.ranges) == 1


@pytest.mark.parametrize("honour_range", [True, False])
def test_resume_after_a_partial_file(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch, honour_range: bool
) -> None:
    server.files["/w.bin"] = PAYLOAD
    server.honour_range = honour_range
    _register(monkeypatch, WeightFile("t", "w.bin", "test", url=f"{server.url}/w.bin", sha256=_sha(PAYLOAD)))  # fmt: skip
    half = len(PAYLOAD) // 2
    (home).mkdir(parents=True)
    (home / "w.bin.partial").write_bytes(PAYLOAD[:half])
    path = weights.resolve("t", progress=False)
    assert path.read_bytes() == PAYLOAD  # whether the server resumed or restarted
    assert server.ranges == [f"bytes={half}-"]
    # A complete .partial (interrupted just before the rename) is finished without refetching data.
    path.unlink()
    (home / "w.bin.partial").write_bytes(PAYLOAD)
    assert weights.resolve("t", progress=False).read_bytes() == PAYLOAD


def test_parallel_jobs_download_once(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/w.bin"] = PAYLOAD
    server.delay = 0.3
    _register(monkeypatch, WeightFile("t", "w.bin", "test", url=f"{server.url}/w.bin", sha256=_sha(PAYLOAD)))  # fmt: skip
    results: list[bytes] = []
    jobs = [
        threading.Thread(
            target=lambda: results.append(weights.resolve("t", progress=False).read_bytes())
        )
        for _ in range(3)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert results == [PAYLOAD] * 3
    assert len(server.ranges) == 1  # the others waited for the lock, then found the file


def test_broken_connection_keeps_the_partial_file_for_resume(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/w.bin"] = PAYLOAD
    server.cut_after = 300_000
    _register(monkeypatch, WeightFile("t", "w.bin", "test", url=f"{server.url}/w.bin", sha256=_sha(PAYLOAD)))  # fmt: skip
    with pytest.raises(MocapError, match="run the same command again") as err:
        weights.resolve("t", progress=False)
    assert "\n" not in str(err.value)
    assert (home / "w.bin.partial").stat().st_size == 300_000 and not (home / "w.bin").exists()
    server.cut_after = None
    assert weights.resolve("t", progress=False).read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=300000-"]


def test_checksum_mismatch_is_refused_and_deleted(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/w.bin"] = PAYLOAD
    _register(monkeypatch, WeightFile("t", "w.bin", "test", url=f"{server.url}/w.bin", sha256="0" * 64))  # fmt: skip
    with pytest.raises(MocapError, match="checksum mismatch") as err:
        weights.resolve("t", progress=False)
    assert _sha(PAYLOAD) in str(err.value)
    assert not (home / "w.bin").exists() and not (home / "w.bin.partial").exists()


def test_unknown_hash_is_printed_for_pinning(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/w.bin"] = PAYLOAD
    _register(monkeypatch, WeightFile("t", "w.bin", "test", url=f"{server.url}/w.bin"))
    weights.resolve("t", progress=False)
    assert _sha(PAYLOAD) in capsys.readouterr().err


def test_unreachable_and_missing_urls_give_one_line_errors(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(
        monkeypatch,
        WeightFile("offline", "a.bin", "test", url="http://127.0.0.1:9/a.bin"),  # discard port
        WeightFile("gone", "b.bin", "test", url=f"{server.url}/b.bin"),
    )
    with pytest.raises(MocapError) as err:
        weights.resolve("offline", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "http://127.0.0.1:9/a.bin" in message and str(home / "a.bin") in message
    with pytest.raises(MocapError, match="HTTP 404") as err:
        weights.resolve("gone", progress=False)
    assert str(home / "b.bin") in str(err.value)
    with pytest.raises(MocapError, match="download gone"):
        weights.resolve("gone", download=False)
    with pytest.raises(MocapError, match="unknown weights"):
        weights.resolve("nope")


def _tar_gz(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def test_archive_is_extracted_and_members_resolve(
    server: Server, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = "logs/train/multiruns/hmr2/0/checkpoints/epoch=35-step=1000000.ckpt"
    server.files["/hmr2_data.tar.gz"] = _tar_gz({ckpt: b"weights", "data/SMPL_to_J19.pkl": b"j19"})
    archive = WeightFile("arch", "hmr2", "test", url=f"{server.url}/hmr2_data.tar.gz", unpacks=True)
    _register(
        monkeypatch,
        archive,
        WeightFile("ckpt", f"hmr2/{ckpt}", "test", archive="arch"),
        WeightFile("j19", "hmr2/data/SMPL_to_J19.pkl", "test", archive="arch"),
        WeightFile("absent", "hmr2/data/nothing.npy", "test", archive="arch"),
    )
    assert weights.resolve("ckpt", progress=False).read_bytes() == b"weights"
    assert weights.resolve("j19", progress=False).read_bytes() == b"j19"
    assert len(server.ranges) == 1  # one archive download serves every member
    assert not (home / "downloads" / "hmr2_data.tar.gz").exists()
    with pytest.raises(MocapError, match="did not contain"):
        weights.resolve("absent", progress=False)
    # Offline, an archive placed by hand where the error message says is used as is.
    (home / "hmr2").rename(home / "old")
    placed = home / "downloads" / "hmr2_data.tar.gz"
    placed.write_bytes(server.files["/hmr2_data.tar.gz"])
    server.files.clear()
    assert weights.resolve("j19", progress=False).read_bytes() == b"j19"


@pytest.mark.parametrize(
    "evil",
    [
        _tar_gz({"data/ok.txt": b"ok", "../../escaped.txt": b"x"}),
        _tar_gz({"data/ok.txt": b"ok", "/tmp/escaped.txt": b"x"}),
        _tar_gz({"data/ok.txt": b"ok"}, symlinks={"data/escaped.txt": "/etc/passwd"}),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_archive_with_path_traversal_is_refused(
    server: Server, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evil: bytes
) -> None:
    server.files["/evil.tar.gz"] = evil
    _register(monkeypatch, WeightFile("evil", "hmr2", "test", url=f"{server.url}/evil.tar.gz", unpacks=True))  # fmt: skip
    with pytest.raises(MocapError, match="refusing to extract"):
        weights.resolve("evil", progress=False)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (home / "hmr2" / "data" / "ok.txt").exists()


def test_manual_files_say_where_to_put_them(home: Path) -> None:
    with pytest.raises(MocapError, match="smpl.is.tue.mpg.de") as err:
        weights.resolve("smpl")
    assert str(home / "smpl" / "SMPL_NEUTRAL.pkl") in str(err.value)
    with pytest.raises(MocapError, match="mocap train hmr") as err:
        weights.resolve("featup-deformable")
    assert str(home / "checkpoints" / "featup-deformable.safetensors") in str(err.value)
    # The HMR2.0 files come from the release archive named in the spec.
    assert weights.REGISTRY["hmr2-data"].url == (
        "https://people.eecs.berkeley.edu/~jathushan/projects/4dhumans/hmr2_data.tar.gz"
    )
    assert weights.path_for("hmr2-checkpoint") == (
        home / "hmr2/logs/train/multiruns/hmr2/0/checkpoints/epoch=35-step=1000000.ckpt"
    )
    assert weights.path_for("hmr2") == weights.path_for("hmr2-checkpoint")  # `--model hmr2`
    with pytest.raises(MocapError, match="hmr2-data"):
        weights.resolve("hmr2", download=False)


def test_cli_list_path_and_download(
    server: Server,
    home: Path,
    smpl_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"weights": cli.SUBCOMMANDS["weights"]})
    server.files["/w.bin"] = PAYLOAD
    _register(monkeypatch, WeightFile("t", "w.bin", "test file", url=f"{server.url}/w.bin"))
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    lines = {
        line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")
    }
    assert "missing" in lines["t"] and "manual" in lines["smpl"] and "hmr2-checkpoint" in lines
    assert str(home / "w.bin") in lines["t"]

    assert cli.main(["weights", "path", "t"]) == 1
    assert capsys.readouterr().out.strip() == str(home / "w.bin")
    assert cli.main(["weights", "download", "t"]) == 0
    capsys.readouterr()
    assert cli.main(["weights", "path", "t"]) == 0
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert any(
        line.startswith("t ") and "present" in line and "1.0 MB" in line
        for line in out.splitlines()
    )

    # SMPL given through MOCAP_SMPL counts as present; a manual download fails as one line.
    monkeypatch.setenv("MOCAP_SMPL", str(smpl_dir / "SMPL_NEUTRAL.pkl"))
    assert cli.main(["weights", "path", "smpl"]) == 0
    assert capsys.readouterr().out.strip() == str(smpl_dir / "SMPL_NEUTRAL.pkl")
    monkeypatch.delenv("MOCAP_SMPL")
    assert cli.main(["weights", "download", "smpl"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mocap: error:") and err.count("\n") == 1 and "register" in err
