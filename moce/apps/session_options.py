"""How a session restores (backend, precision, routing form, tiling, batching), and every check
of those options made before a backend loads."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from moce.errors import InputError
from moce.imageio import DEFAULT_MAX_PIXELS
from moce.names import GRAPH_PRECISIONS, ROUTING_MODES
from moce.package.manifest import Manifest
from moce.runtime.backends import (
    BACKENDS,
    BackendChoice,
    cpu_bf16_units,
    cuda_available,
    make_runner,
    nvidia_gpu_present,
)
from moce.runtime.restorer import RestoreOptions, check_restore_options
from moce.runtime.tile_plan import AUTO

if TYPE_CHECKING:  # a package needs no PyTorch
    pass


@dataclass(frozen=True)
class SessionOptions:
    """How a session restores: the backend and its precision, the routing form, tiling and batching.

    The same fields, with the same defaults, as ``moce restore``'s options of those names.
    """

    backend: str = "auto"  # auto, tensorrt, onnxruntime or torch
    device: str | None = None  # cpu or cuda; None: cuda where the backend has it
    precision: str = "fp32"  # fp32, fp16, bf16 (torch) or int8 (ONNX graphs from `moce build-engine`)
    routing: str = "split"  # split, conditional or dense
    tile: int | str = AUTO  # auto: untiled if the image fits max_memory, else the largest tiles that do; N: N px tiles
    overlap: int = 32
    route_per: str = "image"  # image: one route for a whole tiled image; tile: each tile routes itself
    route_size: int | None = None  # longest side of a tiled image's routing pass; None: the tile side (auto: 512)
    tile_passes: int | None = None  # passes over the tiles sharing image-wide sums; None: 1 with auto, 3 with N
    max_memory: float | None = None  # bytes tile auto plans for; None: half the memory available at open
    batch: int = 1  # same-sized images, or tiles, per inference call
    threads: int | None = None  # CPU threads of the backend; None: all cores
    cuda_graphs: bool = False  # torch on CUDA: replay CUDA graphs
    compile: bool = False  # torch: each segment and expert through torch.compile (inductor)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused before they are decoded

    def restore_options(self) -> RestoreOptions:
        """The fields that decide how one image is restored (tiling, routing form, batching)."""
        return RestoreOptions(**{f.name: getattr(self, f.name) for f in fields(RestoreOptions)})


DEVICE = re.compile(r"cpu|cuda(:\d+)?")
"""What ``--device`` takes: ``cpu``, ``cuda`` or ``cuda:N``."""


def check_options(options: SessionOptions, multiple: int = 8) -> None:
    """Refuse, before any backend loads, option values no run could use."""
    if options.device is not None and not DEVICE.fullmatch(options.device):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {options.device}")
    if options.routing not in ROUTING_MODES:
        raise InputError(f"--routing must be one of {', '.join(ROUTING_MODES)}, got {options.routing}")
    if options.compile and options.backend != "torch":
        raise InputError(f"--compile compiles the torch backend's model; add --backend torch (got {options.backend})")
    if options.threads is not None and options.threads < 1:
        raise InputError(f"--threads must be at least 1 (leave it out for all cores), got {options.threads}")
    if options.max_pixels < 64:
        raise InputError(f"--max-pixels must be at least 64, got {options.max_pixels}")
    check_restore_options(options.restore_options(), multiple)


def settle(options: SessionOptions) -> tuple[RestoreOptions, str | None]:
    """The restore options a run actually uses, and the note to give when the first image is tiled:
    image-wide sums across tiles run in the fp32 tile graphs only, so at any other precision tiles
    make one pass."""
    restore = options.restore_options()
    if options.precision != "fp32" and restore.passes() > 1:
        note = f"tile passes: 1 (image-wide sums run in the fp32 tile graphs only, not at {options.precision})"
        return replace(restore, tile_passes=1), note
    return restore, None


def check_graphs(manifest: Manifest, options: SessionOptions, backend: str) -> None:
    """A backend that runs the package's graphs needs them at the requested precision (fp16 and
    int8 come from ``moce build-engine``), and a whole-network routing form needs its graph there
    (:func:`make_runner` has checked that the backend runs the form at all)."""
    if not BACKENDS[backend].whole_from_package:
        return
    if options.precision in GRAPH_PRECISIONS:
        manifest.graphs(options.precision)  # refused with the command that builds them
    routing = options.routing
    if routing == "split":
        return
    if routing not in manifest.graphs(options.precision):
        why = manifest.routing_form(routing)
        raise InputError(
            f"--routing {routing}: {manifest.root} has no {options.precision} {routing} graph ({why}); "
            "use --routing split"
        )


def check_device(options: SessionOptions) -> None:
    """Refuse a CUDA device this machine does not have, instead of running on the CPU unasked."""
    if not (options.device or "").startswith("cuda"):
        return
    if not nvidia_gpu_present():
        raise InputError(f"--device {options.device}: this machine shows no NVIDIA GPU; use --device cpu")
    if options.backend == "torch" and not cuda_available():
        raise InputError(f"--device {options.device}: PyTorch here has no CUDA (a CPU build?); use --device cpu")


def slow_path_warning(choice: BackendChoice, precision: str) -> str | None:
    """One line for a slow path chosen on purpose, with the faster choice."""
    device = getattr(choice.runner, "device", None)
    if choice.name != "torch" or getattr(device, "type", None) != "cpu":
        return None
    if precision == "fp16":
        return (
            "warning: fp16 on the CPU runs several times slower than fp32 in PyTorch (no fp16 arithmetic "
            "units); --precision fp32 is faster here (bf16 too, on CPUs with AVX512_BF16 or AMX)"
        )
    if precision == "bf16" and not cpu_bf16_units():
        return (
            "warning: this CPU has no bfloat16 units (AVX512_BF16 or AMX), so PyTorch emulates bf16, "
            "many times slower than fp32; --precision fp32 is faster here"
        )
    return None


def make_choice(manifest: Manifest, options: SessionOptions) -> BackendChoice:
    """The backend's runner for ``options`` (not activated): a named backend is checked against the
    package before it loads anything, ``auto``'s pick after."""
    check_device(options)
    if options.backend in BACKENDS:
        check_graphs(manifest, options, options.backend)
    choice = make_runner(
        options.backend,
        manifest,
        options.device,
        options.threads,
        options.precision,
        options.cuda_graphs,
        options.routing,
        options.compile,
    )
    if options.backend not in BACKENDS:
        check_graphs(manifest, options, choice.name)
    return choice


def runner_device(choice: BackendChoice) -> str:
    """Where a backend's runner computes: ``cpu``, or ``cuda``/``cuda:N``."""
    device = getattr(choice.runner, "device", None)
    if device is not None:
        return str(device)
    providers = getattr(choice.runner, "providers", ["CPUExecutionProvider"])
    return "cuda" if choice.name == "tensorrt" or providers[0] == "CUDAExecutionProvider" else "cpu"
