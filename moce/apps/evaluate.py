"""`moce evaluate`: PSNR/SSIM per degradation and how well routes identify the degradation.

Protocol as in the paper: float images in [0, 1], outputs clamped, PSNR over all pixels and
channels. Route discriminability: restore many random crops of each degradation, then predict
the task of each held-out crop from its route vector alone (one expert index per adapter) with
a lookup table learnt on the other half of the crops (nearest route vector by Hamming distance
for route vectors never seen) — the accuracy says how task-discriminative routing is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moce.data.degrade import DEGRADATIONS, TASK_OF, degrade
from moce.errors import InputError
from moce.imageio import image_files, read_image
from moce.metrics import psnr, ssim
from moce.runtime.backends import make_runner
from moce.runtime.executor import PlanExecutor
from moce.runtime.resolve import resolve_model
from moce.runtime.restorer import RestoreOptions, Restorer


@dataclass
class EvalOptions:
    degradations: tuple[str, ...] = ("noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight")
    crops_per_image: int = 24
    crop: int = 96
    backend: str = "onnxruntime"
    seed: int = 0
    draws: int = 4  # degradations drawn per image: one blur kernel per photo swung the blur gain by 2 dB


@dataclass
class EvalReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    route_accuracy: float = 0.0
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    route_usage: dict[str, list[list[float]]] = field(default_factory=dict)  # degradation -> adapter -> expert share

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_degradation": self.rows,
            "route_accuracy": self.route_accuracy,
            "confusion": self.confusion,
            "route_usage": self.route_usage,
        }


def load_clean_images(folder: Path) -> list[tuple[str, np.ndarray]]:
    """(stem, image) of every supported image in ``folder``, sorted by name: the order fixes the seeds."""
    return [(p.stem, read_image(p)[0]) for p in image_files(folder, "clean images to evaluate on")]


def _fit_predict(train: list[tuple[tuple, str]], test: list[tuple[tuple, str]]) -> list[str]:
    table: dict[tuple, Counter] = defaultdict(Counter)
    for route, task in train:
        table[route][task] += 1
    known = list(table)
    predictions = []
    for route, _ in test:
        key = route if route in table else min(known, key=lambda r: (sum(a != b for a, b in zip(r, route)), r))
        predictions.append(table[key].most_common(1)[0][0])
    return predictions


def evaluate(
    model: str | Path | None, data: Path, options: EvalOptions, progress: Callable[[str], None] | None = None
) -> EvalReport:
    """Evaluate a model on clean images under each degradation (seeded, reproducible)."""
    progress = progress or (lambda message: None)
    unknown = [d for d in options.degradations if d not in DEGRADATIONS]
    if unknown:
        raise InputError(f"unknown degradation(s) {unknown}; known: {', '.join(DEGRADATIONS)}")
    manifest = resolve_model(model, progress)
    images = load_clean_images(data)
    report = EvalReport()
    samples: list[tuple[tuple, str, int]] = []
    usage: dict[str, np.ndarray] = {}
    choice = make_runner(options.backend, manifest)
    with choice.runner as runner:
        restorer = Restorer(PlanExecutor(manifest, runner), RestoreOptions(tile=4096))
        for d_index, name in enumerate(options.degradations):
            progress(f"evaluate {name}")
            scores = _draw_scores(restorer, images, name, d_index, options)
            psnr_in, psnr_out, ssim_in, ssim_out = scores.mean(axis=(0, 1))
            gain_per_draw = (scores[..., 1] - scores[..., 0]).mean(axis=1)
            routes = _crop_routes(restorer, images, name, d_index, options)
            samples += [(r, TASK_OF[name], k) for k, r in enumerate(routes)]
            usage[name] = route_usage(routes, manifest.config.num_adapters, manifest.config.num_experts)
            report.rows.append(
                {
                    "degradation": name,
                    "task": TASK_OF[name],
                    "psnr_input": float(psnr_in),
                    "psnr_output": float(psnr_out),
                    "psnr_gain": float(psnr_out - psnr_in),
                    "psnr_gain_min": float(gain_per_draw.min()),
                    "psnr_gain_max": float(gain_per_draw.max()),
                    "draws": options.draws,
                    "ssim_input": float(ssim_in),
                    "ssim_output": float(ssim_out),
                    "dominant_route": list(Counter(routes).most_common(1)[0][0]),
                }
            )
    train = [(r, t) for r, t, k in samples if k % 2 == 0]
    test = [(r, t) for r, t, k in samples if k % 2 == 1]
    predicted = _fit_predict(train, test)
    report.route_accuracy = float(np.mean([p == t for p, (_, t) in zip(predicted, test)]))
    tasks = sorted({t for _, t in test})
    report.confusion = {
        t: {p: sum(1 for q, (_, s) in zip(predicted, test) if s == t and q == p) for p in tasks} for t in tasks
    }
    report.route_usage = {k: v.tolist() for k, v in usage.items()}
    return report


def _draw_scores(
    restorer: Restorer, images: list[tuple[str, np.ndarray]], name: str, d_index: int, options: EvalOptions
) -> np.ndarray:
    """``(draw, image, [PSNR in, PSNR out, SSIM in, SSIM out])``; draw k degrades as ``--seed`` + k would."""
    return np.array(
        [
            [
                _scores(restorer, clean, degrade(clean, name, seed=draw_seed(options.seed, k, i, d_index)))
                for i, (_, clean) in enumerate(images)
            ]
            for k in range(options.draws)
        ]
    )


def draw_seed(seed: int, draw: int, image_index: int, degradation_index: int) -> int:
    """Seed of one evaluation degradation, so that other tools can score the very same inputs."""
    return (seed + draw) * 1000 + 97 * image_index + degradation_index


def _scores(restorer: Restorer, clean: np.ndarray, degraded: np.ndarray) -> tuple[float, float, float, float]:
    """PSNR and SSIM of the degraded input and of its clamped restoration, against ``clean``."""
    restored = np.clip(restorer.restore_batch([degraded])[0].restored, 0, 1)
    return psnr(degraded, clean), psnr(restored, clean), ssim(degraded, clean), ssim(restored, clean)


def _crop_routes(
    restorer: Restorer, images: list[tuple[str, np.ndarray]], name: str, d_index: int, options: EvalOptions
) -> list[tuple]:
    rng = np.random.default_rng([options.seed, d_index])
    crops = []
    for _, clean in images:
        h, w = clean.shape[:2]
        for _ in range(options.crops_per_image):
            top, left = int(rng.integers(h - options.crop + 1)), int(rng.integers(w - options.crop + 1))
            crops.append(degrade(clean[top : top + options.crop, left : left + options.crop], name, rng))
    routes = []
    for i in range(0, len(crops), 16):
        for result in restorer.restore_batch(crops[i : i + 16]):
            routes.append(tuple(r[0] for r in result.routes))
    return routes


def route_usage(routes: list[tuple], adapters: int, experts: int) -> np.ndarray:
    """Share of ``routes`` (one top-1 expert per adapter) that chose each expert, per adapter."""
    share = np.zeros((adapters, experts))
    for route in routes:
        for a, e in enumerate(route):
            share[a, e] += 1
    return share / max(1, len(routes))


def routing_chart(usage: dict[str, list[list[float]]], path: Path, title: str = "expert chosen per adapter") -> None:
    """A grid: one row per degradation, one cell per adapter, coloured by the expert most used."""
    import cv2

    palette = [(90, 180, 90), (60, 160, 230), (40, 90, 220), (160, 60, 160)]  # BGR per expert 0..3
    names = list(usage)
    adapters = len(next(iter(usage.values())))
    cell, left, top = 44, 130, 60
    img = np.full((top + cell * len(names) + 60, max(left + cell * adapters + 20, 640), 3), 255, np.uint8)
    cv2.putText(img, title, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    for a in range(adapters):
        cv2.putText(img, f"a{a}", (left + a * cell + 10, top - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1)
    for r, name in enumerate(names):
        y = top + r * cell
        cv2.putText(img, name, (10, y + 27), cv2.FONT_HERSHEY_SIMPLEX, 0.48, (0, 0, 0), 1)
        for a, shares in enumerate(usage[name]):
            expert = int(np.argmax(shares))
            strength = float(shares[expert])
            colour = tuple(int(255 - (255 - c) * (0.35 + 0.65 * strength)) for c in palette[expert % len(palette)])
            cv2.rectangle(img, (left + a * cell, y), (left + (a + 1) * cell - 3, y + cell - 3), colour, -1)
            cv2.putText(img, str(expert), (left + a * cell + 15, y + 27), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    legend_y = top + cell * len(names) + 30
    cv2.putText(
        img,
        "cell: most used expert (0 = cheapest .. 3 = costliest); shade: share of images",
        (10, legend_y),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
