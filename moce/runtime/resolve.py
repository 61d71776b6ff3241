"""Opening a model: the one way every command and the Python API turn a model argument into a
verified package.

A package folder is read and verified; a checkpoint (``.ckpt``, ``.pt``, ``.safetensors``) or a
``MoCEIR`` module is exported once into the cache and validated there as ``moce export``
validates it (an export that fails raises :class:`moce.errors.ValidationError` listing every
failure, and is not cached); nothing: the bundled demo model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moce.data import DEFAULT_MODEL
from moce.errors import PackageError, one_line
from moce.package.manifest import Manifest, load_manifest
from moce.package.store import cached_export, cached_module_export
from moce.progress import Messages

if TYPE_CHECKING:  # a package folder needs no PyTorch
    from moce.model.network import MoCEIR

ALLOW_INVALID = "MOCE_ALLOW_INVALID_PACKAGE"
"""Set to 1 (``moce --allow-invalid-package``) to open packages whose export failed validation."""


def validation_failure(manifest: Manifest) -> str | None:
    """Why ``manifest``'s package is not to be trusted: its export's validation failed (recorded in
    the manifest by ``moce export``), or None."""
    validation = manifest.validation
    if validation is None or validation.passed:
        return None
    failures = validation.failures or ["no detail recorded"]
    return one_line(
        f"{manifest.root}: failed validation when exported ({len(failures)} problem(s), first: {failures[0]})"
    )


def check_validated(manifest: Manifest, allow_invalid: bool | None, progress: Messages | None) -> None:
    """Refuse a package that failed validation unless allowed (by argument, or else by
    :data:`ALLOW_INVALID`); allowed, it is said in one line."""
    why = validation_failure(manifest)
    if why is None:
        return
    if allow_invalid is None:
        allow_invalid = os.environ.get(ALLOW_INVALID) == "1"
    if not allow_invalid:
        raise PackageError(f"{why}; re-export it, or pass moce --allow-invalid-package to use it anyway")
    if progress:
        progress(f"warning: {why}; used anyway (--allow-invalid-package)")


def open_model(
    model: str | Path | MoCEIR | None = None, progress: Messages | None = None, allow_invalid: bool | None = None
) -> Manifest:
    """The verified package for ``model``: a package folder, a checkpoint file, a ``MoCEIR``
    module, or None for the bundled demo model. Every file the manifest names is checked
    (:meth:`Manifest.verify_files`) before it is returned, and a package whose export failed
    validation is refused unless ``allow_invalid`` (None: :data:`ALLOW_INVALID` decides)."""
    check = lambda manifest, net: _validated(manifest, net, progress)  # noqa: E731
    if model is not None and not isinstance(model, str | Path):
        manifest = cached_module_export(model, progress, check)
    else:
        path = Path(model) if model else DEFAULT_MODEL
        if path.is_dir():
            manifest = load_manifest(path)
            check_validated(manifest, allow_invalid, progress)
        elif path.is_file():
            manifest = cached_export(path, progress, check)
        else:
            raise PackageError(f"{path}: no such model package or checkpoint")
    manifest.verify_files()
    return manifest


def _validated(manifest: Manifest, model: Any, progress: Messages | None) -> Any:
    # Validation needs PyTorch and the exporter, which a package folder does not: imported only here.
    from moce.package.writer import ExportOptions
    from moce.runtime.validate import validation_check

    report = validation_check(ExportOptions(), progress)(manifest, model)
    report.raise_if_failed()
    return report
