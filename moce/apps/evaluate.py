"""`moce evaluate`: PSNR/SSIM per degradation and how well routes identify the degradation.

Protocol as in the paper: float images in [0, 1], outputs clamped, PSNR over all pixels and
channels. Colour: mean HSV saturation of the restored image against the clean one's (a greyed
restoration scores well below 1) and the mean CIEDE2000 difference from the clean image.

Route discriminability: restore many random crops of each degradation, then predict the task
of each held-out crop from its route vector alone (one expert index per adapter) with a lookup
table learnt on the other half of the crops (nearest route vector by Hamming distance for route
vectors never seen): the accuracy says how task-discriminative routing is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from moce.apps.session import Session
from moce.apps.session_options import SessionOptions
from moce.data.degrade import FIXED_RANGES, IDENTITY, TASK_OF, check_degradations, degrade
from moce.errors import InputError
from moce.imageio import read_images, write_chart
from moce.metrics import mean_ciede2000, mean_saturation, psnr, ssim
from moce.runtime.resolve import open_model

SIGNATURE = "moce evaluate"
"""What evaluate's JSON results and chart carry."""
UNTILED = 4096
"""A tile side no evaluation photo reaches: every photo is restored whole."""
CROP_BATCH = 16
"""Crops restored per call in the routing analysis."""


DEFAULT_DEGRADATIONS = (*FIXED_RANGES, "haze-depth", "haze-uniform")
"""What ``moce evaluate`` scores by default: the fixed-range forms in their historical order (so their seeds,
and numbers, stay comparable across releases), then haze over wide ranges, with and without depth."""


@dataclass
class EvalOptions:
    degradations: tuple[str, ...] = DEFAULT_DEGRADATIONS
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
    clean: dict[str, Any] = field(default_factory=dict)  # the harm done to clean inputs (see harm_to_clean)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "per_degradation": self.rows,
            "route_accuracy": self.route_accuracy,
            "confusion": self.confusion,
            "route_usage": self.route_usage,
        }


def load_clean_images(folders: list[Path]) -> list[tuple[str, np.ndarray]]:
    """(stem, image) of every supported image in ``folders``, each sorted by name: the order fixes the seeds."""
    return [image for folder in folders for image in read_images(folder, "clean images to evaluate on")]


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
    model: str | Path | None,
    data: Path | list[Path],
    options: EvalOptions,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Evaluate a model on the clean images of one or more folders under each degradation (seeded)."""
    progress = progress or (lambda message: None)
    check_degradations(options.degradations)
    if IDENTITY in options.degradations:
        raise InputError(f"{IDENTITY!r} is no degradation to evaluate: clean inputs are always scored (the clean row)")
    manifest = open_model(model, progress)
    images = load_clean_images(data if isinstance(data, list) else [data])
    report = EvalReport()
    samples: list[tuple[tuple, str, int]] = []
    usage: dict[str, np.ndarray] = {}
    with Session(manifest, SessionOptions(backend=options.backend, tile=UNTILED, batch=CROP_BATCH)) as session:
        for d_index, name in enumerate(options.degradations):
            progress(f"evaluate {name}")
            scores = _draw_scores(session, images, name, d_index, options)
            routes = _crop_routes(session, images, name, d_index, options)
            samples += [(r, TASK_OF[name], k) for k, r in enumerate(routes)]
            usage[name] = route_usage(routes, manifest.config.num_adapters, manifest.config.num_experts)
            row = {"degradation": name, "task": TASK_OF[name], **score_summary(scores, [n for n, _ in images])}
            report.rows.append(row | {"dominant_route": list(Counter(routes).most_common(1)[0][0])})
        progress("evaluate clean inputs")
        report.clean = harm_to_clean(session, images)
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


SCORES = ("psnr_in", "psnr_out", "ssim_in", "ssim_out", "sat_clean", "sat_in", "sat_out", "de_in", "de_out")
"""What :func:`_scores` measures per restored image, in order."""


def score_summary(scores: np.ndarray, names: list[str]) -> dict[str, Any]:
    """One report row from ``(draw, image, SCORES)``: means over draws and images, gain ranges over draws,
    the photo that gains least, and the restored saturation as a fraction of the clean photo's."""
    s = {key: scores[..., i] for i, key in enumerate(SCORES)}
    gain = s["psnr_out"] - s["psnr_in"]
    per_image_gain = gain.mean(axis=0)
    ratio = s["sat_out"].mean(axis=0) / np.maximum(s["sat_clean"].mean(axis=0), 1e-6)
    worst_ratio = int(np.argmax(np.abs(ratio - 1)))
    return {
        "psnr_input": float(s["psnr_in"].mean()),
        "psnr_output": float(s["psnr_out"].mean()),
        "psnr_gain": float(gain.mean()),
        "psnr_gain_min": float(gain.mean(axis=1).min()),
        "psnr_gain_max": float(gain.mean(axis=1).max()),
        "psnr_gain_per_draw": gain.mean(axis=1).tolist(),  # draw k: seed + k, so runs of other lengths compare
        "draws": int(scores.shape[0]),
        "worst_image": names[int(np.argmin(per_image_gain))],
        "worst_image_gain": float(per_image_gain.min()),
        "ssim_input": float(s["ssim_in"].mean()),
        "ssim_output": float(s["ssim_out"].mean()),
        "saturation_clean": float(s["sat_clean"].mean()),
        "saturation_input": float(s["sat_in"].mean()),
        "saturation_output": float(s["sat_out"].mean()),
        "saturation_ratio": float(s["sat_out"].mean() / max(float(s["sat_clean"].mean()), 1e-6)),
        "saturation_ratio_worst": float(ratio[worst_ratio]),
        "saturation_ratio_worst_image": names[worst_ratio],
        "ciede2000_input": float(s["de_in"].mean()),
        "ciede2000_output": float(s["de_out"].mean()),
    }


