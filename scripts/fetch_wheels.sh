#!/usr/bin/env bash
# Download, into .whl/ (git-ignored), every wheel scripts/gpu_check.sh needs on a GPU
# machine that has torch and nothing else we can count on: the measuring stack at the
# versions the test suite runs here, the CLI's own dependencies, and what torch does not
# bring (numpy, Pillow, packaging, psutil). Wheels are for that machine's Python
# (PY_VERSION, default 3.12: `python3 --version` there) on x86-64 Linux.
#
#   PY_VERSION=3.12 bash scripts/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION="${PY_VERSION:-3.12}"
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF "/.whl/" "$exclude" 2>/dev/null || echo "/.whl/" >> "$exclude"
rm -rf .whl && mkdir -p .whl
plat=()
for n in 39 35 34 31 28 27 24 17; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
get() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
        --implementation cp "${plat[@]}" -d .whl "$@"
}
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
pinned=()
for dist in diffusers transformers tokenizers huggingface_hub safetensors accelerate numpy \
            pillow packaging psutil pyyaml regex pydantic pydantic_core typer rich click \
            jsonschema referencing jsonschema_specifications rpds_py; do
    pinned+=("$dist==$(version "$dist")")
done
for spec in "${pinned[@]}" annotated-types typing-inspection typing-extensions shellingham \
            markdown-it-py mdurl pygments attrs tqdm filelock requests idna urllib3 certifi \
            charset-normalizer hf-xet importlib-metadata zipp fsspec; do
    get "$spec"
done
# One version of each distribution, or the install stops.
dupes=$(ls .whl | sed -E 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[ -z "$dupes" ] || { echo "two versions of: $dupes" >&2; exit 1; }
du -sh .whl
