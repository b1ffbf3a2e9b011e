"""Everything ``hadis-profile run`` can be told, as one plain dataclass.

It travels to worker processes (and remote workers) as is, so it holds only
plain values: paths, numbers, strings and lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hadis_profile.measure.generate import DEFAULT_IMAGES_PER_PROMPT
from hadis_profile.measure.latency import DEFAULT_BATCH_SIZES
from hadis_profile.measure.units import DEFAULT_PROMPT_CHUNK


@dataclass
class RunOptions:
    """Everything ``hadis-profile run`` can be told; defaults are the CLI's."""

    zoo: Path
    prompts: Path
    out: Path
    models: list[str] | None = None
    tags: list[str] | None = None
    limit: int | None = None
    images_per_prompt: int = DEFAULT_IMAGES_PER_PROMPT
    seed: int = 0
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    #: Untimed calls before each batch size's timed ones.
    warmup: int = 1
    #: The most timed calls per batch size; with ``tolerance`` a stable point stops
    #: earlier, after at least ``min_reps`` (6 is the fewest that give the median a
    #: distribution-free 95% interval). ``tolerance=None``: exactly ``reps`` calls.
    reps: int = 20
    min_reps: int = 6
    tolerance: float | None = 0.02
    #: Caps the timed calls' total seconds per batch size (the point says so when cut).
    time_budget_s: float | None = None
    #: Images per generation call; None: the best-throughput feasible batch. A
    #: request is clamped to the largest feasible batch.
    gen_batch: int | None = None
    device: str = "auto"
    gpu: str | None = None
    force: bool = False
    #: None: the zoo's own ``scorers:`` list, else ``clip_score`` (default checkpoint).
    scorers: list[str] | None = None
    discriminator: str = "clip"
    fid: str = "none"
    fid_reference: Path | None = None
    save_images: bool = False
    stages: bool = False
    latency: bool = True
    quality: bool = True
    router: bool = True
    fresh: bool = False
    dry_run: bool = False
    #: ``--dry-run`` only: time batch 1 of each model the store has no latency for
    #: (``--no-probe``: estimate only from stored latencies).
    probe: bool = True
    online: bool = False
    cache_dir: Path | None = None
    threads: int | None = None  # torch intra-op threads (CPU runs); None leaves torch's default
    #: Build each model from its shipped architecture config with random weights instead
    #: of loading its checkpoint: latency, memory and the OOM point only (no quality).
    no_weights: bool = False
    #: ``--devices``: one worker process per entry (``cuda:N`` or ``cpu``); see
    #: :mod:`.launchers.local`.
    devices: list[str] | None = None
    #: Where jobs run: "local" (in this process, or one process per ``devices`` entry)
    #: or "ray" (actors on a Ray cluster; see :mod:`.launchers.ray`).
    launcher: str = "local"
    #: ``launcher="ray"``: the cluster (None: join the local one or start it; "auto";
    #: "ray://host:port"), and the resources each worker takes one of (None: one GPU).
    ray_address: str | None = None
    ray_resources: list[str] | None = None
    #: ``(index, count)``: measure only this shard's deterministic share of the units.
    shard: tuple[int, int] | None = None
    #: Prompts per unit of work that shards and cluster workers hand out.
    prompt_chunk: int = DEFAULT_PROMPT_CHUNK
