"""`moce restore INPUT OUTPUT`."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from moce.apps.cluster import local_path, locations, restore_on_cluster
from moce.apps.discovery import NOT_ENTERED
from moce.apps.job import RestoreJob
from moce.apps.report import OUTPUT_EXISTS, RestoreSummary
from moce.apps.restore import restore as run_restore
from moce.apps.session_options import SessionOptions
from moce.apps.shots import ROUTE_PER, route_per_of
from moce.apps.stop import StopRequest
from moce.apps.video import VideoOptions
from moce.cli.common import THREADS, options_of, render_table, user_errors, writes
from moce.cli.options import backend as backend_name
from moce.cli.options import (
    cluster_address,
    image_ext,
    memory_size,
    one_of,
    passes_count,
    pixels,
    tile_side,
    video_codec,
)
from moce.cli.options import device as device_name
from moce.cli.options import precision as precision_name
from moce.cli.options import routing as routing_form
from moce.cli.progress import CliProgress, Verbosity, verbosity
from moce.errors import InputError
from moce.imageio import DEFAULT_MAX_PIXELS


@user_errors
def restore(
    paths: list[str] = typer.Argument(
        ...,
        metavar="INPUT... OUTPUT",
        help="Image or video files or folders, then the output folder (a file name for one input file), as cp "
        "takes them. With --cluster, one input may be any pyarrow URI: file://, s3://, gs://",
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="Model package folder or checkpoint [default: bundled demo model]"
    ),
    backend: str = typer.Option("auto", parser=backend_name, help="auto | tensorrt | onnxruntime | torch"),
    routing: str = typer.Option(
        "split",
        parser=routing_form,
        help="split (the host launches the chosen experts) | conditional (the choice inside the graph; "
        "torch with --cuda-graphs: one CUDA graph with IF nodes) | dense",
    ),
    precision: str = typer.Option(
        "fp32",
        parser=precision_name,
        help="fp32 | fp16 | bf16 | int8 (ONNX fp16/int8 need `moce build-engine`; bf16: torch backend)",
    ),
    device: str = typer.Option(None, parser=device_name, help="cpu or cuda [default: cuda when available]"),
    tile: str = typer.Option(
        "auto",
        parser=tile_side,
        metavar="auto|N",
        help="auto: untiled when the image fits --max-memory, else the fewest tiles that fit; N: tiles of N px "
        "(multiple of 8) for images larger than that",
    ),
    overlap: int = typer.Option(32, min=0, max=1024, help="Overlap between tiles, feather-blended"),
    route_over: str = typer.Option(
        None,
        "--route-per",
        parser=one_of(ROUTE_PER, "--route-per"),
        help="Images: image (route once per image) | tile (each tile routes itself). Clips: shot (one route "
        "per shot) | frame (each frame alone) | video (one route for the clip) [default: image, and shot]",
    ),
    route_size: int = typer.Option(
        None,
        min=16,
        max=65536,
        help="Longest side of the routing pass for tiled images [default: --tile N, or 512 with auto]",
    ),
    tile_passes: str = typer.Option(
        "auto",
        parser=passes_count,
        metavar="auto|N",
        help="Passes over the tiles sharing image-wide attention sums (route-per image); 1 = each tile alone, "
        "fastest; auto: 1 with --tile auto (large tiles), 3 with --tile N",
    ),
    max_memory: str = typer.Option(
        None,
        parser=memory_size,
        metavar="SIZE",
        help="Memory --tile auto plans for: 8G, 512M (RAM on the CPU, device memory on CUDA) "
        "[default: half of what is available when the run starts]",
    ),
    batch: int = typer.Option(1, min=1, max=1024, help="Tiles, or same-sized images, per inference call"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders"),
    include: list[str] = typer.Option([], "--include", help="Glob filter on names or relative paths (repeatable)"),
    ext: str = typer.Option(
        None, parser=image_ext, help="Output format (png, jpg, tif, webp, bmp) [default: the input's]"
    ),
    overwrite: bool = typer.Option(False, help="Redo images whose output exists (default: skip them, so runs resume)"),
    quality: int = typer.Option(
        None, min=1, max=100, help="JPEG and lossy WebP quality, 1-100 [default: the input's; 95 when it has none]"
    ),
    allow_lossy: bool = typer.Option(
        False, "--allow-lossy", help="Allow an output format that cannot hold the input's depth or alpha (--ext jpg)"
    ),
    codec: str = typer.Option(
        None,
        parser=video_codec,
        help="Clips: h264 | hevc | vp9 | av1 | ffv1 (lossless, for archives) [default: the input's codec]",
    ),
    crf: int = typer.Option(
        None, min=0, max=63, help="Clips: the encoder's constant quality, lower is better [default: 18 for h264]"
    ),
    report: Path = typer.Option(
        None, parser=writes, help="Write a JSON report: per-image status, routes, gates, timing"
    ),
    threads: int = THREADS,
    cuda_graphs: bool = typer.Option(
        False,
        "--cuda-graphs",
        help="torch backend on CUDA: replay each segment and expert as a CUDA graph; "
        "with --routing conditional, the whole forward as one graph that chooses experts on the GPU",
    ),
    compile: bool = typer.Option(
        False,
        "--compile",
        help="torch backend: run each segment and expert through torch.compile (inductor), compiled "
        "per image size on first use",
    ),
    cluster: str = typer.Option(
        None,
        parser=cluster_address,
        help="Run on Ray: local (this machine), auto or ray://HOST:PORT (a running cluster)",
    ),
    workers: int = typer.Option(
        2, min=1, max=4096, help="With --cluster: Ray actors, one model each (a GPU each where there are)"
    ),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS,
        parser=pixels,
        help="Refuse larger images before decoding them (64M, 800k, 1000000; raise it to restore them in tiles)",
    ),
) -> None:
    """Restore images and clips, running only the experts each image's (or shot's) routers choose."""
    route_per, video_route = route_per_of(route_over, routing)
    session = options_of(SessionOptions, {**locals(), "route_per": route_per})  # the parameters named as its fields
    if len(paths) < 2:
        raise InputError("restore takes the inputs, then the output: moce restore photo.png out/")
    *inputs, output = paths
    filesystem, sources = locations(inputs, cluster is not None)
    job = RestoreJob(
        inputs=sources,
        filesystem=filesystem,
        output=local_path(output),
        model=model,
        session=session,
        recursive=recursive,
        include=tuple(include),
        ext=ext,
        overwrite=overwrite,
        allow_lossy=allow_lossy,
        quality=quality,
        report=report,
        video=VideoOptions(route_per=video_route, codec=codec, crf=crf),
    )
    progress = CliProgress()
    with StopRequest().on_signals() as stop:
        try:
            if cluster is None:
                summary = run_restore(job, progress, stop=stop)
            else:
                summary = restore_on_cluster(job, cluster, workers, progress, stop, verbosity() == Verbosity.QUIET)
        finally:
            progress.stop()
    _print_summary(summary)
    raise typer.Exit(summary.exit_code)


def _print_summary(summary: RestoreSummary) -> None:
    totals = summary.to_dict()["totals"]
    rows = [
        [
            summary.backend,
            summary.precision,
            summary.routing,
            totals["images"],
            totals["ok"],
            totals["errors"],
            totals["skipped"],
            f"{totals['setup_seconds']:.2f}",
            f"{totals['restore_seconds']:.2f}",
            f"{totals['images_per_second']:.2f}",
            f"{100 * totals['expert_compute_skipped']:.1f}%",
        ]
    ]
    typer.echo(
        render_table(
            [
                "backend",
                "precision",
                "routing",
                "images",
                "ok",
                "errors",
                "skipped",
                "set-up s",
                "restore s",
                "images/s",
                "expert FLOPs skipped",
            ],
            rows,
        )
    )
    clips = [r for r in summary.restored if r.frames]
    if clips:
        frames = sum(r.frames or 0 for r in clips)
        rate = frames / sum(r.seconds for r in clips) if any(r.seconds for r in clips) else 0.0
        typer.echo(f"clips: {len(clips)} restored, {frames} frames, {rate:.2f} frames/s")
    for record in summary.failed:
        typer.echo(f"failed: {record.error}", err=True)
    folders = [Path(r.input).name for r in summary.skipped if r.reason == NOT_ENTERED]
    if folders:
        names = ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else "")
        typer.echo(f"{len(folders)} sub-folder(s) not entered ({names}); -r/--recursive restores them", err=True)
    existing = sum(r.reason == OUTPUT_EXISTS for r in summary.skipped)
    if existing:
        typer.echo(f"skipped {existing} image(s) whose output exists; --overwrite redoes them", err=True)
    if summary.interrupted is not None:
        done = len(summary.restored) + len(summary.failed)
        total = done + len(summary.not_processed)
        name = signal.Signals(summary.interrupted).name
        typer.echo(f"interrupted ({name}) after {done} of {total} images; rerun the same command to resume", err=True)
