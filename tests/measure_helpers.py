"""Shared by the tests/test_measure_*.py files: one tiny zoo per test process.

Building it takes a few seconds, so it is built once (lazily, into a temporary
folder removed at exit) and reused by every test module that needs it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def tiny_zoo():
    """The :class:`hadis_profile.measure.tiny.TinyZoo`, built on first use."""
    import torch

    # The CI box has 2 cores that other processes share; one intra-op thread
    # avoids OpenMP spin-wait stalls and is as fast for models this small.
    torch.set_num_threads(1)
    from hadis_profile.measure.tiny import build_tiny_zoo

    root = Path(tempfile.mkdtemp(prefix="hadis-tiny-zoo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_zoo(root / "zoo", seed=0)


@functools.lru_cache(maxsize=8)
def loaded(name: str):
    """A tiny model loaded on the CPU (cached: loading is the slow part)."""
    from hadis_profile.measure.pipelines import load_pipeline
    from hadis_profile.zoo import load_zoo

    tz = tiny_zoo()
    zoo = load_zoo(tz.zoo_path)
    return load_pipeline(zoo.get(name), device="cpu", base_dir=tz.zoo_path.parent)
