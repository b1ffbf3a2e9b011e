"""scripts/gpu_check.py, CPU-sized: the parts of the GPU check that need no GPU run here, so the
script a lent GPU machine will run cannot rot (its JSON summary and verdict included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_its_cpu_sized_checks_and_passes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick"]
    cmd += ["--out", str(tmp_path), "--only", "vae_oom", "--only", "devices"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "GPU CHECK PASSED"
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    vae = summary["checks"]["vae_oom"]
    assert vae["points"] == [[1, False], [2, True]] and vae["upcast_decode_failed"]
    assert vae["vae_dtype_after"] == "torch.float16" and vae["prompts_done"] == [0, 1]
    assert summary["checks"]["devices"]["parent_cuda_initialized"] is False
    assert summary["libraries"]["torch"] and summary["device"]


def test_gpu_check_refuses_a_machine_without_cuda_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2 and "No CUDA device" in done.stdout and not done.stderr.strip()