def harm_to_clean(session: Session, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """What the model does to photos that need nothing: each clean photo restored as it is, scored
    against itself (PSNR; the photo it changes most) and by its saturation (restored / clean; the
    photo whose colour moves most). A model that does no harm gives high PSNR and ratios near 1."""
    names = [n for n, _ in images]
    restored = [np.clip(session.restore_rgb([clean])[0].restored, 0, 1) for _, clean in images]
    scores = np.array([psnr(out, clean) for out, (_, clean) in zip(restored, images)])
    ratios = np.array(
        [mean_saturation(out) / max(mean_saturation(clean), 1e-6) for out, (_, clean) in zip(restored, images)]
    )
    farthest = int(np.argmax(np.abs(ratios - 1)))
    return {
        "psnr_output": float(np.mean(np.minimum(scores, 100.0))),  # an unchanged photo counts as 100 dB
        "psnr_lowest": float(scores.min()),
        "psnr_lowest_image": names[int(np.argmin(scores))],
        "saturation_ratio": float(ratios.mean()),
        "saturation_ratio_worst": float(ratios[farthest]),
        "saturation_ratio_worst_image": names[farthest],
    }


def _draw_scores(
    session: Session, images: list[tuple[str, np.ndarray]], name: str, d_index: int, options: EvalOptions
) -> np.ndarray:
    """``(draw, image, SCORES)``; draw k degrades as ``--seed`` + k would."""
    return np.array(
        [
            [
                _scores(session, clean, degrade(clean, name, seed=draw_seed(options.seed, k, i, d_index)))
                for i, (_, clean) in enumerate(images)
            ]
            for k in range(options.draws)
        ]
    )


def draw_seed(seed: int, draw: int, image_index: int, degradation_index: int) -> int:
    """Seed of one evaluation degradation, so that other tools can score the very same inputs."""
    return (seed + draw) * 1000 + 97 * image_index + degradation_index


def _scores(session: Session, clean: np.ndarray, degraded: np.ndarray) -> tuple[float, ...]:
    """:data:`SCORES` of the degraded input and of its clamped restoration, against ``clean``."""
    restored = np.clip(session.restore_rgb([degraded])[0].restored, 0, 1)
    return (
        psnr(degraded, clean),
        psnr(restored, clean),
        ssim(degraded, clean),
        ssim(restored, clean),
        mean_saturation(clean),
        mean_saturation(degraded),
        mean_saturation(restored),
        mean_ciede2000(degraded, clean),
        mean_ciede2000(restored, clean),
    )


def _crop_routes(
    session: Session, images: list[tuple[str, np.ndarray]], name: str, d_index: int, options: EvalOptions
) -> list[tuple]:
    rng = np.random.default_rng([options.seed, d_index])
    crops = []
    for _, clean in images:
        h, w = clean.shape[:2]
        for _ in range(options.crops_per_image):
            top, left = int(rng.integers(h - options.crop + 1)), int(rng.integers(w - options.crop + 1))
            crops.append(degrade(clean[top : top + options.crop, left : left + options.crop], name, rng))
    return [tuple(r[0] for r in result.routes) for result in session.restore_rgb(crops)]


def route_usage(routes: list[tuple], adapters: int, experts: int) -> np.ndarray:
    """Share of ``routes`` (one top-1 expert per adapter) that chose each expert, per adapter."""
    share = np.zeros((adapters, experts))
    for route in routes:
        for a, e in enumerate(route):
            share[a, e] += 1
    return share / max(1, len(routes))


PALETTE = [(90, 180, 90), (60, 160, 230), (40, 90, 220), (160, 60, 160)]  # BGR per expert 0..3
FONT = cv2.FONT_HERSHEY_SIMPLEX


def routing_chart(usage: dict[str, list[list[float]]], path: Path, title: str, signature: str) -> None:
    """Write :func:`routing_grid` as a PNG signed by ``signature``'s command."""
    write_chart(path, routing_grid(usage, title), signature)


def evaluation_chart(report: EvalReport, path: Path, title: str) -> None:
    """Quality and colour per degradation (:func:`quality_panel`) above the routing grid, as one PNG."""
    top = quality_panel(report.rows)
    routes = routing_grid(
        report.route_usage, f"expert use per adapter; routes predict the task {100 * report.route_accuracy:.0f}%"
    )
    width = max(top.shape[1], routes.shape[1])
    pad = lambda img: np.pad(img, ((0, 0), (0, width - img.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
    header = np.full((34, width, 3), 255, np.uint8)
    cv2.putText(header, title, (10, 24), FONT, 0.6, (0, 0, 0), 1)
    write_chart(path, np.vstack([header, pad(top), pad(routes)]), SIGNATURE)


def quality_panel(rows: list[dict[str, Any]]) -> np.ndarray:
    """Per degradation: PSNR gain as a bar (dB), and mean saturation of the degraded and restored images
    as a fraction of the clean photo's (a greyed restoration ends far left of the 1.0 line)."""
    row_h, left, bar_w, gap = 30, 130, 300, 60
    height, width = 70 + row_h * len(rows) + 30, left + 2 * bar_w + gap + 40
    img = np.full((height, width, 3), 255, np.uint8)
    max_gain = max([12.0, *(abs(r["psnr_gain"]) for r in rows)])
    x_sat = left + bar_w + gap
    cv2.putText(img, f"PSNR gain, dB (bar: 0 .. {max_gain:.0f})", (left, 20), FONT, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "saturation / clean: o degraded  # restored", (x_sat, 20), FONT, 0.45, (0, 0, 0), 1)
    for x, label in ((x_sat, "0"), (x_sat + bar_w // 2, "1.0"), (x_sat + bar_w - 20, "2.0")):
        cv2.putText(img, label, (x, 50), FONT, 0.4, (80, 80, 80), 1)
    cv2.line(img, (x_sat + bar_w // 2, 56), (x_sat + bar_w // 2, height - 30), (150, 150, 150), 1)
    for i, r in enumerate(rows):
        y = 60 + i * row_h
        cv2.putText(img, r["degradation"], (10, y + 19), FONT, 0.48, (0, 0, 0), 1)
        length = int(bar_w * min(1.0, abs(r["psnr_gain"]) / max_gain))
        colour = (90, 170, 90) if r["psnr_gain"] >= 0 else (60, 60, 220)
        cv2.rectangle(img, (left, y + 4), (left + length, y + row_h - 6), colour, -1)
        cv2.putText(img, f"{r['psnr_gain']:+.2f}", (left + length + 4, y + 19), FONT, 0.42, (0, 0, 0), 1)
        clean = max(r["saturation_clean"], 1e-6)
        for key, marker in (("saturation_input", "o"), ("saturation_output", "#")):
            x = x_sat + int(bar_w / 2 * min(2.0, r[key] / clean))
            cv2.putText(img, marker, (x - 5, y + 19), FONT, 0.5, (40, 40, 40) if marker == "o" else (200, 90, 30), 2)
        cv2.putText(img, f"{r['saturation_ratio']:.2f}", (x_sat + bar_w + 6, y + 19), FONT, 0.42, (0, 0, 0), 1)
    return img


def routing_grid(usage: dict[str, list[list[float]]], title: str) -> np.ndarray:
    """One row per degradation, one cell per adapter: a bar split by the share of images that took
    each expert (coloured by expert, cheapest green to costliest purple), the most taken expert and
    its share written on it; at the row's end, how consistent the degradation's routes are (the
    mean share of its most taken expert). Same colours in a column: the adapter does not tell
    those degradations apart; one colour across a bar: every image of the row took that expert."""
    names = list(usage)
    adapters = len(next(iter(usage.values())))
    experts = max(len(shares) for rows in usage.values() for shares in rows)
    cell, height, left, top = 96, 30, 10 + 9 * max(len(n) for n in names), 62
    right = left + cell * adapters
    width = max(right + 130, 20 + 165 * experts)
    img = np.full((top + height * len(names) + 70, width, 3), 255, np.uint8)
    cv2.putText(img, title, (10, 24), FONT, 0.55, (0, 0, 0), 1)
    for a in range(adapters):
        cv2.putText(img, f"adapter {a}", (left + a * cell + 14, top - 10), FONT, 0.42, (0, 0, 0), 1)
    cv2.putText(img, "consistency", (right + 12, top - 10), FONT, 0.42, (0, 0, 0), 1)
    for r, name in enumerate(names):
        y = top + r * height
        cv2.putText(img, name, (10, y + 20), FONT, 0.48, (0, 0, 0), 1)
        for a, shares in enumerate(usage[name]):
            _share_bar(img, left + a * cell, y, cell - 6, height - 4, shares)
        consistency = float(np.mean([max(shares) for shares in usage[name]]))
        cv2.putText(img, f"{100 * consistency:.0f}%", (right + 24, y + 20), FONT, 0.48, (0, 0, 0), 1)
    y = top + height * len(names) + 22
    for e in range(experts):
        x = 10 + e * 165
        cv2.rectangle(img, (x, y - 11), (x + 14, y + 3), PALETTE[e % len(PALETTE)], -1)
        cost = " (cheapest)" if e == 0 else " (costliest)" if e == experts - 1 else ""
        cv2.putText(img, f"expert {e}{cost}", (x + 20, y), FONT, 0.4, (0, 0, 0), 1)
    legend = "bar: share of images per expert; text: the most taken expert and its share"
    cv2.putText(img, legend, (10, y + 26), FONT, 0.4, (0, 0, 0), 1)
    return img


def _share_bar(img: np.ndarray, x: int, y: int, width: int, height: int, shares: list[float]) -> None:
    """One cell of :func:`routing_grid`: segments as wide as each expert's share, and a label."""
    total = max(float(sum(shares)), 1e-9)
    start = x
    for e in range(len(shares)):
        end = x + round(width * sum(shares[: e + 1]) / total)
        if end > start:
            cv2.rectangle(img, (start, y), (end - 1, y + height), PALETTE[e % len(PALETTE)], -1)
        start = end
    top = int(np.argmax(shares))
    label = f"{top}: {100 * shares[top] / total:.0f}%"
    cv2.putText(img, label, (x + 6, y + height - 8), FONT, 0.45, (255, 255, 255), 2)
    cv2.putText(img, label, (x + 6, y + height - 8), FONT, 0.45, (0, 0, 0), 1)
