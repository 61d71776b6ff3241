"""The package cache: checkpoints and modules exported once, keyed by what decides their graphs."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from moce._version import __version__
from moce.files import sha256_file
from moce.package.manifest import MANIFEST, Manifest, load_manifest
from moce.progress import Messages

if TYPE_CHECKING:  # the writer needs PyTorch; a package folder does not
    from moce.model.network import MoCEIR
    from moce.package.writer import Check

GRAPH_LIBRARIES = ("torch", "onnx", "onnxslim")
"""Libraries whose versions change what an export writes (the tracer, the proto, the simplifier)."""


def cache_dir() -> Path:
    return Path(os.environ.get("MOCE_CACHE", Path.home() / ".cache" / "moce"))


@lru_cache(maxsize=1)
def exporter_fingerprint() -> str:
    """SHA-256 of what decides an exported graph, 12 hex digits: the model, exporter and package
    sources (plus ``moce/routing.py`` and ``moce/names.py``) and the versions of :data:`GRAPH_LIBRARIES`.

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
        package / "names.py",
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


def cached_export(checkpoint: Path, progress: Messages | None, check: Check | None) -> Manifest:
    """``checkpoint``'s package in the cache, exported (and ``check``-ed: validation, which belongs
    to the runtime, see ``moce.runtime.resolve``) on first use; if the check raises, nothing is cached."""
    return _export_once(checkpoint, cached_package_path(checkpoint), progress, check)


def cached_module_export(model: MoCEIR, progress: Messages | None, check: Check | None) -> Manifest:
    """:func:`cached_export` for a ``MoCEIR`` module, keyed by its weights and configuration."""
    return _export_once(model, cache_dir() / "packages" / f"module-{module_digest(model)}.moce", progress, check)


def module_digest(model: MoCEIR) -> str:
    """16 hex digits of SHA-256 over a module's configuration, weights, moce's version and the exporter."""
    from safetensors.torch import save  # a module means PyTorch is here already

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    digest.update(save(state))
    digest.update(f"{__version__}-{exporter_fingerprint()}".encode())
    return digest.hexdigest()[:16]


def _export_once(source: Path | MoCEIR, target: Path, progress: Messages | None, check: Check | None) -> Manifest:
    if (target / MANIFEST).is_file():
        return load_manifest(target)
    if progress:
        progress(
            f"exporting {'a MoCEIR module' if not isinstance(source, Path) else source} into the cache at {target}"
        )
    # Exporting needs PyTorch and ONNX; a package folder needs neither, so this import waits until here.
    from moce.package.writer import ExportOptions, export_package

    return export_package(source, target, ExportOptions(overwrite=True), check=check).manifest
