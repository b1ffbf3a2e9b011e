"""Which device a run measures on, what it is called, and under which label its numbers go.

A latency is only meaningful next to the hardware that produced it, so every
run records a hardware label (``--gpu a100``) and refuses one that contradicts
the detected device: latencies filed under the wrong label would make a table
compiled for one GPU silently describe another.

The parent process of a multi-device run must never open a CUDA context (it
would take memory on the first GPU from that worker), so the functions that
describe devices for it (:func:`device_infos`) run in a short-lived spawned
child where CUDA is involved.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hadis_profile.errors import HadisError, ParameterError

#: A hardware label: what ``--gpu`` takes and what tables are compiled per.
LABEL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


@dataclass(frozen=True)
class DeviceInfo:
    """One device as a run records it; ``details`` holds what :func:`device_details` found."""

    device: str  # "cuda", "cuda:1", "cpu"
    name: str
    driver: str | None
    default_label: str
    details: dict = field(default_factory=dict, compare=False, hash=False)


def slug(text: str) -> str:
    """Lower-case letters and digits joined by '-' (``NVIDIA A100-SXM4-80GB`` -> label)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (no CUDA context needed), or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


def pick_device(device: str | None = None) -> str:
    """``auto``/None -> ``cuda`` when available, else ``cpu``; anything else is checked."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HadisError(f"Device '{device}' was requested but torch sees no CUDA device.")
    try:
        torch.device(device)
    except RuntimeError:
        raise HadisError(f"Unknown torch device '{device}'.") from None
    return device


def cpu_info(threads: int) -> DeviceInfo:
    """The CPU as a device, named with the torch threads it runs with."""
    name = f"{cpu_name()}, {threads} torch thread{'s' if threads > 1 else ''}"
    details = {"cpu": cpu_name(), "torch_threads": threads, "logical_cpus": os.cpu_count()}
    return DeviceInfo("cpu", name, None, "cpu", details)


_SMI_FIELDS = {
    "clocks.max.sm": "max_sm_clock_mhz",
    "clocks.max.memory": "max_memory_clock_mhz",
    "clocks.sm": "sm_clock_mhz",
    "clocks.mem": "memory_clock_mhz",
    "power.limit": "power_limit_w",
    "pstate": "pstate",
}


def _nvidia_smi(uuid: str | None) -> dict:
    """Clocks and power limit of one GPU from ``nvidia-smi`` (no CUDA context); {} if absent."""
    exe = shutil.which("nvidia-smi")
    if exe is None or not uuid:
        return {}
    cmd = [exe, f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(
            [*cmd, "-i", uuid], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0 or not out.stdout.strip():
        return {}
    values = [v.strip() for v in out.stdout.strip().splitlines()[0].split(",")]
    got: dict = {}
    for key, value in zip(_SMI_FIELDS.values(), values, strict=False):
        try:
            got[key] = float(value) if key != "pstate" else value
        except ValueError:
            continue  # "[N/A]" and the like
    return got


def device_details(device: str) -> dict:
    """What a CUDA device is, as far as this machine says: CUDA and cuDNN versions, memory,
    compute capability, multiprocessors, and clocks and power limit where readable."""
    import torch

    dev = torch.device(device)
    props = torch.cuda.get_device_properties(dev)
    uuid = getattr(props, "uuid", None)
    uuid = None if uuid is None else str(uuid)
    if uuid is not None and not uuid.startswith("GPU-"):
        uuid = f"GPU-{uuid}"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "memory_bytes": int(props.total_memory),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": int(props.multi_processor_count),
        "uuid": uuid,
        **_nvidia_smi(uuid),
    }


def detect_device(device: str = "auto") -> DeviceInfo:
    """The torch device the run will use, its name, driver and a default label."""
    import torch

    dev = pick_device(device)
    if dev.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(dev))
        driver = nvidia_driver()
        cuda = torch.version.cuda
        driver = (
            f"{driver} (CUDA {cuda})"
            if driver and cuda
            else driver or (f"CUDA {cuda}" if cuda else None)
        )
        label = slug(name.removeprefix("NVIDIA "))
        return DeviceInfo(dev, name, driver, label, device_details(dev))
    return cpu_info(torch.get_num_threads())


def parse_label_map(text: str) -> dict[str, str]:
    """``"NVIDIA H100 80GB HBM3=h100,NVIDIA A100-SXM4-80GB=a100"`` -> {device name: label}.

    The hardware label of each GPU type in a run on several: a device's name as
    torch reports it (``hadis-profile run --dry-run`` shows it), then its label.
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, label = item.strip().rpartition("=")
        name, label = name.strip(), label.strip()
        if not (sep and name and label):
            raise ParameterError(
                "gpu",
                f"{{param}} '{text}' must be a label or DEVICE NAME=LABEL pairs, comma-separated.",
            )
        if not re.fullmatch(LABEL_PATTERN, label):
            raise ParameterError(
                "gpu",
                f"{{param}} label '{label}' must be short: letters, digits, '.', '_' or '-'.",
            )
        if out.get(name, label) != label:
            raise ParameterError("gpu", f"{{param}} maps '{name}' to two labels.")
        out[name] = label
    return out


