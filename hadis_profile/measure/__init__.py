"""Everything that touches torch, diffusers or metric models.

Nothing here is imported by the rest of the package at import time: the CLI
imports these modules inside the commands that need them, so ``hadis-profile
--help``, ``pareto`` and ``resolve`` never pay for (or require) torch.

* :mod:`.tiny`       tiny random-weight pipelines of real families, for tests and demos
* :mod:`.pipelines`  loading a zoo ``ModelSpec`` into a diffusers pipeline, offline-first
* :mod:`.latency`    the batch-size latency sweep (thin timer, OOM-aware)
* :mod:`.generate`   K images per prompt with fixed per-(prompt, image) seeds
* :mod:`.scorers`    CLIP score, PickScore, FID feature extractors, discriminators, plug-ins
* :mod:`.profiler`   the ``run`` orchestration over a run store
* :mod:`.demo`       ``hadis-profile demo``: synthetic or tiny run -> Pareto table
"""
