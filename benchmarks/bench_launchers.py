"""What scheduling a unit on Ray costs: the same units in-process and on one local Ray worker.

Runs ``hadis-profile run`` on the tiny zoo's lightest model (``hadis-profile zoo
tiny``: real diffusers code, random weights, 32x32 images, CPU) for N one-image
prompts, once with the in-process launcher and once with ``--launcher ray`` on a
local Ray instance with ONE worker (a custom resource stands in for its GPU),
alternately, ``--repeats`` times. Both do the same serial work, one unit after
another, and the store commits each unit as it arrives, so the time between two
commits is what a unit costs; the difference of its medians is what Ray adds
per unit (shipping the unit, streaming its result back through a Ray generator,
the driver's bookkeeping). Paid once, and reported apart: the worker's start-up
(a process, its imports, its scorers) and the first unit (the model loaded in a
fresh process). Medians over the repeats.

    python benchmarks/bench_launchers.py [--prompts 24] [--repeats 5] [--prompt-chunk 1]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24, help="one-image prompts (units) per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="tiny-sd1-light")
    ap.add_argument(
        "--prompt-chunk", type=int, default=1, help="prompts per Ray call (1: a call per unit)"
    )
    args = ap.parse_args()

    import ray
    import torch

    torch.set_num_threads(1)
    from hadis_profile.measure import profiler as P
    from hadis_profile.measure.launchers.inprocess import InProcessLauncher
    from hadis_profile.measure.launchers.ray import RayLauncher
    from hadis_profile.measure.recorder import Recorder
    from hadis_profile.measure.tiny import build_tiny_zoo

    #: per launcher: (seconds to the first commit, median seconds between commits) per run
    units: dict[str, list[tuple[float, float]]] = {"inprocess": [], "ray": []}
    starts: list[float] = []
    commits: list[float] = []
    record = Recorder.prompt

    def prompt(self, rec):  # every committed unit, stamped
        record(self, rec)
        commits.append(time.perf_counter())

    Recorder.prompt = prompt

    def timed(cls: type, name: str) -> None:
        inner = cls.run

        def run(self, *a, **kw):
            commits.clear()
            t0 = time.perf_counter()
            inner(self, *a, **kw)
            gaps = [b - a for a, b in itertools.pairwise(commits)]
            units[name].append((commits[0] - t0, statistics.median(gaps)))

        cls.run = run

    timed(InProcessLauncher, "inprocess")
    timed(RayLauncher, "ray")
    start = RayLauncher.start

    def started(self, *a, **kw):
        t0 = time.perf_counter()
        workers = start(self, *a, **kw)
        starts.append(time.perf_counter() - t0)
        return workers

    RayLauncher.start = started

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zoo = build_tiny_zoo(root / "zoo")
        prompts = root / "prompts.txt"
        prompts.write_text("".join(f"a photo of object number {i}\n" for i in range(args.prompts)))
        ray.init(
            num_cpus=2,
            resources={"bench_gpu": 1},
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=80 * 2**20,
        )

        def run(i: int, **kw) -> None:
            opts = P.RunOptions(
                zoo=zoo.zoo_path,
                prompts=prompts,
                out=root / f"run{i}-{kw.get('launcher', 'local')}",
                models=[args.model],
                images_per_prompt=1,
                gen_batch=1,
                latency=False,
                router=False,
                device="cpu",
                threads=1,
                scorers=[f"clip_score:{zoo.clip_path}"],
                discriminator="clip",
                prompt_chunk=args.prompt_chunk,
                **kw,
            )
            P.run_profile(opts)

        try:
            for i in range(args.repeats):
                run(i)
                run(i, launcher="ray", ray_resources=["bench_gpu"])
        finally:
            ray.shutdown()

    def med(name: str, i: int) -> float:
        return statistics.median(u[i] for u in units[name])

    print(f"machine: {platform.platform()}; {cpu_model()}; {os.cpu_count()} cores")
    print(f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}")
    print(
        f"{args.prompts} units (one 32x32 image each, {args.model}; {args.prompt_chunk} per Ray "
        f"call), median of {args.repeats} runs each"
    )
    local, remote = med("inprocess", 1), med("ray", 1)
    print(f"per unit, in-process        {local * 1e3:7.1f} ms")
    print(f"per unit, Ray (one worker)  {remote * 1e3:7.1f} ms")
    print(f"Ray overhead per unit       {(remote - local) * 1e3:+7.1f} ms")
    print(
        f"first unit (model load)     {med('inprocess', 0):7.2f} s in-process, "
        f"{med('ray', 0):.2f} s on a fresh Ray worker"
    )
    print(f"Ray worker start-up         {statistics.median(starts):7.2f} s (once per worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