def check_hardware_label(label: str | None, info: DeviceInfo, force: bool) -> str:
    """The label to record; a ``gpu`` label that contradicts the device is refused.

    ``a100`` matches ``NVIDIA A100-SXM4-80GB``; ``cpu`` (or words of the CPU's
    name) matches a CPU run. A mapping (:func:`parse_label_map`) gives the
    device its mapped label (it names the device, so nothing is to check), or
    the label derived from its name when it is not listed.
    """
    if not label:
        return info.default_label
    if "=" in label:
        mapping = {_squash(k): v for k, v in parse_label_map(label).items()}
        return mapping.get(_squash(info.name), info.default_label)
    if not re.fullmatch(LABEL_PATTERN, label):
        raise ParameterError(
            "gpu", f"{{param}} '{label}' must be a short label of letters, digits, '.', '_' or '-'."
        )
    if force:
        return label
    want, name = _squash(label), _squash(info.name)
    if info.device == "cpu":
        if not (want == "cpu" or (len(want) >= 3 and want in name)):
            raise ParameterError(
                "gpu",
                f"{{param}} '{label}' names a GPU but this run uses the CPU ({info.name}); "
                "force it to record the run under that label anyway.",
            )
    elif want not in name:
        raise ParameterError(
            "gpu",
            f"{{param}} '{label}' does not match the detected device {info.name}; "
            "force it to record the run under that label anyway.",
        )
    return label


def worker_labels(
    label: str | None,
    infos: Sequence[DeviceInfo],
    force: bool = False,
    known: dict[str, str | None] | None = None,
) -> list[str]:
    """The hardware label of each worker (:func:`check_hardware_label`), refusing a label
    that would file two kinds of device together.

    Latency is only meaningful next to the device that produced it, so one label
    must mean one device name, among the workers and against ``known`` (label ->
    device name, what the run store already holds).
    """
    labels = [check_hardware_label(label, info, force) for info in infos]
    names: dict[str, list[str]] = {}
    pairs = [*(known or {}).items(), *((x, i.name) for x, i in zip(labels, infos, strict=True))]
    for lab, device in pairs:
        if device is not None and device not in names.setdefault(lab, []):
            names[lab].append(device)
    for lab, devices in names.items():
        if len(devices) > 1:
            raise ParameterError(
                "gpu",
                f"{{param}} would file {' and '.join(devices)} under one label '{lab}'; give each "
                "kind of device its own label (DEVICE NAME=LABEL,...).",
            )
    return labels


# --------------------------------------------------------------------------- several devices


def parse_devices(text: str) -> list[str]:
    """``0,1,2,3`` -> ``cuda:0..3``; ``cpu`` entries stay (``cpu,cpu``: two CPU workers).

    A GPU listed twice is refused: two workers timing on one device would each
    measure the other's load.
    """
    out: list[str] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if item == "cpu":
            out.append("cpu")
            continue
        index = item.removeprefix("cuda:")
        if not index.isdigit():
            raise ParameterError(
                "devices",
                f"{{param}} '{text}' must list CUDA indices or 'cpu', comma-separated "
                "(e.g. 0,1,2,3).",
            )
        dev = f"cuda:{int(index)}"
        if dev in out:
            raise ParameterError("devices", f"{{param}} '{text}' lists {dev} twice.")
        out.append(dev)
    if not out:
        raise ParameterError("devices", "{param} needs at least one device.")
    return out


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask), not the machine's count."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_threads(devices: Sequence[str], threads: int | None) -> int:
    """torch intra-op threads per worker: the cores shared out, unless ``threads`` says."""
    return max(1, int(threads)) if threads else max(1, usable_cpus() // len(devices))


def _describe_cuda(devices: list[str]) -> list[DeviceInfo] | str:
    """Run in a spawned child: the CUDA devices' records, or why they cannot be used."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return f"{{param}} names {', '.join(devices)} but torch sees no CUDA device."
    bad = [d for d in devices if int(d.split(":")[1]) >= count]
    if bad:
        return (
            f"{{param}} names {', '.join(bad)} but torch sees only {count} CUDA "
            f"device{'s' if count > 1 else ''} (indices 0-{count - 1})."
        )
    return [detect_device(d) for d in devices]


def device_infos(devices: Sequence[str], threads: int | None = None) -> list[DeviceInfo]:
    """What each worker will run on; CUDA indices are checked against what torch sees.

    CUDA devices are described by a spawned child process, so this process never
    creates a CUDA context (it would hold memory on every GPU it touched, which
    the worker on that GPU would then lack).
    """
    cuda = [d for d in devices if d.startswith("cuda")]
    described: dict[str, DeviceInfo] = {}
    if cuda:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            got = pool.submit(_describe_cuda, cuda).result()
        if isinstance(got, str):
            raise ParameterError("devices", got)
        described = dict(zip(cuda, got, strict=True))
    cpu = cpu_info(worker_threads(devices, threads))
    return [cpu if d == "cpu" else described[d] for d in devices]


def common_device(infos: Sequence[DeviceInfo], force: bool) -> DeviceInfo:
    """The one device record for the run; devices of different models are refused.

    Every latency is filed under one hardware label, so mixing, say, an A100
    and an H100 would make the table describe neither (``force`` overrides).
    """
    names = list(dict.fromkeys(i.name for i in infos))
    if len(names) > 1:
        if not force:
            raise HadisError(
                f"The devices mix {' and '.join(names)}, but one run records one kind of "
                "device; list devices of one model, or force them to be recorded together."
            )
        return DeviceInfo(infos[0].device, " + ".join(names), infos[0].driver, "mixed")
    return infos[0]


def library_versions() -> dict[str, str]:
    """Versions of what a run's numbers depend on: Python, the libraries, and the CUDA and
    cuDNN that torch was built with."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in (
        "torch",
        "diffusers",
        "transformers",
        "safetensors",
        "accelerate",
        "huggingface_hub",
        "numpy",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.version.cuda:
            out["cuda"] = str(torch.version.cuda)
        with contextlib.suppress(Exception):
            if torch.backends.cudnn.is_available():
                out["cudnn"] = str(torch.backends.cudnn.version())
    return out
