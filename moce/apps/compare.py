"""`moce compare`: accuracy of backends and precisions against a reference, through Polygraphy.

Each backend/precision is wrapped as a Polygraphy ``BaseRunner`` whose outputs are the restored
image and every adapter's route; Polygraphy's ``Comparator`` runs them on the same real images
and checks ``restored`` against the reference within atol/rtol, and its ``RunResults`` can be
saved as JSON. On top: PSNR/SSIM per image and the share of routing decisions that agree.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moce._lazy import require
from moce.apps.session import Session
from moce.apps.session_options import SessionOptions
from moce.data import SAMPLES
from moce.engines.build import BuildOptions, build
from moce.errors import InputError
from moce.files import atomic_path
from moce.imageio import image_files, read_image
from moce.metrics import psnr, ssim
from moce.names import VARIANT_PRECISIONS, route_name
from moce.outputs import signed
from moce.package.manifest import Manifest
from moce.progress import Messages
from moce.runtime.resolve import open_model


@dataclass(frozen=True)
class Spec:
    """``backend[:precision]``, e.g. ``torch``, ``onnxruntime:fp16``, ``tensorrt:int8``."""

    backend: str
    precision: str = "fp32"

    @classmethod
    def parse(cls, text: str) -> Spec:
        backend, _, precision = text.partition(":")
        return cls(backend, precision or "fp32")

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.precision}"


SIGNATURE = "moce compare"
"""What compare's JSON table and saved Polygraphy results carry (:mod:`moce.outputs`)."""
ERROR_STATS = ("elemwise", "max", "mean", "median")
"""Polygraphy's ``check_error_stat`` choices."""

UNTILED = 1 << 16
"""A tile side no compared image reaches: each runs whole, as one image per feed."""


def make_polygraphy_runner(manifest: Manifest, spec: Spec) -> Any:
    """A Polygraphy runner restoring one image per feed with the split plan of ``spec``."""
    base = require("polygraphy.backend.base", "polygraphy")
    session = Session(manifest, SessionOptions(backend=spec.backend, precision=spec.precision, tile=UNTILED))

    class MoceRunner(base.BaseRunner):
        def __init__(self) -> None:
            super().__init__(name=spec.name, prefix="moce")

        def activate_impl(self) -> None:
            session.activate()

        def get_input_metadata_impl(self):  # noqa: ANN202
            from polygraphy.common import TensorMetadata

            return TensorMetadata().add("image", np.float32, (1, manifest.config.in_channels, -1, -1))

        def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = session.restore_rgb([feed_dict["image"][0].transpose(1, 2, 0)])[0]
            outputs = {"restored": np.ascontiguousarray(result.restored.transpose(2, 0, 1)[None])}
            outputs.update({route_name(a): np.array([route]) for a, route in enumerate(result.routes)})
            self.inference_time = result.seconds
            return outputs

        def deactivate_impl(self) -> None:
            session.close()

    return MoceRunner()


@dataclass
class CompareOptions:
    specs: list[Spec]
    images: Path | None = None
    atol: float = 1e-2
    rtol: float = 1e-2
    min_psnr: float = 35.0
    min_route_agreement: float = 0.95
    error_stat: str = "mean"  # Polygraphy's check_error_stat: elemwise, max, mean, median
    save_results: Path | None = None
    verbose: bool = False


@dataclass
class CompareReport:
    reference: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_images(folder: Path | None) -> list[tuple[str, np.ndarray]]:
    """Real images as (name, NCHW float32); the bundled degraded samples by default."""
    files = image_files(folder or SAMPLES, "images to compare on")
    return [(p.name, read_image(p)[0].transpose(2, 0, 1)[None].copy()) for p in files]


def compare(
    model: str | Path | Manifest | None, options: CompareOptions, progress: Messages | None = None
) -> CompareReport:
    """Run every spec on the same images, compare each with the first, check the thresholds.

    ``model``: a package, a checkpoint (exported and validated once, as every command does), or an
    opened package. Every runner is made, and so refused, before any image runs.
    """
    comparator = require("polygraphy.comparator", "polygraphy")
    if len(options.specs) < 2:
        raise InputError("compare needs a reference and at least one other backend/precision")
    manifest = model if isinstance(model, Manifest) else open_model(model, progress)
    if isinstance(model, str | Path) and Path(model).is_file():
        manifest = cached_variants(manifest, options.specs, progress)
    images = load_images(options.images)
    runners = [make_polygraphy_runner(manifest, spec) for spec in options.specs]
    feeds = [{"image": image} for _, image in images]
    if progress:
        progress(f"running {len(runners)} runner(s) on {len(images)} image(s)")
    with _polygraphy_verbosity(options.verbose), warnings.catch_warnings():
        # Polygraphy's relative-error statistics divide by the reference's zeros: numpy warns, they are inf
        warnings.simplefilter("ignore", RuntimeWarning)
        return _compare(comparator, runners, feeds, images, options)


