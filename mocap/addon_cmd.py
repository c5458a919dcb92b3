"""Build the Blender extension: a zip that Blender's "Install from Disk" takes (Blender 4.2+).

Examples:
    mocap blender-addon -o mocap_blender.zip

In Blender: Edit > Preferences > Get Extensions > (menu) Install from Disk..., pick the zip; then
3D view > sidebar (N) > mocap. The add-on runs this `mocap` command (found on PATH, or set its path
in the add-on's preferences) and imports what it writes.
"""

import argparse
import zipfile
from pathlib import Path

from mocap.errors import MocapError

ADDON_DIR = Path(__file__).resolve().with_name("blender_addon")


def addon_files() -> list[Path]:
    """The extension's files: the manifest and the add-on's Python modules."""
    files = sorted(ADDON_DIR.glob("*.py")) + [ADDON_DIR / "blender_manifest.toml"]
    missing = [f.name for f in files if not f.is_file()]
    if missing or len(files) < 2:
        raise MocapError(f"the Blender add-on is incomplete in {ADDON_DIR} (missing {missing})")
    return files


def build_addon_zip(out: Path) -> Path:
    """Write the extension zip to ``out`` (atomically); returns the path."""
    from mocap.paths import atomic_output

    if out.suffix.lower() != ".zip":
        raise MocapError(f"{out}: the extension is a .zip file")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in addon_files():
            zf.write(f, f.name)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("mocap_blender.zip"), metavar="ZIP",
        help="the extension zip to write (default: mocap_blender.zip)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    out = build_addon_zip(args.out)
    print(f"wrote {out} (Blender 4.2+: Preferences > Get Extensions > Install from Disk)")
    return 0
