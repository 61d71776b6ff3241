"""Opening a model: the one way every command and the Python API turn a model argument into a
verified package.

A package folder is read and verified; a checkpoint (``.ckpt``, ``.pt``, ``.safetensors``) or a
``MoCEIR`` module is exported once into the cache and validated there as ``moce export``
validates it (an export that fails raises :class:`moce.errors.ValidationError` listing every
failure, and is not cached); nothing: the bundled demo model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from moce.data import DEFAULT_MODEL
from moce.errors import PackageError
from moce.package.manifest import Manifest, load_manifest
from moce.package.store import cached_export, cached_module_export
from moce.progress import Messages

if TYPE_CHECKING:  # a package folder needs no PyTorch
    from moce.model.network import MoCEIR


def open_model(model: str | Path | MoCEIR | None = None, progress: Messages | None = None) -> Manifest:
    """The verified package for ``model``: a package folder, a checkpoint file, a ``MoCEIR``
    module, or None for the bundled demo model. Every file the manifest names is checked
    (:meth:`Manifest.verify_files`) before it is returned."""
    check = lambda manifest, net: _validated(manifest, net, progress)  # noqa: E731
    if model is not None and not isinstance(model, str | Path):
        manifest = cached_module_export(model, progress, check)
    else:
        path = Path(model) if model else DEFAULT_MODEL
        if path.is_dir():
            manifest = load_manifest(path)
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
