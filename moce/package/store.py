"""Resolving a model argument to a verified package: a folder as is, a checkpoint exported once into the cache."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from moce import __version__
from moce.data import DEFAULT_MODEL
from moce.errors import PackageError
from moce.files import sha256_file
from moce.package.manifest import MANIFEST, Manifest, load_manifest

if TYPE_CHECKING:  # the writer needs PyTorch; a package folder does not
    from moce.package.writer import Check

GRAPH_LIBRARIES = ("torch", "onnx", "onnxslim")
"""Libraries whose versions change what an export writes (the tracer, the proto, the simplifier)."""


def cache_dir() -> Path:
    return Path(os.environ.get("MOCE_CACHE", Path.home() / ".cache" / "moce"))


def resolve_package(
    model: str | Path | None, progress: Callable[[str], None] | None = None, check: Check | None = None
) -> Manifest:
    """A package folder as is; a checkpoint exported once into the cache (see :func:`cached_package_path`).

    ``check`` runs on a fresh export before it enters the cache (validation, which belongs to the
    runtime: see ``moce.runtime.resolve``); if it raises, nothing is cached.
    """
    path = Path(model) if model else DEFAULT_MODEL
    if path.is_dir():
        manifest = load_manifest(path)
    elif path.is_file():
        manifest = _cached_export(path, progress, check)
    else:
        raise PackageError(f"{path}: no such model package or checkpoint")
    manifest.verify_files()
    return manifest


@lru_cache(maxsize=1)
def exporter_fingerprint() -> str:
    """SHA-256 of what decides an exported graph, 12 hex digits: the model, exporter and package
    sources (plus ``moce/routing.py``) and the versions of :data:`GRAPH_LIBRARIES`.

    Development builds share a version number, and a library upgrade keeps it; this tells their
    exports apart.
    """
    package = Path(__file__).parents[1]
    digest = hashlib.sha256()
    sources = [
        *(package / "model").glob("*.py"),
        *(package / "export").glob("*.py"),
        *(package / "package").glob("*.py"),
        package / "routing.py",
    ]
    for source in sorted(sources):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    for library in GRAPH_LIBRARIES:
        digest.update(f"{library}=={installed_version(library)}".encode())
    return digest.hexdigest()[:12]


def installed_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def cached_package_path(checkpoint: Path) -> Path:
    """Where ``checkpoint``'s export lives in the cache: keyed by its SHA-256, moce's version and
    :func:`exporter_fingerprint`, so an upgrade, or a changed development checkout, re-exports."""
    name = f"{checkpoint.stem}-{sha256_file(checkpoint)[:16]}-{__version__}-{exporter_fingerprint()}.moce"
    return cache_dir() / "packages" / name


def _cached_export(checkpoint: Path, progress: Callable[[str], None] | None, check: Check | None) -> Manifest:
    target = cached_package_path(checkpoint)
    if (target / MANIFEST).is_file():
        return load_manifest(target)
    if progress:
        progress(f"exporting {checkpoint} into the cache at {target}")
    # Exporting needs PyTorch and ONNX; a package folder needs neither, so this import waits until here.
    from moce.package.writer import ExportOptions, export_package

    return export_package(checkpoint, target, ExportOptions(overwrite=True), check=check).manifest
