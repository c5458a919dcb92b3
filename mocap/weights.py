"""List, download and locate model weights and the SMPL file.

  mocap weights list               every known file: present/missing, size, where it lives
  mocap weights download NAME...   fetch (with resume) and verify; archives are extracted safely
  mocap weights path NAME          print where NAME is (or must be placed)

Files live under the cache folder ``$MOCAP_HOME`` (default ``~/.cache/mocap``). Downloads go to
``<file>.partial`` and resume from there with an HTTP Range request, then are renamed into place.
Files that cannot be downloaded (SMPL's licence, unpublished weights) say where to get them and
the exact path to put them at; so does every download when offline.
"""

import argparse
import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mocap.errors import MocapError
from mocap.paths import mocap_home

CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightFile:
    """One file mocap may need.

    Attributes:
        name: registry key (``mocap weights download NAME``).
        relpath: location under ``mocap_home()`` (for an archive: the folder it is extracted into).
        description: one line for ``mocap weights list``.
        url: where to download it; None when it cannot be downloaded automatically.
        sha256: expected hash; None when the true hash is not known (the computed one is printed).
        archive: name of the archive entry this file is extracted from (then ``url`` is unused).
        unpacks: ``url`` is a .tar(.gz) archive, extracted into ``relpath``.
        manual: what to do when ``url`` is None; ``{path}`` is replaced by the exact path.
        locate: finds the file when it may also live elsewhere (e.g. ``$MOCAP_SMPL``).
    """

    name: str
    relpath: str
    description: str
    url: str | None = None
    sha256: str | None = None
    archive: str | None = None
    unpacks: bool = False
    manual: str = ""
    locate: Callable[[], Path | None] | None = None


def _locate_smpl() -> Path | None:
    from mocap.body.smpl import find_smpl  # local: keeps torch/smplx out of `mocap --help`

    try:
        return find_smpl()
    except MocapError:
        return None


def _locate_blazepose() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BLAZEPOSE_FILE
    return path if path.is_file() else None


BLAZEPOSE_FILE = "modules/pose_landmark/pose_landmark_full.tflite"
HMR2_RUN = "hmr2/logs/train/multiruns/hmr2/0"
HMR2_URL = "https://people.eecs.berkeley.edu/~jathushan/projects/4dhumans/hmr2_data.tar.gz"
FEATUP_URL = "https://marhamilresearch4.blob.core.windows.net/feature-upsampling-public/pretrained"
UNPUBLISHED = (
    "its trained weights are not published yet: train them with `mocap train hmr` or place a "
    "mocap checkpoint at {path}"
)
# sha256=None: the publishers give no hash; the computed one is printed after download to pin here.
# fmt: off
FILES: tuple[WeightFile, ...] = (
    WeightFile("lite", f"mediapipe/{BLAZEPOSE_FILE}",
               "embedded model: BlazePose GHUM 3D full (Apache-2.0), bundled in the mediapipe wheel",
               manual="it ships inside the mediapipe wheel: pip install 'mediapipe==0.10.21'",
               locate=_locate_blazepose),
    WeightFile("hmr2-data", "hmr2", "HMR2.0 release archive (checkpoint, config, mean params, J19 regressor), extracted here",
               url=HMR2_URL, sha256=None, unpacks=True),
    WeightFile("hmr2-checkpoint", f"{HMR2_RUN}/checkpoints/epoch=35-step=1000000.ckpt",
               "HMR2.0 weights (Lightning checkpoint: ViTPose-H backbone + SMPL head)", archive="hmr2-data"),
    WeightFile("hmr2-config", f"{HMR2_RUN}/model_config.yaml", "HMR2.0 model config", archive="hmr2-data"),
    WeightFile("smpl-mean-params", "hmr2/data/smpl_mean_params.npz", "SMPL mean pose/shape/camera (IEF start)",
               archive="hmr2-data"),
    WeightFile("smpl-to-j19", "hmr2/data/SMPL_to_J19.pkl", "extra 19-joint regressor (HMR2.0 keypoints 25..43)",
               archive="hmr2-data"),
    WeightFile("featup-vit-jbu", "featup/vit_jbu_stack_cocostuff.ckpt",
               "FeatUp JBU stack trained on ViT-S/16 (its 4 upsampling stages transplant into ViTPose-H)",
               url=f"{FEATUP_URL}/vit_jbu_stack_cocostuff.ckpt", sha256=None),
    WeightFile("featup-deformable", "checkpoints/featup-deformable.safetensors",
               "the paper's model (ViTPose-H + FeatUp JBU + deformable decoder)", manual=UNPUBLISHED),
    WeightFile("vitpose-deformable", "checkpoints/vitpose-deformable.safetensors",
               "the paper's ablation without FeatUp (ViTPose-H + deformable decoder)", manual=UNPUBLISHED),
    WeightFile("smpl", "smpl/SMPL_NEUTRAL.pkl", "SMPL neutral body model (licensed: manual download)",
               manual="SMPL cannot be downloaded automatically (licence): register at https://smpl.is.tue.mpg.de, "
               "download the neutral model and place it at {path} (or pass --smpl FILE / set MOCAP_SMPL)",
               locate=_locate_smpl),
)
# fmt: on
REGISTRY: dict[str, WeightFile] = {f.name: f for f in FILES}
ALIASES = {"hmr2": "hmr2-checkpoint"}  # the model name as `mocap run --model` spells it


