"""Synthetic degradations of clean RGB photos (float32 HWC in [0, 1]), each reproducible from a seed.

The five tasks of all-in-one restoration: noise, rain, haze, blur and low light.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Degradation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def gaussian_noise(sigma: float) -> Degradation:
    """Additive white Gaussian noise of ``sigma`` on the 0..255 scale (15, 25, 50 in the paper)."""

    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return img + rng.normal(0.0, sigma / 255.0, img.shape).astype(np.float32)

    return apply


def _line_kernel(length: int, angle: float) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return kernel / max(kernel.sum(), 1e-6)


def rain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright streaks: sparse drops smeared along one slanted direction, screen-blended."""
    h, w = img.shape[:2]
    drops = (rng.random((h, w)) < rng.uniform(0.01, 0.03)).astype(np.float32)
    drops *= rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    length = int(rng.integers(9, 21)) | 1
    streaks = cv2.filter2D(drops, -1, _line_kernel(length, float(rng.uniform(60, 120))))
    streaks = np.clip(streaks * rng.uniform(4.0, 8.0), 0, 1)[..., None]
    return 1 - (1 - img) * (1 - 0.9 * streaks)


def haze(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Atmospheric scattering ``I = J t + A (1 - t)`` with a smooth depth proxy (far at the top)."""
    h, w = img.shape[:2]
    depth = np.linspace(1.0, 0.2, h, dtype=np.float32)[:, None].repeat(w, 1)
    depth = depth + cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), max(h, w) / 8) * 0.5
    t = np.exp(-rng.uniform(0.8, 2.0) * depth)[..., None]
    airlight = np.float32(rng.uniform(0.75, 1.0))
    return img * t + airlight * (1 - t)


def blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Linear motion blur (random length and angle) or a defocus disk."""
    if rng.random() < 0.5:
        kernel = _line_kernel(int(rng.integers(5, 12)) | 1, float(rng.uniform(0, 180)))
    else:
        radius = int(rng.integers(2, 4))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)).astype(np.float32)
        kernel /= kernel.sum()
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def low_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darkened exposure: gamma and gain, then a little sensor noise."""
    dark = rng.uniform(0.15, 0.35) * np.power(img, rng.uniform(1.2, 1.8))
    return dark + rng.normal(0, rng.uniform(0.005, 0.015), img.shape).astype(np.float32)


DEGRADATIONS: dict[str, Degradation] = {
    "noise15": gaussian_noise(15),
    "noise25": gaussian_noise(25),
    "noise50": gaussian_noise(50),
    "rain": rain,
    "haze": haze,
    "blur": blur,
    "lowlight": low_light,
}

TASK_OF = {
    "noise15": "noise",
    "noise25": "noise",
    "noise50": "noise",
    "rain": "rain",
    "haze": "haze",
    "blur": "blur",
    "lowlight": "lowlight",
}
"""The restoration task each degradation belongs to (what routing should tell apart)."""


def degrade(img: np.ndarray, name: str, seed: int | np.random.Generator) -> np.ndarray:
    """Apply degradation ``name`` to ``img``; the same seed gives the same result."""
    if name not in DEGRADATIONS:
        raise KeyError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = DEGRADATIONS[name](img.astype(np.float32, copy=False), rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
