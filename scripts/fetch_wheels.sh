#!/usr/bin/env bash
# Download the wheels that the GPU machine lacks (it has torch) into .whl/ for
# scripts/gpu_check.sh. Versions match what the test suite runs here.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any)
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${plat[@]}" -d .whl "$@"; }
for spec in "diffusers==$(python3 -c 'import diffusers; print(diffusers.__version__)')" \
            "transformers==$(python3 -c 'import transformers; print(transformers.__version__)')" \
            "tokenizers==$(python3 -c 'import tokenizers; print(tokenizers.__version__)')" \
            "huggingface_hub==$(python3 -c 'import huggingface_hub; print(huggingface_hub.__version__)')" \
            "safetensors==$(python3 -c 'import safetensors; print(safetensors.__version__)')" \
            "accelerate==$(python3 -c 'import accelerate; print(accelerate.__version__)')" \
            regex pyyaml pydantic pydantic-core annotated-types typing-inspection typer rich \
            click shellingham markdown-it-py mdurl pygments jsonschema referencing \
            jsonschema-specifications rpds-py attrs tqdm filelock requests idna urllib3 \
            certifi charset-normalizer hf-xet importlib-metadata zipp; do
    get "$spec"
done
du -sh .whl
