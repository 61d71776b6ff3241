"""`moce triton`, `moce serve` and `moce install-tritonserver`."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer

from moce.apps.triton import ServeOptions, write_repository
from moce.apps.tritonserver import Ports, TritonServer, install_server, serve
from moce.cli.common import user_errors
from moce.imageio import DEFAULT_MAX_PIXELS
from moce.runtime.resolve import resolve_model

# Options shared by `moce triton` and `moce serve`: how the served model runs.
BACKEND = typer.Option("auto", help="auto | tensorrt | onnxruntime | torch, inside the Python backend")
PRECISION = typer.Option("fp32", help="fp32 | fp16 | bf16 | int8 (as in `moce restore`)")
ROUTING = typer.Option("split", help="split | conditional | dense")
TILE = typer.Option(512, help="Tile side for images larger than this (multiple of 8)")
OVERLAP = typer.Option(32, help="Overlap between tiles")
THREADS = typer.Option(0, help="Runtime threads per model instance (0: the backend's default)")
MAX_BATCH = typer.Option(8, help="Triton max_batch_size: images per batch the dynamic batcher forms")
INSTANCES = typer.Option(1, help="Model instances (instance_group count)")
INSTANCE_KIND = typer.Option("cpu", help="cpu | gpu (KIND_GPU: one instance per GPU, on its device)")
MAX_PIXELS = typer.Option(DEFAULT_MAX_PIXELS, help="Refuse images larger than this many pixels")


def serve_options(values: dict[str, object]) -> ServeOptions:
    """The :class:`ServeOptions` among a command's parameters."""
    names = {f.name for f in fields(ServeOptions)}
    return ServeOptions(**{k: v for k, v in values.items() if k in names})  # type: ignore[arg-type]


@user_errors
def triton(
    model: str = typer.Argument(..., help="Model package folder or checkpoint"),
    out: Path = typer.Option(..., "--out", "-o", help="Repository folder to write (replaced whole if it is one)"),
    name: str = typer.Option("moce", help="Model name in the repository"),
    backend: str = BACKEND,
    precision: str = PRECISION,
    routing: str = ROUTING,
    tile: int = TILE,
    overlap: int = OVERLAP,
    threads: int = THREADS,
    max_batch_size: int = MAX_BATCH,
    instances: int = INSTANCES,
    instance_kind: str = INSTANCE_KIND,
    max_pixels: int = MAX_PIXELS,
) -> None:
    """Write a Triton Inference Server model repository that serves the model (Python backend)."""
    options = serve_options(locals())
    folder = write_repository(resolve_model(model).root, out, options, name)
    typer.echo(
        f"wrote {folder} (config.pbtxt, 1/model.py, 1/package); serve it with: tritonserver --model-repository={out}"
    )


@user_errors
def serve_command(
    model: str = typer.Argument(None, help="Model package folder or checkpoint [default: bundled demo model]"),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)"),
    http_port: int = typer.Option(8000, help="HTTP/REST port"),
    grpc_port: int = typer.Option(8001, help="gRPC port"),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port"),
    tritonserver: Path = typer.Option(None, help="tritonserver binary [default: $MOCE_TRITONSERVER, bundled, PATH]"),
    backend: str = BACKEND,
    precision: str = PRECISION,
    routing: str = ROUTING,
    tile: int = TILE,
    overlap: int = OVERLAP,
    threads: int = THREADS,
    max_batch_size: int = MAX_BATCH,
    instances: int = INSTANCES,
    instance_kind: str = INSTANCE_KIND,
    max_pixels: int = MAX_PIXELS,
) -> None:
    """Serve the model with Triton Inference Server until interrupted (Ctrl-C)."""
    options = serve_options(locals())

    def ready(server: TritonServer) -> None:
        typer.echo(
            f"serving model 'moce': HTTP {server.http_url}, gRPC {server.grpc_url}, "
            f"metrics {server.host}:{server.ports.metrics}/metrics; log {server.log_path}; Ctrl-C stops",
            err=True,
        )

    ports = Ports(http_port, grpc_port, metrics_port)
    code = serve(model, options, host, ports, tritonserver, ready, lambda m: typer.echo(m, err=True))
    raise typer.Exit(code)


@user_errors
def install_tritonserver(
    dest: Path = typer.Option(None, help="Folder to unpack into [default: <environment>/opt/tritonserver]"),
) -> None:
    """Unpack the Triton server bundled in the nvidia-pytriton wheel (from PyPI) for `moce serve`."""
    binary = install_server(dest)
    typer.echo(f"installed {binary}")
