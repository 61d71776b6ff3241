"""Runtime test helpers."""

from __future__ import annotations

import numpy as np


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour waves plus mild noise: non-stationary content like a photo, float32 HWC."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack(
        [0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(5 * y - 3 * x), 0.5 + 0.3 * np.sin(9 * x * y)], -1
    )
    return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)
