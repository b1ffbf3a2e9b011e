"""The bounds on every input that sizes work or memory, in one place (docs/limits.md).

A few hundred bytes of input must never cost gigabytes or hours: a YAML file
of nested aliases, a trace whose second arrival is 30,000 years out, a
``--rate 1e12``. Each bound below is far above any real use (the comment says
how far) and is checked *before* the work it sizes starts, with one sentence
that names the input, its size and the limit. Raising a limit is a one-line
change here; the docs and the tests read these constants.

Only the standard library is imported: ``resolve`` and the table loader may
use these too without paying for anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from hadis_profile.errors import InputError, ParameterError

MIB = 1 << 20

# --------------------------------------------------------------------------- YAML (zoo, latency)

#: Largest YAML file read (a zoo, a latency file). Real zoos are a few kB.
MAX_YAML_BYTES = 1 * MIB
#: Deepest nesting of YAML mappings and lists. A zoo entry nests 4 levels
#: (models / entry / scheduler / kwargs); PyYAML recurses once per level.
MAX_YAML_DEPTH = 32
#: Most YAML nodes once every alias is expanded. An alias is a reference, but
#: validating, hashing or printing the document walks it as a copy, so a
#: 600-byte file of nested aliases ("billion laughs") would be 10^9 nodes.
#: A 100-model zoo is about 3,000 nodes.
MAX_YAML_NODES = 100_000

# --------------------------------------------------------------------------- prompt files

#: Largest prompt file read (any format). 2 million DiffusionDB prompts are ~300 MB of text.
MAX_PROMPT_FILE_BYTES = 512 * MIB
#: Most prompts (records) in one prompt file.
MAX_PROMPTS = 5_000_000
#: Longest single prompt, in characters. CLIP reads 77 tokens (~300 characters);
#: a longer prompt is almost surely a wrong column or a file without line breaks.
MAX_PROMPT_CHARS = 10_000

# --------------------------------------------------------------------------- other input files

#: Largest per-prompt input file ``import`` reads (confidences, features, external CSV).
#: The HADIS reference confidence file (20,000 rows) is 0.5 MB.
MAX_INPUT_FILE_BYTES = 1024 * MIB

# --------------------------------------------------------------------------- simulation

#: Largest trace file read. The HADIS/DiffServe MAF traces are 170 kB for 12,000 queries.
MAX_TRACE_BYTES = 512 * MIB
#: Most queries in one simulated workload (trace lines, or rate x duration of a Poisson
#: load): about 1.5 GB and 15 s per policy. A day at 50 queries/s is 4.3 million.
MAX_QUERIES = 5_000_000
#: Largest prompt id in a trace: ids are 64-bit integers (taken modulo the run's prompts).
MAX_PROMPT_ID = 2**63 - 1
#: Most controller ticks one policy's simulation may take (the simulated span divided by
#: ``tick_s``, including the time queued queries take to drain): about 4 s and 300 MB per
#: policy. At the default 1 s tick that is 11.5 days of simulated time.
MAX_TICKS = 1_000_000
#: Most rows of ``windows.csv`` per policy (the simulated span divided by ``window_s``).
MAX_WINDOWS = 100_000
#: Most GPUs in a simulated cluster (the simulator keeps per-GPU state and visits every
#: GPU at each re-plan).
MAX_SIM_GPUS = 10_000

# ------------------------------------------------------------------ measuring and compiling

#: Largest batch size ``run`` times or generates with (HADIS serves up to 32).
MAX_BATCH_SIZE = 1024
#: Most images generated per prompt (HADIS uses 4).
MAX_IMAGES_PER_PROMPT = 1000
#: Most timed (or warm-up) calls per batch size.
MAX_REPS = 100_000
#: Most steps per axis of ``pareto``'s (r, d) grid: (steps + 1)^2 configurations per pair.
MAX_GRID_STEPS = 1000
#: Largest seed any command takes (``--seed``): seeds are 64-bit, and negative ones are
#: refused (NumPy and PyTorch generators take 0 to 2^63 - 1 everywhere).
MAX_SEED = 2**63 - 1
#: Most random-routing seeds ``router fit`` averages (the default is 200).
MAX_RANDOM_SEEDS = 100_000


def at_most(param: str, value: float, limit: float, what: str) -> None:
    """Refuse ``value`` above ``limit`` with a :class:`ParameterError` naming ``param``.

    ``what`` says what the number counts (``"images per prompt"``), for the sentence.
    """
    if value > limit:
        raise ParameterError(
            param, f"{{param}} is {value:,}, more than the limit of {limit:,} {what}."
        )


def check_file_size(path: str | os.PathLike, limit: int, what: str) -> None:
    """Refuse a file larger than ``limit`` bytes before reading it (:class:`InputError`).

    A missing or unreadable file is left to the reader, which says so in its own words.
    """
    try:
        size = Path(path).stat().st_size
    except OSError:
        return
    if size > limit:
        raise InputError(
            f"{what[:1].upper()}{what[1:]} {path} is {size / MIB:,.1f} MiB, more than the "
            f"limit of {limit / MIB:,.0f} MiB."
        )
