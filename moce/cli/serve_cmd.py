"""`moce triton`, `moce serve` and `moce install-tritonserver`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from moce.apps.triton import INSTANCE_KINDS, ServeOptions, write_repository
from moce.apps.tritonserver import Ports, TritonServer, install_server, serve
from moce.cli.common import THREADS, reads, user_errors, writes
from moce.cli.options import backend, one_of, pixels, precision, routing, tile_pixels
from moce.cli.progress import say
from moce.errors import InputError
from moce.imageio import DEFAULT_MAX_PIXELS

SERVE_OPTIONS = {  # ServeOptions field -> (type, its command-line option): how the served model runs
    "backend": (
        str,
        typer.Option("auto", parser=backend, help="auto | tensorrt | onnxruntime | torch, inside the Python backend"),
    ),
    "precision": (str, typer.Option("fp32", parser=precision, help="fp32 | fp16 | bf16 | int8 (as in `moce restore`)")),
    "routing": (str, typer.Option("split", parser=routing, help="split | conditional | dense")),
    "tile": (int, typer.Option(512, parser=tile_pixels, help="Tile side for images larger than this (multiple of 8)")),
    "overlap": (int, typer.Option(32, min=0, max=1024, help="Overlap between tiles")),
    "threads": (int, THREADS),
    "max_batch_size": (
        int,
        typer.Option(8, min=1, max=1024, help="Triton max_batch_size: images per batch the dynamic batcher forms"),
    ),
    "instances": (int, typer.Option(1, min=1, max=64, help="Model instances (instance_group count)")),
    "instance_kind": (
        str,
        typer.Option(
            "cpu",
            parser=one_of(INSTANCE_KINDS, "instance kind"),
            help="cpu | gpu (KIND_GPU: one instance per GPU, on its device)",
        ),
    ),
    "max_pixels": (
        int,
        typer.Option(DEFAULT_MAX_PIXELS, parser=pixels, help="Refuse images larger than this (64M, 800k, 1000000)"),
    ),
}


def with_serve_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the :data:`SERVE_OPTIONS` as command-line options; it receives them as one
    ``options: ServeOptions`` argument."""
    own = [p for name, p in inspect.signature(command).parameters.items() if name != "options"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in SERVE_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        given = {name: values.pop(name) for name in SERVE_OPTIONS}
        options = ServeOptions.of(**{name: value for name, value in given.items() if value is not None})
        return command(**values, options=options)

    wrapper.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    return wrapper


@user_errors
@with_serve_options
def triton(
    model: str = typer.Argument(..., help="Model package folder or checkpoint"),
    out: Path = typer.Option(
        None,
        "--output",
        "-o",
        parser=writes,
        help="Model repository folder: moce writes its model's folder (--name) there and leaves the others alone",
        show_default=False,
    ),
    name: str = typer.Option("moce", help="Model name in the repository (its folder)"),
    overwrite: bool = typer.Option(False, help="Replace this model's folder from an earlier `moce triton`"),
    options: ServeOptions = ServeOptions(),
) -> None:
    """Write a Triton Inference Server model repository that serves the model (Python backend)."""
    if out is None:
        raise InputError("moce triton needs -o/--output: the repository folder to write")
    folder = write_repository(model, out, options, name, overwrite)
    typer.echo(
        f"wrote {folder} (config.pbtxt, 1/model.py, 1/package); serve it with: tritonserver --model-repository={out}"
    )


@user_errors
@with_serve_options
def serve_command(
    model: str = typer.Argument(None, help="Model package folder or checkpoint [default: bundled demo model]"),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)"),
    http_port: int = typer.Option(8000, min=1, max=65535, help="HTTP/REST port"),
    grpc_port: int = typer.Option(8001, min=1, max=65535, help="gRPC port"),
    metrics_port: int = typer.Option(8002, min=1, max=65535, help="Prometheus metrics port"),
    tritonserver: Path = typer.Option(
        None, parser=reads, help="tritonserver binary [default: $MOCE_TRITONSERVER, bundled, PATH]"
    ),
    options: ServeOptions = ServeOptions(),
) -> None:
    """Serve the model with Triton Inference Server until interrupted (Ctrl-C)."""

    def ready(server: TritonServer) -> None:
        typer.echo(
            f"serving model 'moce': HTTP {server.http_url}, gRPC {server.grpc_url}, "
            f"metrics {server.host}:{server.ports.metrics}/metrics; log {server.log_path}; Ctrl-C stops",
            err=True,
        )

    ports = Ports(http_port, grpc_port, metrics_port)
    code = serve(model, options, host, ports, tritonserver, ready, say)
    raise typer.Exit(code)


@user_errors
def install_tritonserver(
    dest: Path = typer.Option(
        None, "--output", "-o", parser=writes, help="Folder to unpack into [default: <environment>/opt/tritonserver]"
    ),
) -> None:
    """Unpack the Triton server bundled in the nvidia-pytriton wheel (from PyPI) for `moce serve`."""
    binary = install_server(dest)
    typer.echo(f"installed {binary}")
