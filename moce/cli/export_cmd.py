"""`moce export CKPT -o PKG`."""

from __future__ import annotations

from pathlib import Path

import typer

from moce.apps.export import export_and_validate
from moce.cli.common import batch_sizes, render_table, user_errors
from moce.cli.common import sizes as parse_sizes
from moce.cli.progress import say
from moce.errors import ValidationError
from moce.package.writer import ExportOptions, ExportResult


@user_errors
def export(
    checkpoint: Path = typer.Argument(..., help="Lightning .ckpt, plain state dict or .safetensors"),
    output: Path = typer.Option(None, "-o", "--output", help="Package folder [default: CKPT name + .moce]"),
    opset: int = typer.Option(17, help="ONNX opset"),
    conditional: bool = typer.Option(True, help="Also write the If-routed whole-network graph"),
    dense: bool = typer.Option(True, help="Also write the dense (all experts, one-hot gate) graph"),
    tiles: bool = typer.Option(
        True, help="Also write the tile segments that share image-wide sums (restore --tile-passes)"
    ),
    validate: bool = typer.Option(True, help="Compare every form with PyTorch on ONNX Runtime (CPU)"),
    sizes: str = typer.Option("64x64,128x96", help="Validation image sizes, 64 or HxW (multiples of 8)"),
    batches: str = typer.Option("1,2", help="Validation batch sizes"),
    atol: float = typer.Option(1e-4, help="Largest absolute difference accepted"),
    overwrite: bool = typer.Option(False, help="Replace an existing package folder"),
) -> None:
    """Export a checkpoint to an ONNX model package and validate it against PyTorch."""
    options = ExportOptions(
        opset=opset,
        conditional=conditional,
        dense=dense,
        tiles=tiles,
        validate=validate,
        sizes=parse_sizes(sizes, "--sizes"),
        batches=batch_sizes(batches),
        atol=atol,
        overwrite=overwrite,
    )
    out = output or checkpoint.with_suffix(".moce")
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
