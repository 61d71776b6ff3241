"""`moce export CKPT -o PKG`."""

from __future__ import annotations

from pathlib import Path

import typer

from moce.apps.export import export_and_validate
from moce.cli.common import reads, render_table, user_errors, writes
from moce.cli.options import OPSETS, counts, image_sizes
from moce.cli.progress import say
from moce.errors import ValidationError
from moce.outputs import Planned, check_writes
from moce.package.writer import ExportOptions, ExportResult


@user_errors
def export(
    checkpoint: Path = typer.Argument(..., parser=reads, help="Lightning .ckpt, plain state dict or .safetensors"),
    output: Path = typer.Option(
        None, "-o", "--output", parser=writes, help="Package folder [default: CKPT name + .moce]"
    ),
    opset: int = typer.Option(17, min=OPSETS[0], max=OPSETS[1], help="ONNX opset"),
    conditional: bool = typer.Option(True, help="Also write the If-routed whole-network graph"),
    dense: bool = typer.Option(True, help="Also write the dense (all experts, one-hot gate) graph"),
    tiles: bool = typer.Option(
        True, help="Also write the tile segments that share image-wide sums (restore --tile-passes)"
    ),
    validate: bool = typer.Option(True, help="Compare every form with PyTorch on ONNX Runtime (CPU)"),
    sizes: str = typer.Option(
        "64x64,128x96", parser=image_sizes, help="Validation image sizes, 64 or HxW (multiples of 8)"
    ),
    batches: str = typer.Option("1,2", parser=counts, help="Validation batch sizes"),
    atol: float = typer.Option(1e-4, min=0.0, help="Largest absolute difference accepted"),
    overwrite: bool = typer.Option(False, help="Replace an existing package folder"),
) -> None:
    """Export a checkpoint to an ONNX model package and validate it against PyTorch."""
    options = ExportOptions(
        opset=opset,
        conditional=conditional,
        dense=dense,
        tiles=tiles,
        validate=validate,
        sizes=sizes,
        batches=batches,
        atol=atol,
        overwrite=overwrite,
    )
    out = output or checkpoint.with_suffix(".moce")
    # the package writer keeps its own rule for what is already at ``out`` (only a package, with --overwrite)
    check_writes([Planned(out, "-o/--output", "moce export", folder=True)], reads=[checkpoint], existing=False)
    steps = [0]

    def progress(message: str) -> None:
        steps[0] += 1
        say(f"[{steps[0]:>3}] {message}")

    try:
        result = export_and_validate(checkpoint, out, options, progress)
    except ValidationError as exc:
        typer.echo(f"error: {out}: {exc}", err=True)
        raise typer.Exit(1) from None
    _summary(result)


def _summary(result: ExportResult) -> None:
    rows = [[r["graph"], r["file"], f"{r['bytes'] / 1e6:.2f}", r["nodes"]] for r in result.graph_rows()]
    typer.echo(render_table(["graph", "file", "MB", "nodes"], rows))
    if result.report is not None:
        modes = dict.fromkeys(c.mode for c in result.report.cases)
        errors = ", ".join(f"{m} {result.report.max_error(m):.2e}" for m in modes)
        typer.echo(f"validation passed on {len(result.report.cases)} cases; max abs error: {errors}")
    typer.echo(f"wrote {result.manifest.root} in {result.seconds:.1f} s")
