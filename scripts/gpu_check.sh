#!/usr/bin/env bash
# The one command that validates `run` on a GPU (the workplace `device` tool), in under
# 10 minutes, from the repo root:
#   1. here, once:   bash scripts/fetch_wheels.sh      (fills .whl/, git-ignored)
#   2. device run:   command "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 600
# That machine has torch but not diffusers/transformers; the wheels travel in .whl/.
# It prints one JSON summary (also $OUT/gpu_check.json) and PASSED or FAILED.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
python3 scripts/gpu_check.py --out "${OUT:-/tmp/gpu_check}" "$@"
