"""The `moce` command line."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import cv2
import cv2.utils.logging
import typer

from moce._version import __version__
from moce.cli.bench_cmd import bench
from moce.cli.build_engine_cmd import build_engine
from moce.cli.compare_cmd import compare
from moce.cli.evaluate_cmd import demo, evaluate
from moce.cli.export_cmd import export
from moce.cli.inspect_cmd import inspect
from moce.cli.progress import Verbosity, set_verbosity
from moce.cli.restore_cmd import restore
from moce.cli.serve_cmd import install_tritonserver, serve_command, triton
from moce.cli.train_cmd import train
from moce.errors import one_line
from moce.runtime.allocator import keep_freed_memory
from moce.runtime.resolve import ALLOW_INVALID


class OneLineErrors(typer.core.TyperGroup):
    """The command group, printing a bad option value or usage as one line (``error: ...``) with
    exit status 2, in the style of moce's own errors, instead of click's usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer._click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `moce` alone: the help, as before
            sys.exit(exc.exit_code)
        except typer._click.exceptions.ClickException as exc:
            typer.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "[default: ...]" written in it stays visible
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Deploy MoCE-IR: export, build engines, restore.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moce {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings, errors and the result only"),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Every step stamped with the seconds since the start; a line per image"
    ),
    allow_invalid_package: bool = typer.Option(
        False, "--allow-invalid-package", help="Use a model package whose export failed validation (said once)"
    ),
) -> None:
    """Deploy MoCE-IR: export, build engines, restore."""
    if quiet and verbose:
        raise typer.BadParameter("-q/--quiet and -v/--verbose: choose one")
    if allow_invalid_package:
        os.environ[ALLOW_INVALID] = "1"  # the library's opt-in, seen by Ray workers and Triton's stubs too
    set_verbosity(Verbosity.QUIET if quiet else Verbosity.VERBOSE if verbose else Verbosity.NORMAL)
    configure_process()


def configure_process() -> None:
    """What the program, not a library call, decides for its whole process: malloc keeps freed
    memory for reuse (moce.runtime.allocator; ``MOCE_MALLOC_DEFAULTS=1`` opts out), only errors
    from other libraries' loggers reach the terminal (ONNX Runtime's quantiser logs a hint per graph),
    and OpenCV logs nothing (its decoder errors become moce's per-file errors)."""
    keep_freed_memory()
    logging.getLogger().setLevel(logging.ERROR)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


app.command()(inspect)
app.command()(export)
app.command()(restore)
app.command()(train)
app.command("build-engine")(build_engine)
app.command()(compare)
app.command()(bench)
app.command()(evaluate)
app.command()(demo)
app.command()(triton)
app.command("serve")(serve_command)
app.command("install-tritonserver")(install_tritonserver)


def main() -> None:
    app(args=sys.argv[1:])
