"""`moce bench`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from moce.apps.bench import run_bench
from moce.apps.bench_cases import BENCH_BACKENDS, BenchOptions, BenchResult, fastest, speedups
from moce.apps.bench_results import SIGNATURE, chart, from_json, saved_json, saved_rows
from moce.apps.bench_tiling import SIGNATURE as TILING
from moce.apps.bench_tiling import TilingBench, TilingResult, run_tiling_bench, tiling_json
from moce.apps.bench_video import VIDEO_SIZES, VideoBench, VideoBenchResult, run_video_bench
from moce.apps.session_options import SessionOptions
from moce.cli.common import THREADS, reads, render_table, user_errors, write_json_output, writes
from moce.cli.options import counts, image_sizes, list_of, memory_size, passes_count, precisions, routings, tilings
from moce.cli.options import device as device_name
from moce.cli.progress import say
from moce.errors import InputError
from moce.outputs import Planned, check_writes


def _side(shape: tuple[int, int]) -> str:
    return "x".join(dict.fromkeys(map(str, shape)))


def _accuracy(r: BenchResult) -> str:
    """PSNR against eager fp32 and the share of routing decisions it shares ("-": not measured)."""
    if r.psnr_vs_reference is None or r.route_agreement is None:
        return "-"
    db = "inf" if r.psnr_vs_reference == float("inf") else f"{r.psnr_vs_reference:.1f}"
    return f"{db} / {_percent(r.route_agreement)}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _saved(path: Path) -> list[BenchResult]:
    try:
        return from_json(saved_rows(json.loads(path.read_text())))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a `moce bench --json` file ({exc.__class__.__name__}: {exc})") from exc


def _print_tiling(results: list[TilingResult]) -> None:
    rows = [
        [
            f"{r.case.height}x{r.case.width}",
            r.case.tiling,
            r.plan["tile"] or "untiled",
            r.plan["tiles"],
            r.plan["passes"],
            f"{r.median_s:.2f}",
            f"{r.peak_bytes / 2**30:.2f}",
            "-" if r is results[0] or r.psnr_vs_first == float("inf") else f"{r.psnr_vs_first:.1f}",
        ]
        for r in results
    ]
    headers = ["size HxW", "tiling", "tile", "tiles", "passes", "seconds", "peak GiB", "PSNR dB vs first"]
    typer.echo(render_table(headers, rows))
    for r in results:
        others = ", ".join(f"x{up:.2f} of {name}" for name, up in r.speedups.items() if name != r.case.tiling)
        typer.echo(f"{r.case.height}x{r.case.width} {r.case.tiling}: {others}")


def _print_video(results: list[VideoBenchResult]) -> None:
    rows = [
        [f"{r.width}x{r.height}", r.frames, f"{r.image_fps:.2f}", f"{r.video_fps:.2f}", f"x{r.ratio:.3f}"]
        for r in results
    ]
    typer.echo(render_table(["size WxH", "frames", "image path frames/s", "video frames/s", "video / image"], rows))


VIDEO = "moce bench --video"


def _one_session(backends: list[str] | None, precision: list[str], threads: int | None) -> SessionOptions:
    """The one session --video and --tiling time the whole restore path with: the first backend
    listed (auto when none is), at the first precision."""
    return SessionOptions(backends[0] if backends else "auto", precision=precision[0], threads=threads)


@user_errors
def bench(
    model: str = typer.Option(None, "--model", "-m", help="Package folder or checkpoint [default: bundled model]"),
    backends: str = typer.Option(
        None,
        parser=list_of((*BENCH_BACKENDS, "auto"), "backend"),
        help="torch, torch-graphs (CUDA graphs), torch-compile (inductor), onnxruntime, tensorrt (comma-separated) "
        "[default: torch,onnxruntime; with --tiling: auto, or the first listed]",
    ),
    routing: str = typer.Option("split,conditional,dense", parser=routings, help="Routing forms to time"),
    precision: str = typer.Option(
        "fp32",
        parser=precisions,
        help="Precisions to time, each against eager fp32: fp32,fp16,bf16,int8 (fp16/int8: moce build-engine)",
    ),
    sizes: str = typer.Option(
        None,
        parser=image_sizes,
        help="Image sizes, 256 or HxW, comma-separated [default: 256,512; with --video: 720x1280,1080x1920]",
    ),
    batch: str = typer.Option("1", parser=counts, help="Batch sizes"),
    warmup: int = typer.Option(2, min=0, max=1000, help="Untimed runs per case"),
    rounds: int = typer.Option(
        None,
        min=1,
        max=10_000,
        help="Timed interleaved rounds (each runs every case once) [default: 10; with --tiling: 1 per case]",
    ),
    threads: int = THREADS,
    device: str = typer.Option(
        None, parser=device_name, help="cpu or cuda, for every case [default: cuda where PyTorch sees a GPU]"
    ),
    memory: bool = typer.Option(True, help="Measure peak memory per case (one child process each)"),
    json_out: Path = typer.Option(
        None, "--json", parser=writes, help="Write all timings as JSON to this file (-: standard output)"
    ),
    png: Path = typer.Option(None, "--chart", parser=writes, help="Write a PNG bar chart of the medians"),
    from_saved: Path = typer.Option(
        None,
        "--from-json",
        parser=reads,
        help="Measure nothing: tabulate (and chart) a run saved with --json, e.g. on another machine",
    ),
    tiling: str = typer.Option(
        None,
        parser=tilings,
        help="Time the whole restore path at photo sizes instead (--sizes 1920x1080,4000x3000), one policy "
        "beside another: auto, untiled or a tile side, e.g. untiled,auto,512 (each scored against the first)",
    ),
    photo: Path = typer.Option(
        None, parser=reads, help="With --tiling: the photo to resize to each size [default: a bundled sample]"
    ),
    max_memory: str = typer.Option(
        None, parser=memory_size, metavar="SIZE", help="With --tiling: --tile auto's budget"
    ),
    tile_passes: str = typer.Option(
        "auto", parser=passes_count, metavar="auto|N", help="With --tiling: passes for every tiled case"
    ),
    video: bool = typer.Option(
        False,
        "--video",
        help="Time restoring a synthetic clip at each size (frames/s) against the same frames as images",
    ),
    frames: int = typer.Option(8, min=1, max=10_000, help="With --video: frames per clip"),
) -> None:
    """Measure latency, throughput, memory and skipped expert compute, against PyTorch eager.

    Freed memory is kept for reuse (MOCE_MALLOC_DEFAULTS=1 times glibc's defaults instead).
    """
    signature = VIDEO if video else TILING if tiling else SIGNATURE
    planned = [Planned(json_out, "--json", signature)]
    check_writes([*planned, Planned(png, "--chart", SIGNATURE, suffix=".png")], reads=[model, photo, from_saved])
    if video:
        clips = VideoBench(list(sizes or VIDEO_SIZES), frames, _one_session(backends, precision, threads), rounds or 1)
        timed = run_video_bench(model, clips, say)
        _print_video(timed)
        if json_out:
            write_json_output(json_out, {"video": [r.to_dict() for r in timed]}, VIDEO)
        return
    sizes = sizes or image_sizes("256,512")
    if tiling:
        session = _one_session(backends, precision, threads)
        session = replace(session, max_memory=max_memory, tile_passes=tile_passes)
        options = TilingBench(tiling, list(sizes), photo, session, rounds or 1)
        if photo is not None and not photo.is_file():
            raise InputError(f"{photo}: no such photo")
        tiled = run_tiling_bench(model, options, say)
        _print_tiling(tiled)
        if json_out:
            write_json_output(json_out, tiling_json(tiled))
        return
    if from_saved:
        results = _saved(from_saved)
    else:
        options = BenchOptions(
            backends or ["torch", "onnxruntime"],
            routing,
            list(sizes),
            list(batch),
            warmup,
            rounds or 10,
            threads,
            device,
            memory,
            precisions=precision,
        )
        results = run_bench(model, options, say)
    ups = speedups(results)
    rows = []
    for r in results:
        if r.skipped:
            continue
        share = 1 - r.expert_gflops / r.dense_expert_gflops if r.dense_expert_gflops else 0.0
        rows.append(
            [
                r.case.backend,
                r.case.routing,
                r.case.precision,
                _side(r.case.shape),
                r.case.batch,
                f"{r.median_ms:.1f}",
                f"{r.p90_ms:.1f}",
                f"{r.images_per_s():.2f}",
                "-" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                f"{r.expert_gflops:.2f}/{r.dense_expert_gflops:.2f}",
                _percent(share),
                f"{r.gflops_per_s():.1f}",
                _percent(r.share_of_peak()),
                f"{r.max_abs_vs_reference:.1e}",
                _accuracy(r),
                f"x{ups[r.case]:.2f}",
            ]
        )
    typer.echo(
        render_table(
            [
                "backend",
                "routing",
                "precision",
                "size",
                "batch",
                "median ms",
                "p90 ms",
                "img/s",
                "peak MB",
                "expert GFLOPs run/dense",
                "skipped",
                "GFLOP/s",
                "of GEMM peak",
                "max|d| vs eager",
                "PSNR dB / routes same",
                "speed-up",
            ],
            rows,
        )
    )
    for r in results:
        if r.skipped:
            typer.echo(f"skipped {r.case.label}: {r.skipped}")
    for (shape, batch), best in fastest(results).items():
        typer.echo(
            f"fastest here at {_side(shape)} px, batch {batch}: {best.case.label} (x{ups[best.case]:.2f} of eager)"
        )
    for cuda, peak in sorted({(r.cuda, r.gemm_peak_gflops) for r in results if r.gemm_peak_gflops}):
        typer.echo(f"float32 GEMM peak ({'cuda' if cuda else 'cpu'}, median of one run per round): {peak:.1f} GFLOP/s")
    kept = {r.kept_freed_memory for r in results}
    typer.echo(
        "memory allocator: "
        + (
            "freed blocks kept for reuse (moce.runtime.allocator)"
            if kept == {True}
            else "glibc defaults (eager PyTorch pays page faults every run)"
        )
    )
    if json_out and not from_saved:
        write_json_output(json_out, saved_json(results))
    if png:
        chart(results, png)
