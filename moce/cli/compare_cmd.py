"""`moce compare PKG --runners torch,onnxruntime:fp16,...`."""

from __future__ import annotations

from pathlib import Path

import typer

from moce.apps.compare import ERROR_STATS, SIGNATURE, CompareOptions, Spec
from moce.apps.compare import compare as run_compare
from moce.cli.common import reads, render_table, user_errors, write_json_output, writes
from moce.cli.options import one_of, runner_specs
from moce.cli.progress import Verbosity, say, verbosity
from moce.outputs import Planned, check_writes


@user_errors
def compare(
    model: str = typer.Argument(..., help="Model package folder or checkpoint"),
    runners: str = typer.Option(
        "torch,onnxruntime:fp32,onnxruntime:fp16,onnxruntime:int8",
        parser=runner_specs,
        help="backend[:precision] list; the first is the reference",
    ),
    images: Path = typer.Option(None, parser=reads, help="Folder of real images [default: bundled degraded samples]"),
    atol: float = typer.Option(1e-2, min=0.0, help="Absolute tolerance on the restored image (Polygraphy)"),
    rtol: float = typer.Option(1e-2, min=0.0, help="Relative tolerance on the restored image (Polygraphy)"),
    error_stat: str = typer.Option(
        "mean",
        parser=one_of(ERROR_STATS, "error statistic"),
        help="Polygraphy check_error_stat: elemwise, max, mean, median",
    ),
    min_psnr: float = typer.Option(35.0, min=0.0, help="Fail below this PSNR (dB) against the reference, per image"),
    min_route_agreement: float = typer.Option(
        0.95, min=0.0, max=1.0, help="Fail below this share of identical routing decisions"
    ),
    save_results: Path = typer.Option(None, parser=writes, help="Save Polygraphy RunResults JSON here"),
    json_out: Path = typer.Option(
        None, "--json", parser=writes, help="Write the comparison table as JSON to this file (-: standard output)"
    ),
) -> None:
    """Compare backends and precisions on real images: errors, PSNR/SSIM and routing agreement.
    With moce -v, Polygraphy's per-iteration statistics too."""
    planned = [Planned(save_results, "--save-results", SIGNATURE), Planned(json_out, "--json", SIGNATURE)]
    check_writes(planned, reads=[model, images])
    options = CompareOptions(
        [Spec.parse(s) for s in runners],
        images,
        atol,
        rtol,
        min_psnr,
        min_route_agreement,
        error_stat,
        save_results,
        verbosity() == Verbosity.VERBOSE,
    )
    report = run_compare(model, options, say)
    rows = [
        [
            r["runner"],
            f"{r['max_abs']:.2e}",
            f"{r['mean_abs']:.2e}",
            f"{r['min_psnr']:.2f}",
            f"{r['mean_psnr']:.2f}",
            f"{r['min_ssim']:.4f}",
            f"{100 * r['route_agreement']:.1f}%",
            ",".join(r["routes_changed"]) or "-",
        ]
        for r in report.rows
    ]
    typer.echo(f"reference: {report.reference}")
    typer.echo(
        render_table(
            ["runner", "max abs", "mean abs", "min PSNR", "mean PSNR", "min SSIM", "routes agree", "routes changed"],
            rows,
        )
    )
    if json_out:
        table = {"reference": report.reference, "rows": report.rows, "failures": report.failures}
        write_json_output(json_out, table, SIGNATURE)
    for failure in report.failures:
        typer.echo(f"failed: {failure}", err=True)
    raise typer.Exit(0 if report.passed else 1)
