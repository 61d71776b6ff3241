"""The model a runtime job runs: a package folder, or a checkpoint exported and validated once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from moce.package.manifest import Manifest
from moce.package.store import resolve_package

Progress = Callable[[str], None]


def resolve_model(model: str | Path | None, progress: Progress | None = None) -> Manifest:
    """:func:`moce.package.store.resolve_package`, where a checkpoint's export into the cache is
    validated as ``moce export`` validates it; an export that fails raises
    :class:`moce.errors.ValidationError` listing every failure, and is not cached."""
    return resolve_package(model, progress, lambda manifest, net: _validated(manifest, net, progress))


def _validated(manifest: Manifest, model: Any, progress: Progress | None) -> Any:
    # Validation needs PyTorch and the exporter, which a package folder does not: imported only here.
    from moce.package.writer import ExportOptions
    from moce.runtime.validate import validation_check

    report = validation_check(ExportOptions(), progress)(manifest, model)
    report.raise_if_failed()
    return report
