"""The child process of :func:`moce.apps.memory.measure`: one session, noise images, peak memory.

Run as ``python -m moce.apps.memory_probe SPEC`` (a JSON :class:`~moce.apps.memory.ProbeSpec`);
prints one JSON line: ``{"base": bytes, "peaks": [[pixels, bytes], ...]}``. On the CPU the peak is
the resident set's high-water mark, reset after the backend loads (``/proc/self/clear_refs``), so
loading does not count as restoring; on CUDA it is the device memory in use after each restore
(ONNX Runtime's arena, TensorRT's context and PyTorch's caching allocator keep their peak).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from moce.apps.memory import PROBE_SIDES, ProbeSpec, free_device_memory, peak_resident, resident_bytes
from moce.apps.session import Session
from moce.apps.session_options import SessionOptions
from moce.runtime.allocator import keep_freed_memory
from moce.runtime.resolve import open_model

CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> None:
    """Set the high-water mark to the resident set now (Linux: writing 5 to clear_refs)."""
    CLEAR_REFS.write_text("5")


def device_used(device: str) -> float:
    """Device memory in use (total minus free), unverified on a GPU."""
    import torch

    index = int(device.partition(":")[2] or 0)
    return float(torch.cuda.get_device_properties(index).total_memory) - free_device_memory(device)


def probe(spec: ProbeSpec) -> dict[str, object]:
    """Open the session ``spec`` describes, restore noise images of :data:`PROBE_SIDES` untiled and
    read the memory before and at the peak of each."""
    if spec.keep_freed_memory:
        keep_freed_memory()
    options = SessionOptions(
        backend=spec.backend,
        device=spec.device,
        precision=spec.precision,
        routing=spec.routing,
        tile=max(PROBE_SIDES),
        threads=spec.threads,
        compile=spec.compile,
        cuda_graphs=spec.cuda_graphs,
    )
    cuda = spec.device.startswith("cuda")
    rng = np.random.default_rng(0)
    with Session(open_model(spec.package), options) as session:
        session.restore(rng.random((64, 64, 3), dtype=np.float32))  # lazy loads (first experts) are not images
        base = device_used(spec.device) if cuda else resident_bytes()
        peaks = []
        for side in PROBE_SIDES:
            if not cuda:
                reset_peak()
            session.restore(rng.random((side, side, 3), dtype=np.float32))
            peaks.append([side * side, device_used(spec.device) if cuda else peak_resident()])
    return {"base": base, "peaks": peaks}


if __name__ == "__main__":
    print(json.dumps(probe(ProbeSpec(**json.loads(sys.argv[1])))))
