#!/usr/bin/env bash
# GPU readiness check of the HMR models: CUDA vs CPU fp32 agreement (fp32, bf16), crops/s in
# bf16 and fp16 at batch 64, peak GPU memory, `mocap run` frames/s on the walking-crowd clip.
# Under 5 minutes on one GPU; exit 1 on disagreement (or a broken part). Without CUDA it runs
# the CPU parts, says "no CUDA device" and exits 0. Not part of CI (CI has no GPU).
#
#   bash benchmarks/gpu_check.sh [--json FILE] [--detector YOLO.pt]
#
# On a bare GPU machine without mocap's environment (python3 with torch, nothing else, no
# internet): first run `bash benchmarks/gpu_prepare.sh` on the development machine; it fills
# .gpu/ (wheels for `mocap run`, the test detector, the shared test data) to carry along.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .gpu/wheels ] && ! "$PY" -c "import av, ultralytics" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/mocap_gpu_site .gpu/wheels/*.whl || echo "gpu_check: wheel install failed"
    export PYTHONPATH=/tmp/mocap_gpu_site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .gpu/data ] && [ -z "${MOCAP_SHARED_DATA:-}" ]; then
    export MOCAP_SHARED_DATA=$PWD/.gpu/data
fi
export PYTHONUNBUFFERED=1 MOCAP_HOME=${MOCAP_HOME:-/tmp/mocap_gpu_home}
timeout 295 "$PY" benchmarks/gpu_check.py "$@"
code=$?
[ $code -eq 124 ] && echo "gpu_check: over 5 minutes, stopped"
exit $code
