"""Synthetic degradations of clean RGB photos (float32 HWC in [0, 1]), each reproducible from a seed.

The five tasks of all-in-one restoration: noise, rain, haze, blur and low light; and a sixth, clean
inputs, which a restorer should leave as they are. The fixed-range forms (``noise15``, ``haze``,
``lowlight``, ...) are those the demo model's first twelve stages trained on and keep their exact
draws; the wide forms (``noise``, ``haze-depth``, ``haze-uniform``, ``lowlight-wide``) draw their
strength over the range real photos have.
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


def noise_levels(low: float, high: float) -> Degradation:
    """Gaussian noise whose sigma (0..255 scale) is drawn uniformly from ``[low, high]`` per image."""

    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return gaussian_noise(float(rng.uniform(low, high)))(img, rng)

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


def _airlight(rng: np.random.Generator) -> np.ndarray:
    """Bright airlight, grey to tinted: a level in [0.6, 1] times per-channel gains within 12% (bluish
    sky, yellow smog, warm dusk)."""
    tint = rng.uniform(-0.12, 0.12, 3) * rng.random()
    return np.clip(rng.uniform(0.6, 1.0) * (1 + tint), 0, 1).astype(np.float32)


def haze_depth(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`haze` over a wide range: light to dense (``beta`` 0.3..2.6) under a grey or tinted airlight."""
    h, w = img.shape[:2]
    depth = np.linspace(1.0, 0.2, h, dtype=np.float32)[:, None].repeat(w, 1)
    depth = depth + cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), max(h, w) / 8) * 0.5
    t = np.exp(-rng.uniform(0.3, 2.6) * depth)[..., None]
    return img * t + _airlight(rng) * (1 - t)


def haze_uniform(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Haze of one transmission over the whole image (no depth: fog, a veiled lens, a flat scene),
    from light (t = 0.9) to dense (t = 0.25), under a grey or tinted airlight."""
    t = np.float32(rng.uniform(0.25, 0.9))
    return img * t + _airlight(rng) * (1 - t)


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


def low_light_wide(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`low_light` over a wider range: gain 0.08..0.5, gamma 1..2.2, sensor noise 0.003..0.02."""
    dark = rng.uniform(0.08, 0.5) * np.power(img, rng.uniform(1.0, 2.2))
    return dark + rng.normal(0, rng.uniform(0.003, 0.02), img.shape).astype(np.float32)


def identity(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A clean input, to be left as it is: training on it teaches the network to do no harm."""
    return img.copy()


IDENTITY = "clean"
"""The name of the identity "degradation": clean inputs in training."""

DEGRADATIONS: dict[str, Degradation] = {
    "noise15": gaussian_noise(15),
    "noise25": gaussian_noise(25),
    "noise50": gaussian_noise(50),
    "rain": rain,
    "haze": haze,
    "blur": blur,
    "lowlight": low_light,
    "noise": noise_levels(5, 55),
    "haze-depth": haze_depth,
    "haze-uniform": haze_uniform,
    "lowlight-wide": low_light_wide,
    IDENTITY: identity,
}

TASK_OF = {
    "noise15": "noise",
    "noise25": "noise",
    "noise50": "noise",
    "rain": "rain",
    "haze": "haze",
    "blur": "blur",
    "lowlight": "lowlight",
    "noise": "noise",
    "haze-depth": "haze",
    "haze-uniform": "haze",
    "lowlight-wide": "lowlight",
    IDENTITY: "clean",
}
"""The restoration task each degradation belongs to (what routing should tell apart)."""

FIXED_RANGES = ("noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight")
"""The five tasks at the fixed strengths of the paper's benchmarks (and of the demo model's first stages)."""

WIDE_RANGES = ("noise", "rain", "haze-depth", "haze-uniform", "blur", "lowlight-wide", IDENTITY)
"""Every task over the range real photos have, and clean inputs: what ``moce train`` draws by default."""


def degrade(img: np.ndarray, name: str, seed: int | np.random.Generator) -> np.ndarray:
    """Apply degradation ``name`` to ``img``; the same seed gives the same result."""
    if name not in DEGRADATIONS:
        raise KeyError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = DEGRADATIONS[name](img.astype(np.float32, copy=False), rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
