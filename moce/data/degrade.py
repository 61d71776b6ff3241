"""Synthetic degradations of clean RGB photos (float32 HWC in [0, 1]), each reproducible from a seed.

The five tasks of all-in-one restoration: noise, rain, haze, blur and low light; and a sixth, clean
inputs, which a restorer should leave as they are. The fixed-range forms (``noise15``, ``haze``,
``lowlight``, ...) are those the demo model's first twelve stages trained on and keep their exact
draws; the wide forms (``noise``, ``haze-depth``, ``haze-uniform``, ``lowlight-wide``) draw their
strength over the range real photos have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np

from moce.errors import InputError

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


def _depth_proxy(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth scene depth, far at the top, with random low-frequency relief."""
    depth = np.linspace(1.0, 0.2, h, dtype=np.float32)[:, None].repeat(w, 1)
    return depth + cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), max(h, w) / 8) * 0.5


def _grey_airlight(rng: np.random.Generator) -> np.float32:
    """A bright grey airlight, level 0.75..1 (the fixed-range haze)."""
    return np.float32(rng.uniform(0.75, 1.0))


def _airlight(rng: np.random.Generator) -> np.ndarray:
    """Bright airlight, grey to tinted: a level in [0.6, 1] times per-channel gains within 12% (bluish
    sky, yellow smog, warm dusk)."""
    tint = rng.uniform(-0.12, 0.12, 3) * rng.random()
    return np.clip(rng.uniform(0.6, 1.0) * (1 + tint), 0, 1).astype(np.float32)


def depth_haze(
    beta: tuple[float, float], airlight: Callable[[np.random.Generator], np.ndarray | np.float32]
) -> Degradation:
    """Atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta depth)`` over a depth proxy, with
    ``beta`` drawn from its range (denser haze as it grows) and the airlight ``A`` from ``airlight``."""

    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        depth = _depth_proxy(*img.shape[:2], rng)
        t = np.exp(-rng.uniform(*beta) * depth)[..., None]
        return img * t + airlight(rng) * (1 - t)

    return apply


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


def low_light(gain: tuple[float, float], gamma: tuple[float, float], noise: tuple[float, float]) -> Degradation:
    """Darkened exposure: ``gain * img ** gamma``, then sensor noise of a standard deviation drawn from
    ``noise``; each drawn from its range per image."""

    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        dark = rng.uniform(*gain) * np.power(img, rng.uniform(*gamma))
        return dark + rng.normal(0, rng.uniform(*noise), img.shape).astype(np.float32)

    return apply


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
    "haze": depth_haze((0.8, 2.0), _grey_airlight),
    "blur": blur,
    "lowlight": low_light(gain=(0.15, 0.35), gamma=(1.2, 1.8), noise=(0.005, 0.015)),
    "noise": noise_levels(5, 55),
    "haze-depth": depth_haze((0.3, 2.6), _airlight),  # light to dense, grey or tinted
    "haze-uniform": haze_uniform,
    "lowlight-wide": low_light(gain=(0.08, 0.5), gamma=(1.0, 2.2), noise=(0.003, 0.02)),
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


def check_degradations(names: Iterable[str]) -> None:
    """Refuse, before any work, names that are not degradations, listing those that are."""
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown:
        raise InputError(f"unknown degradation(s) {unknown}; known: {', '.join(DEGRADATIONS)}")


def degrade(img: np.ndarray, name: str, seed: int | np.random.Generator) -> np.ndarray:
    """Apply degradation ``name`` to ``img``; the same seed gives the same result."""
    if name not in DEGRADATIONS:
        raise KeyError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = DEGRADATIONS[name](img.astype(np.float32, copy=False), rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
