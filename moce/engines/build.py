"""`moce build-engine`: ONNX precision variants, then TensorRT engines for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from moce.data import SAMPLES
from moce.data.degrade import DEGRADATIONS, degrade
from moce.engines.tensorrt_builder import Profile, build_engines
from moce.engines.tensorrt_ops import check_package
from moce.engines.variants import VariantReport, build_variants
from moce.errors import InputError, MissingDependencyError, PackageError, listed
from moce.imageio import image_files, read_image
from moce.package.manifest import EngineEntry, Manifest
from moce.package.store import cache_dir
from moce.runtime.resolve import open_model
from moce.runtime.tensorrt_runner import engine_graphs

CALIB_SIDE = 128


@dataclass
class BuildOptions:
    precisions: list[str] = field(default_factory=list)  # [] means float32 engines only
    calib: Path | None = None
    profile: Profile = field(default_factory=Profile)
    workspace_mb: int = 4096
    onnx_only: bool = False
    engine_cache: Path | None = None


@dataclass
class BuildResult:
    manifest: Manifest
    variants: list[VariantReport]
    engines: list[EngineEntry]
    tensorrt_error: str | None


def _square_crops(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so the short side is ``side``, then centre-crop to side x side (CHW)."""
    h, w = image.shape[:2]
    scale = side / min(h, w)
    image = cv2.resize(image, (max(side, round(w * scale)), max(side, round(h * scale))), interpolation=cv2.INTER_AREA)
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side].transpose(2, 0, 1).copy()


def calibration_images(folder: Path | None, side: int = CALIB_SIDE) -> list[np.ndarray]:
    """Images from ``--calib`` as they are, or the bundled samples' clean photos under every degradation."""
    if folder is not None:
        return [_square_crops(read_image(p)[0], side) for p in image_files(folder, "calibration images")]
    clean = [read_image(p)[0] for p in sorted((SAMPLES / "clean").glob("*.png"))]
    return [_square_crops(degrade(img, name, seed=i), side) for img in clean for i, name in enumerate(DEGRADATIONS)]


def check_tensorrt_support(manifest: Manifest, precisions: list[str]) -> None:
    """Refuse, before TensorRT is even imported, graphs its ONNX parser would refuse (naming each)."""
    problems = [
        p for precision in precisions for p in check_package(manifest, [precision], engine_graphs(manifest, precision))
    ]
    if problems:
        shown = listed([str(p) for p in problems], 3)
        raise PackageError(f"{manifest.root}: TensorRT's ONNX parser would refuse {len(problems)} node(s): {shown}")


def build(package: Path, options: BuildOptions, progress: Callable[[str], None] | None = None) -> BuildResult:
    """Write precision variants into the package; build TensorRT engines unless ``onnx_only``."""
    progress = progress or (lambda message: None)
    if not Path(package).is_dir():
        raise InputError(
            f"{package}: build-engine writes into a model package folder; export a checkpoint first "
            "(moce export CKPT -o PKG)"
        )
    manifest = open_model(package)
    calib = calibration_images(options.calib) if "int8" in options.precisions else None
    variants = build_variants(manifest, options.precisions, calib, progress)
    for warning in dict.fromkeys(w for report in variants for w in report.warnings):  # int8's are shared
        progress(f"warning: {warning}")
    engines: list[EngineEntry] = []
    error = None
    if not options.onnx_only:
        check_tensorrt_support(manifest, options.precisions or ["fp32"])
        try:
            for precision in options.precisions or ["fp32"]:
                engines += build_engines(
                    manifest,
                    precision,
                    options.profile,
                    options.workspace_mb << 20,
                    options.engine_cache or cache_dir() / "engines",
                    progress,
                )
        except MissingDependencyError as exc:
            error = str(exc)
    return BuildResult(manifest, variants, engines, error)
