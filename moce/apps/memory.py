"""How much memory a restore takes, measured once per model and backend, and how much there is.

``--tile auto`` needs, for the session's model, backend, precision, routing form and device,
the peak memory of a restore as a function of the pixels it runs (:class:`MemoryModel`). It is
measured, not guessed: a child process (fresh, so its peak is this model's alone) opens the same
session, restores two noise images untiled and reports its peak resident memory (device memory
on CUDA) before and after; the model is the base plus the larger per-pixel slope of the two, with
:data:`MARGIN` for the allocator's growth steps. The result is kept in the cache
(``$MOCE_CACHE/memory``), so each combination is measured once (about a second for the demo model
on a 2-core CPU).

The budget is ``--max-memory`` or, by default, :data:`DEFAULT_SHARE` of the memory available
when the session opens: RAM (what the kernel calls available, plus what this process holds) for
the CPU backends, free device memory for CUDA and TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moce._version import __version__
from moce.errors import MoceError
from moce.files import sha256_file, write_json_atomic
from moce.package.manifest import MANIFEST, Manifest
from moce.package.store import cache_dir
from moce.progress import Messages, quiet
from moce.runtime.allocator import freed_memory_kept
from moce.runtime.tile_plan import MemoryModel

DEFAULT_SHARE = 0.5
"""The default budget: this share of the memory available when a session opens."""

PROBE_SIDES = (256, 512)
"""Square noise images the child restores untiled, smallest first (peak memory only grows)."""

MARGIN = 1.25
"""Head-room on the measured slope: ONNX Runtime's arena and PyTorch's caching allocator grow in
steps, so a size between the probes can peak above the straight line (up to 20% measured)."""


@dataclass(frozen=True)
class ProbeSpec:
    """What decides a session's memory use: the package and how it is run."""

    package: str
    backend: str
    device: str
    precision: str
    routing: str
    threads: int | None
    compile: bool
    cuda_graphs: bool
    keep_freed_memory: bool


PROBED_OPTIONS = ("precision", "routing", "threads", "compile", "cuda_graphs")
"""The session options a :class:`ProbeSpec` records as they are."""


def probe_key(spec: ProbeSpec, manifest_sha256: str) -> str:
    """The cache key: the package's content (its manifest's hash), the run settings and moce's version."""
    fields = {**asdict(spec), "package": manifest_sha256, "threads": None, "moce": __version__}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def memory_model(manifest: Manifest, spec: ProbeSpec, say: Messages = quiet) -> MemoryModel:
    """The cached :class:`MemoryModel` for ``spec``, measured in a child process the first time."""
    path = cache_dir() / "memory" / f"{probe_key(spec, sha256_file(manifest.root / MANIFEST))}.json"
    cached = _read(path)
    if cached is not None:
        return cached
    say(f"measuring this model's memory use for --tile auto (once; kept in {path.parent})")
    readings = measure(spec)
    model = fit(readings, "device" if spec.device.startswith("cuda") else "RAM")
    measured = {"base": model.base, "per_pixel": model.per_pixel, "memory": model.memory}
    write_json_atomic(path, {"model": measured, "readings": readings, "spec": asdict(spec)})
    return model


def _read(path: Path) -> MemoryModel | None:
    try:
        data = json.loads(path.read_text())["model"]
        return MemoryModel(float(data["base"]), float(data["per_pixel"]), memory=str(data["memory"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: measured again and rewritten


def fit(readings: dict[str, Any], memory: str) -> MemoryModel:
    """Base and per-pixel slope (the larger of the probes', with :data:`MARGIN`) from the child's
    readings, rounded up (base to 32 MiB, slope to 32 bytes) so that a measurement repeated on a
    fresh cache almost always gives the same model, and the same tiles."""
    base = float(readings["base"])
    slope = MARGIN * max(max((peak - base) / pixels for pixels, peak in readings["peaks"]), 0.0)
    return MemoryModel(base=_round_up(base, 2**25), per_pixel=_round_up(slope, 32), memory=memory)


def _round_up(value: float, step: int) -> float:
    return float(-(-int(value) // step) * step)


def measure(spec: ProbeSpec) -> dict[str, Any]:
    """Run the probe in a fresh child process and return its readings (bytes)."""
    command = [sys.executable, "-m", "moce.apps.memory_probe", json.dumps(asdict(spec))]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        detail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise MoceError(f"measuring memory use for --tile auto failed ({detail}); give --tile N instead")
    return json.loads(lines[-1])


# -- what there is -------------------------------------------------------------------------------


def _meminfo_bytes(key: str, path: str = "/proc/meminfo") -> float | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def resident_bytes() -> float:
    """This process's resident memory now."""
    return _meminfo_bytes("VmRSS", "/proc/self/status") or 0.0


def peak_resident() -> float:
    """This process's peak resident memory (VmHWM), in bytes; where Linux does not say, ru_maxrss
    (which survives fork and exec there)."""
    peak = _meminfo_bytes("VmHWM", "/proc/self/status")
    if peak is not None:
        return peak
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def available_ram() -> float:
    """RAM this process could reach now: the kernel's MemAvailable plus what the process holds."""
    available = _meminfo_bytes("MemAvailable")
    if available is None:  # not Linux: free physical pages
        available = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return available + resident_bytes()


def free_device_memory(device: str) -> float:
    """Free memory of a CUDA device, through PyTorch where it has CUDA, else nvidia-smi.

    Unverified on a GPU: written against ``torch.cuda.mem_get_info`` and nvidia-smi's documented query.
    """
    index = int(device.partition(":")[2] or 0)
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.mem_get_info(index)[0])
    except ImportError:
        pass
    query = ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", f"--id={index}"]
    out = subprocess.run(query, capture_output=True, text=True, check=False)
    try:
        return float(out.stdout.strip().splitlines()[0]) * 2**20
    except (ValueError, IndexError):
        raise MoceError(
            f"cannot read the free memory of {device} for --tile auto; give --max-memory or --tile N"
        ) from None


def default_budget(device: str, available: Callable[[], float] = available_ram) -> float:
    """:data:`DEFAULT_SHARE` of the memory available now on ``device``."""
    free = free_device_memory(device) if device.startswith("cuda") else available()
    return DEFAULT_SHARE * free


def probe_spec(manifest: Manifest, backend: str, device: str, options: Any) -> ProbeSpec:
    """The :class:`ProbeSpec` of a session's options (``SessionOptions``) on ``backend`` and ``device``:
    the options of the same names, as the session has them."""
    shared = {name: getattr(options, name) for name in PROBED_OPTIONS}
    return ProbeSpec(str(manifest.root), backend, device, keep_freed_memory=freed_memory_kept(), **shared)
