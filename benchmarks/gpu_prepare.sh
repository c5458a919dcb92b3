#!/usr/bin/env bash
# Fill .gpu/ (ignored by git) with what benchmarks/gpu_check.sh needs on a bare GPU machine that
# has python3 3.12 + torch but no internet: wheels for `mocap run` (av, ultralytics, smplx), the
# test person detector and the shared test data it reads. About 62 MB: carry ".gpu" (the device
# tool carries 64 MiB at most). Run on the development machine, from anywhere:
#   bash benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .gpu/wheels .gpu/data/images .gpu/data/videos .gpu/data/spin_npz
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/wheels \
    av==18.1.0 ultralytics==8.4.190 ultralytics-thop ultralytics-platform smplx==0.1.28
SHARED=${MOCAP_SHARED_DATA:-../shared/data}
for f in coco_val2014_192.jpg coco_val2014_241.jpg coco_val2014_328.jpg; do
    cp "$SHARED/images/$f" .gpu/data/images/
done
cp "$SHARED/videos/walking_crowd_1080p.mp4" .gpu/data/videos/
cp "$SHARED/spin_npz/smpl_mean_params.npz" .gpu/data/spin_npz/
"$PY" - <<'PYEOF'
import importlib.util, shutil
from pathlib import Path
spec = importlib.util.find_spec("fall_detection")  # found, not imported (needs onnxruntime)
src = Path(list(spec.submodule_search_locations)[0]) / "models" / "best.pt"
shutil.copy(src, ".gpu/best.pt")
PYEOF
du -sh .gpu
echo "ready: run the device with carry [\".gpu\"] and command 'bash benchmarks/gpu_check.sh --json \$OUT/gpu_check.json'"
