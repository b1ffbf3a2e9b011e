"""Device memory: out-of-memory detection, freeing, and peak memory per measurement.

On CUDA a measurement starts from an emptied allocator cache with reset peak
statistics, so both peaks (``max_memory_allocated``: what tensors needed;
``max_memory_reserved``: what the device had to hold, fragmentation included)
belong to that measurement alone. On the CPU the peak RSS is reset through
``/proc/self/clear_refs`` where Linux allows it, else it is the process-lifetime
peak (``MemoryMonitor.resettable`` says which).

Peaks are reported above a *baseline* taken before the model was loaded, so
whatever else the process holds (scorer models, another model's leftovers,
Python itself) is not charged to the model.
"""

from __future__ import annotations

import gc
import re
import resource
import sys
from dataclasses import dataclass


def is_oom(exc: BaseException) -> bool:
    """True for CUDA (and CPU allocator) out-of-memory errors, whatever their class."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None:
        oom_types = tuple(
            t
            for t in (
                getattr(torch, "OutOfMemoryError", None),
                getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None),
            )
            if isinstance(t, type)
        )
        if oom_types and isinstance(exc, oom_types):
            return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return any(
            s in msg
            for s in (
                "out of memory",
                "can't allocate memory",
                "alloc_failed",
                "failed to allocate",
            )
        )
    return False


def free_memory(device: str = "cpu") -> None:
    """Collect garbage and give cached CUDA blocks back, so the next point starts clean."""
    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


_HWM = re.compile(r"VmHWM:\s+(\d+)\s+kB")
_RSS = re.compile(r"VmRSS:\s+(\d+)\s+kB")


def _status(pattern: re.Pattern) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = pattern.search(f.read())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident set size in bytes (since the last reset where supported)."""
    hwm = _status(_HWM)
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def current_rss() -> int | None:
    """Resident set size now, in bytes (None where /proc is not there)."""
    return _status(_RSS)


@dataclass(frozen=True)
class Baseline:
    """What the process held before a model was loaded: subtracted from every peak.

    Taken right before the pipeline loads, it holds the scorer models, the
    CUDA context's allocations, Python and its libraries, so a point's peak is
    the memory that model and that batch need, and nothing else.
    """

    allocated: int = 0  # CUDA: memory_allocated()
    reserved: int = 0  # CUDA: memory_reserved(), after emptying the cache
    rss: int = 0  # CPU: resident set size


def take_baseline(device: str = "cpu") -> Baseline:
    """The :class:`Baseline` of ``device`` now (after collecting garbage)."""
    free_memory(device)
    if str(device).startswith("cuda"):
        import torch

        return Baseline(
            int(torch.cuda.memory_allocated(device)), int(torch.cuda.memory_reserved(device)), 0
        )
    return Baseline(rss=current_rss() or 0)


class MemoryMonitor:
    """Peak memory of one measurement above a :class:`Baseline`: CUDA allocator peaks
    (allocated and reserved) or the process peak RSS."""

    def __init__(self, device: str = "cpu", baseline: Baseline | None = None) -> None:
        self.device = device
        self.cuda = str(device).startswith("cuda")
        self.baseline = baseline or Baseline()
        self.resettable = True

    def start(self) -> None:
        free_memory(self.device)
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.resettable = reset_peak_rss()

    def stop(self) -> dict[str, int | None]:
        b = self.baseline
        if self.cuda:
            import torch

            allocated = int(torch.cuda.max_memory_allocated(self.device))
            reserved = int(torch.cuda.max_memory_reserved(self.device))
            return {
                "peak_allocated": max(0, allocated - b.allocated),
                "peak_reserved": max(0, reserved - b.reserved),
                "peak_rss": None,
            }
        rss = max(0, peak_rss() - b.rss)
        return {"peak_allocated": None, "peak_reserved": None, "peak_rss": rss}
