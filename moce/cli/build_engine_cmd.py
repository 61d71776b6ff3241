"""`moce build-engine PKG --fp16|--int8`."""

from __future__ import annotations

from pathlib import Path

import typer

from moce.cli.common import render_table, user_errors
from moce.engines.build import BuildOptions, build
from moce.engines.tensorrt_builder import Profile
from moce.errors import InputError
from moce.package.manifest import MANIFEST


def _bhw(text: str) -> tuple[int, int, int]:
    try:
        b, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"shapes look like BATCHxHEIGHTxWIDTH (1x512x512), got {text!r}") from None
    return b, h, w


@user_errors
def build_engine(
    package: Path = typer.Argument(..., help="Model package folder from `moce export`"),
    fp16: bool = typer.Option(False, "--fp16", help="Mixed FP16 variant (norms, softmax, routers stay FP32)"),
    int8: bool = typer.Option(False, "--int8", help="INT8 Q/DQ variant calibrated on real images, per expert"),
    calib: Path = typer.Option(None, help="Folder of calibration images [default: bundled samples, all degradations]"),
    min_shape: str = typer.Option("1x64x64", help="Smallest BATCHxHEIGHTxWIDTH the engines accept"),
    opt_shape: str = typer.Option("1x512x512", help="Shape TensorRT tunes for"),
    max_shape: str = typer.Option("4x1024x1024", help="Largest shape the engines accept"),
    workspace: int = typer.Option(4096, help="Builder workspace in MiB"),
    onnx_only: bool = typer.Option(False, help="Write the ONNX precision variants only (no TensorRT)"),
    engine_cache: Path = typer.Option(None, help="Engine and timing cache folder [default: ~/.cache/moce/engines]"),
) -> None:
    """Convert precision at ONNX level, then build TensorRT engines per graph (cached)."""
    precisions = [p for p, on in (("fp16", fp16), ("int8", int8)) if on]
    profile = Profile(_bhw(min_shape), _bhw(opt_shape), _bhw(max_shape))
    options = BuildOptions(precisions, calib, profile, workspace, onnx_only, engine_cache)
    result = build(package, options, lambda m: typer.echo(m, err=True))
    rows = [[r.precision, len(r.graphs), len(r.warnings)] for r in result.variants]
    if rows:
        typer.echo(render_table(["precision", "ONNX graphs", "warnings"], rows))
    if result.engines:
        typer.echo(f"{len(result.engines)} TensorRT engine(s) recorded in {package / MANIFEST}")
    if result.tensorrt_error:
        typer.echo(
            f"error: TensorRT engines not built: {result.tensorrt_error}; the ONNX variants above are written "
            "(use --onnx-only to skip TensorRT)",
            err=True,
        )
        raise typer.Exit(3)
