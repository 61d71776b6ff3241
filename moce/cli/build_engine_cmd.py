"""`moce build-engine PKG --fp16|--int8`."""

from __future__ import annotations

from pathlib import Path

import typer

from moce.cli.common import reads, render_table, user_errors, writes
from moce.cli.options import counts, image_sizes
from moce.cli.progress import say
from moce.engines.build import BuildOptions, build
from moce.engines.tensorrt_builder import ENGINE_CACHE, Profile
from moce.errors import InputError
from moce.outputs import Planned, check_writes
from moce.package.manifest import MANIFEST


def _profile(hw: tuple[tuple[int, int], ...], counts: tuple[int, ...]) -> Profile:
    """The engines' shape range from ``--sizes MIN,OPT,MAX`` and ``--batches MIN,OPT,MAX``."""
    if len(hw) != 3 or len(counts) != 3:
        raise InputError("--sizes and --batches take three values each: the smallest, the tuned-for and the largest")
    return Profile(*[(b, h, w) for b, (h, w) in zip(counts, hw)])


@user_errors
def build_engine(
    package: Path = typer.Argument(..., parser=reads, help="Model package folder from `moce export`"),
    fp16: bool = typer.Option(False, "--fp16", help="Mixed FP16 variant (norms, softmax, routers stay FP32)"),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="INT8 Q/DQ variants calibrated on real images, per expert: int8 placed for TensorRT, "
        "int8-cpu for ONNX Runtime on the CPU",
    ),
    calib: Path = typer.Option(
        None, parser=reads, help="Folder of calibration images [default: bundled samples, all degradations]"
    ),
    sizes: str = typer.Option(
        "64,512,1024",
        parser=image_sizes,
        help="Image sizes (256 or HxW) the engines accept: smallest, tuned for, largest",
    ),
    batches: str = typer.Option(
        "1,1,4", parser=counts, help="Batch sizes the engines accept: smallest, tuned for, largest"
    ),
    workspace: int = typer.Option(4096, min=16, max=1 << 22, help="Builder workspace in MiB"),
    onnx_only: bool = typer.Option(False, help="Write the ONNX precision variants only (no TensorRT)"),
    engine_cache: Path = typer.Option(
        None, parser=writes, help="Engine and timing cache folder [default: ~/.cache/moce/engines]"
    ),
) -> None:
    """Convert precision at ONNX level, then build TensorRT engines per graph (cached)."""
    check_writes([Planned(engine_cache, "--engine-cache", ENGINE_CACHE, folder=True)], reads=[package, calib])
    precisions = [p for p, on in (("fp16", fp16), ("int8", int8)) if on]
    profile = _profile(sizes, batches)
    options = BuildOptions(precisions, calib, profile, workspace, onnx_only, engine_cache)
    result = build(package, options, say)
    rows = [[r.precision, r.target, len(r.graphs), len(r.warnings)] for r in result.variants]
    if rows:
        typer.echo(render_table(["variant", "for", "ONNX graphs", "warnings"], rows))
    if result.engines:
        typer.echo(f"{len(result.engines)} TensorRT engine(s) recorded in {package / MANIFEST}")
    if result.tensorrt_error:
        typer.echo(
            f"error: TensorRT engines not built: {result.tensorrt_error}; the ONNX variants above are written "
            "(use --onnx-only to skip TensorRT)",
            err=True,
        )
        raise typer.Exit(3)
