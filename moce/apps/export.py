"""`moce export`: a checkpoint (or module) written as a package, validated, the outcome recorded."""

from __future__ import annotations

from pathlib import Path

from moce.model.network import MoCEIR
from moce.package.writer import ExportOptions, ExportResult, export_package
from moce.progress import Messages
from moce.runtime.validate import validation_check


def export_and_validate(
    checkpoint: str | Path | MoCEIR,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    progress: Messages | None = None,
) -> ExportResult:
    """``moce export``: write the package, validate it (unless ``options.validate`` is off) and record
    the outcome in its manifest; raises :class:`ValidationError` listing every failure.

    A package that fails validation is still moved into place, so that it can be inspected.
    """
    options = options or ExportOptions()
    check = validation_check(options, progress) if options.validate else None
    result = export_package(checkpoint, out_dir, options, progress, check)
    if result.report is not None:
        result.report.raise_if_failed()
    return result