def _entry(name: str) -> WeightFile:
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise MocapError(f"unknown weights '{name}'; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def path_for(name: str) -> Path:
    """Where ``name`` is, or where it must be placed when absent (not downloaded here)."""
    entry = _entry(name)
    found = entry.locate() if entry.locate is not None else None
    return found if found is not None else mocap_home() / entry.relpath


def _marker(entry: WeightFile) -> Path:
    """Written into an archive's folder once it is completely extracted."""
    return mocap_home() / entry.relpath / f".{entry.name}.extracted"


def _is_present(name: str) -> bool:
    entry = _entry(name)
    return _marker(entry).is_file() if entry.unpacks else path_for(name).is_file()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, sha256: str | None = None, progress: bool = True) -> str:
    """Fetch ``url`` to ``dest`` through ``dest.partial``, resuming a previous partial download.

    Returns:
        the sha256 of the file.
    Raises:
        MocapError: unreachable / HTTP error (names the URL and where to place the file by hand),
            or checksum mismatch (the bad download is deleted).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "mocap", **({"Range": f"bytes={have}-"} if have else {})}
    manual = f"download {url} yourself and place it at {dest}"
    try:
        # A fresh opener reads the proxy settings now; urlopen's global one caches the first it saw.
        opener = urllib.request.build_opener()
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=30)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is complete
            response = None
        else:
            raise MocapError(f"cannot download {url} (HTTP {exc.code}); {manual}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MocapError(f"cannot reach {url} ({reason}); {manual}") from exc
    if response is not None:
        with response:
            _receive(response, partial, have, url, dest.name, progress)
    digest = sha256_of(partial)
    if sha256 is not None and digest != sha256.lower():
        partial.unlink()
        raise MocapError(
            f"checksum mismatch for {url} (expected {sha256}, got {digest}); the download was "
            f"deleted: try again, or {manual}"
        )
    os.replace(partial, dest)
    return digest


def _receive(response: Any, partial: Path, have: int, url: str, label: str, progress: bool) -> None:
    """Write the body of ``response`` into ``partial``, appending when it continues at ``have``."""
    from tqdm import tqdm

    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and not content_range.startswith(f"bytes {have}-"):
        partial.unlink(missing_ok=True)
        raise MocapError(
            f"{url} answered with an unexpected range ({content_range}); run the same command "
            "again to download from the start"
        )
    start = have if response.status == 206 else 0  # 200: the server ignored the Range header
    length = response.headers.get("Content-Length")
    total = start + int(length) if length else None
    written = start
    interrupted = f"run the same command again to resume the download of {url}"
    try:
        with (
            open(partial, "ab" if start else "wb") as fh,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=label,
                disable=None if progress else True,
            ) as bar,  # fmt: skip
        ):
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise MocapError(f"the connection broke ({exc}); {interrupted}") from exc
    if total is not None and written != total:
        raise MocapError(f"the download stopped after {written} of {total} bytes; {interrupted}")


def _safe_members(tar: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """Archive members, refusing absolute paths, '..', links and special files."""
    members = []
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise MocapError(
                f"refusing to extract '{member.name}' (unsafe path or link) into {target}; the "
                "archive is not the official one: delete it and download again"
            )
        members.append(member)
    return members


def extract_archive(archive: Path, target: Path) -> None:
    """Extract a .tar(.gz) into ``target`` safely: into a temporary folder, then moved file by file."""
    staging = target.with_name(f".{target.name}.extracting")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            members = _safe_members(tar, target)
            tar.extractall(staging, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise MocapError(f"cannot extract {archive} ({exc}); delete it and download again") from exc
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            out = target / path.relative_to(staging)
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, out)
    shutil.rmtree(staging, ignore_errors=True)


def resolve(name: str, download: bool = True, progress: bool = True) -> Path:
    """Path of ``name``, downloading (and extracting) it first when missing.

    Raises:
        MocapError: missing and cannot be downloaded (says what to do and where to put it).
    """
    entry = _entry(name)
    path = path_for(name)
    if entry.archive is not None:
        if not path.is_file():
            if not download:
                raise MocapError(
                    f"{name} is missing at {path}; run `mocap weights download {entry.archive}`"
                )
            resolve(entry.archive, True, progress)
            if not path.is_file():
                raise MocapError(f"the {entry.archive} archive did not contain {path}; report this")
        return path
    if _is_present(name):
        return path
    if entry.url is None:
        raise MocapError(f"{name} is missing: {entry.manual.format(path=path)}")
    if not download:
        raise MocapError(f"{name} is missing at {path}; run `mocap weights download {name}`")
    with _exclusive(mocap_home() / "downloads" / f".{entry.name}.lock"):
        if not _is_present(name):  # another process may have fetched it while we waited
            _fetch(entry, path, progress)
    return path


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock so parallel jobs never write the same .partial file; the OS releases
    it when the holder exits, so a crashed download leaves no stale lock."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no locking
        yield
        return
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _fetch(entry: WeightFile, path: Path, progress: bool) -> None:
    assert entry.url is not None
    fetched = mocap_home() / "downloads" / Path(entry.url).name if entry.unpacks else path
    if fetched.is_file():  # an archive the user placed by hand
        digest = sha256_of(fetched)
        if entry.sha256 is not None and digest != entry.sha256.lower():
            raise MocapError(
                f"{fetched} has the wrong checksum ({digest}); delete it and try again"
            )
    else:
        digest = download_file(entry.url, fetched, entry.sha256, progress)
    if entry.sha256 is None:
        print(f"sha256 {digest}  {fetched.name} (no pinned hash for {entry.name}; pin this one)", file=sys.stderr)  # fmt: skip
    if entry.unpacks:
        extract_archive(fetched, path)
        _marker(entry).write_text(digest + "\n")
        fetched.unlink()  # the extracted files are what is used; the archive is large


def _human(size: int) -> str:
    exponent = min(max(size, 1).bit_length() - 1, 39) // 10  # B, KB, MB, GB
    return f"{size} B" if exponent == 0 else f"{size / 1024**exponent:.1f} {'_KMG'[exponent]}B"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="show every known file, whether it is present, and where")
    dl = sub.add_parser("download", help="download (and extract) files; resumes partial downloads")
    dl.add_argument("names", nargs="+", metavar="NAME", choices=[*REGISTRY, *ALIASES])
    p = sub.add_parser("path", help="print where a file is or must be placed")
    p.add_argument("name", metavar="NAME", choices=[*REGISTRY, *ALIASES])


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"cache folder: {mocap_home()} (set MOCAP_HOME to move it)")
        for entry in REGISTRY.values():
            present = _is_present(entry.name)
            path = path_for(entry.name)
            size = _human(path.stat().st_size) if present and path.is_file() else "-"
            status = "present" if present else "missing" if entry.url or entry.archive else "manual"
            print(f"{entry.name:<18} {status:<8} {size:>9}  {path}")
            print(f"{'':<18} {entry.description}")
        return 0
    if args.action == "download":
        for name in args.names:
            print(f"{name}: {resolve(name)}")
        return 0
    path = path_for(args.name)
    print(path)
    if not _is_present(args.name):
        entry = _entry(args.name)
        manual = entry.url is None and entry.archive is None  # e.g. SMPL: licensed, placed by hand
        fix = entry.manual.format(path=path) if manual else f"`mocap weights download {args.name}`"
        print(f"({args.name} is missing: {fix})", file=sys.stderr)
        return 1
    return 0
