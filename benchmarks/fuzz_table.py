"""A long hypothesis run of the table mutator and the resolve() argument fuzzer.

Run: ``python benchmarks/fuzz_table.py [--seconds 30]``. It repeats the suite's
two property tests (``tests/test_table_loader.py``: tables mutated one field at
a time with the hash recomputed; random ``resolve()`` arguments) with fresh
random examples until the time is up, and prints how many examples ran and how
many mutants were accepted. Any failure is raised with hypothesis's minimal
example. The suite runs the same properties with a modest number of examples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from table_mutants import (  # noqa: E402
    check_mutant,
    check_resolve_arguments,
    mutants,
    resolve_arguments,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=200, help="examples per hypothesis run")
    args = ap.parse_args()
    counts = {"mutants": 0, "accepted": 0, "arguments": 0}
    fast = settings(
        max_examples=args.batch,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @fast
    @given(mutants())
    def mutated(mutant) -> None:
        counts["mutants"] += 1
        counts["accepted"] += check_mutant(*mutant)

    @fast
    @given(resolve_arguments())
    def arguments(kwargs) -> None:
        counts["arguments"] += 1
        check_resolve_arguments(kwargs)

    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        mutated()
        arguments()
    print(
        f"{time.monotonic() - t0:.0f} s: {counts['mutants']:,} mutated tables "
        f"({counts['accepted']:,} accepted, {counts['mutants'] - counts['accepted']:,} refused) "
        f"and {counts['arguments']:,} resolve() argument sets; no property failed."
    )


if __name__ == "__main__":
    main()