def cached_variants(manifest: Manifest, specs: list[Spec], progress: Messages | None) -> Manifest:
    """The package exported from a checkpoint into the cache, with the fp16 and int8 graph variants
    the specs need built into it once (``moce build-engine --onnx-only``, on the bundled samples),
    so that a checkpoint compares as a package does without the user building in the cache."""
    wanted = dict.fromkeys(s.precision for s in specs if s.precision in VARIANT_PRECISIONS and s.backend != "torch")
    missing = [p for p in wanted if p not in manifest.precisions]
    if not missing:
        return manifest
    if progress:
        progress(f"building the {', '.join(missing)} graphs of {manifest.root} (once, in the cache)")
    build(manifest.root, BuildOptions(precisions=missing, onnx_only=True), progress)
    return open_model(manifest.root)


@contextmanager
def _polygraphy_verbosity(verbose: bool) -> Iterator[None]:
    """Polygraphy logs every statistic of every iteration; keep errors only unless asked."""
    from polygraphy.logger import G_LOGGER

    before = G_LOGGER.module_severity
    if not verbose:
        G_LOGGER.module_severity = G_LOGGER.ERROR + 1
    try:
        yield
    finally:
        G_LOGGER.module_severity = before


def _compare(comparator: Any, runners: list, feeds: list, images: list, options: CompareOptions) -> CompareReport:
    results = comparator.Comparator.run(runners, data_loader=feeds)
    if options.save_results:
        with atomic_path(options.save_results) as tmp:
            results.save(str(tmp))  # Polygraphy's format; signed beside its own keys, which it reads alone
            tmp.write_text(json.dumps(signed(json.loads(tmp.read_text()), SIGNATURE)))
    atol = {"restored": options.atol, "": float("inf")}
    rtol = {"restored": options.rtol, "": float("inf")}
    simple = getattr(comparator, "SimpleCompareFunc", None) or comparator.CompareFunc.simple
    accuracy = comparator.Comparator.compare_accuracy(
        results,
        compare_func=simple(atol=atol, rtol=rtol, check_error_stat=options.error_stat),
        comparisons=[(0, i) for i in range(1, len(runners))],
    )
    if not hasattr(accuracy, "keys"):  # newer Polygraphy: AccuracyResults, one per comparison function
        accuracy = accuracy[0]
    report = CompareReport(reference=options.specs[0].name)
    ref_outputs = results[0][1]
    for i, spec in enumerate(options.specs[1:], start=1):
        outputs = results[i][1]
        ok_pair = all(bool(r) for it in accuracy[(results[0][0], results[i][0])] for r in it.values())
        report.rows.append(_stats(spec.name, images, ref_outputs, outputs, ok_pair, options, report.failures))
    return report


def _stats(
    name: str,
    images: list[tuple[str, np.ndarray]],
    ref_outputs: list,
    outputs: list,
    within_tol: bool,
    options: CompareOptions,
    failures: list[str],
) -> dict[str, Any]:
    errors, psnrs, ssims, changed, decisions, agreeing = [], [], [], [], 0, 0
    for (image_name, _), ref, got in zip(images, ref_outputs, outputs):
        a = np.clip(ref["restored"][0].transpose(1, 2, 0), 0, 1)
        b = np.clip(got["restored"][0].transpose(1, 2, 0), 0, 1)
        errors.append(np.abs(ref["restored"] - got["restored"]))
        psnrs.append(psnr(a, b))
        ssims.append(ssim(a, b))
        routes = [k for k in ref if k.startswith("route")]
        same = [bool(np.array_equal(ref[k], got[k])) for k in routes]
        decisions += len(same)
        agreeing += sum(same)
        if not all(same):
            changed.append(image_name)
    flat = np.concatenate([e.ravel() for e in errors])
    agreement = agreeing / decisions if decisions else 1.0
    row = {
        "runner": name,
        "max_abs": float(flat.max()),
        "mean_abs": float(flat.mean()),
        "p99_abs": float(np.percentile(flat, 99)),
        "min_psnr": float(min(psnrs)),
        "mean_psnr": float(np.mean(psnrs)),
        "min_ssim": float(min(ssims)),
        "route_agreement": agreement,
        "routes_changed": changed,
        "within_tolerance": within_tol,
        "per_image": [{"image": n, "psnr": p, "ssim": s} for (n, _), p, s in zip(images, psnrs, ssims)],
    }
    if not within_tol:
        failures.append(f"{name}: restored differs beyond atol {options.atol} / rtol {options.rtol}")
    if row["min_psnr"] < options.min_psnr:
        failures.append(f"{name}: PSNR {row['min_psnr']:.2f} dB < {options.min_psnr} dB")
    if agreement < options.min_route_agreement:
        failures.append(f"{name}: route agreement {agreement:.1%} < {options.min_route_agreement:.0%}")
    return row
