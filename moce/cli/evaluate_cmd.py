"""`moce evaluate` and `moce demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from moce.apps.evaluate import DEFAULT_DEGRADATIONS, SIGNATURE, EvalOptions, evaluation_chart
from moce.apps.evaluate import evaluate as run_evaluate
from moce.cli.common import reads, render_table, user_errors, write_json_output, writes
from moce.cli.options import backend as backend_name
from moce.cli.options import crop_side
from moce.cli.options import degradations as degradation_names
from moce.cli.progress import CliProgress, say
from moce.outputs import Planned, check_writes


@user_errors
def evaluate(
    data: list[Path] = typer.Option(
        ..., "--data", parser=reads, help="Folder of clean images (held out from training); repeatable"
    ),
    model: str = typer.Option(None, "--model", "-m", help="Package or checkpoint [default: bundled model]"),
    degradations: str = typer.Option(",".join(DEFAULT_DEGRADATIONS), parser=degradation_names, help="Degradations"),
    crops: int = typer.Option(
        24, min=1, max=10_000, help="Random crops per image and degradation for the routing analysis"
    ),
    crop: int = typer.Option(96, parser=crop_side, help="Crop side (multiple of 8)"),
    backend: str = typer.Option("onnxruntime", parser=backend_name, help="onnxruntime, torch or tensorrt"),
    seed: int = typer.Option(0, min=0, help="Seed of degradations and crops"),
    draws: int = typer.Option(
        4,
        min=1,
        max=100,
        help="Degradations drawn per image (draw k uses seed + k); the table gives the gain's range over draws",
    ),
    json_out: Path = typer.Option(
        None, "--json", parser=writes, help="Write the results as JSON to this file (-: standard output)"
    ),
    chart: Path = typer.Option(
        None, parser=writes, help="Write a PNG of gain, colour and the experts each degradation uses"
    ),
) -> None:
    """PSNR/SSIM and colour per degradation, and how well routes alone identify the degradation."""
    check_writes(
        [Planned(json_out, "--json", SIGNATURE), Planned(chart, "--chart", SIGNATURE, suffix=".png")],
        reads=[*data, model],
    )
    options = EvalOptions(degradations, crops, crop, backend, seed, draws)
    report = run_evaluate(model, data, options, say)
    rows = [
        [
            r["degradation"],
            f"{r['psnr_input']:.2f}",
            f"{r['psnr_output']:.2f}",
            f"{r['psnr_gain']:+.2f}",
            f"{r['psnr_gain_min']:+.2f} .. {r['psnr_gain_max']:+.2f}",
            f"{r['ssim_input']:.3f}",
            f"{r['ssim_output']:.3f}",
            f"{r['worst_image_gain']:+.2f} {r['worst_image']}",
            f"{r['saturation_input'] / max(r['saturation_clean'], 1e-6):.2f} -> {r['saturation_ratio']:.2f}",
            f"{r['saturation_ratio_worst']:.2f} {r['saturation_ratio_worst_image']}",
            f"{r['ciede2000_input']:.1f} -> {r['ciede2000_output']:.1f}",
            "-".join(map(str, r["dominant_route"])),
        ]
        for r in report.rows
    ]
    header = ["degradation", "PSNR in", "PSNR out", "gain dB", "gain over draws", "SSIM in", "SSIM out"]
    header += ["least-gaining photo", "saturation / clean", "farthest photo", "CIEDE2000", "usual route"]
    typer.echo(render_table(header, rows))
    c = report.clean
    typer.echo(
        f"clean inputs, restored as they are: {c['psnr_output']:.2f} dB against themselves (lowest "
        f"{c['psnr_lowest']:.2f} {c['psnr_lowest_image']}), saturation x{c['saturation_ratio']:.2f} "
        f"(farthest x{c['saturation_ratio_worst']:.2f} {c['saturation_ratio_worst_image']})"
    )
    typer.echo(f"task predicted from the route vector alone: {100 * report.route_accuracy:.1f}% of held-out crops")
    tasks = list(report.confusion)
    typer.echo(
        render_table(["true \\ predicted", *tasks], [[t, *[report.confusion[t][p] for p in tasks]] for t in tasks])
    )
    if json_out:
        write_json_output(json_out, report.to_dict(), SIGNATURE)
    if chart:
        evaluation_chart(report, chart, f"{model or 'bundled model'} on {', '.join(map(str, data))}")


@user_errors
def demo(
    out: Path = typer.Option(Path("out/demo"), "--output", "-o", parser=writes, help="Output folder"),
    model: str = typer.Option(None, "--model", "-m", help="Package or checkpoint [default: bundled demo model]"),
    backend: str = typer.Option("auto", parser=backend_name, help="auto, onnxruntime, torch or tensorrt"),
) -> None:
    """Restore the bundled degraded samples; write outputs, report, before/after sheet and routing chart."""
    from moce.apps.demo import run_demo

    progress = CliProgress()
    try:
        result = run_demo(out, model, backend, progress)
    finally:
        progress.stop()
    rows = [[name, f"{b:.2f}", f"{a:.2f}", f"{a - b:+.2f}"] for name, (b, a) in sorted(result.psnr.items())]
    typer.echo(render_table(["sample", "PSNR degraded", "PSNR restored", "gain dB"], rows))
    typer.echo(f"wrote {out / 'restored'}, {out / 'report.json'}, {result.sheet} and {result.routing}")
    raise typer.Exit(result.summary.exit_code)
