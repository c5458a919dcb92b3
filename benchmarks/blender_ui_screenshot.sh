#!/usr/bin/env bash
# A real screenshot of the add-on's panel: a windowed Blender under Xvfb (software GL) in a Debian
# chroot, the extension installed from the zip `mocap blender-addon` builds, the 3D view's sidebar
# on the mocap tab. With --run it also presses Run on a short clip (the lite model, this repo's
# `mocap` CLI) and captures the imported armatures in the camera view over the footage; with
# --retarget, the panel set to retarget onto a selected Rigify metarig with a saved bone map; with
# --reload, File > New mid-run (shot.json says whether the child stopped; no picture).
#
#   sudo bash benchmarks/blender_ui_screenshot.sh [--run | --retarget | --reload] [OUT_DIR]  (default docs/img; from the repo root)
#
# Writes OUT_DIR/blender_panel.png (and with --run blender_running.png, blender_run.png), cropped
# to the 3D view. Needs root (debootstrap, chroot, bind mounts) and debootstrap on the host; the
# host's packages are not touched. The first call builds the chroot (about 2 GB, a few minutes).
# SUITE: the Debian suite (default sid, Blender 5.2, which reads the .blend files mocap writes
# with bpy 5.0; trixie has Blender 4.3, which draws the panel but cannot read them).
# ROOT: the chroot (default /tmp/blender-ui/$SUITE). VIDEO: the clip (default the shared 5-frame
# street clip). SCREEN: the Xvfb screen (default 1440x900). Not part of the tests or CI.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUN=()
case "${1:-}" in --run | --retarget | --reload) RUN=("$1"); shift ;; esac
DEST=$(realpath -m "${1:-docs/img}")
SUITE=${SUITE:-sid}
ROOT=${ROOT:-/tmp/blender-ui/$SUITE}
VIDEO=${VIDEO:-$REPO/../shared/data/videos/street_5frames_540p.mp4}
[ -f "$VIDEO" ] || { echo "blender_ui_screenshot: no video at $VIDEO"; exit 1; }
VIDEO=$(realpath "$VIDEO")
SCREEN=${SCREEN:-1440x900}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PYHOME=$(dirname "$(sed -n 's/^home = //p' .venv/pyvenv.cfg)")  # the venv's Python, bound in
[ "$(id -u)" -eq 0 ] || { echo "blender_ui_screenshot: needs root (chroot)"; exit 1; }

if [ ! -x "$ROOT/usr/bin/blender" ]; then
    if ! command -v debootstrap >/dev/null; then
        echo "blender_ui_screenshot: debootstrap is missing (apt-get install debootstrap)"
        exit 1
    fi
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # (the mirror's sid Release file may be past its Valid-Until date)
    chroot "$ROOT" apt-get -o Acquire::Check-Valid-Until=false update -q
    # python3-cattr, python3-requests: imported by Blender's extensions add-on, not in its Depends;
    # python3-numpy: imported by its FBX importer (the add-on reads FBX on Blender 4.x)
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends blender xvfb xauth libgl1-mesa-dri libglx-mesa0 imagemagick \
        python3-cattr python3-requests python3-numpy
fi

MOUNTS=()
bind() {  # bind SRC at the same path inside the chroot (read-only unless $2 = rw)
    mkdir -p "$ROOT$1"
    mountpoint -q "$ROOT$1" && return
    mount --bind "$1" "$ROOT$1"
    [ "${2:-ro}" = rw ] || mount -o remount,bind,ro "$ROOT$1"
    MOUNTS=("$ROOT$1" "${MOUNTS[@]}")
}
cleanup() { for m in "${MOUNTS[@]}"; do umount "$m" || true; done; }
trap cleanup EXIT
bind /proc rw
bind /dev rw
bind /dev/pts rw
bind "$REPO"                   # .venv/bin/mocap, which the add-on runs
bind "$PYHOME"
bind "$(dirname "$VIDEO")"

SHOT=/tmp/mocap-shot  # inside the chroot
rm -rf "$ROOT$SHOT" && mkdir -p "$ROOT$SHOT/home"
.venv/bin/mocap blender-addon -o "$ROOT$SHOT/mocap_blender.zip"
cp benchmarks/blender_ui_screenshot.py "$ROOT$SHOT/"
IN=(env -i PATH=/usr/bin:/bin HOME=$SHOT/home LIBGL_ALWAYS_SOFTWARE=1)
# factory preferences saved in the fresh HOME, less the splash screen (Quick Setup) over the view
chroot "$ROOT" "${IN[@]}" blender -b --factory-startup --python-expr \
    "import bpy; bpy.context.preferences.view.show_splash = False; bpy.ops.wm.save_userpref()" \
    >/dev/null
chroot "$ROOT" "${IN[@]}" timeout 600 xvfb-run -a -s "-screen 0 ${SCREEN}x24" \
    blender --python "$SHOT/blender_ui_screenshot.py" -- \
    "$SHOT/mocap_blender.zip" "$REPO/.venv/bin/mocap" "$VIDEO" "$SHOT" "${RUN[@]}" \
    > "$ROOT$SHOT/blender.log" 2>&1 || { tail -20 "$ROOT$SHOT/blender.log"; exit 1; }

mkdir -p "$DEST"
.venv/bin/python - "$ROOT$SHOT" "$DEST" <<'EOF'
import json
import sys
from pathlib import Path

from PIL import Image

shot, dest = Path(sys.argv[1]), Path(sys.argv[2])
info = json.loads((shot / "shot.json").read_text())
if "error" in info:
    sys.exit(f"blender_ui_screenshot: Blender {info['blender']}: {info['error']}")
left, top, width, height = info["view3d"]
s_left, s_top, s_width, s_height = info["sidebar"]
boxes = {  # the 3D view under Blender's top bar; the sidebar's panel alone while running
    "panel": (left, 0, left + width, top + height),
    "running": (s_left, s_top, s_left + s_width, s_top + min(s_height, 320)),
    "result": (left, 0, left + width, top + height),
    "retarget": (s_left, s_top, s_left + s_width, s_top + min(s_height, 420)),
}
names = {"panel": "blender_panel", "running": "blender_running", "result": "blender_run",
         "retarget": "blender_retarget"}
for name in info["shots"]:
    img = Image.open(shot / f"{name}.png").convert("RGB").crop(boxes[name])
    out, tmp = dest / f"{names[name]}.png", dest / f".{names[name]}.png.tmp"
    img.quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
    tmp.rename(out)
    print(f"{out} ({out.stat().st_size // 1024} KB)")
print(json.dumps({k: v for k, v in info.items() if k != "shots"}, indent=1))
EOF
